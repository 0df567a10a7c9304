"""Window plans of the generation pipeline (DESIGN §3, paper §4.2.4): which latent frames each DPD
call sees, which of them it generates, and with how many steps. Pure integer arithmetic, no torch
models.

Layout. The DPD was trained on windows of L = `DPDConfig.train_length` latent frames (2500 = 10 s)
split into M = `train_chunks` chunks (4) on the semantic-token grid (`FRAMES_PER_TOKEN` = 10 frames
per token): `diffusion.chunk_bounds(L, M, grid=10)` = 0 / 620 / 1250 / 1870 / 2500, so the paper's
hop ⌈L/M⌉ = 625 frames (62.5 tokens) is rounded to the whole-token hop `new_chunk_length` = 630
frames (63 tokens, 2.52 s) *(our choice, DESIGN §3)*. Every window starts and ends on the token grid
so its semantic tokens are exactly tokens[start / 10 : end / 10].

Plans (a `Window` = frames [start, end) given to the DPD; frames already final in it are clean
context at angle 0, the others start from noise):
- generation, start "window" (paper): the first window [0, L) in T steps, then continuation
  windows that drop the first chunk and append one new chunk: [k·hop, L + k·hop) in ⌈T/M⌉ steps.
- generation, start "progressive" *(our choice, beyond the paper; lower time to first sound)*: the
  first window grows chunk by chunk, [0, L_1) in T steps, then [0, L_2), …, [0, L) in ⌈T/M⌉ steps
  each (each new chunk sees the finished chunks before it as clean context, like a continuation),
  then the same sliding continuation windows. The first audio needs T steps on L/M frames and
  L_1/10 LM tokens instead of T steps on L frames and L/10 tokens.
- continuation of given audio: windows ending at context_end + hop, + 2·hop, …, each [end − L, end)
  (clipped at 0) in ⌈T/M⌉ steps; context_end is the last whole token of the kept audio.
- inpainting: a region that leaves at least `hop` frames of context on each side inside one window
  is regenerated in one centred window in T steps; a longer region is generated left to right
  (first window T steps, then ⌈T/M⌉-step continuation windows) and the last window also holds
  `hop` frames of the clip after the region as right context.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from melody_core import FRAMES_PER_TOKEN
from melody_core.diffusion import chunk_bounds, continuation_steps, new_chunk_length

GRID = FRAMES_PER_TOKEN  # latent frames per semantic token: window bounds fall on multiples of it
START_MODES = ("window", "progressive")


@dataclass(frozen=True)
class Layout:
    """Window geometry of a DPD: L frames, M chunks, on the token grid."""

    length: int  # L: frames per DPD window (DPDConfig.train_length)
    n_chunks: int  # M: chunks per window (DPDConfig.train_chunks)

    def __post_init__(self) -> None:
        chunk_bounds(self.length, self.n_chunks, GRID)  # raises ValueError for an invalid layout

    @property
    def bounds(self) -> tuple[int, ...]:
        """(0, L_1, …, L) chunk bounds on the token grid."""
        return chunk_bounds(self.length, self.n_chunks, GRID)

    @property
    def hop(self) -> int:
        """Frames appended by one continuation window (630 for L = 2500, M = 4)."""
        return new_chunk_length(self.length, self.n_chunks, GRID)

    def chunk_steps(self, steps: int, override: int | None = None) -> int:
        """DPD steps of a continuation window: ⌈T/M⌉ (§4.2.4) unless overridden."""
        return continuation_steps(steps, self.n_chunks) if override is None else override


@dataclass(frozen=True)
class Window:
    """One DPD call: frames [start, end) of the job's latent timeline, `steps` sampler steps."""

    start: int
    end: int
    steps: int
    index: int  # 0-based window number in the plan (Progress.chunk_index)

    @property
    def length(self) -> int:
        return self.end - self.start


def floor_grid(frames: int) -> int:
    return frames // GRID * GRID


def ceil_grid(frames: int) -> int:
    return -(-frames // GRID) * GRID


def generation_windows(
    layout: Layout, n_frames: int | None, steps: int, chunk_steps: int, start: str = "window"
) -> Iterator[Window]:
    """Windows of a fresh generation of `n_frames` frames (a multiple of GRID; None = endless)."""
    if start not in START_MODES:
        raise ValueError(f"unknown start mode {start!r} (choose from {', '.join(START_MODES)})")
    if n_frames is not None and (n_frames <= 0 or n_frames % GRID):
        raise ValueError(f"n_frames must be a positive multiple of {GRID}, got {n_frames}")
    ends = layout.bounds[1:] if start == "progressive" else (layout.length,)
    index = 0
    for end in ends:
        n_steps = steps if index == 0 else chunk_steps
        if n_frames is not None and end >= n_frames:
            yield Window(0, n_frames, n_steps, index)
            return
        yield Window(0, end, n_steps, index)
        index += 1
    end = layout.length
    while n_frames is None or end < n_frames:
        end += layout.hop
        yield Window(end - layout.length, end, chunk_steps, index)
        index += 1


def continuation_windows(
    layout: Layout, context_end: int, n_frames: int | None, chunk_steps: int
) -> Iterator[Window]:
    """Windows continuing a timeline whose frames before `context_end` (a multiple of GRID) are kept,
    until the window end reaches `n_frames` (None = endless)."""
    if context_end % GRID:
        raise ValueError(f"context_end must be a multiple of {GRID}, got {context_end}")
    end, index = context_end, 0
    while True:
        end += layout.hop
        yield Window(max(0, end - layout.length), end, chunk_steps, index)
        if n_frames is not None and end >= n_frames:
            return
        index += 1


def inpaint_windows(
    layout: Layout, first: int, last: int, n_frames: int, steps: int, chunk_steps: int
) -> list[Window]:
    """Windows regenerating frames [first, last) of an `n_frames`-frame timeline (a multiple of GRID)
    whose other frames are kept."""
    if not 0 <= first < last <= n_frames:
        raise ValueError(f"region [{first}, {last}) outside the timeline of {n_frames} frames")
    length, hop = layout.length, layout.hop
    lo, hi = floor_grid(first), ceil_grid(last)
    if n_frames <= length:
        return [Window(0, n_frames, steps, 0)]
    if hi - lo <= length - 2 * hop:  # one centred window with >= hop frames of context per side
        start = floor_grid(min(max(0, lo - (length - (hi - lo)) // 2), n_frames - length))
        return [Window(start, start + length, steps, 0)]
    end = min(n_frames, max(lo - (length - hop), 0) + length)  # left context = the continuation keep
    windows = [Window(end - length, end, steps, 0)]
    while end < last:
        if end + hop >= last:  # last window: the rest of the region plus right context
            end = min(n_frames, ceil_grid(last) + hop)
        else:
            end += hop
        windows.append(Window(end - length, end, chunk_steps, len(windows)))
    return windows


def frames_for_samples(n_samples: int, hop: int) -> int:
    """Latent frames covering n_samples, rounded up to the token grid."""
    return ceil_grid(math.ceil(n_samples / hop))
