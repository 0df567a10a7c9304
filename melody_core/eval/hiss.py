"""Broadband hiss in sustained notes: spectral flatness between the harmonics (issue 16, "Sound").

*(our choice, the paper has no such metric)* The complaint about the first default model was hiss:
a noise floor that fills the gaps between the partials of held notes. A clean render has deep
valleys between its harmonics; hiss lifts them toward the level of the harmonics. The measure:

1. Power spectrum: STFT, Hann window of `N_FFT` = 2048 samples (85 ms at 24 kHz, 11.7 Hz bins:
   harmonics of notes from ~100 Hz up are resolved with the guard below), hop `HOP`; only the bins
   in `BAND_HZ` (100 Hz - 8 kHz: where sustained notes have their partials and hiss is heard).
2. Sustained tonal frames: band power within `ENERGY_RANGE_DB` of the clip's loudest frame (no
   silence, no fade tails), and spectral flux (`metrics.spectral_flux`, the onset measure of the
   tempo estimator, on the same frames), taken as its maximum over +-`ONSET_SPREAD` frames (every
   frame whose window still holds an onset), at or below the median of those frames: the steadier
   half, which leaves out drum hits and note onsets (broadband by nature, not hiss).
3. Harmonic peaks of a frame: bins that are the maximum within +-`PEAK_HALF_WIDTH` bins and at least
   `PEAK_PROMINENCE_DB` above the frame's median band power. Between-harmonic ("valley") bins: the
   band bins farther than `GUARD_BINS` from every peak (the Hann main lobe is +-2 bins; 2 more for
   vibrato and chorus). Frames where under `MIN_VALLEY_FRACTION` of the band is valley (too dense
   to see between the partials) are left out.
4. Frame value: spectral flatness with the geometric mean taken between the harmonics,
   10 log10( geometric mean of the valley power / arithmetic mean of the band power ), in dB.
   Each bin is floored `FLOOR_DB` below the frame's strongest bin (digital silence stays finite).
   White noise reads about -2.5 dB (the geometric / arithmetic mean of exponential power, e^-gamma);
   a clean harmonic tone reads near the floor; a tone plus noise reads about its noise-to-signal
   ratio per bin, so 20 dB more noise reads ~20 dB higher.
5. Clip value: the median over the selected frames (NaN when no frame qualifies: silence, or only
   onsets). Higher = hissier. Comparable between clips of the same sample rate; the reference level
   is the same measure on held-out corpus renders (`melody eval listen --data`).

Drum-heavy music keeps some hats and cymbals in its steadier half, so its level is higher than a
solo instrument's in the corpus too: compare a generated genre with the corpus, not with zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from melody_core.eval.metrics import spectral_flux

N_FFT = 2048  # STFT window (samples)
HOP = 512  # STFT hop (samples)
ONSET_SPREAD = N_FFT // (2 * HOP) + 1  # frames either side an onset's flux counts (its window span)
BAND_HZ = (100.0, 8000.0)  # analysed band
ENERGY_RANGE_DB = 30.0  # frames within this of the loudest frame's band power
STEADY_QUANTILE = 0.5  # frames with flux <= this quantile of the energetic frames' flux
PEAK_HALF_WIDTH = 3  # a peak is the maximum of +- this many bins
PEAK_PROMINENCE_DB = 10.0  # ... and this far above the frame's median band power
GUARD_BINS = 4  # valley bins are farther than this from every peak
MIN_VALLEY_FRACTION = 0.25  # frames with less valley than this share of the band are skipped
FLOOR_DB = 120.0  # power floor below the frame's strongest bin


@dataclass(frozen=True)
class HissMeasure:
    """The hiss measure of one clip (module docstring)."""

    db: float  # median inter-harmonic flatness of the selected frames (dB; NaN: no frame)
    frames: int  # frames measured (sustained, tonal, not too dense)
    total_frames: int  # frames of the clip


def _local_max(x: Tensor, half_width: int) -> Tensor:
    """(F, N) -> bool (F, N): x is the maximum within +-half_width bins along F."""
    pooled = torch.nn.functional.max_pool1d(x.T.unsqueeze(1), 2 * half_width + 1, 1, half_width)  # (N, 1, F)
    return x >= pooled.squeeze(1).T


def hiss_db(wav: Tensor | np.ndarray, sample_rate: int) -> HissMeasure:
    """The hiss measure (module docstring) of a mono (T,) waveform."""
    x = torch.as_tensor(np.asarray(wav, dtype=np.float64) if not isinstance(wav, Tensor) else wav)
    if x.dim() != 1:
        raise ValueError(f"expected a (T,) waveform, got shape {tuple(x.shape)}")
    x = x.detach().to("cpu", torch.float64)
    if x.numel() < N_FFT:
        raise ValueError(f"clip too short for the hiss measure: {x.numel()} samples < {N_FFT}")
    window = torch.hann_window(N_FFT, dtype=torch.float64)
    power = torch.stft(x, N_FFT, HOP, window=window, center=True, pad_mode="constant",
                       return_complex=True).abs().pow(2)  # (F, N)
    freqs = torch.arange(power.shape[0], dtype=torch.float64) * sample_rate / N_FFT  # (F,)
    band = power[(freqs >= BAND_HZ[0]) & (freqs <= BAND_HZ[1])]  # (B, N)
    n_frames = band.shape[1]
    frame_power = band.mean(dim=0)  # (N,)
    top = float(frame_power.max())
    if not top > 0:
        return HissMeasure(math.nan, 0, n_frames)
    loud = frame_power >= top * 10 ** (-ENERGY_RANGE_DB / 10)
    flux, _ = spectral_flux(x, sample_rate, n_fft=N_FFT, hop=HOP)  # (N,) on the same frames
    flux = torch.nn.functional.max_pool1d(flux.view(1, 1, -1), 2 * ONSET_SPREAD + 1, 1,
                                          ONSET_SPREAD).view(-1)  # (N,) nearest onsets' flux
    steady = loud & (flux <= torch.quantile(flux[loud], STEADY_QUANTILE))
    band = band[:, steady]  # (B, n)
    band = torch.maximum(band, band.amax(dim=0, keepdim=True) * 10 ** (-FLOOR_DB / 10))
    median = band.median(dim=0, keepdim=True).values  # (1, n)
    peaks = _local_max(band, PEAK_HALF_WIDTH) & (band >= median * 10 ** (PEAK_PROMINENCE_DB / 10))
    near_peak = torch.nn.functional.max_pool1d(peaks.double().T.unsqueeze(1), 2 * GUARD_BINS + 1, 1,
                                               GUARD_BINS).squeeze(1).T > 0  # (B, n)
    valley = ~near_peak
    keep = valley.double().mean(dim=0) >= MIN_VALLEY_FRACTION  # (n,)
    if not bool(keep.any()):
        return HissMeasure(math.nan, 0, n_frames)
    band, valley = band[:, keep], valley[:, keep]
    log_sum = torch.where(valley, band.log(), torch.zeros_like(band)).sum(dim=0)  # (n,)
    log_valley = log_sum / valley.sum(dim=0)  # (n,) log of the valley's geometric mean
    flatness_db = 10 / math.log(10) * (log_valley - band.mean(dim=0).log())  # (n,)
    return HissMeasure(float(flatness_db.median()), int(keep.sum()), n_frames)


__all__ = ["HissMeasure", "hiss_db"]
