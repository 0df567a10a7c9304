"""Seamless loops: the one rule for a loop point, used by loop playback and by "Export loop…".

The rule (`seamless_loop`): a loop of `audio[start:end]` keeps its length whenever the audio around it
allows (so a selection cut on bar lines stays exactly that many bars long, and its ACID beat count and
`smpl` loop points stay exact), and the wrap from its last sample to its first is continuous:

1. audio follows `end` (at least `fade` samples): the loop's first `fade` samples are an equal-power
   crossfade from what followed the end in the source (fading out) into the loop's head (fading in).
   Played end -> start, the sample after the last one is then the one that followed it in the source.
2. otherwise, audio precedes `start`: the loop's last `fade` samples are an equal-power crossfade from
   its tail (fading out) into what preceded `start` in the source (fading in), which leads into the head.
3. otherwise (the loop is the whole source): its last `fade` samples are crossfaded into its first
   `fade` and removed -- the loop is `fade` samples shorter.

Equal power (sin/cos) because the two sides of the crossfade are different stretches of music
(uncorrelated), whose powers add. `LOOP_CROSSFADE_S` = 20 ms: long enough to hide a step between
two waveforms, short enough not to smear a transient (our choice).

`periodic(fn, loop)` runs a whole-clip process (limiter, loudness, resampling) on a loop as a
periodic signal -- on three copies end to end, keeping the middle one -- so that the process's state
at the loop's end matches its state at its start (no step in the limiter's gain at the wrap).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

LOOP_CROSSFADE_S = 0.02  # crossfade at the loop point (seconds)


def crossfade_curves(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(fade_in, fade_out), each (n,) float32: equal power, fade_in[0] = 0, fade_out[0] = 1."""
    t = np.linspace(0.0, np.pi / 2, n, endpoint=False, dtype=np.float64)
    return np.sin(t).astype(np.float32), np.cos(t).astype(np.float32)


def fade_samples(sample_rate: int, seconds: float = LOOP_CROSSFADE_S) -> int:
    return max(0, int(round(seconds * sample_rate)))


def loop_length(total: int, start: int, end: int, fade: int) -> int:
    """Length of `seamless_loop(audio of length total, start, end, fade)`."""
    n = end - start
    fade = min(fade, n // 2)
    return n if (total - end >= fade or start >= fade) else n - fade


def seamless_loop(audio: np.ndarray, start: int, end: int, fade: int) -> np.ndarray:
    """A loop of `audio[start:end]` (mono (T,)) that plays end-to-start without a click (module rule).
    Raises ValueError for an empty or out-of-range selection."""
    x = np.asarray(audio, dtype=np.float32)
    if not 0 <= start < end <= len(x):
        raise ValueError(f"loop [{start}, {end}) is not inside the audio (0..{len(x)})")
    out = x[start:end].copy()
    fade = min(max(fade, 0), len(out) // 2)
    if fade == 0:
        return out
    fade_in, fade_out = crossfade_curves(fade)
    if len(x) - end >= fade:  # rule 1: what followed the end fades into the head
        out[:fade] = x[end:end + fade] * fade_out + out[:fade] * fade_in
    elif start >= fade:  # rule 2: the tail fades into what preceded the start
        out[-fade:] = out[-fade:] * fade_out + x[start - fade:start] * fade_in
    else:  # rule 3: the tail fades into the head and is removed
        out = out[: len(out) - fade]
        out[:fade] = x[end - fade:end] * fade_out + out[:fade] * fade_in
    return out


def periodic(fn: Callable[[np.ndarray], np.ndarray], loop: np.ndarray, ratio: float = 1.0) -> np.ndarray:
    """`fn` applied to `loop` (T,) as a periodic signal: fn(loop x 3), middle third. `ratio` is the
    output/input length ratio of `fn` (resampling: new rate / old rate); the result has
    round(T * ratio) samples."""
    loop = np.asarray(loop, dtype=np.float32)
    if len(loop) == 0:
        return loop.copy()
    y = np.asarray(fn(np.concatenate([loop, loop, loop])))  # (3T * ratio,)
    m = int(round(len(loop) * ratio))
    return np.ascontiguousarray(y[m:2 * m], dtype=np.float32)


__all__ = ["LOOP_CROSSFADE_S", "crossfade_curves", "fade_samples", "loop_length", "periodic", "seamless_loop"]
