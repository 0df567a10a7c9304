"""Output levels: loudness normalisation (pyloudnorm, ITU-R BS.1770-4) and a lookahead true-peak
limiter (pedalboard's `BrickwallLimiter`), for everything the app plays and everything written.

- `master(x, sr, settings)`: one clip -> gain to `target_lufs` (capped at `max_gain_db`), then the
  limiter, then a check of the true peak; returns audio whose true peak is <= the ceiling.
- `LiveMaster`: the same for a stream that arrives chunk by chunk (live playback): the loudness gain
  is fixed from the first chunk (no pumping), the limiter keeps its state between chunks, and the
  output stays sample-aligned with the input (its lookahead delay is compensated).
- `true_peak_dbtp`: the BS.1770-4 Annex 2 true peak (oversampled to >= 192 kHz with soxr).
- Block-wise (bounded memory, for long takes): `true_peak_blocks`, `plan_limit` + `limited_blocks`
  take a `BlockSource` (a callable that yields the audio again in blocks each time it is called).
  `true_peak_dbtp` and `limit` are these same functions run over `BLOCK`-sample slices of the array,
  so the whole-array and block paths are one implementation and give bit-identical output (soxr's
  stream resampler and pedalboard with `reset=False` produce exactly the samples of one call; checked
  in tests/test_save_blocks.py). Measured: the whole-array limiter on a 20-minute take peaked at
  ~3.6 GB extra (8x-oversampled float64 copies for the true peak), the block path stays under ~40 MB.

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

import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

TRUE_PEAK_RATE = 192_000  # BS.1770-4 Annex 2: oversample to at least 192 kHz to find inter-sample peaks
LIVE_MARGIN_DB = 0.5  # live limiter ceiling below the target (no second pass is possible live)
RETRY_MARGIN_DB = 0.05  # extra dB taken off the ceiling on each re-run of the limiter
MAX_PASSES = 4  # limiter passes in `master` before the linear-gain fallback
MIN_LOUDNESS_SECONDS = 0.4  # BS.1770 gating block: shorter audio is not loudness-normalised
SILENCE_LUFS = -70.0  # below this (the BS.1770 absolute gate) audio is left at its level
BLOCK = 1 << 16  # samples per block of the block-wise paths (2.7 s at 24 kHz; ~4 MB oversampled)

# A re-iterable source of audio: each call yields the same audio again as (T,) or (C, T) float blocks.
BlockSource = Callable[[], Iterable[np.ndarray]]


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


def array_blocks(x: np.ndarray, block: int = BLOCK) -> BlockSource:
    """A `BlockSource` over an array: (C, block) views of `_as_2d(x)` (no copies)."""
    a = _as_2d(x)
    return lambda: (a[:, i : i + block] for i in range(0, a.shape[1], block))


def true_peak_blocks(blocks: Iterable[np.ndarray], sample_rate: int) -> float:
    """True peak (dBTP) of audio given in blocks: soxr's stream resampler oversamples to >= 192 kHz
    (BS.1770-4 Annex 2) with the state carried between blocks, so inter-block peaks count and the
    result equals one call on the whole array; memory is one oversampled block."""
    import soxr

    factor = max(1, math.ceil(TRUE_PEAK_RATE / sample_rate))
    stream, channels = None, 1
    peak = -1.0
    for b in blocks:
        a = _as_2d(b)
        if a.size == 0:
            continue
        if stream is None:
            channels = a.shape[0]
            stream = soxr.ResampleStream(sample_rate, sample_rate * factor, a.shape[0], dtype="float64",
                                         quality="HQ")
        peak = max(peak, float(np.abs(a).max()))
        for i in range(0, a.shape[1], BLOCK):  # at most BLOCK samples oversampled at a time
            up = stream.resample_chunk(a[:, i : i + BLOCK].T.astype(np.float64))  # (T, C) -> (T * factor, C)
            peak = max(peak, float(np.abs(up).max()) if up.size else -1.0)
    if stream is None:
        return -math.inf
    rest = stream.resample_chunk(np.zeros((0, channels), np.float64), last=True)
    if rest.size:
        peak = max(peak, float(np.abs(rest).max()))
    return _db(peak)


def true_peak_dbtp(x: np.ndarray, sample_rate: int) -> float:
    """True peak of (T,) or (C, T) audio in dBTP (soxr-oversampled to >= 192 kHz, BS.1770-4 Annex 2)."""
    return true_peak_blocks(array_blocks(x)(), sample_rate)


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


class _StreamLimiter:
    """The limiter run over consecutive blocks (`reset=False`): its outputs, concatenated, are
    sample-aligned with the inputs and as long (`flush` pushes silence through the lookahead)."""

    def __init__(self, ceiling_db: float, sample_rate: int, settings: LevelSettings) -> None:
        self.sample_rate = sample_rate
        self._lim = _limiter(ceiling_db, settings)
        self._in = 0  # samples given to the limiter
        self._out = 0  # samples it gave back
        self._channels = 1

    def process(self, block: np.ndarray) -> np.ndarray:
        """(C, T) float32 -> (C, T') (T' <= T while the lookahead fills)."""
        self._channels = block.shape[0]
        out = self._lim(block, self.sample_rate, reset=False)
        self._in += block.shape[1]
        self._out += out.shape[1]
        return out

    def flush(self) -> np.ndarray:
        missing = self._in - self._out
        if missing <= 0:
            return np.zeros((self._channels, 0), np.float32)
        parts, got = [], 0
        while got < missing:  # silence until the lookahead has given back every sample
            out = self._lim(np.zeros((self._channels, max(missing, 1024)), np.float32), self.sample_rate,
                            reset=False)
            parts.append(out)
            got += out.shape[1]
        self._out += missing
        return np.concatenate(parts, axis=1)[:, :missing]


@dataclass(frozen=True)
class LimitPlan:
    """What `limit` does to one piece of audio (found by `plan_limit`)."""

    ceiling_db: float | None  # the limiter's ceiling (dBTP); None = the audio passes unchanged
    gain: float = 1.0  # linear gain after the limiter (the last resort; 1.0 when the limiter sufficed)


def limited_blocks(blocks: Iterable[np.ndarray], sample_rate: int, plan: LimitPlan,
                   settings: LevelSettings = LevelSettings()) -> Iterator[np.ndarray]:
    """Apply `plan` to audio given in blocks: yields (C, T) float32 blocks, as many samples in all
    as went in, sample-aligned (a fresh limiter: the same output as one call on the whole array)."""
    if plan.ceiling_db is None:
        for b in blocks:
            yield _as_2d(b).copy()
        return
    gain = np.float32(plan.gain)

    def scaled(out: np.ndarray) -> np.ndarray:
        return (out * gain).astype(np.float32) if plan.gain != 1.0 else out.astype(np.float32)

    it = iter(blocks)
    first = next(it, None)
    second = next(it, None) if first is not None else None
    if first is None:
        return
    if second is None:  # one block: one call (pedalboard's own latency handling; exact for short audio)
        yield scaled(_limiter(plan.ceiling_db, settings)(_as_2d(first), sample_rate))
        return
    lim = _StreamLimiter(plan.ceiling_db, sample_rate, settings)
    for b in itertools.chain((first, second), it):
        out = lim.process(_as_2d(b))
        if out.shape[1]:
            yield scaled(out)
    out = lim.flush()
    if out.shape[1]:
        yield scaled(out)


def plan_limit(source: BlockSource, sample_rate: int, settings: LevelSettings = LevelSettings()) -> LimitPlan:
    """How to bring audio to `settings.ceiling_dbtp` true peak: measure it; above the ceiling, run
    the limiter and measure its output, lowering the limiter's ceiling by the excess (plus
    `RETRY_MARGIN_DB`) up to `MAX_PASSES` times; the last resort is a linear gain (never a clip).
    Each pass reads `source` again block by block (bounded memory)."""
    ceiling = settings.ceiling_dbtp
    if true_peak_blocks(source(), sample_rate) <= ceiling:  # also: no audio at all
        return LimitPlan(None)
    target = ceiling
    plan, excess = LimitPlan(target), 0.0
    for _ in range(MAX_PASSES):
        plan = LimitPlan(target)
        out = limited_blocks(source(), sample_rate, plan, settings)
        excess = true_peak_blocks(out, sample_rate) - ceiling
        if excess <= 0:
            return plan
        target -= excess + RETRY_MARGIN_DB
    return LimitPlan(plan.ceiling_db, float(10 ** (-(excess + RETRY_MARGIN_DB) / 20)))  # the last pass's


def limit(x: np.ndarray, sample_rate: int, settings: LevelSettings = LevelSettings()) -> np.ndarray:
    """True-peak limit (T,) or (C, T) audio to `settings.ceiling_dbtp` (same shape, float32).
    Audio already below the ceiling is returned unchanged. (`plan_limit` + `limited_blocks` over
    the array's blocks: the block path, so both give the same samples.)"""
    source = array_blocks(x)
    plan = plan_limit(source, sample_rate, settings)
    if plan.ceiling_db is None:
        return np.asarray(x, dtype=np.float32).copy()
    out = np.concatenate(list(limited_blocks(source(), sample_rate, plan, settings)), axis=1)  # (C, T)
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
        self._lim = (_StreamLimiter(settings.ceiling_dbtp - LIVE_MARGIN_DB, sample_rate, settings)
                     if settings.enabled else None)

    def process(self, chunk: np.ndarray) -> np.ndarray:
        pcm = np.asarray(chunk, dtype=np.float32).reshape(-1)
        if self._lim is None or pcm.size == 0:
            return pcm.copy()
        if self.gain is None:
            self.gain = float(10 ** (loudness_gain_db(pcm, self.sample_rate, self.settings) / 20))
        return self._lim.process(_as_2d(pcm * np.float32(self.gain))).reshape(-1)

    def flush(self) -> np.ndarray:
        """The samples still inside the limiter's lookahead (pushes silence through it)."""
        if self._lim is None:
            return np.zeros(0, np.float32)
        return self._lim.flush().reshape(-1)


def preload() -> None:
    """Import pedalboard, pyloudnorm and soxr now (a GUI calls this at start-up, so that the first
    levelled chunk does not pay seconds of imports on its event loop)."""
    import pedalboard  # noqa: F401
    import pyloudnorm  # noqa: F401
    import soxr  # noqa: F401


