"""Spectral features on torch.stft (no torchaudio): STFT magnitudes, mel filterbanks, log-mel,
multi-resolution STFT loss, multi-resolution mel distance and SI-SDR.

All functions take waveforms shaped (B, T) or (T,) at any sample rate (default 24 kHz).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from melody_core import SAMPLE_RATE

# (n_fft, hop, win) triples. DESIGN §3b measures mel distance on three resolutions.
DEFAULT_RESOLUTIONS: tuple[tuple[int, int, int], ...] = (
    (512, 128, 512),
    (1024, 256, 1024),
    (2048, 512, 2048),
)


def hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    """Slaney-style mel scale (linear below 1 kHz, log above), as librosa's default."""
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, math.log(6.4) / 27.0
    lin = f / f_sp
    log_part = min_log_mel + torch.log(f.clamp(min=1e-9) / min_log_hz) / logstep
    return torch.where(f >= min_log_hz, log_part, lin)


def mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, math.log(6.4) / 27.0
    return torch.where(m >= min_log_mel, min_log_hz * torch.exp(logstep * (m - min_log_mel)), f_sp * m)


@lru_cache(maxsize=32)
def _mel_fb_cached(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> torch.Tensor:
    n_freqs = n_fft // 2 + 1
    cpu = dict(dtype=torch.float64, device="cpu")  # explicit: safe under a meta/cuda device context
    freqs = torch.linspace(0, sample_rate / 2, n_freqs, **cpu)
    m_lo, m_hi = hz_to_mel(torch.tensor([f_min, f_max], **cpu)).tolist()
    m_pts = torch.linspace(m_lo, m_hi, n_mels + 2, **cpu)
    f_pts = mel_to_hz(m_pts)  # (n_mels + 2,)
    f_diff = f_pts[1:] - f_pts[:-1]  # (n_mels + 1,)
    slopes = f_pts.unsqueeze(0) - freqs.unsqueeze(1)  # (n_freqs, n_mels + 2)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    fb = torch.clamp(torch.minimum(down, up), min=0.0)  # (n_freqs, n_mels)
    enorm = 2.0 / (f_pts[2 : n_mels + 2] - f_pts[:n_mels])  # Slaney area normalisation
    return (fb * enorm.unsqueeze(0)).to(torch.float32)


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0, f_max: float | None = None
) -> torch.Tensor:
    """Triangular mel filterbank (n_fft // 2 + 1, n_mels)."""
    f_max = sample_rate / 2 if f_max is None else f_max
    return _mel_fb_cached(sample_rate, n_fft, n_mels, float(f_min), float(f_max)).clone()


def stft_magnitude(wav: torch.Tensor, n_fft: int, hop: int, win: int | None = None) -> torch.Tensor:
    """(B, T) -> (B, n_fft // 2 + 1, frames) magnitude, Hann window, centred."""
    win = win or n_fft
    if wav.dim() == 1:
        wav = wav.unsqueeze(0)
    window = torch.hann_window(win, device=wav.device, dtype=wav.dtype)
    spec = torch.stft(wav, n_fft, hop, win, window=window, center=True, return_complex=True)
    return spec.abs()


class MelSpectrogram(nn.Module):
    """(B, T) waveform -> (B, n_mels, frames) log-mel (natural log of clamped power or magnitude)."""

    def __init__(
        self,
        sample_rate: int = SAMPLE_RATE,
        n_fft: int = 1024,
        hop: int = 240,
        n_mels: int = 64,
        f_min: float = 0.0,
        f_max: float | None = None,
        power: float = 2.0,
        log_floor: float = 1e-5,
    ) -> None:
        super().__init__()
        self.n_fft, self.hop, self.power, self.log_floor = n_fft, hop, power, log_floor
        self.register_buffer("fb", mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        mag = stft_magnitude(wav.float(), self.n_fft, self.hop)  # (B, F, N)
        mel = torch.matmul(mag.pow(self.power).transpose(1, 2), self.fb).transpose(1, 2)  # (B, n_mels, N)
        return torch.log(mel.clamp(min=self.log_floor))


def multi_resolution_stft_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    resolutions: Sequence[tuple[int, int, int]] = DEFAULT_RESOLUTIONS,
    eps: float = 1e-7,
) -> torch.Tensor:
    """Spectral convergence + log-magnitude L1, averaged over resolutions (Parallel WaveGAN)."""
    total = pred.new_zeros(())
    for n_fft, hop, win in resolutions:
        p = stft_magnitude(pred, n_fft, hop, win)
        t = stft_magnitude(target, n_fft, hop, win)
        sc = torch.linalg.vector_norm(t - p, dim=(-2, -1)) / torch.linalg.vector_norm(t, dim=(-2, -1)).clamp(
            min=eps
        )
        mag = F.l1_loss(torch.log(p.clamp(min=eps)), torch.log(t.clamp(min=eps)))
        total = total + sc.mean() + mag
    return total / len(resolutions)


def mel_distance(
    pred: torch.Tensor,
    target: torch.Tensor,
    sample_rate: int = SAMPLE_RATE,
    resolutions: Sequence[tuple[int, int, int]] = DEFAULT_RESOLUTIONS,
    n_mels: int = 80,
    floor: float = 1e-5,
) -> torch.Tensor:
    """Multi-resolution mel distance: mean L1 of log10 mel magnitude over resolutions (DESIGN §3b)."""
    total = pred.new_zeros(())
    for n_fft, hop, win in resolutions:
        fb = mel_filterbank(sample_rate, n_fft, n_mels).to(pred.device, pred.dtype)
        p = torch.matmul(stft_magnitude(pred, n_fft, hop, win).transpose(1, 2), fb)  # (B, N, n_mels)
        t = torch.matmul(stft_magnitude(target, n_fft, hop, win).transpose(1, 2), fb)
        total = total + F.l1_loss(torch.log10(p.clamp(min=floor)), torch.log10(t.clamp(min=floor)))
    return total / len(resolutions)


def si_sdr(estimate: torch.Tensor, reference: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SDR in dB per item: (B, T), (B, T) -> (B,)."""
    if estimate.dim() == 1:
        estimate, reference = estimate.unsqueeze(0), reference.unsqueeze(0)
    estimate = estimate - estimate.mean(dim=-1, keepdim=True)
    reference = reference - reference.mean(dim=-1, keepdim=True)
    alpha = (estimate * reference).sum(-1, keepdim=True) / (reference.pow(2).sum(-1, keepdim=True) + eps)
    target = alpha * reference
    noise = estimate - target
    return 10 * torch.log10((target.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps))
