"""Angle-parameterised diffusion for DPD (§4.2): schedules, forward process, multi-chunk training
targets, the DDIM angle step, classifier-free guidance and the samplers (§4.2.4).

k-diffusion style: short pure functions; schedules are separate functions returning the angle
schedule ω_1..ω_T; every sampler shares the signature `(v_fn, z, schedule, ..., callback=None)`
where `v_fn(z (B, L, D), delta (B, L)) -> v (B, L, D)` predicts the velocity (Eq. 5) for a
per-frame angle vector (Eq. 10). A network with the DPD contract is adapted to a `v_fn` by
`GuidedVelocity` (CFG), not inside the samplers. Latents are channel-last (B, L, D).

Ordering. A schedule is a 1-D tensor `omegas` with omegas[t-1] = ω_t. Sampling runs t = T…1 and the
step at t takes z_{δ_t} to z_{δ_t − ω_t} = z_{δ_{t−1}} with ω_t (Eq. 12). `step_angles` returns the
T + 1 angles visited, δ_T, …, δ_1, 0, in sampling order.

Choices *(our choice)* where the paper is silent or inconsistent:
- Start angle = Σω (π/2 for every full schedule, Eq. 3). A partial schedule (a prefix ω_1..ω_t,
  or any positive schedule summing to δ_s < π/2) therefore starts at δ_s: this is the SDEdit-style
  "variation strength" and what the exactness tests use. The visited angles are computed per
  Eq. 3 and the last one is set to exactly 0, so the final step has size δ_1 and lands on
  predict_z0 (cos δ_1 z − sin δ_1 v̂) without round-off drift.
- Eq. 10 writes [δ_m] repeated L_m times; the chunk length is L_m − L_{m−1} (Eq. 7 slicing).
- Eq. 6 writes δ ~ U[0, 1]; we follow §4.2.2 and draw δ_m ~ U[0, π/2] (torch.rand: [0, π/2)).
- `grid`: DESIGN §3 puts chunk hops on the semantic-token grid (10 latent frames per token). With
  grid g the bounds are g·⌊m(L/g)/M⌋, and the last chunk is g·⌈(L/g)/M⌉ frames, which is exactly
  `new_chunk_length` used by continuation, so training and continuation chunks agree. grid = 1 is
  the paper (L = 2500, M = 4: 625 frames; with grid 10: chunks 620/630/620/630, new chunk 630).
- Kept frames (continuation, inpainting, clean staggered chunks) get angle 0 and are restored with
  `torch.where` after every step, so they come back bit-identical even if v̂ is not finite there.
- CFG (§5.1): ρ v_cond + (1 − ρ) v_uncond. Conditional and unconditional rows go through ONE
  batched forward (uncond rows flagged, the network swaps cross- for self-attention); ρ = 1 runs
  the conditional rows only, ρ = 0 the unconditional rows only. One guided evaluation = 1 NFE
  (Table 3 accounting); `GuidedVelocity.network_rows` counts the batch rows actually run.
- Cancellation: a `callback` may raise (or a `denoise_steps` consumer simply stops iterating); the
  exception propagates unchanged. Samplers hold no state besides local tensors.
- One loop: `denoise_steps` is the only implementation of Eq. 12 sampling; `sample*` and the
  generation engine (`melody_core.generation.engine`) drive it. The DESIGN's staggered first window
  is not implemented: with this DPD every step still runs on all L frames and chunk 0 is clean
  after the same T steps, so it cannot lower the time to first sound (see `generation`).
- NFE: Table 3 counts 25·T LM steps + DPD steps for any length T, ignoring that audio longer than
  one window needs continuation windows; `nfe_melody_windowed` adds them. (The paper's "0.41% of
  MusicLM at 30 s" matches (25·30 + 20) / (625·30) = 4.1%, not 0.41%.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import torch
from torch import Tensor

from melody_core import LATENT_RATE, SEMANTIC_RATE

HALF_PI = math.pi / 2  # δ of pure noise (Eq. 2)
CFG_SCALE = 2.5  # ρ, §5.1
SCHEDULE_TOLERANCE = 1e-5  # |Σω − start| allowed when validating a schedule
MUSICLM_NFE_PER_SECOND = 25 + 200 + 400  # semantic + coarse + fine acoustic tokens per second (Table 3)
NOISE2MUSIC_NFE = 1000 + 800 + 800  # Table 3: fixed cascade of three diffusion models

VelocityFn = Callable[[Tensor, Tensor], Tensor]  # (z (B, L, D), delta (B, L)) -> v (B, L, D)
Angle = float | Tensor  # scalar, (B,) or (B, L)


# ---------------------------------------------------------------- angle schedules (Eq. 3, 4)
def _check_steps(steps: int) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"number of steps must be an int >= 1, got {steps!r}")


def linear_schedule(steps: int) -> Tensor:
    """Eq. 4: ω_t = π/(6T) + 2πt/(3T(T+1)), t = 1..T (float64, (T,)); larger steps at high noise."""
    _check_steps(steps)
    t = torch.arange(1, steps + 1, dtype=torch.float64)
    return math.pi / (6 * steps) + 2 * math.pi * t / (3 * steps * (steps + 1))


def uniform_schedule(steps: int) -> Tensor:
    """Schneider et al. [23]: ω_t = π/(2T) (float64, (T,)); the ablation baseline."""
    _check_steps(steps)
    return torch.full((steps,), math.pi / (2 * steps), dtype=torch.float64)


SCHEDULES: dict[str, Callable[[int], Tensor]] = {"linear": linear_schedule, "uniform": uniform_schedule}


def get_schedule(name: str, steps: int) -> Tensor:
    if name not in SCHEDULES:
        raise ValueError(f"unknown angle schedule {name!r} (choose from {', '.join(SCHEDULES)})")
    return SCHEDULES[name](steps)


def _as_schedule(schedule: Tensor | Sequence[float]) -> Tensor:
    omegas = torch.as_tensor(schedule, dtype=torch.float64).cpu()
    if omegas.ndim != 1 or omegas.numel() == 0:
        raise ValueError(f"a schedule is a non-empty 1-D sequence of ω_t, got shape {tuple(omegas.shape)}")
    if not bool((omegas > 0).all()) or not bool(torch.isfinite(omegas).all()):
        raise ValueError("every ω_t must be finite and > 0")
    if omegas.sum().item() > HALF_PI + SCHEDULE_TOLERANCE:
        raise ValueError(f"Σω = {omegas.sum().item():.6f} exceeds π/2")
    return omegas


def angles_from_schedule(schedule: Tensor | Sequence[float]) -> Tensor:
    """Eq. 3 in sampling order: (δ_T, …, δ_1), float64 (T,), δ_T = Σω (= π/2 for a full schedule),
    δ_t = δ_T − Σ_{i>t} ω_i."""
    omegas = _as_schedule(schedule)
    start = HALF_PI if abs(omegas.sum().item() - HALF_PI) <= SCHEDULE_TOLERANCE else omegas.sum().item()
    above = torch.cat([omegas.new_zeros(1), omegas.flip(0).cumsum(0)[:-1]])  # Σ_{i>t} ω_i, t = T..1
    return start - above


def step_angles(schedule: Tensor | Sequence[float]) -> Tensor:
    """The T + 1 angles a sampler visits: δ_T, …, δ_1, 0 (float64; the last one exactly 0)."""
    deltas = angles_from_schedule(schedule)
    return torch.cat([deltas, deltas.new_zeros(1)])


def continuation_steps(steps: int, n_chunks: int) -> int:
    """§4.2.4: a continuation chunk is denoised in ⌈T/M⌉ DDIM steps (the paper's default)."""
    return math.ceil(steps / n_chunks)


# ---------------------------------------------------------------- forward process (Eq. 2, 5)
def _angle(angle: Angle, z: Tensor) -> Tensor | float:
    """Scalar, (B,) or (B, L) angle -> something broadcastable against z (B, L, D)."""
    if not isinstance(angle, Tensor):
        return float(angle)
    if angle.ndim == 0:
        return angle.to(z.device)
    if angle.ndim == 1 and angle.shape[0] == z.shape[0]:
        return angle.to(z.device).view(-1, 1, 1)  # (B,) -> (B, 1, 1)
    if angle.ndim == 2 and angle.shape == z.shape[:2]:
        return angle.to(z.device).unsqueeze(-1)  # (B, L) -> (B, L, 1)
    raise ValueError(f"angle of shape {tuple(angle.shape)} does not fit latents {tuple(z.shape)}")


def _cos_sin(angle: Angle, z: Tensor) -> tuple[Tensor | float, Tensor | float]:
    a = _angle(angle, z)
    if isinstance(a, float):
        return math.cos(a), math.sin(a)
    return torch.cos(a).to(z.dtype), torch.sin(a).to(z.dtype)


def noise(z0: Tensor, eps: Tensor, delta: Angle) -> Tensor:
    """Eq. 2: z_δ = cos δ z_0 + sin δ ε."""
    c, s = _cos_sin(delta, z0)
    return c * z0 + s * eps


def velocity_target(z0: Tensor, eps: Tensor, delta: Angle) -> Tensor:
    """Eq. 5: v_δ = cos δ ε − sin δ z_0."""
    c, s = _cos_sin(delta, z0)
    return c * eps - s * z0


def predict_z0(z_delta: Tensor, v: Tensor, delta: Angle) -> Tensor:
    """§4.2.1: z_0 = cos δ z_δ − sin δ v_δ."""
    c, s = _cos_sin(delta, z_delta)
    return c * z_delta - s * v


def predict_eps(z_delta: Tensor, v: Tensor, delta: Angle) -> Tensor:
    """ε = sin δ z_δ + cos δ v_δ (inverting Eq. 2 and 5)."""
    c, s = _cos_sin(delta, z_delta)
    return s * z_delta + c * v


def ddim_step(z: Tensor, v: Tensor, omega: Angle) -> Tensor:
    """Eq. 12: z_{δ−ω} = cos ω z_δ − sin ω v̂. ω scalar, (B,) or per-frame (B, L) (0 = frame kept)."""
    c, s = _cos_sin(omega, z)
    return c * z - s * v


# ---------------------------------------------------------------- multi-chunk training (Eq. 7-10)
def chunk_bounds(length: int, n_chunks: int, grid: int = 1) -> tuple[int, ...]:
    """(L_0 = 0, L_1, …, L_M = L) with L_m = g·⌊m(L/g)/M⌋ (Eq. 7 for g = 1; grid g: see module doc)."""
    if length % grid:
        raise ValueError(f"length {length} is not a multiple of the grid {grid}")
    units = length // grid
    if not 1 <= n_chunks <= units:
        raise ValueError(f"need 1 <= M <= {units} chunks, got {n_chunks}")
    return tuple(grid * (m * units // n_chunks) for m in range(n_chunks + 1))


def new_chunk_length(length: int, n_chunks: int, grid: int = 1) -> int:
    """§4.2.4: frames of the appended noise chunk, ⌈L/M⌉ (rounded up to the grid) = the last chunk."""
    bounds = chunk_bounds(length, n_chunks, grid)
    return bounds[-1] - bounds[-2]


def sample_chunk_angles(
    batch: int, n_chunks: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> Tensor:
    """δ_m ~ U[0, π/2] for every example and chunk (§4.2.2): (B, M) float32."""
    return torch.rand(batch, n_chunks, generator=generator, device=device) * HALF_PI


def angle_vector(deltas: Tensor, length: int, grid: int = 1) -> Tensor:
    """Eq. 10: per-chunk angles (B, M) -> per-frame angle vector (B, L), constant within chunks."""
    bounds = chunk_bounds(length, deltas.shape[1], grid)
    sizes = torch.tensor([b - a for a, b in zip(bounds[:-1], bounds[1:])], device=deltas.device)
    return deltas.repeat_interleave(sizes, dim=1)  # (B, M) -> (B, L)


class TrainingExample(NamedTuple):
    z_noisy: Tensor  # (B, L, D) z̄_δ1 ⊕ … ⊕ z̄_δM (Eq. 9)
    delta: Tensor  # (B, L) angle vector (Eq. 10)
    v_target: Tensor  # (B, L, D) v_tgt (Eq. 7)


def multi_chunk_training_example(
    z0: Tensor, n_chunks: int, generator: torch.Generator | None = None, grid: int = 1
) -> TrainingExample:
    """Inputs and target of the multi-chunk loss (Eq. 8): ||v_target − v̂(z_noisy; u, delta)||²."""
    b, length, _ = z0.shape
    eps = torch.randn(z0.shape, generator=generator, device=z0.device, dtype=z0.dtype)
    deltas = sample_chunk_angles(b, n_chunks, generator, z0.device)
    delta = angle_vector(deltas, length, grid).to(z0.dtype)
    return TrainingExample(noise(z0, eps, delta), delta, velocity_target(z0, eps, delta))


def masked_angle_vector(keep_mask: Tensor, delta: float) -> Tensor:
    """§4.2.4: angle 0 on kept (clean) frames and δ on generated ones: (B, L) bool -> (B, L) float32."""
    return torch.where(keep_mask, 0.0, delta).to(torch.float32)


def continuation_mask(batch: int, keep: int, new: int, device: torch.device | str = "cpu") -> Tensor:
    """(B, keep + new) bool, True on the first `keep` frames: δ_new = [0]^keep ⊕ [δ_t]^new."""
    mask = torch.zeros(batch, keep + new, dtype=torch.bool, device=device)
    mask[:, :keep] = True
    return mask


# ---------------------------------------------------------------- classifier-free guidance (§5.1)
def cfg_mix(v_cond: Tensor, v_uncond: Tensor, scale: float) -> Tensor:
    """ρ v_cond + (1 − ρ) v_uncond; ρ = 1 is conditional only, ρ = 0 unconditional only."""
    if scale == 1:
        return v_cond
    if scale == 0:
        return v_uncond
    return scale * v_cond + (1 - scale) * v_uncond


class DPDNetwork(Protocol):
    """DPD contract: model(z (B, L, D), delta (B, L), tokens (B, T_st) | None, uncond (B,) | None).

    A network with a per-window context (`DualPathDiffusion.prepare`) also accepts
    `model(z, delta, None, None, context=ctx)`; see `GuidedVelocity`'s `prepare`."""

    def __call__(self, z: Tensor, delta: Tensor, tokens: Tensor | None, uncond: Tensor | None) -> Tensor: ...


# prepare(tokens, uncond, rows, length, twins, **guidance) -> context for `model(..., context=ctx)`, or None
PrepareFn = Callable[..., object]


def has_guidance_input(model: object) -> bool:
    """A guidance-distilled DPD (`DPDConfig.guidance_embed`): takes rho, predicts the guided v itself.
    `model` is the network or a bound method of an object holding it as `.dpd` (the ModelSet)."""
    net = getattr(getattr(model, "__self__", None), "dpd", model)
    return bool(getattr(getattr(net, "config", None), "guidance_embed", False))


class GuidedVelocity:
    """v_fn for a DPD network with CFG: one batched forward per evaluation (cond rows ⊕ uncond rows).

    `tokens=None` runs the network unconditionally (no guidance possible). Counters: `nfe` guided
    evaluations (Table 3), `network_calls` forwards, `network_rows` batch rows pushed through.

    `prepare` (optional, e.g. `MelodyPipeline.dpd_prepare`): called once per window shape with the
    network's (tokens, uncond, rows, length, twins); a context it returns is reused by every later
    call, and the CFG batch is then given as twins (z and delta once; cond rows ⊕ uncond rows out).
    A None context (no prepare, a compiled network) falls back to the plain concatenated batch.
    """

    def __init__(self, model: DPDNetwork, tokens: Tensor | None, scale: float = CFG_SCALE,
                 prepare: PrepareFn | None = None) -> None:
        self.model, self.tokens, self.scale, self.prepare = model, tokens, float(scale), prepare
        self.nfe = self.network_calls = self.network_rows = 0
        self._context: object = None
        self._shape: tuple[int, int] | None = None
        # a guidance-distilled DPD takes rho as an input: one row per step, no CFG batch
        self._kw = {"guidance": self.scale} if tokens is not None and has_guidance_input(model) else {}

    def network_inputs(
        self, b: int, device: torch.device | None = None
    ) -> tuple[Tensor | None, Tensor | None, bool]:
        """Network (tokens, uncond, twins) for a z of b rows: twins = the batch is cond ⊕ uncond."""
        if self.tokens is None:
            return None, None, False
        dev = self.tokens.device if device is None else device
        if self.scale == 1 or self._kw:
            return self.tokens, None, False
        if self.scale == 0:
            return self.tokens, torch.ones(b, dtype=torch.bool, device=dev), False
        uncond = torch.arange(2 * b, device=dev) >= b  # (2B,) False for cond rows, True for uncond
        return torch.cat([self.tokens, self.tokens]), uncond, True

    def __call__(self, z: Tensor, delta: Tensor) -> Tensor:
        self.nfe += 1
        b, length = z.shape[:2]
        tokens, uncond, twins = self.network_inputs(b, z.device)
        rows = 2 * b if twins else b
        if self.prepare is not None and self._shape != (b, length):
            self._context = self.prepare(tokens, uncond, rows, length, twins, **self._kw)
            self._shape = (b, length)
        self.network_calls += 1
        self.network_rows += rows
        if self._context is not None:
            v = self.model(z, delta, None, None, context=self._context)  # type: ignore[call-arg]
        elif twins:
            v = self.model(torch.cat([z, z]), torch.cat([delta, delta]), tokens, uncond)  # (2B, L, D)
        else:
            v = self.model(z, delta, tokens, uncond, **self._kw)
        return cfg_mix(v[:b], v[b:], self.scale) if twins else v


# ---------------------------------------------------------------- the denoising loop (§4.2.4, Eq. 12)
@dataclass(frozen=True)
class SamplerStep:
    """One step of `denoise_steps`, also the progress report passed to a sampler's `callback`."""

    step: int  # 1-based index of the step just taken
    total: int  # number of steps (= NFEs) of this sampler call
    delta: float  # angle of the generated frames before this step (δ_t)
    angles: Tensor  # (B, L) angle vector given to v_fn at this step
    z: Tensor  # (B, L, D) latent window after the step (do not modify)
    z_before: Tensor = field(repr=False)  # (B, L, D) window before the step
    v: Tensor = field(repr=False)  # (B, L, D) velocity v̂ used by the step
    kept: Tensor | None = field(default=None, repr=False)  # (B, L, D) clean context (where keep)
    keep: Tensor | None = field(default=None, repr=False)  # (B, L, 1) True on kept frames

    @property
    def z0_hat(self) -> Tensor:
        """(B, L, D) predicted clean latent at this step (preview; computed on demand)."""
        z0 = predict_z0(self.z_before, self.v, self.angles)
        return z0 if self.keep is None else torch.where(self.keep, self.kept, z0)


@dataclass(frozen=True)
class SamplerInfo:
    nfe: int  # v_fn evaluations
    steps: int  # sampler steps


StepCallback = Callable[[SamplerStep], None]


def denoise_steps(
    v_fn: VelocityFn, z: Tensor, keep: Tensor | None, schedule: Tensor
) -> Iterator[SamplerStep]:
    """THE denoising loop: Eq. 12 for t = T…1, one `SamplerStep` per `next()` (callers check
    cancellation and report progress between steps, as k-diffusion's samplers and superqt's
    GeneratorWorker do). Runs under the caller's grad mode at each `next()`.

    z: (B, L, D) start latents (noise at Σω on generated frames, clean latents on kept ones); keep:
    (B, L) bool or None. Kept frames get angle 0 and are restored bit-identically after every step.
    """
    angles = step_angles(schedule)
    total = len(angles) - 1
    keep3 = None if keep is None else keep.unsqueeze(-1)  # (B, L) -> (B, L, 1)
    kept = z
    for k in range(total):
        delta, omega = angles[k].item(), (angles[k] - angles[k + 1]).item()
        dvec = z.new_full(z.shape[:2], delta)  # (B, L)
        if keep is not None:
            dvec = dvec.masked_fill(keep, 0.0)
        v = v_fn(z, dvec)
        z_prev, z = z, ddim_step(z, v, omega)
        if keep3 is not None:
            z = torch.where(keep3, kept, z)
        yield SamplerStep(k + 1, total, delta, dvec, z, z_prev, v, None if keep3 is None else kept, keep3)


def inpaint_steps(v_fn: VelocityFn, z_known: Tensor, keep_mask: Tensor, noise: Tensor,
                  schedule: Tensor) -> Iterator[SamplerStep]:
    """`denoise_steps` regenerating the frames where keep_mask (B, L) is False; the others are clean
    context (angle 0) and come back bit-identical. `noise` (B, L, D) is z at the start angle Σω for
    the generated frames: N(0, I) for a full schedule, `noise(z_known, eps, Σω)` for a partial one."""
    if keep_mask.shape != z_known.shape[:2] or keep_mask.dtype != torch.bool:
        raise ValueError(f"keep_mask must be bool {tuple(z_known.shape[:2])}, got {tuple(keep_mask.shape)}")
    start = torch.where(keep_mask.unsqueeze(-1), z_known, noise)  # (B, L, 1) mask
    return denoise_steps(v_fn, start, keep_mask, schedule)


def run_steps(
    steps: Iterator[SamplerStep], callback: StepCallback | None = None
) -> tuple[Tensor, SamplerInfo]:
    """Drive `denoise_steps` to the end; `callback` sees every step (an exception it raises cancels)."""
    last = None
    for last in steps:
        if callback is not None:
            callback(last)
    assert last is not None  # a schedule has at least one step
    return last.z, SamplerInfo(nfe=last.total, steps=last.total)


@torch.no_grad()
def sample(
    v_fn: VelocityFn, z_T: Tensor, schedule: Tensor, callback: StepCallback | None = None
) -> tuple[Tensor, SamplerInfo]:
    """Fresh generation: z_{π/2} = z_T ~ N(0, I) (B, L, D) -> z_0 (B, L, D) in T = len(schedule) steps."""
    return run_steps(denoise_steps(v_fn, z_T, None, schedule), callback)


@torch.no_grad()
def sample_continuation(
    v_fn: VelocityFn,
    z_known: Tensor,
    noise_new: Tensor,
    schedule: Tensor,
    callback: StepCallback | None = None,
) -> tuple[Tensor, SamplerInfo]:
    """§4.2.4 continuation: window = z_known (B, L_keep, D) ⊕ noise_new (B, L_new, D), angle vector
    [0]^L_keep ⊕ [δ_t]^L_new; only the new frames move. Returns the whole window (B, L_keep + L_new, D),
    kept frames bit-identical. Paper: L_new = ⌈L/M⌉ and `continuation_steps(T, M)` steps."""
    b, keep, _ = z_known.shape
    mask = continuation_mask(b, keep, noise_new.shape[1], z_known.device)
    return run_steps(denoise_steps(v_fn, torch.cat([z_known, noise_new], dim=1), mask, schedule), callback)


@torch.no_grad()
def sample_inpaint(
    v_fn: VelocityFn,
    z_known: Tensor,
    keep_mask: Tensor,
    noise: Tensor,
    schedule: Tensor,
    callback: StepCallback | None = None,
) -> tuple[Tensor, SamplerInfo]:
    """`inpaint_steps` run to the end: the window with the frames where keep_mask is False regenerated."""
    return run_steps(inpaint_steps(v_fn, z_known, keep_mask, noise, schedule), callback)


# ---------------------------------------------------------------- NFE accounting (Table 3)
def nfe_melody(seconds: float, steps: int) -> float:
    """Table 3: 25·T semantic-LM steps + DPD steps (one CFG-guided evaluation = 1 NFE)."""
    return SEMANTIC_RATE * seconds + steps


def nfe_melody_windowed(
    seconds: float,
    steps: int,
    window_seconds: float = 10.0,
    n_chunks: int = 4,
    chunk_steps: int | None = None,
) -> float:
    """Table 3 plus the continuation windows that audio longer than one window needs (§4.2.4):
    each appended chunk of window/M seconds costs `chunk_steps` (default ⌈T/M⌉) DPD steps."""
    chunk_steps = continuation_steps(steps, n_chunks) if chunk_steps is None else chunk_steps
    chunk_frames = math.ceil(window_seconds * LATENT_RATE / n_chunks)
    extra_frames = max(0.0, (seconds - window_seconds) * LATENT_RATE)
    return nfe_melody(seconds, steps) + math.ceil(extra_frames / chunk_frames) * chunk_steps


def nfe_musiclm(seconds: float) -> float:
    """Table 3: (25 + 200 + 400)·T (semantic, coarse and fine acoustic LMs)."""
    return MUSICLM_NFE_PER_SECOND * seconds


def nfe_noise2music() -> int:
    """Table 3: 1000 + 800 + 800, independent of the length."""
    return NOISE2MUSIC_NFE
