"""The sampling engine behind `MelodyPipeline`: semantic LM tokens + DPD windows over one latent
timeline, as a plain generator of events (no decoding, no I/O).

`Engine.run()` walks a window plan (`_pipeline_plan`); for each window it first makes the LM
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
fastest on a CPU), everything else with the pipeline's thread count. Thread counts and inference
mode are set around each computation and never held across a `yield`, so the consumer's own code
is not affected. The LM of the next window is not overlapped with the DPD of the current one
*(our choice)*: per continuation window the LM needs ~50 ms (63 tokens) against ~330 ms of DPD
steps + decoding (bundled model, 2 cores), so overlap could save at most ~13 %, and only with a
core to spare, while the DPD already runs on all cores; streaming is ~5-6x real time without it.

The sampler loop `denoise_steps` is `diffusion._denoise` written as a generator (one yield per
step, for progress and cancellation); tests check it is bit-identical to `diffusion.sample` and
`diffusion.sample_inpaint`. Its velocity is `WindowGuidance`: `diffusion.GuidedVelocity` with the
DPD's per-window context prepared once and the CFG twins sharing their input stage
(`DualPathDiffusion.prepare`); tests check it against `GuidedVelocity` to 1e-5.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from melody_core._pipeline_plan import GRID, Window
from melody_core.diffusion import cfg_mix, ddim_step, get_schedule, has_guidance_input, step_angles
from melody_core.pipeline_types import GenerationCancelled, Progress, StreamControl

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


def denoise_steps(
    v_fn: Callable[[Tensor, Tensor], Tensor], z: Tensor, keep: Tensor | None, schedule: Tensor
) -> Iterator[tuple[int, int, Tensor]]:
    """`diffusion._denoise` one step per `next()`: yields (step, total, z after the step).

    z: (B, L, D) start latents (noise on generated frames, clean latents on kept ones); keep: (B, L)
    bool or None. Kept frames get angle 0 and are restored bit-identically after every step (Eq. 12).
    """
    angles = step_angles(schedule)
    total = len(angles) - 1
    keep3 = None if keep is None else keep.unsqueeze(-1)  # (B, L) -> (B, L, 1)
    kept = z
    for k in range(total):
        with torch.inference_mode():
            delta, omega = angles[k].item(), (angles[k] - angles[k + 1]).item()
            dvec = z.new_full(z.shape[:2], delta)  # (B, L)
            if keep is not None:
                dvec = dvec.masked_fill(keep, 0.0)
            v = v_fn(z, dvec)
            z = ddim_step(z, v, omega)
            if keep3 is not None:
                z = torch.where(keep3, kept, z)
        yield k + 1, total, z


class WindowGuidance:
    """`diffusion.GuidedVelocity` for the steps of one DPD window (same v to float rounding, same
    `nfe` / `network_calls` / `network_rows` counters): the network context (fused weights, E_ST and
    its keys/values, phasors) is prepared at the first step and reused, and the CFG batch is given
    as twins: z and delta once, cond rows ⊕ uncond rows out (`DualPathDiffusion.prepare`).

    model: the MelodyPipeline (`dpd_prepare` / `dpd_forward`); tokens: (B, T_st) or None.
    """

    def __init__(self, model: Any, tokens: Tensor | None, scale: float) -> None:
        self.model, self.tokens, self.scale = model, tokens, float(scale)
        self.nfe = self.network_calls = self.network_rows = 0
        self._context: Any = None
        self._shape: tuple[int, int] | None = None
        self._guided_input = tokens is not None and has_guidance_input(getattr(model, "dpd", None))
        self._kw = {"guidance": self.scale} if self._guided_input else {}  # rho of such a DPD

    def network_inputs(self, b: int) -> tuple[Tensor | None, Tensor | None, bool]:
        """Network (tokens, uncond, twins) for a z of b rows, as `GuidedVelocity` batches them."""
        dev = None if self.tokens is None else self.tokens.device
        if self.tokens is None:
            return None, None, False
        if self.scale == 1 or self._guided_input:  # a guidance-distilled DPD takes rho: one row
            return self.tokens, None, False
        if self.scale == 0:
            return self.tokens, torch.ones(b, dtype=torch.bool, device=dev), False
        uncond = torch.arange(2 * b, device=dev) >= b  # (2B,) False for cond rows, True for uncond
        return torch.cat([self.tokens, self.tokens]), uncond, True

    def __call__(self, z: Tensor, delta: Tensor) -> Tensor:
        self.nfe += 1
        b, length = z.shape[:2]
        tokens, uncond, twins = self.network_inputs(b)
        if self._shape != (b, length):
            rows = 2 * b if twins else b
            self._context = self.model.dpd_prepare(tokens, uncond, rows, length, twins, **self._kw)
            self._shape = (b, length)
        if twins and self._context is None:  # no context (e.g. a compiled network): the plain CFG batch
            z, delta = torch.cat([z, z]), torch.cat([delta, delta])
        self.network_calls += 1
        self.network_rows += 2 * b if twins else b
        if self._context is None:
            v = self.model.dpd_forward(z, delta, tokens, uncond, **self._kw)
        else:
            v = self.model.dpd_forward(z, delta, None, None, context=self._context)
        return cfg_mix(v[:b], v[b:], self.scale) if twins else v


class Timeline:
    """Latents (DPD space, (1, frames, D)) and semantic tokens ((1, tokens) int64) of one job.

    `known[f]`: frame f holds final latents (given context or generated). Buffers grow on demand.
    """

    def __init__(self, d_latent: int, device: torch.device, z: Tensor | None = None,
                 tokens: Tensor | None = None) -> None:
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

    def reserve(self, frames: int) -> None:
        """Make room for `frames` frames and frames / GRID tokens."""
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

    model: object with `lm` (SemanticLM), `lm_threads` and `dpd_forward` (a callable with the
    DPDNetwork contract, possibly autocast/compiled) — the MelodyPipeline; prefix: (1, n_prefix) MuLan
    tokens; on_update: called with `StreamControl.take_updates()` before each window after the first
    (prompt automation), returns the new prefix or None when the conditioning is unchanged;
    stop_on_request: end after the window in progress once `control.stop_after_current()` was called.
    """

    def __init__(
        self,
        model: Any,
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
    ) -> None:
        self.model, self.timeline, self.windows, self.lm_job = model, timeline, windows, lm_job
        self.prefix, self.noise_generator = prefix, noise_generator
        self.guidance, self.schedule, self.control = guidance, schedule, control
        self.on_update, self.stop_on_request = on_update, stop_on_request
        self.stats = stats or Stats()
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
        lm, job = self.model.lm, self.lm_job
        prompt = self.timeline.tokens[:, : job.pos] if job.pos > 0 else None
        with torch.inference_mode(), num_threads(self.model.lm_threads):
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
                with torch.inference_mode(), num_threads(self.model.lm_threads):
                    for _ in range(n):
                        check_cancel(self.control)
                        self.timeline.tokens[:, job.pos] = next(self._lm_stream)[:, 0]
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
            keep = tl.known[w.start : w.end].unsqueeze(0)  # (1, L)
            tokens = tl.tokens[:, w.start // GRID : w.end // GRID]  # (1, L / GRID)
            v_fn = WindowGuidance(self.model, tokens, self.guidance)
            if bool(keep.any()):
                z = torch.where(keep.unsqueeze(-1), tl.z[:, w.start : w.end], noise)  # (1, L, 1) mask
            else:
                z, keep = noise, None
            steps = denoise_steps(v_fn, z, keep, get_schedule(self.schedule, w.steps))
        while True:
            check_cancel(self.control)
            with self.stats.timed("dpd"):
                out = next(steps, None)
            if out is None:
                break
            k, total, z = out
            self.stats.dpd_nfe += 1
            yield Progress("dpd", k, total, w.index)
        with torch.inference_mode():
            tl.z[:, w.start : w.end] = z
            tl.known[w.start : w.end] = True
        self.stats.dpd_rows += v_fn.network_rows
