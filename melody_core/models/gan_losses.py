"""Losses of the audio VAE-GAN (§4.1) as plain functions.

- Reconstruction: multi-resolution STFT loss (spectral convergence + log-magnitude L1) plus the
  multi-resolution log10-mel L1 (`melody_core.audio.features`).
- KL to N(0, I) of the encoder's diagonal Gaussian (LDM's KL-regularised autoencoder).
- Adversarial: hinge or least-squares (LSGAN, HiFi-GAN's choice), summed over sub-discriminators.
- Feature matching (HiFi-GAN): L1 between real and fake discriminator features, summed over layers.

Discriminator outputs are `(logits, fmaps)` as returned by `melody_core.models.discriminators`.
*(our choice)*: KL is averaged per latent element (independent of crop length and batch), so its
weight reads as a per-element penalty; hinge is the default (UnivNet/most recent codecs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from melody_core import SAMPLE_RATE
from melody_core.audio.features import mel_distance, multi_resolution_stft_loss
from melody_core.models._vae_blocks import SPECTRUM_FLOOR, frame_spectrum
from melody_core.models.phase_losses import consistency_loss, phase_loss, real_imag_loss
from melody_core.models.vae_gan import VAEConfig, VAEOutput

Logits = Sequence[torch.Tensor]
FeatureMaps = Sequence[Sequence[torch.Tensor]]


def reconstruction_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    stft_weight: float = 1.0,
    mel_weight: float = 1.0,
    sample_rate: int = SAMPLE_RATE,
) -> torch.Tensor:
    """stft_weight · MR-STFT(pred, target) + mel_weight · MR log10-mel L1; (B, T), (B, T) -> scalar."""
    stft = multi_resolution_stft_loss(pred, target)
    mel = mel_distance(pred, target, sample_rate=sample_rate)
    return stft_weight * stft + mel_weight * mel


def head_spectrum_loss(log_mag: torch.Tensor, target: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """Mean L1 between the iSTFT head's log-magnitude (B, L, F) and the log-magnitude of the target
    waveform (B, L * hop) analysed in the decoder's own frames, both floored at SPECTRUM_FLOOR -> scalar."""
    floor = math.log(SPECTRUM_FLOOR)
    ref = frame_spectrum(target, n_fft, hop).abs().clamp(min=SPECTRUM_FLOOR).log()  # (B, L, F)
    return F.l1_loss(log_mag.clamp(min=floor), ref)


def kl_loss(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)), averaged over all latent elements -> scalar."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()


def discriminator_adversarial_loss(real: Logits, fake: Logits, kind: str = "hinge") -> torch.Tensor:
    """Discriminator side, summed over sub-discriminators (fake logits from detached audio) -> scalar."""
    total = real[0].new_zeros(())
    for r, f in zip(real, fake):
        if kind == "hinge":
            total = total + F.relu(1.0 - r).mean() + F.relu(1.0 + f).mean()
        elif kind == "lsgan":
            total = total + (1.0 - r).pow(2).mean() + f.pow(2).mean()
        else:
            raise ValueError(f"unknown adversarial loss {kind!r}")
    return total


def generator_adversarial_loss(fake: Logits, kind: str = "hinge") -> torch.Tensor:
    """Generator side, summed over sub-discriminators -> scalar."""
    total = fake[0].new_zeros(())
    for f in fake:
        if kind == "hinge":
            total = total - f.mean()
        elif kind == "lsgan":
            total = total + (1.0 - f).pow(2).mean()
        else:
            raise ValueError(f"unknown adversarial loss {kind!r}")
    return total


def feature_matching_loss(real: FeatureMaps, fake: FeatureMaps) -> torch.Tensor:
    """HiFi-GAN feature matching: sum over sub-discriminators and layers of L1(fake, real.detach())."""
    total = fake[0][0].new_zeros(())
    for real_maps, fake_maps in zip(real, fake):
        for r, f in zip(real_maps, fake_maps):
            total = total + F.l1_loss(f, r.detach())
    return total


def generator_loss_terms(
    out: VAEOutput,
    target: torch.Tensor,
    config: VAEConfig,
    disc_real: tuple[Logits, FeatureMaps] | None = None,
    disc_fake: tuple[Logits, FeatureMaps] | None = None,
) -> dict[str, torch.Tensor]:
    """Weighted generator-side terms and their sum under 'total'.

    `disc_real` / `disc_fake` are the discriminator outputs on the real and reconstructed audio; leave
    them None for the reconstruction-only warm-up (then 'adv' and 'fm' are absent).
    """
    terms = {
        "stft": config.stft_weight * multi_resolution_stft_loss(out.recon, target),
        "mel": config.mel_weight * mel_distance(out.recon, target, sample_rate=config.sample_rate),
        "kl": config.kl_weight * kl_loss(out.mean, out.logvar),
    }
    if config.spectral_weight and out.log_mag is not None:
        terms["spec"] = config.spectral_weight * head_spectrum_loss(
            out.log_mag, target, config.istft_n_fft, config.hop
        )
    if out.log_mag is not None and out.phase is not None:
        terms.update(phase_terms(out.log_mag, out.phase, target, config))
    if disc_real is not None and disc_fake is not None:
        terms["adv"] = config.adv_weight * generator_adversarial_loss(disc_fake[0], config.adversarial_loss)
        terms["fm"] = config.fm_weight * feature_matching_loss(disc_real[1], disc_fake[1])
    terms["total"] = sum(terms.values())
    return terms


def phase_terms(
    log_mag: torch.Tensor, phase: torch.Tensor, target: torch.Tensor, config: VAEConfig
) -> dict[str, torch.Tensor]:
    """Weighted APNet terms of an iSTFT head's (B, L, F) log-magnitude and phase against the target
    waveform (B, L * hop) analysed in the decoder's frames: 'phase' (IP + GD + IAF), 'ri' (real and
    imaginary parts), 'cons' (STFT consistency); a term with weight 0 is absent."""
    terms: dict[str, torch.Tensor] = {}
    if not (config.phase_weight or config.ri_weight or config.consistency_weight):
        return terms
    n_fft, hop = config.istft_n_fft, config.hop
    spec = frame_spectrum(target, n_fft, hop)  # (B, L, F)
    if config.phase_weight:
        terms["phase"] = config.phase_weight * phase_loss(phase, spec.angle())
    if config.ri_weight:
        terms["ri"] = config.ri_weight * real_imag_loss(log_mag, phase, spec)
    if config.consistency_weight:
        terms["cons"] = config.consistency_weight * consistency_loss(log_mag, phase, n_fft, hop)
    return terms


def discriminator_loss(
    disc_real: tuple[Logits, FeatureMaps], disc_fake: tuple[Logits, FeatureMaps], config: VAEConfig
) -> torch.Tensor:
    """Discriminator objective from its outputs on real and detached reconstructed audio -> scalar."""
    return discriminator_adversarial_loss(disc_real[0], disc_fake[0], config.adversarial_loss)
