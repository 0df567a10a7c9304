"""Phase from STFT magnitudes by phase-gradient integration (PGHI; Průša, Balazs & Søndergaard 2017,
"A noniterative method for reconstruction of phase from STFT magnitude"), in the iSTFT decoder's
frames (`melody_core.models._vae_blocks.frame_spectrum`: periodic Hann of n_fft samples, frame f
centred on sample f·hop + hop/2, phase referenced to the frame's first sample).

Phase gradients from the log-magnitude s (Gaussian-window relations, Hann approximated by a Gaussian
exp(−π t² / γ) with γ = 0.25645 · n_fft², PGHI §IV), with ψ the phase referenced to the window centre,
x the time in samples and ω the frequency in cycles per sample:
    ∂ψ/∂x = (1/γ) ∂s/∂ω + 2πω          (instantaneous frequency, rad / sample)
    ∂ψ/∂ω = −γ ∂s/∂x                    (group delay term, rad per cycle/sample)
derived from the analyticity of the Gaussian STFT (Bargmann transform). The frame phase is
ψ + π·k for bin k (frame-start reference, n_fft even).

*(our choice: a known vectorised approximation of the heap)* PGHI visits bins in the order of a
max-heap over the whole frame train; a Python heap is far too slow here. This follows its real-time
variant (RTPGHI, Průša & Holighaus 2017: one frame at a time, integrating from the previous frame)
with the in-frame heap replaced by peak locking (as Laroche & Dolson's identity phase locking): per
frame, the local magnitude peaks above the tolerance take the phase integrated along time from the
previous frame (trapezoid rule on ∂ψ/∂x), and every other bin takes its nearest peak's phase plus
the integral of ∂ψ/∂ω along frequency from that peak (trapezoid rule, one cumulative sum per frame).
Bins below `tol` · (largest magnitude) integrate along time only. The only Python loop is over frames
(vectorised over batch and bins). The absolute phase of each partial is not in the magnitudes: it
starts at 0 at the first frame's centre, so SI-SDR against an original depends on the original's
phase offsets (tests/test_pghi.py states the figures).
"""

from __future__ import annotations

import math

import torch

HANN_GAMMA = 0.25645  # γ / n_fft² of the Gaussian matching a Hann window (Průša et al. 2017, Table I)
DEFAULT_TOL = 1e-5  # bins below tol · max magnitude are not phase-locked (PGHI's tolerance, −100 dB)
LOG_FLOOR = 1e-10  # added before the log of the magnitude


def _centred_diff(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Centred first difference along `dim` (one-sided at the two ends); same shape as x."""
    n = x.shape[dim]
    if n < 2:
        return torch.zeros_like(x)
    d = torch.empty_like(x)
    d.narrow(dim, 1, n - 2).copy_((x.narrow(dim, 2, n - 2) - x.narrow(dim, 0, n - 2)) / 2)
    d.narrow(dim, 0, 1).copy_(x.narrow(dim, 1, 1) - x.narrow(dim, 0, 1))
    d.narrow(dim, n - 1, 1).copy_(x.narrow(dim, n - 1, 1) - x.narrow(dim, n - 2, 1))
    return d


def phase_gradients(mag: torch.Tensor, n_fft: int, hop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L, F) magnitudes -> (time derivative in rad / frame, frequency derivative in rad / bin)
    of the window-centred phase ψ, each (B, L, F) (module docstring)."""
    gamma = HANN_GAMMA * n_fft**2
    s = torch.log(mag + LOG_FLOOR)  # (B, L, F)
    k = torch.arange(mag.shape[-1], device=mag.device, dtype=mag.dtype)
    ds_dw = _centred_diff(s, -1) * n_fft  # ∂s/∂ω with ω = k / n_fft
    dpsi_dx = ds_dw / gamma + 2 * math.pi * k / n_fft  # rad / sample
    ds_dx = _centred_diff(s, 1) / hop  # ∂s/∂x, x in samples
    dpsi_dw = -gamma * ds_dx  # rad per (cycle / sample)
    return dpsi_dx * hop, dpsi_dw / n_fft


def pghi_phase(mag: torch.Tensor, n_fft: int, hop: int, tol: float = DEFAULT_TOL) -> torch.Tensor:
    """(B, L, F) STFT magnitudes (frame_spectrum's frames) -> (B, L, F) phases (module docstring)."""
    if mag.dim() != 3 or mag.shape[-1] != n_fft // 2 + 1:
        raise ValueError(f"pghi_phase expects (B, L, {n_fft // 2 + 1}) magnitudes, got {tuple(mag.shape)}")
    mag = mag.detach()
    b, n_frames, n_bins = mag.shape
    dt, dw = phase_gradients(mag, n_fft, hop)  # (B, L, F) each
    # frequency integral per frame, trapezoid: cum[k] = Σ_{j<k} (dw[j] + dw[j+1]) / 2
    steps = (dw[..., 1:] + dw[..., :-1]) / 2  # (B, L, F - 1)
    cum = torch.cat([torch.zeros_like(dw[..., :1]), steps.cumsum(-1)], dim=-1)  # (B, L, F)
    # local peaks above the tolerance (relative to each signal's largest magnitude)
    floor = tol * mag.amax(dim=(1, 2), keepdim=True)  # (B, 1, 1)
    left = torch.nn.functional.pad(mag[..., :-1], (1, 0), value=-1.0)
    right = torch.nn.functional.pad(mag[..., 1:], (0, 1), value=-1.0)
    peak = (mag >= left) & (mag > right) & (mag > floor)  # (B, L, F)
    loud = mag > floor
    # nearest peak of every bin (ties to the left), by cumulative max / min over bin indices
    idx = torch.arange(n_bins, device=mag.device).expand(b, n_frames, n_bins)
    big = 2 * n_bins
    prev_peak = torch.where(peak, idx, torch.full_like(idx, -big)).cummax(-1).values
    next_peak = torch.where(peak, idx, torch.full_like(idx, 2 * big)).flip(-1).cummin(-1).values.flip(-1)
    nearest = torch.where(idx - prev_peak <= next_peak - idx, prev_peak, next_peak)  # (B, L, F)
    has_peak = peak.any(-1, keepdim=True)  # (B, L, 1)
    nearest = nearest.clamp(0, n_bins - 1)
    psi = torch.empty_like(mag)
    prev = torch.zeros_like(mag[:, 0])  # (B, F): the phase at the first frame starts from 0
    prev_dt = dt[:, 0]
    for f in range(n_frames):
        along_time = prev + (prev_dt + dt[:, f]) / 2  # (B, F)
        if f == 0:
            along_time = torch.zeros_like(along_time)
        locked = along_time.gather(-1, nearest[:, f]) + cum[:, f] - cum[:, f].gather(-1, nearest[:, f])
        cur = torch.where(loud[:, f] & has_peak[:, f], locked, along_time)
        psi[:, f] = cur
        prev, prev_dt = cur, dt[:, f]
    k = torch.arange(n_bins, device=mag.device, dtype=mag.dtype)
    return torch.remainder(psi + math.pi * k + math.pi, 2 * math.pi) - math.pi  # frame-start reference


__all__ = ["HANN_GAMMA", "pghi_phase", "phase_gradients"]
