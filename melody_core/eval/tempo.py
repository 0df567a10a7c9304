"""Tempo of a waveform (prompt-control metric: the BPM heard vs the BPM asked for).

*(our choice, the paper has no tempo metric)* A global-tempo estimator in the usual shape
(autocorrelation of an onset envelope weighted by a tempo prior, as in librosa's `beat.tempo`):
1. Onset envelope: the spectral flux of `metrics.spectral_flux` (half-wave rectified rise of
   compressed log magnitude, summed over bins) at ~200 frames/s with a ~40 ms window, mean removed.
2. Autocorrelation over the lags of [min_bpm, max_bpm], each multiplied by a log-normal prior
   around 120 BPM with a one-octave standard deviation, which settles octave ambiguities
   (a pattern with hats on the 8ths also repeats at twice the beat rate) toward common tempi.
3. Sub-frame period: parabolic interpolation of the autocorrelation peak, then refined on the
   peaks at 2, 3, ... times that lag (the k-th peak pins the period k times more finely), as long
   as each stays a clear peak (>= HARMONIC_KEEP of the first one).
`tempo_error` scores an estimate the MIREX way: Accuracy1 = within 4 % of the asked tempo,
Accuracy2 = within 4 % of it, its half or its double (octave errors forgiven).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from melody_core.eval.metrics import spectral_flux

ONSET_RATE_HZ = 200.0  # target frame rate of the onset envelope
ONSET_WINDOW_S = 0.04  # STFT window of the onset envelope (rounded to a power of two)
PRIOR_BPM = 120.0  # centre of the log-normal tempo prior
PRIOR_OCTAVES = 1.0  # its standard deviation in octaves
HARMONIC_KEEP = 0.5  # refine on the peak at k x lag while it is >= this x the first peak
MAX_HARMONIC = 8  # highest multiple of the lag used for refinement
ACCURACY_TOLERANCE = 0.04  # Accuracy1/2 tolerance (relative), MIREX tempo convention


def onset_strength(wav: Tensor, sample_rate: int) -> tuple[Tensor, float]:
    """(T,) waveform -> (onset envelope (n_frames,) float64, frame rate in Hz): the spectral flux
    with a ~ONSET_WINDOW_S window at ~ONSET_RATE_HZ frames per second."""
    n_fft = 2 ** max(4, round(math.log2(ONSET_WINDOW_S * sample_rate)))
    hop = max(1, round(sample_rate / ONSET_RATE_HZ))
    return spectral_flux(wav, sample_rate, n_fft=n_fft, hop=hop)


def _autocorrelation(x: Tensor) -> Tensor:
    """(N,) -> (N,) biased autocorrelation sum_t x[t] x[t + lag] (FFT, float64)."""
    n = len(x)
    size = 1 << (2 * n - 1).bit_length()
    spec = torch.fft.rfft(x.double(), size)
    return torch.fft.irfft(spec.abs().pow(2), size)[:n]


def _parabolic_peak(y: Tensor, i: int) -> float:
    """Sub-sample position of the peak of y near index i (vertex of the parabola through i-1, i, i+1)."""
    if i <= 0 or i >= len(y) - 1:
        return float(i)
    a, b, c = float(y[i - 1]), float(y[i]), float(y[i + 1])
    denom = a - 2 * b + c
    if denom >= 0:  # not a strict maximum
        return float(i)
    return i + 0.5 * (a - c) / denom


def _prior(bpm: Tensor) -> Tensor:
    return torch.exp(-0.5 * (torch.log2(bpm / PRIOR_BPM) / PRIOR_OCTAVES) ** 2)


def estimate_bpm(wav: Tensor, sample_rate: int, min_bpm: float = 40.0, max_bpm: float = 240.0) -> float:
    """Global tempo of a (T,) waveform in BPM, in [min_bpm, max_bpm] (method: module docstring).

    Returns NaN when there are no onsets (silence, a steady tone); raises ValueError when the clip
    is too short to hold two beats at min_bpm.
    """
    if not 0 < min_bpm < max_bpm:
        raise ValueError(f"need 0 < min_bpm < max_bpm, got {min_bpm}, {max_bpm}")
    env, rate = onset_strength(wav, sample_rate)
    env = env - env.mean()
    acf = _autocorrelation(env)  # (n_frames,)
    lo = max(1, math.floor(60 * rate / max_bpm))
    hi = math.ceil(60 * rate / min_bpm)
    if hi >= len(acf) // 2:
        raise ValueError(f"clip too short for tempo estimation down to {min_bpm:g} BPM: need at least "
                         f"{2 * 60 / min_bpm:.1f} s, got {wav.shape[-1] / sample_rate:.2f} s")
    lags = torch.arange(lo, hi + 1, dtype=torch.float64)  # (n_lags,)
    score = acf[lo : hi + 1] * _prior(60 * rate / lags)
    best = int(score.argmax())
    if not float(acf[lo + best]) > 0:
        return math.nan
    lag = _parabolic_peak(acf, lo + best)
    period, peak = lag, float(acf[lo + best])
    for k in range(2, MAX_HARMONIC + 1):  # refine on the peaks at k x lag
        centre = round(k * period)
        if centre + k + 1 >= len(acf) // 2:
            break
        lo_k = max(centre - k, 1)
        i = lo_k + int(acf[lo_k : centre + k + 1].argmax())
        if float(acf[i]) < HARMONIC_KEEP * peak:
            break
        period = _parabolic_peak(acf, i) / k
    return min(max(60 * rate / period, min_bpm), max_bpm)


def tempo_error(estimated: float, asked: float, tolerance: float = ACCURACY_TOLERANCE) -> dict[str, Any]:
    """{"abs_error" (BPM), "rel_error", "accuracy1" (within `tolerance` of asked), "accuracy2"
    (within `tolerance` of asked, asked / 2 or 2 x asked)}; a NaN estimate is never accurate."""
    if not asked > 0:
        raise ValueError(f"asked tempo must be > 0, got {asked}")
    err = abs(estimated - asked)

    def near(target: float) -> bool:
        return abs(estimated - target) <= tolerance * target

    return {"abs_error": err, "rel_error": err / asked, "accuracy1": near(asked),
            "accuracy2": near(asked) or near(asked / 2) or near(asked * 2)}


__all__ = ["estimate_bpm", "onset_strength", "tempo_error"]
