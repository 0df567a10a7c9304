"""Phase losses of the learned-phase iSTFT decoder (APNet, Ai & Ling 2023, §3.3), as plain functions.

All spectra are in the iSTFT decoder's own frames (`_vae_blocks.frame_spectrum`): phases and
log-magnitudes are (B, L, F), L frames at 250 Hz, F = n_fft // 2 + 1 bins.

- Anti-wrapping function f_AW(x) = |x − 2π·round(x / 2π)| (APNet Eq. 6): the distance of a phase
  difference to the nearest multiple of 2π, so a loss built on it is zero for the true phase and
  unchanged when any phase moves by a multiple of 2π.
- Instantaneous phase (IP) loss: mean f_AW(φ̂ − φ) (APNet Eq. 7).
- Group delay (GD) loss: mean f_AW(Δ_F φ̂ − Δ_F φ), Δ_F the difference along frequency (Eq. 8).
- Instantaneous angular frequency (IAF) loss: mean f_AW(Δ_T φ̂ − Δ_T φ), Δ_T along time (Eq. 9).
- Real/imaginary loss: L1 of the real and imaginary parts of the predicted spectrum to the target's.
- STFT consistency loss (APNet's L_C): the predicted spectrum against the spectrum of its own
  inverse STFT, re-analysed; zero for any spectrum that some waveform has.

*(our choice)*: the real/imaginary and consistency terms use L1 of the parts (APNet: squared error),
as the corpus's linear magnitudes reach ~100 and squared errors of loud bins would swamp the rest;
the consistency term skips the n_fft / hop frames at each end, where the decoder's overlap-add
lacks the frames outside the crop (there even a true spectrum is not reproduced).
"""

from __future__ import annotations

import math

import torch

from melody_core.models._vae_blocks import frame_spectrum, overlap_add

TWO_PI = 2.0 * math.pi


def anti_wrap(x: torch.Tensor) -> torch.Tensor:
    """f_AW(x) = |x − 2π·round(x / 2π)| elementwise, in [0, π] (APNet Eq. 6)."""
    return (x - TWO_PI * torch.round(x / TWO_PI)).abs()


def instantaneous_phase_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, L, F), (B, L, F) phases -> scalar mean f_AW(pred − target)."""
    return anti_wrap(pred - target).mean()


def group_delay_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Anti-wrapped L1 of the phase differences along frequency (last axis) -> scalar."""
    return anti_wrap(torch.diff(pred, dim=-1) - torch.diff(target, dim=-1)).mean()


def instantaneous_frequency_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Anti-wrapped L1 of the phase differences along time (frame axis 1) -> scalar."""
    return anti_wrap(torch.diff(pred, dim=1) - torch.diff(target, dim=1)).mean()


def phase_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IP + GD + IAF losses (APNet's L_P, equal weights) -> scalar."""
    return (
        instantaneous_phase_loss(pred, target)
        + group_delay_loss(pred, target)
        + instantaneous_frequency_loss(pred, target)
    )


def real_imag_loss(log_mag: torch.Tensor, phase: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, L, F) log-magnitude and phase vs (B, L, F) complex target -> L1 of real + imaginary parts."""
    spec = torch.polar(log_mag.exp(), phase)
    return (spec.real - target.real).abs().mean() + (spec.imag - target.imag).abs().mean()


def consistency_loss(log_mag: torch.Tensor, phase: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """STFT consistency (APNet's L_C, L1 of the parts): spectrum S = polar(exp(log_mag), phase) (B, L, F)
    vs frame_spectrum(overlap_add(irfft(S))), the decoder's own inverse STFT re-analysed. Frames within
    n_fft // hop of either end are skipped (module docstring) -> scalar."""
    spec = torch.polar(log_mag.exp(), phase)  # (B, L, F)
    wav = overlap_add(torch.fft.irfft(spec, n=n_fft, dim=-1), hop)  # (B, L * hop)
    back = frame_spectrum(wav, n_fft, hop)  # (B, L, F)
    m = n_fft // hop
    if spec.shape[1] <= 2 * m:
        raise ValueError(f"consistency_loss needs more than {2 * m} frames, got {spec.shape[1]}")
    diff = (spec - back)[:, m:-m]
    return diff.real.abs().mean() + diff.imag.abs().mean()


__all__ = [
    "anti_wrap",
    "consistency_loss",
    "group_delay_loss",
    "instantaneous_frequency_loss",
    "instantaneous_phase_loss",
    "phase_loss",
    "real_imag_loss",
]
