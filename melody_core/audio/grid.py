"""The musical grid: beat and bar times at a tempo, and snapping times to bars.

Time 0 is the downbeat of bar 1 (the arrangement's start); the meter is 4/4 (`BEATS_PER_BAR`), the
meter the ACID chunk of exported WAVs declares. Pure functions of seconds; no Qt.
"""

from __future__ import annotations

import math

import numpy as np

BEATS_PER_BAR = 4  # 4/4
MAX_LINES = 400  # grid lines returned for one view at most: beats are dropped first, then bars thinned


def _check(bpm: float) -> float:
    bpm = float(bpm)
    if not math.isfinite(bpm) or bpm <= 0:
        raise ValueError(f"tempo must be a positive number of BPM, not {bpm}")
    return bpm


def beat_seconds(bpm: float) -> float:
    """Length of one beat (a quarter note) in seconds."""
    return 60.0 / _check(bpm)


def bar_seconds(bpm: float, beats_per_bar: int = BEATS_PER_BAR) -> float:
    return beats_per_bar * beat_seconds(bpm)


def grid_lines(bpm: float, start_s: float, end_s: float, beats_per_bar: int = BEATS_PER_BAR,
               max_lines: int = MAX_LINES) -> tuple[np.ndarray, np.ndarray]:
    """(bar line times, beat line times) in [start_s, end_s], beats excluding the bar lines. When the
    range holds more than `max_lines` lines, beats are left out, then only every k-th bar is kept."""
    beat = beat_seconds(bpm)
    lo, hi = max(0.0, start_s), max(0.0, end_s)
    first, last = math.ceil(lo / beat - 1e-9), math.floor(hi / beat + 1e-9)
    if last < first:
        return np.zeros(0), np.zeros(0)
    if last - first + 1 <= max_lines:
        idx = np.arange(first, last + 1)
        on_bar = idx % beats_per_bar == 0
        return idx[on_bar] * beat, idx[~on_bar] * beat
    bar = beats_per_bar * beat
    b0, b1 = math.ceil(lo / bar - 1e-9), math.floor(hi / bar + 1e-9)
    step = max(1, math.ceil((b1 - b0 + 1) / max_lines))
    bars = np.arange(math.ceil(b0 / step) * step, b1 + 1, step)
    return bars * bar, np.zeros(0)


def snap_to_bar(t: float, bpm: float, beats_per_bar: int = BEATS_PER_BAR) -> float:
    """The bar line nearest to `t` seconds (never before 0)."""
    bar = bar_seconds(bpm, beats_per_bar)
    return max(0.0, round(t / bar) * bar)


def snap_range(a: float, b: float, bpm: float, limit_s: float | None = None,
               beats_per_bar: int = BEATS_PER_BAR) -> tuple[float, float] | None:
    """A selection [a, b] snapped to the nearest bar lines, at least one bar long, inside
    [0, limit_s] (bar lines only: a range past the last whole bar ends on the last bar line before
    `limit_s`). None when not even one whole bar fits."""
    bar = bar_seconds(bpm, beats_per_bar)
    a, b = min(a, b), max(a, b)
    n_bars = math.floor(limit_s / bar + 1e-9) if limit_s is not None else None
    if n_bars is not None and n_bars < 1:
        return None
    i, j = round(a / bar), round(b / bar)
    i = max(0, i)
    if n_bars is not None:
        j = min(j, n_bars)
        i = min(i, n_bars - 1)
    if j <= i:
        j = i + 1
    return i * bar, j * bar


def bar_beat(t: float, bpm: float, beats_per_bar: int = BEATS_PER_BAR) -> tuple[int, float]:
    """(bar, beat) of `t` seconds, both from 1: 0 s is bar 1 beat 1.0."""
    beats = max(0.0, t) / beat_seconds(bpm)
    bar = int(beats // beats_per_bar)
    return bar + 1, beats - bar * beats_per_bar + 1.0


__all__ = ["BEATS_PER_BAR", "bar_beat", "bar_seconds", "beat_seconds", "grid_lines", "snap_range",
           "snap_to_bar"]
