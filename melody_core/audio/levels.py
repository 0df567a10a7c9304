"""Output levels: loudness normalisation (pyloudnorm, ITU-R BS.1770-4) and a lookahead true-peak
limiter (pedalboard's `BrickwallLimiter`), for everything the app plays and everything written.

- `master(x, sr, settings)`: one clip -> gain to `target_lufs` (capped at `max_gain_db`), then the
  limiter, then a check of the true peak; returns audio whose true peak is <= the ceiling.
- `LiveMaster`: the same for a stream that arrives chunk by chunk (live playback): the loudness gain
  is fixed from the first chunk (no pumping), the limiter keeps its state between chunks, and the
  output stays sample-aligned with the input (its lookahead delay is compensated).
- `true_peak_dbtp`: the BS.1770-4 Annex 2 true peak (oversampled to >= 192 kHz with soxr).

*(our choices, and why not the obvious library call)*
- pedalboard's `Limiter` is JUCE's loudness maximiser: it adds makeup gain and hard-clips at 0 dBFS,
  which is what this module exists to avoid, so `BrickwallLimiter` (lookahead, no makeup gain,
  oversampled true-peak sidechain) is used instead. Its documentation says the oversampled sidechain
  "does not guarantee the reconstructed waveform stays below the ceiling"; measured on a 10 s loud
  test signal (sine at +2.3 dBFS plus noise, 24 kHz) with `ceiling_db=-1` it left +0.42 dB of
  true-peak overshoot (-0.42 dBTP). So `master` measures the true peak after limiting and, while it
  is above the ceiling, runs the limiter again on the input with the ceiling lowered by the excess;
  the last resort is a linear gain (never a clip). Live audio cannot be re-run, so `LiveMaster`
  limits at `ceiling - LIVE_MARGIN_DB`; its sample peak is guaranteed below the ceiling, its true
  peak is measured in the tests.
- Stereo (C, T) input is limited with linked channels (pedalboard processes all channels together).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

TRUE_PEAK_RATE = 192_000  # BS.1770-4 Annex 2: oversample to at least 192 kHz to find inter-sample peaks
LIVE_MARGIN_DB = 0.5  # live limiter ceiling below the target (no second pass is possible live)
RETRY_MARGIN_DB = 0.05  # extra dB taken off the ceiling on each re-run of the limiter
MAX_PASSES = 4  # limiter passes in `master` before the linear-gain fallback
MIN_LOUDNESS_SECONDS = 0.4  # BS.1770 gating block: shorter audio is not loudness-normalised
SILENCE_LUFS = -70.0  # below this (the BS.1770 absolute gate) audio is left at its level


@dataclass(frozen=True)
class LevelSettings:
    """How audio is levelled before it is played or written."""

    enabled: bool = True  # False: audio passes unchanged (the settings' off-switch)
    ceiling_dbtp: float = -1.0  # true-peak ceiling (dBTP)
    target_lufs: float | None = -14.0  # integrated loudness target (LUFS); None = no loudness normalisation
    max_gain_db: float = 12.0  # loudness normalisation never boosts by more than this
    lookahead_ms: float = 5.0  # limiter lookahead (the limiter sees peaks this early)
    release_ms: float = 100.0  # limiter release time

    def to_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, d: dict[str, object] | None) -> LevelSettings:
        known = {k: v for k, v in (d or {}).items() if k in cls.__dataclass_fields__}
        return cls(**known)  # type: ignore[arg-type]


OFF = LevelSettings(enabled=False)


def _db(x: float) -> float:
    return 20.0 * math.log10(x) if x > 0 else -math.inf


def _as_2d(x: np.ndarray) -> np.ndarray:
    """(T,) or (C, T) -> float32 (C, T)."""
    a = np.asarray(x, dtype=np.float32)
    return a[None, :] if a.ndim == 1 else a


def true_peak_dbtp(x: np.ndarray, sample_rate: int) -> float:
    """True peak of (T,) or (C, T) audio in dBTP (soxr-oversampled to >= 192 kHz, BS.1770-4 Annex 2)."""
    import soxr

    a = _as_2d(x)
    if a.size == 0:
        return -math.inf
    factor = max(1, math.ceil(TRUE_PEAK_RATE / sample_rate))
    up = soxr.resample(a.T.astype(np.float64), sample_rate, sample_rate * factor, quality="HQ")
    return _db(float(max(np.abs(up).max(), np.abs(a).max())))


def sample_peak_db(x: np.ndarray) -> float:
    a = np.asarray(x)
    return _db(float(np.abs(a).max())) if a.size else -math.inf


def integrated_lufs(x: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness (LUFS, pyloudnorm's BS.1770-4 meter); -inf for silence or < 0.4 s."""
    import pyloudnorm

    a = _as_2d(x)
    if a.shape[1] < MIN_LOUDNESS_SECONDS * sample_rate:
        return -math.inf
    data = a[0] if a.shape[0] == 1 else a.T  # pyloudnorm: (T,) or (T, C)
    return float(pyloudnorm.Meter(sample_rate).integrated_loudness(data.astype(np.float64)))


def loudness_gain_db(x: np.ndarray, sample_rate: int, settings: LevelSettings) -> float:
    """Gain (dB) that brings `x` to the target loudness, capped at `max_gain_db`; 0 when there is no
    target, or the audio is silent or too short to measure."""
    if settings.target_lufs is None:
        return 0.0
    lufs = integrated_lufs(x, sample_rate)
    if not math.isfinite(lufs) or lufs < SILENCE_LUFS:
        return 0.0
    return min(settings.target_lufs - lufs, settings.max_gain_db)


def _limiter(ceiling_db: float, settings: LevelSettings):  # noqa: ANN202 - pedalboard type
    import pedalboard

    return pedalboard.BrickwallLimiter(ceiling_db=ceiling_db, release_ms=settings.release_ms,
                                       lookahead_ms=settings.lookahead_ms, true_peak=True)


def limit(x: np.ndarray, sample_rate: int, settings: LevelSettings = LevelSettings()) -> np.ndarray:
    """True-peak limit (T,) or (C, T) audio to `settings.ceiling_dbtp` (same shape, float32).
    Audio already below the ceiling is returned unchanged."""
    a = _as_2d(x)
    ceiling = settings.ceiling_dbtp
    if a.size == 0 or true_peak_dbtp(a, sample_rate) <= ceiling:
        return np.asarray(x, dtype=np.float32).copy()
    target = ceiling
    out = a
    for _ in range(MAX_PASSES):
        out = _limiter(target, settings)(a, sample_rate)  # (C, T), latency compensated
        excess = true_peak_dbtp(out, sample_rate) - ceiling
        if excess <= 0:
            break
        target -= excess + RETRY_MARGIN_DB
    excess = true_peak_dbtp(out, sample_rate) - ceiling
    if excess > 0:  # last resort: a linear gain, never a clip
        out = out * np.float32(10 ** (-(excess + RETRY_MARGIN_DB) / 20))
    out = out.astype(np.float32)
    return out[0] if np.asarray(x).ndim == 1 else out


def master(x: np.ndarray, sample_rate: int, settings: LevelSettings = LevelSettings(),
           exact: bool = True) -> np.ndarray:
    """Loudness-normalise then true-peak limit one clip; unchanged (a float32 copy) when disabled.
    `exact=False` (playback): one limiter pass at `ceiling - LIVE_MARGIN_DB`, as live audio gets --
    about 5x faster, sample peak below the ceiling, true peak measured rather than enforced."""
    a = np.asarray(x, dtype=np.float32)
    if not settings.enabled or a.size == 0:
        return a.copy()
    gain = loudness_gain_db(a, sample_rate, settings)
    if gain:
        a = a * np.float32(10 ** (gain / 20))
    if not exact:
        lim = _limiter(settings.ceiling_dbtp - LIVE_MARGIN_DB, settings)
        return lim(_as_2d(a), sample_rate).reshape(a.shape)
    return limit(a, sample_rate, settings)


class LiveMaster:
    """Streaming `master` for mono live audio: `process(chunk)` returns the levelled samples that are
    ready (the limiter holds back its lookahead), `flush()` the rest; the concatenated outputs are
    sample-aligned with the concatenated inputs and have the same length."""

    def __init__(self, sample_rate: int, settings: LevelSettings = LevelSettings()) -> None:
        self.sample_rate = sample_rate
        self.settings = settings
        self.gain: float | None = None  # linear gain, fixed by the first chunk
        self._lim = _limiter(settings.ceiling_dbtp - LIVE_MARGIN_DB, settings) if settings.enabled else None
        self._in = 0  # samples given to the limiter
        self._out = 0  # samples it gave back

    def process(self, chunk: np.ndarray) -> np.ndarray:
        pcm = np.asarray(chunk, dtype=np.float32).reshape(-1)
        if self._lim is None or pcm.size == 0:
            return pcm.copy()
        if self.gain is None:
            self.gain = float(10 ** (loudness_gain_db(pcm, self.sample_rate, self.settings) / 20))
        out = self._lim(pcm * np.float32(self.gain), self.sample_rate, reset=False).reshape(-1)
        self._in += len(pcm)
        self._out += len(out)
        return out

    def flush(self) -> np.ndarray:
        """The samples still inside the limiter's lookahead (pushes silence through it)."""
        if self._lim is None or self._in == self._out:
            return np.zeros(0, np.float32)
        missing = self._in - self._out
        out = self._lim(np.zeros(missing, np.float32), self.sample_rate, reset=False).reshape(-1)
        self._out += len(out)
        return out[:missing]


def preload() -> None:
    """Import pedalboard, pyloudnorm and soxr now (a GUI calls this at start-up, so that the first
    levelled chunk does not pay seconds of imports on its event loop)."""
    import pedalboard  # noqa: F401
    import pyloudnorm  # noqa: F401
    import soxr  # noqa: F401


