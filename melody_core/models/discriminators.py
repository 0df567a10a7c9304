"""Discriminators of the audio VAE-GAN (§4.1): HiFi-GAN's multi-period discriminator (MPD) and
UnivNet's multi-resolution spectrogram discriminator (MRSD).

Every discriminator maps a waveform (B, T) to `(logits, fmaps)`: a list of logit tensors (one per
sub-discriminator, each (B, N_k)) and a list (per sub-discriminator) of lists of feature maps for
feature matching. Losses are plain functions in `gan_losses.py`.

Weight normalisation (as in both papers) is used here: discriminators never go into an inference
bundle, so their parametrised state_dict keys are harmless.
*(our choice)*: the MRSD spectrogram is laid out (B, 1, freq, frames) and strided along frames, and
the MPD's HiFi-GAN channel plan scales with a `disc_width` multiplier (tiny preset); the MRSD has its
own `mrsd_channels`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from melody_core.audio.features import stft_magnitude


class DiscriminatorConfig(Protocol):
    """The `VAEConfig` fields the discriminators read (a Protocol: vae_gan imports this module)."""

    disc_width: float
    mpd_periods: tuple[int, ...]
    mpd_channels: tuple[int, ...]
    mpd_kernel: int
    mpd_stride: int
    leaky_slope: float
    mrsd_resolutions: tuple[tuple[int, int, int], ...]
    mrsd_channels: int

DiscOutput = tuple[list[torch.Tensor], list[list[torch.Tensor]]]

POST_KERNEL = 3  # kernel of both discriminators' output convs (HiFi-GAN / UnivNet)
MRSD_KERNEL = (3, 9)  # UnivNet MRSD kernel (freq, frames)
MRSD_STRIDE = (1, 2)  # UnivNet MRSD stride of the middle convs
MRSD_STRIDED_LAYERS = 3  # UnivNet: three strided convs between the first and the last 3x3 conv


def scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


class PeriodDiscriminator(nn.Module):
    """HiFi-GAN DiscriminatorP: fold (B, T) to (B, 1, T/p, p), (k, 1) 2-D convs -> (logits (B, N), fmaps)."""

    def __init__(self, period: int, channels: Sequence[int], kernel: int, stride: int, slope: float) -> None:
        super().__init__()
        self.period, self.slope = period, slope
        pad = (kernel - 1) // 2
        c_in = [1, *channels[:-1]]
        strides = [stride] * (len(channels) - 1) + [1]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(i, o, (kernel, 1), (s, 1), padding=(pad, 0)))
            for i, o, s in zip(c_in, channels, strides)
        )
        self.post = weight_norm(
            nn.Conv2d(channels[-1], 1, (POST_KERNEL, 1), padding=((POST_KERNEL - 1) // 2, 0))
        )

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, t = wav.shape
        if t % self.period:
            wav = F.pad(wav.unsqueeze(1), (0, self.period - t % self.period), mode="reflect").squeeze(1)
        x = wav.view(b, 1, -1, self.period)  # (B, T) -> (B, 1, T / p, p)
        fmaps = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), self.slope)
            fmaps.append(x)
        x = self.post(x)
        fmaps.append(x)
        return x.flatten(1), fmaps  # (B, 1, T', p) -> (B, T' * p)


class MultiPeriodDiscriminator(nn.Module):
    """HiFi-GAN MPD: one `PeriodDiscriminator` per period. wav (B, T) -> (logits, fmaps)."""

    def __init__(
        self, periods: Sequence[int], channels: Sequence[int], kernel: int, stride: int, slope: float
    ) -> None:
        super().__init__()
        self.discs = nn.ModuleList(PeriodDiscriminator(p, channels, kernel, stride, slope) for p in periods)

    def forward(self, wav: torch.Tensor) -> DiscOutput:
        outs = [d(wav) for d in self.discs]
        return [o[0] for o in outs], [o[1] for o in outs]


class SpectrogramDiscriminator(nn.Module):
    """UnivNet DiscriminatorR on one STFT resolution's linear magnitude. wav (B, T) -> (logits, fmaps)."""

    def __init__(self, resolution: tuple[int, int, int], channels: int, slope: float) -> None:
        super().__init__()
        self.resolution, self.slope = resolution, slope
        pad = tuple((k - 1) // 2 for k in MRSD_KERNEL)
        post_pad = (POST_KERNEL - 1) // 2
        layers = [nn.Conv2d(1, channels, MRSD_KERNEL, padding=pad)]
        layers += [
            nn.Conv2d(channels, channels, MRSD_KERNEL, MRSD_STRIDE, padding=pad)
            for _ in range(MRSD_STRIDED_LAYERS)
        ]
        layers.append(nn.Conv2d(channels, channels, POST_KERNEL, padding=post_pad))
        self.convs = nn.ModuleList(weight_norm(c) for c in layers)
        self.post = weight_norm(nn.Conv2d(channels, 1, POST_KERNEL, padding=post_pad))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        n_fft, hop, win = self.resolution
        x = stft_magnitude(wav, n_fft, hop, win).unsqueeze(1)  # (B, F, N) -> (B, 1, F, N)
        fmaps = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), self.slope)
            fmaps.append(x)
        x = self.post(x)
        fmaps.append(x)
        return x.flatten(1), fmaps  # (B, 1, F, N') -> (B, F * N')


class MultiResolutionSpectrogramDiscriminator(nn.Module):
    """UnivNet MRSD: one `SpectrogramDiscriminator` per (n_fft, hop, win). wav (B, T) -> (logits, fmaps)."""

    def __init__(self, resolutions: Sequence[tuple[int, int, int]], channels: int, slope: float) -> None:
        super().__init__()
        self.discs = nn.ModuleList(SpectrogramDiscriminator(tuple(r), channels, slope) for r in resolutions)

    def forward(self, wav: torch.Tensor) -> DiscOutput:
        outs = [d(wav) for d in self.discs]
        return [o[0] for o in outs], [o[1] for o in outs]


class VAEGANDiscriminator(nn.Module):
    """MPD + MRSD of the VAE-GAN (§4.1). wav (B, T) -> (logits: list of (B, N_k), fmaps: list of lists).

    The MPD's sub-discriminators come first, then the MRSD's (len = periods + resolutions).
    """

    def __init__(self, config: DiscriminatorConfig) -> None:
        super().__init__()
        w = config.disc_width
        self.mpd = MultiPeriodDiscriminator(
            config.mpd_periods,
            [scaled(c, w) for c in config.mpd_channels],
            config.mpd_kernel,
            config.mpd_stride,
            config.leaky_slope,
        )
        self.mrsd = MultiResolutionSpectrogramDiscriminator(
            config.mrsd_resolutions, config.mrsd_channels, config.leaky_slope
        )

    def forward(self, wav: torch.Tensor) -> DiscOutput:
        logits_p, fmaps_p = self.mpd(wav)
        logits_r, fmaps_r = self.mrsd(wav)
        return logits_p + logits_r, fmaps_p + fmaps_r
