"""Audio VAE-GAN (§4.1, §5.1): 24 kHz mono <-> 250 Hz latents (hop 96, D = 16), KL-regularised.

- Encoder: the HiFi-GAN generator mirrored — MRF blocks followed by strided-conv down-sampling in place
  of transposed-conv up-sampling (§4.1: "replace the up-sampling modules in the decoder with
  convolution-based down-sampling modules while other modules stay the same"); its last conv outputs
  mean and log-variance (2D channels), log-variance clamped to [logvar_min, logvar_max].
- Decoder: `decoder_type="hifigan"` is the HiFi-GAN generator (§4.1, paper preset);
  `decoder_type="istft"` *(our choice, tiny preset)* is a Vocos-style decoder that works at the 250 Hz
  frame rate and ends in an inverse STFT (hop 96) — far fewer FLOPs per second of audio on a CPU
  (DESIGN §3b; timings in the tiny() docstring).
- Chunked decoding (DESIGN §3): `decode_chunk` decodes a latent chunk with latent context on both
  sides; with `context_frames` frames of context (computed from the receptive field, see
  `_vae_blocks.context_frames`) it equals the matching slice of a full `decode`.

*(our choice)* items, and why:
- Paper-size counting (see `VAEConfig`): 100.1M is read as everything the VAE-GAN trains
  (encoder + decoder + discriminators), with a constant-width 256-channel encoder.
- Up-sampling rates (8, 6, 2) for hop 96: a 3-stage HiFi-GAN (as V3) with kernels 2u.
- ConvNeXt blocks at the latent rate in the tiny encoder: the encoder's work moves to 250 Hz
  after a short strided front end, for the same CPU reason as the iSTFT decoder.
- Sampling in `forward` only in training mode (eval uses the mean): deterministic reconstructions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from melody_core import LATENT_HOP, SAMPLE_RATE
from melody_core.config import BaseConfig, ConfigError
from melody_core.models._vae_blocks import (
    HiFiGANDecoder,
    ISTFTDecoder,
    MirrorEncoder,
    STFTEncoder,
    context_frames,
)
from melody_core.models.discriminators import VAEGANDiscriminator

DECODER_TYPES = ("hifigan", "istft")
PHASE_HEADS = ("linear", "apnet")
ISTFT_PHASES = ("head", "pghi")
ENCODER_TYPES = ("conv", "stft")
ADVERSARIAL_LOSSES = ("hinge", "lsgan")


@dataclass
class VAEConfig(BaseConfig):
    """Audio VAE-GAN configuration (§4.1, §5.1).

    Parameter count of `paper()` (§5.1 says 100.1M "in total"); C = channels, k = kernel:
    - HiFi-GAN MRF at C channels, kernels (3, 7, 11), dilations (1, 3, 5): 6 convs per kernel,
      6·C²·(3 + 7 + 11) = 126·C² weights.
    - Decoder (768 initial channels, rates (8, 6, 2), kernels (16, 12, 4); stages 384/192/96 ch):
      pre 16·768·7 = 0.09M; ups 768·384·16 + 384·192·12 + 192·96·4 = 5.68M;
      MRF 126·(384² + 192² + 96²) = 24.39M; post ≈ 0 -> 30.2M.
    - Encoder (constant 256 ch, 4 resolutions, down-rates (2, 6, 8), kernels 2u):
      MRF 3·126·256² = 24.77M; downs 256²·(4 + 12 + 16) = 2.10M; out 256·32·7 = 0.06M -> 26.9M.
    - Generator side (encoder + decoder) = 57.1M. Alternative reading rejected: 256 as the encoder's
      deepest width, halving towards the waveform like the decoder (16/32/64/128/256), gives a 3.1M
      encoder, a 33M generator side (DESIGN §2's 35–40M) and only ≈ 75M (−25 %) even with the
      discriminators. We read 256 as the encoder's constant hidden width (one number, as §5.1 states
      it) and "in total" as everything the VAE-GAN trains, discriminators included:
    - MPD (HiFi-GAN plan 32/128/512/1024/1024, k 5, ×5 periods): 5·8.22M = 41.1M (+ weight-norm g);
      MRSD (UnivNet, 32 ch, 3 resolutions): 3·0.09M = 0.28M -> discriminators 41.4M.
    - Total = 30.2 + 26.9 + 41.4 ≈ 98.5M, −1.6 % of 100.1M (`vae_gan_parameter_count`).

    How a run trains (GAN warm-up, frozen encoder, output-gain calibration, latent noise) is not
    here: those are `melody_core.train.vae.VAETraining`, so they do not change the model hash.
    """

    MOVED_TO_TRAINER = ("adversarial_start_step", "freeze_encoder", "latent_noise", "calibrate_gain")

    sample_rate: int = SAMPLE_RATE  # Hz, §5.1
    hop: int = LATENT_HOP  # samples per latent frame (§5.1: 96 -> 250 Hz); = prod of up/down rates
    latent_dim: int = 16  # D (§5.1)
    logvar_min: float = -30.0  # clamp of the encoder's log-variance (LDM's range)
    logvar_max: float = 20.0
    leaky_slope: float = 0.1  # LeakyReLU slope of HiFi-GAN
    conv_kernel: int = 7  # kernel of the HiFi-GAN pre/post convs (and the encoder's stem/output)
    # --- encoder (mirror of the HiFi-GAN generator)
    encoder_channels: tuple[int, ...] = (256, 256, 256, 256)  # width at each resolution, wav -> latent
    encoder_rates: tuple[int, ...] = (2, 6, 8)  # down-sampling strides, wav -> latent (product = hop)
    encoder_kernels: tuple[int, ...] = (4, 12, 16)  # strided-conv kernels (2 × stride)
    encoder_resblock_kernels: tuple[int, ...] = (3, 7, 11)  # MRF kernels of the encoder stages (may be ())
    encoder_resblock_dilations: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    encoder_latent_blocks: int = 0  # ConvNeXt blocks at 250 Hz after down-sampling (our choice, tiny)
    encoder_type: str = "conv"  # "conv" (§4.1 mirror) | "stft" (frame-spectrum encoder, our choice;
    # width encoder_channels[-1], frames istft_n_fft / hop; _vae_blocks.STFTEncoder)
    # --- decoder
    decoder_type: str = "hifigan"  # "hifigan" (§4.1) | "istft" (Vocos-style, our choice for tiny)
    decoder_channels: int = 768  # HiFi-GAN initial channels (§5.1: 768) / iSTFT backbone width
    upsample_rates: tuple[int, ...] = (8, 6, 2)  # HiFi-GAN transposed-conv strides (product = hop)
    upsample_kernels: tuple[int, ...] = (16, 12, 4)  # their kernels (2 × stride, as HiFi-GAN)
    resblock_kernels: tuple[int, ...] = (3, 7, 11)  # MRF kernels (HiFi-GAN V1)
    resblock_dilations: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))  # MRF dilations
    istft_blocks: int = 8  # ConvNeXt blocks of the iSTFT decoder
    istft_n_fft: int = 384  # iSTFT frame length (multiple of hop: 4× overlap)
    istft_max_magnitude: float = 100.0  # clamp of the predicted linear magnitude (Vocos)
    istft_phase_iters: int = 0  # Griffin-Lim projections after the iSTFT at inference (our choice;
    # istft_*, phase_* and spectral_weight are ignored by the HiFi-GAN decoder)
    phase_head: str = "linear"  # "linear": phase read raw from the head (v1 bundles) | "apnet": a parallel
    # phase branch whose phase is the angle of a learned (real, imag) pair (APNet, Ai & Ling 2023)
    phase_blocks: int = 1  # ConvNeXt blocks of the APNet phase branch, after the shared backbone
    istft_phase: str = "head"  # phases at inference: "head" (the decoder's) | "pghi" (phase-gradient
    # heap integration from the predicted magnitudes, audio/pghi.py; a magnitude-only baseline)
    convnext_kernel: int = 7  # depthwise kernel of ConvNeXt blocks (Vocos)
    convnext_mult: int = 3  # ConvNeXt MLP expansion
    layer_scale_init: float = 0.1  # ConvNeXt layer-scale initial value
    # --- discriminators (HiFi-GAN MPD + UnivNet MRSD)
    mpd_periods: tuple[int, ...] = (2, 3, 5, 7, 11)  # HiFi-GAN periods
    mpd_channels: tuple[int, ...] = (32, 128, 512, 1024, 1024)  # HiFi-GAN MPD channel plan (× width)
    mpd_kernel: int = 5  # MPD kernel along time
    mpd_stride: int = 3  # MPD stride along time (all but the last conv)
    disc_width: float = 1.0  # width multiplier of the MPD channel plan
    mrsd_resolutions: tuple[tuple[int, int, int], ...] = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))
    mrsd_channels: int = 32  # UnivNet MRSD channels
    # --- losses
    stft_weight: float = 1.0  # multi-resolution STFT loss (spectral convergence + log-mag L1)
    mel_weight: float = 45.0  # multi-resolution log10-mel L1 (HiFi-GAN's mel weight)
    kl_weight: float = 1e-4  # KL per latent element (small: keep latents informative, LDM-style)
    adv_weight: float = 1.0  # adversarial loss (summed over sub-discriminators)
    fm_weight: float = 2.0  # feature matching (HiFi-GAN)
    adversarial_loss: str = "hinge"  # "hinge" | "lsgan"
    spectral_weight: float = 0.0  # iSTFT head: L1 of its log-magnitude to the target's STFT in the
    # decoder's own frames (our choice: without a GAN the head otherwise drifts to magnitudes that
    # its phases cancel in the overlap-add; gan_losses.head_spectrum_loss)
    phase_weight: float = 0.0  # APNet anti-wrapping phase losses (IP + GD + IAF) to the target's phase
    ri_weight: float = 0.0  # L1 of the predicted spectrum's real/imag parts to the target's (APNet L_RI)
    consistency_weight: float = 0.0  # STFT consistency of the predicted spectrum (APNet L_C)

    def __post_init__(self) -> None:
        def fail(msg: str) -> None:
            raise ConfigError(f"VAEConfig: {msg}")

        if self.decoder_type not in DECODER_TYPES:
            fail(f"decoder_type must be one of {DECODER_TYPES}, got {self.decoder_type!r}")
        if self.encoder_type not in ENCODER_TYPES:
            fail(f"encoder_type must be one of {ENCODER_TYPES}, got {self.encoder_type!r}")
        if self.encoder_type == "stft" and (self.istft_n_fft % self.hop or self.istft_n_fft < self.hop):
            fail("encoder_type='stft' needs istft_n_fft a multiple of the hop")
        if self.adversarial_loss not in ADVERSARIAL_LOSSES:
            fail(f"adversarial_loss must be one of {ADVERSARIAL_LOSSES}, got {self.adversarial_loss!r}")
        if math.prod(self.encoder_rates) != self.hop:
            fail(f"prod(encoder_rates) = {math.prod(self.encoder_rates)} != hop {self.hop}")
        if len(self.encoder_channels) != len(self.encoder_rates) + 1:
            fail("encoder_channels needs one width per resolution (len(encoder_rates) + 1)")
        if len(self.encoder_kernels) != len(self.encoder_rates):
            fail("encoder_kernels needs one kernel per encoder rate")
        if len(self.encoder_resblock_kernels) != len(self.encoder_resblock_dilations):
            fail("encoder_resblock_kernels and encoder_resblock_dilations differ in length")
        if len(self.resblock_kernels) != len(self.resblock_dilations):
            fail("resblock_kernels and resblock_dilations differ in length")
        if any(
            k % 2 == 0 for k in (*self.resblock_kernels, *self.encoder_resblock_kernels, self.conv_kernel)
        ):
            fail("resblock and pre/post conv kernels must be odd (symmetric 'same' padding)")
        if any(k < u for u, k in zip(self.encoder_rates, self.encoder_kernels)):
            fail("encoder_kernels must be >= their strides")
        if self.istft_phase_iters < 0 or self.spectral_weight < 0:
            fail("istft_phase_iters and spectral_weight must be >= 0")
        if self.phase_head not in PHASE_HEADS:
            fail(f"phase_head must be one of {PHASE_HEADS}, got {self.phase_head!r}")
        if self.istft_phase not in ISTFT_PHASES:
            fail(f"istft_phase must be one of {ISTFT_PHASES}, got {self.istft_phase!r}")
        if min(self.phase_blocks, self.phase_weight, self.ri_weight, self.consistency_weight) < 0:
            fail("phase_blocks, phase_weight, ri_weight and consistency_weight must be >= 0")
        if self.decoder_type == "hifigan":
            if math.prod(self.upsample_rates) != self.hop:
                fail(f"prod(upsample_rates) = {math.prod(self.upsample_rates)} != hop {self.hop}")
            if len(self.upsample_kernels) != len(self.upsample_rates):
                fail("upsample_kernels needs one kernel per upsample rate")
            if any(k < u for u, k in zip(self.upsample_rates, self.upsample_kernels)):
                fail("upsample_kernels must be >= their strides")
            if self.decoder_channels % 2 ** len(self.upsample_rates):
                fail("decoder_channels must halve evenly at every HiFi-GAN stage")
        elif self.istft_n_fft % self.hop or self.hop % 2 or self.convnext_kernel % 2 == 0:
            fail("istft needs n_fft a multiple of an even hop and an odd convnext_kernel")

    @classmethod
    def paper(cls) -> VAEConfig:
        """§5.1: encoder 256 ch, HiFi-GAN decoder 768 ch, ≈ 98.5M with discriminators (see class doc)."""
        return cls()

    @classmethod
    def tiny(cls) -> VAEConfig:
        """CPU preset (DESIGN §3b): 1.01M generator parameters (STFT encoder 0.30M, iSTFT decoder 0.70M).

        Decoder chosen by a short measurement on the 2-core dev machine (2 threads, shared with other
        jobs, load 4-6, so median / best of interleaved runs; scripts kept out of the repo):
        - decode 10 s (2500 frames): istft (160 ch, 4 ConvNeXt blocks, 0.70M) 140 / 71 ms;
          hifigan (128 ch, MRF 3x3, 0.85M) 2333 / 1583 ms; hifigan (128 ch, MRF 2x2, 0.39M) 1099 / 637 ms.
        - train step, batch 8 x 0.5 s, reconstruction + KL: istft 356 / 299 ms; hifigan 0.85M 2299 / 1934 ms.
        - train step with the GAN (D step + G step, MPD x0.125 + MRSD 8 ch): istft 5.5 / 2.3 s;
          hifigan 9.9 / 6.4 s — the discriminators dominate on CPU (the trainer's GAN warm-up,
          `train.vae.VAETraining.adversarial_start_step`).
        The iSTFT decoder is ~15x faster to decode and ~6x faster to train, so tiny uses it.
        """
        return cls(
            encoder_channels=(16, 32, 64, 128),
            encoder_rates=(4, 4, 6),
            encoder_kernels=(8, 8, 12),
            encoder_resblock_kernels=(),
            encoder_resblock_dilations=(),
            encoder_latent_blocks=2,
            # the frame-spectrum encoder and the head spectrum loss: see STFTEncoder and spectral_weight
            encoder_type="stft",
            spectral_weight=10.0,
            # 8 Griffin-Lim projections at inference: on 16 held-out corpus10 clips (this VAE after
            # 2650 steps) level -23.6 -> -16.7 dBFS against -18.1 for the originals; 32 adds ~0.2 dB
            istft_phase_iters=8,
            decoder_type="istft",
            decoder_channels=160,
            upsample_rates=(8, 6, 2),
            upsample_kernels=(16, 12, 4),
            resblock_kernels=(3, 7),
            resblock_dilations=((1, 3), (1, 3)),
            istft_blocks=4,
            disc_width=0.125,
            mrsd_channels=8,
        )


class VAEOutput(NamedTuple):
    """Result of `AudioVAE.forward`: recon (B, T); mean, logvar, z (B, L, D); log_mag and phase
    (B, L, F) of the iSTFT decoder's head (None for HiFi-GAN)."""

    recon: torch.Tensor
    mean: torch.Tensor
    logvar: torch.Tensor
    z: torch.Tensor
    log_mag: torch.Tensor | None = None
    phase: torch.Tensor | None = None


class AudioVAE(nn.Module):
    """KL-regularised audio autoencoder of the VAE-GAN (§4.1); the generator side only.

    - `encode(wav (B, T)) -> (mean, logvar)`, each (B, L, D), L = T // hop; T must be a multiple of hop.
    - `sample(mean, logvar, generator=None) -> z (B, L, D)`; `decode(z (B, L, D)) -> wav (B, L * hop)`.
    - `decode_chunk(z (B, n, D), left (B, l, D) | None, right (B, r, D) | None) -> (B, n * hop)`:
      equals `decode(full)[..., chunk]` to float precision when l, r >= `context_frames` (or when a
      None side is the true start/end of the sequence).
    - `forward(wav (B, T), latent_noise=0.0) -> VAEOutput(recon (B, T), mean, logvar, z)`; z is
      sampled in training mode (plus Gaussian noise of std up to `latent_noise` on the decoder's input,
      a trainer option) and equals the mean in eval mode.
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = STFTEncoder(config) if config.encoder_type == "stft" else MirrorEncoder(config)
        self.decoder: nn.Module = (
            HiFiGANDecoder(config) if config.decoder_type == "hifigan" else ISTFTDecoder(config)
        )

    @property
    def hop(self) -> int:
        return self.config.hop

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def frame_rate(self) -> float:
        """Latent frames per second (250 Hz)."""
        return self.config.sample_rate / self.config.hop

    @property
    def context_frames(self) -> int:
        """Latent frames of context per side for exact chunked decoding (decoder receptive field)."""
        return context_frames(self.decoder.time_ops(), self.config.hop)

    def num_parameters(self) -> int:
        """Generator-side parameters (encoder + decoder); discriminators: `vae_gan_parameter_count`."""
        return sum(p.numel() for p in self.parameters())

    def encode(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if wav.dim() != 2:
            raise ValueError(f"encode expects a (B, T) waveform, got shape {tuple(wav.shape)}")
        if wav.shape[-1] % self.hop:
            raise ValueError(
                f"waveform length {wav.shape[-1]} is not a multiple of the hop {self.hop}; pad it"
            )
        h = self.encoder(wav.unsqueeze(1))  # (B, 1, T) -> (B, L, 2D)
        mean, logvar = h.chunk(2, dim=-1)  # (B, L, D) each
        return mean, logvar.clamp(self.config.logvar_min, self.config.logvar_max)

    @staticmethod
    def sample(
        mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + torch.exp(0.5 * logvar) * noise  # reparameterisation

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)  # (B, L, D) -> (B, L * hop)

    def decode_chunk(
        self, z: torch.Tensor, left: torch.Tensor | None = None, right: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Decode `z` with latent context on both sides; None = no context (a true sequence edge)."""
        n_left = 0 if left is None else left.shape[1]
        parts = [p for p in (left, z, right) if p is not None]
        wav = self.decode(torch.cat(parts, dim=1))  # (B, (l + n + r) * hop)
        return wav[:, n_left * self.hop : (n_left + z.shape[1]) * self.hop]

    def forward(self, wav: torch.Tensor, latent_noise: float = 0.0) -> VAEOutput:
        mean, logvar = self.encode(wav)
        z = self.sample(mean, logvar) if self.training else mean
        z_in = z  # (B, L, D) what the decoder sees
        if self.training and latent_noise:  # per example, std ~ U(0, latent_noise)
            level = latent_noise * torch.rand(z.shape[0], 1, 1, device=z.device, dtype=z.dtype)
            z_in = z + level * torch.randn_like(z)
        if isinstance(self.decoder, ISTFTDecoder):
            log_mag, phase = self.decoder.spectrum(z_in)
            return VAEOutput(self.decoder.synthesize(log_mag, phase), mean, logvar, z, log_mag, phase)
        return VAEOutput(self.decode(z_in), mean, logvar, z)


def vae_gan_parameter_count(config: VAEConfig) -> dict[str, int]:
    """{'encoder', 'decoder', 'discriminators', 'total'} parameter counts, built on the meta device."""
    with torch.device("meta"):
        vae = AudioVAE(config)
        disc = VAEGANDiscriminator(config)

    def count(m: nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    counts = {"encoder": count(vae.encoder), "decoder": count(vae.decoder), "discriminators": count(disc)}
    counts["total"] = sum(counts.values())
    return counts
