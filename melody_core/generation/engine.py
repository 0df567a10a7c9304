"""The sampling engine of generation: semantic LM tokens + DPD windows over one latent
timeline, as a plain generator of events (no decoding, no I/O).

`Engine.run()` walks a window plan (`generation.plan`); for each window it first makes the LM
produce the semantic tokens the window covers (KV-cached `SemanticLM.stream`, sliding window), then
runs the DPD sampler on the window with the frames already final as clean context, and yields
`FramesFinal(end)` once frames [0, end) are final. Between LM tokens and between DPD steps it
checks the `StreamControl` (cancel -> `GenerationCancelled`) and yields `Progress` events, so a
consumer iterating it in a worker thread sees per-step progress and can cancel within one step.

Randomness: a per-job CPU `torch.Generator` draws the DPD noise (one (1, window, D) draw per
window, moved to the device: the same noise on every device) and a generator on the LM's device
draws the tokens; both are seeded from the job seed, so a job is reproducible on a device and
independent of the global RNG.

Threads: LM token steps run with `lm_threads` (batch-1 decoding is per-op bound, one thread is
fastest on a CPU), everything else with the process's thread count. Thread counts and inference
mode are set around each computation and never held across a `yield`, so the consumer's own code
is not affected. The LM of the next window is not overlapped with the DPD of the current one
*(our choice)*: per continuation window the LM needs ~50 ms (63 tokens) against ~330 ms of DPD
steps + decoding (bundled model, 2 cores), so overlap could save at most ~13 %, and only with a
core to spare, while the DPD already runs on all cores; streaming is ~5-6x real time without it.

The DPD loop is `diffusion.denoise_steps` (one `next()` per step, under inference mode, with a
cancel check and a `Progress` event between steps); its velocity is `diffusion.GuidedVelocity`
with the DPD's per-window context prepared once (`dpd_prepare`, `DualPathDiffusion.prepare`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from melody_core.diffusion import GuidedVelocity, denoise_steps, get_schedule, inpaint_steps
from melody_core.generation.models import ModelSet
from melody_core.generation.plan import GRID, Window
from melody_core.generation.types import GenerationCancelled, Progress, StreamControl

LM_PROGRESS_EVERY = 25  # LM tokens (1 s of audio) per progress event
CAPACITY_GROWTH = 2  # timeline buffers grow by this factor when full


@dataclass(frozen=True)
class FramesFinal:
    """Frames [0, end) of the timeline are final (will not change any more)."""

    end: int
    window: Window


@dataclass
class Stats:
    """Counters and wall time of one job (Table 3 NFE accounting: 1 LM token = 1 NFE, one guided
    DPD evaluation = 1 NFE)."""

    lm_tokens: int = 0
    dpd_nfe: int = 0
    dpd_rows: int = 0  # batch rows pushed through the DPD (2 per guided step with CFG)
    windows: int = 0
    seconds: dict[str, float] = field(
        default_factory=lambda: {"condition": 0.0, "encode": 0.0, "lm": 0.0, "dpd": 0.0, "decode": 0.0}
    )
    prompt_changes: list[dict[str, Any]] = field(default_factory=list)

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - t0


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """torch intra-op threads = n inside the block (None: unchanged); restored afterwards."""
    if n is None or n == torch.get_num_threads():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check_cancel(control: StreamControl | None) -> None:
    if control is not None and control.cancelled:
        raise GenerationCancelled("generation cancelled")


class Timeline:
    """Latents (DPD space, (1, frames, D)) and semantic tokens ((1, tokens) int64) of one job.

    `known[f]`: frame f holds final latents (given context or generated). Buffers grow on demand.
    Frame indices are absolute; the buffers hold frames [base, base + capacity): `trim` drops frames
    no longer needed (an endless stream keeps a bounded window, issue 18), so index them with
    `local(frame)` (= frame - base) or the `zs` / `knowns` / `tokens_at` helpers.
    """

    def __init__(self, d_latent: int, device: torch.device, z: Tensor | None = None,
                 tokens: Tensor | None = None) -> None:
        self.base = 0  # first frame held (a multiple of GRID)
        with torch.inference_mode():
            n = 0 if z is None else z.shape[1]
            self.z = torch.zeros(1, max(n, GRID), d_latent, device=device)
            self.known = torch.zeros(max(n, GRID), dtype=torch.bool, device=device)
            self.tokens = torch.zeros(1, max(n // GRID, 1), dtype=torch.long, device=device)
            if z is not None:
                self.z[:, :n] = z
                self.known[:n] = True
            if tokens is not None:
                self.tokens[:, : tokens.shape[1]] = tokens

    def local(self, frame: int) -> int:
        """Buffer index of absolute frame `frame` (>= base)."""
        assert frame >= self.base, f"frame {frame} was trimmed (base {self.base})"
        return frame - self.base

    def zs(self, a: int, b: int) -> Tensor:
        """Latents of frames [a, b): (1, b - a, D) view."""
        return self.z[:, self.local(a) : self.local(b)]

    def knowns(self, a: int, b: int) -> Tensor:
        return self.known[self.local(a) : self.local(b)]

    def tokens_at(self, a: int, b: int) -> Tensor:
        """Tokens [a, b) (token indices, absolute): (1, b - a) view."""
        t0 = self.base // GRID
        assert a >= t0, f"token {a} was trimmed"
        return self.tokens[:, a - t0 : b - t0]

    def trim(self, keep_from: int) -> None:
        """Drop frames before `keep_from` (rounded down to the token grid) once they are at least half
        the buffer, by shifting the rest down in place (amortised: no reallocation, no growth)."""
        keep_from = keep_from // GRID * GRID
        drop = keep_from - self.base
        if drop <= 0 or 2 * drop < self.z.shape[1]:
            return
        n, t = self.z.shape[1] - drop, drop // GRID
        with torch.inference_mode():
            self.z[:, :n] = self.z[:, drop:].clone()
            self.z[:, n:] = 0
            self.known[:n] = self.known[drop:].clone()
            self.known[n:] = False
            nt = self.tokens.shape[1] - t
            self.tokens[:, :nt] = self.tokens[:, t:].clone()
            self.tokens[:, nt:] = 0
        self.base = keep_from

    def reserve(self, frames: int) -> None:
        """Make room for frames up to `frames` (absolute) and their tokens."""
        frames -= self.base
        cap = self.z.shape[1]
        if frames <= cap:
            return
        new = max(frames, cap * CAPACITY_GROWTH)
        with torch.inference_mode():
            z = self.z.new_zeros(1, new, self.z.shape[2])
            z[:, :cap] = self.z
            known = self.known.new_zeros(new)
            known[:cap] = self.known
            tokens = self.tokens.new_zeros(1, new // GRID)
            tokens[:, : self.tokens.shape[1]] = self.tokens
        self.z, self.known, self.tokens = z, known, tokens


@dataclass
class LMJob:
    """How the semantic LM fills the token timeline: tokens [pos, end) are sampled (end None = no
    limit), tokens before `pos` are its prompt (last `window` of them in context), tokens from
    `end` on are given (inpainting keeps the tokens right of the region)."""

    pos: int
    end: int | None
    temperature: float
    top_k: int
    top_p: float
    generator: torch.Generator
    guidance: float = 1.0  # LM classifier-free guidance scale (1 = off)


class Engine:
    """Runs a window plan on a timeline; see the module docstring.

    models: the loaded `ModelSet` (LM, DPD forward / prepare, threads); prefix: (1, n_cond) MuLan
    tokens + LM controls; on_update: called with `StreamControl.take_updates()` before each window
    after the first (prompt automation), returns the new prefix or None when the conditioning is unchanged;
    stop_on_request: end after the window in progress once `control.stop_after_current()` was called;
    history: frames kept behind the last final frame (None = the whole timeline); older frames are
    trimmed once the consumer took the `FramesFinal` (it must not read further back than that).
    """

    def __init__(
        self,
        models: ModelSet,
        timeline: Timeline,
        windows: Iterable[Window],
        lm_job: LMJob,
        prefix: Tensor,
        noise_generator: torch.Generator,
        guidance: float,
        schedule: str,
        control: StreamControl | None = None,
        on_update: Callable[[dict[str, Any]], Tensor | None] | None = None,
        stop_on_request: bool = False,
        stats: Stats | None = None,
        history: int | None = None,
    ) -> None:
        self.models, self.timeline, self.windows, self.lm_job = models, timeline, windows, lm_job
        self.prefix, self.noise_generator = prefix, noise_generator
        self.guidance, self.schedule, self.control = guidance, schedule, control
        self.on_update, self.stop_on_request = on_update, stop_on_request
        self.stats = stats or Stats()
        self.history = history
        self._lm_state = None
        self._lm_stream: Iterator[Tensor] | None = None

    # ------------------------------------------------------------------ plan
    def run(self) -> Iterator[Progress | FramesFinal]:
        for window in self.windows:
            check_cancel(self.control)
            if window.index > 0 and self.control is not None and self.on_update is not None:
                updates = self.control.take_updates()
                if updates:
                    prefix = self.on_update(updates)
                    if prefix is not None:
                        self._restart_lm(prefix, window, updates)
            self.timeline.reserve(window.end)
            yield from self._tokens_until(window.end // GRID, window.index)
            yield from self._sample_window(window)
            self.stats.windows += 1
            yield FramesFinal(window.end, window)
            if self.history is not None:  # the consumer has used frames [0, window.end)
                self.timeline.trim(window.end - self.history)
            if self.stop_on_request and self.control is not None and self.control.stop_requested:
                return

    # ------------------------------------------------------------------ semantic LM
    def _restart_lm(self, prefix: Tensor, window: Window, updates: dict[str, Any]) -> None:
        """New conditioning: the LM restarts from the new prefix with the recent tokens as prompt."""
        self.prefix = prefix
        self._lm_state, self._lm_stream = None, None
        change = {"window": window.index, "from_frame": self.lm_job.pos * GRID}  # first new token's frame
        self.stats.prompt_changes.append({**change, **{k: v for k, v in updates.items()}})

    def _start_lm(self) -> None:
        lm, job = self.models.lm, self.lm_job
        tl = self.timeline
        prompt = tl.tokens_at(tl.base // GRID, job.pos) if job.pos > 0 else None
        with torch.inference_mode(), num_threads(self.models.lm_threads):
            self._lm_state = lm.start(self.prefix, prompt, job.guidance)
        self._lm_stream = lm.stream(self._lm_state, job.temperature, job.top_k, job.top_p, job.generator)

    def _tokens_until(self, upto: int, index: int) -> Iterator[Progress]:
        job = self.lm_job
        target = upto if job.end is None else min(upto, job.end)
        total = target - job.pos
        done = 0
        while job.pos < target:
            n = min(LM_PROGRESS_EVERY, target - job.pos)
            with self.stats.timed("lm"):
                if self._lm_stream is None:
                    self._start_lm()
                assert self._lm_stream is not None
                with torch.inference_mode(), num_threads(self.models.lm_threads):
                    for _ in range(n):
                        check_cancel(self.control)
                        self.timeline.tokens_at(job.pos, job.pos + 1)[:, 0] = next(self._lm_stream)[:, 0]
                        job.pos += 1
            done += n
            self.stats.lm_tokens += n
            yield Progress("lm", done, total, index)

    # ------------------------------------------------------------------ DPD
    def _sample_window(self, w: Window) -> Iterator[Progress]:
        tl = self.timeline
        with self.stats.timed("dpd"), torch.inference_mode():
            shape = (1, w.length, tl.z.shape[2])
            noise = torch.randn(shape, generator=self.noise_generator).to(tl.z.device)  # CPU draw
            keep = tl.knowns(w.start, w.end).unsqueeze(0)  # (1, L)
            tokens = tl.tokens_at(w.start // GRID, w.end // GRID)  # (1, L / GRID)
            model = self.models
            v_fn = GuidedVelocity(model.dpd_forward, tokens, self.guidance, prepare=model.dpd_prepare)
            schedule = get_schedule(self.schedule, w.steps)
            if bool(keep.any()):
                steps = inpaint_steps(v_fn, tl.zs(w.start, w.end), keep, noise, schedule)
            else:
                steps = denoise_steps(v_fn, noise, None, schedule)
        z = noise
        while True:
            check_cancel(self.control)
            with self.stats.timed("dpd"), torch.inference_mode():
                step = next(steps, None)
            if step is None:
                break
            z = step.z
            self.stats.dpd_nfe += 1
            yield Progress("dpd", step.step, step.total, w.index)
        with torch.inference_mode():
            tl.zs(w.start, w.end)[:] = z
            tl.knowns(w.start, w.end)[:] = True
        self.stats.dpd_rows += v_fn.network_rows
