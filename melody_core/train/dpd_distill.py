"""Stage `dpd-distill`: fewer, cheaper DPD steps from a trained teacher (CPU preset v2, beyond the paper).

The teacher is the `dpd` component of the `--upstream` paths (the first one providing it wins: put a
run folder before a bundle), on the same VAE latents (its `latent_scale`) and semantic tokens. The
student starts from the teacher's weights (or `--init-from`). Two phases (`--phase`):

- guidance (Meng et al. 2023, "On distillation of guided diffusion models", stage 1): the student
  gets the CFG scale rho as an input (`DPDConfig.guidance_embed`, a FiLM input, zero at init so it
  starts as the teacher's conditional model) and learns, in ONE forward,
      v_student(z, delta, u, rho) ~= rho v_T(z, delta, u) + (1 - rho) v_T(z, delta, 0)    (§5.1 CFG)
  on the teacher's training inputs (multi-chunk noisy windows, Eq. 7-10), rho ~ U[rho_lo, rho_hi];
  rows dropped to unconditional (p = cfg_dropout) learn the teacher's unconditional v.
- progressive (Salimans & Ho 2022, "Progressive distillation", made for v-prediction): the student
  takes one DDIM angle step (Eq. 12) where the teacher takes two. With N = teacher_steps / 2 student
  steps on the angle schedule of Eq. 4 (`linear_schedule(N)`, the sampler's), a student step
  delta -> delta' is matched by two teacher steps delta -> (delta + delta')/2 -> delta' (the
  teacher's guided v at rho when it has the guidance input, else CFG at rho), and the target is the
  v that lands where the teacher landed in one step of size w = delta - delta':
      z_{delta'} = cos w z_delta - sin w v~   =>   v~ = (cos w z_delta - z~_{delta'}) / sin w
  (Salimans & Ho's target written in the angle parameterisation; the loss is ||v_student - v~||^2).
  Continuation windows: with probability `KEEP_P` the first 1..M-1 chunks are clean context at angle
  0 (as the pipeline's continuation and progressive start) and only the other frames are scored.
  `--rounds R` halves the steps R times in one run: after each round the teacher becomes the
  student's copy (steps_per_round = total / R); 16 teacher steps, 2 rounds -> a 4-step student.

Export (`melody train export RUN --base BUNDLE`): the bundle's meta gets `latent_scale`, and its
`stages.dpd` the `dpd_sampler` the student was distilled for {phase, steps (progressive), schedule,
guidance_input, rho_range}: generate with `--steps` = that value; `--guidance` is then rho, given to the
network (one forward per step, `diffusion.has_guidance_input`). The teacher is not exported.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from melody_core import FRAMES_PER_TOKEN
from melody_core.config import component_classes
from melody_core.diffusion import (
    CFG_SCALE,
    VelocityFn,
    chunk_bounds,
    ddim_step,
    linear_schedule,
    multi_chunk_training_example,
    noise,
    step_angles,
)
from melody_core.train.dpd import DPDStage
from melody_core.train.stage import Hyper, LRSchedule, StageContext, TrainError, adamw, optimize
from melody_core.train.state import encoder_hash

PHASES = ("guidance", "progressive")
DEFAULT_RHO = (1.0, 5.0)  # rho range of guidance distillation (holds the paper's CFG scale 2.5, §5.1)
DEFAULT_TEACHER_STEPS = 16  # progressive: teacher steps of the first round
KEEP_P = 0.5  # progressive: probability of a continuation-style example (clean leading chunks)
ARCH_FIELDS = (
    "patch",
    "d_hid",
    "n_blocks",
    "n_heads",
    "segment_size",
    "sru_hidden",
    "ffn_mult",
    "vocab_size",
)
VALID_SEED = 1234  # fixed noise, angles and rho of the validation examples


def distill_settings(opts_args: dict[str, Any]) -> dict[str, Any]:
    """The phase settings of a run (CLI `--phase`, `--rho`, `--teacher-steps`, `--rounds`), checked."""
    phase = opts_args.get("phase", "guidance")
    if phase not in PHASES:
        raise TrainError(f"unknown phase {phase!r} (choose from {', '.join(PHASES)})")
    lo, hi = (float(x) for x in opts_args.get("rho", DEFAULT_RHO))
    if not 0 <= lo <= hi <= 20:
        raise TrainError(f"--rho needs 0 <= low <= high <= 20, got {lo:g} {hi:g}")
    steps, rounds = (
        int(opts_args.get("teacher_steps", DEFAULT_TEACHER_STEPS)),
        int(opts_args.get("rounds", 1)),
    )
    if phase == "progressive" and (rounds < 1 or steps % (2**rounds) or steps < 2):
        raise TrainError(f"--teacher-steps {steps} cannot be halved {rounds} time(s)")
    return {"phase": phase, "rho": (lo, hi), "teacher_steps": steps, "rounds": rounds}


def progressive_target(
    v_fn: VelocityFn, z: torch.Tensor, keep: torch.Tensor, d_hi: torch.Tensor, d_lo: torch.Tensor
) -> torch.Tensor:
    """Salimans & Ho's target in the angle parameterisation: the v~ (B, L, D) with which ONE DDIM step
    (Eq. 12) of size w = d_hi - d_lo from z (B, L, D) lands where TWO teacher steps d_hi -> (d_hi +
    d_lo)/2 -> d_lo land. keep (B, L): clean frames at angle 0, restored after each step (their v~ is
    not meaningful: mask them out of the loss). d_hi, d_lo: (B,) with d_hi > d_lo >= 0."""
    mid = (d_hi + d_lo) / 2
    keep3 = keep.unsqueeze(-1)
    zt = z
    for a, c in ((d_hi, mid), (mid, d_lo)):
        dvec = torch.where(keep, 0.0, a.unsqueeze(1))  # (B, L) angle vector of this teacher step
        zt = torch.where(keep3, z, ddim_step(zt, v_fn(zt, dvec), a - c))  # Eq. 12
    w = (d_hi - d_lo).view(-1, 1, 1)
    return (torch.cos(w) * z - zt) / torch.sin(w)  # z_{d_lo} = cos w z - sin w v~


class DPDDistillStage(DPDStage):
    name = "dpd-distill"
    component = "dpd"
    needs = ("vae", "ssl", "kmeans", "dpd")  # "dpd": the teacher
    metrics = ("loss",)

    def defaults(self, preset: str) -> Hyper:
        if preset == "paper":
            return Hyper(
                batch_size=16, crop_seconds=10.0, lr=5e-5, steps=50_000, warmup=1000, valid_every=2000
            )
        return Hyper(batch_size=4, crop_seconds=10.0, lr=1e-4, steps=2000, warmup=100, valid_every=250)

    def make_config(self, opts, hp, upstream, init):
        """The teacher's config (or the init's), with the guidance input for phase `guidance`."""
        settings = distill_settings(opts.stage_args)
        cfg_cls, _ = component_classes(self.component)
        base = (init or upstream["dpd"]).config.to_dict()
        if settings["phase"] == "guidance":
            base["guidance_embed"] = True
        forced = self.derived_config(upstream, hp, opts)
        clash = {k for k in forced if k in opts.overrides and opts.overrides[k] != forced[k]}
        arch = {k for k in ARCH_FIELDS if k in opts.overrides and opts.overrides[k] != base.get(k)}
        if clash or arch:
            raise TrainError("the student keeps the teacher's architecture (--set only training fields)")
        try:
            return cfg_cls.from_dict({**base, **opts.overrides, **forced})
        except (ValueError, TypeError) as exc:
            raise TrainError(f"{self.component} config: {exc}") from None

    def setup(self, ctx: StageContext) -> None:
        self.settings = distill_settings(ctx.opts.stage_args)
        teacher = ctx.upstream["dpd"]
        if teacher.model.config.patch != ctx.config.patch:
            raise TrainError("the student must have the teacher's patch size")
        _, model_cls = component_classes(self.component)
        self.model = model_cls(ctx.config).to(ctx.device)
        source = ctx.init.model if ctx.init is not None else teacher.model
        missing, unexpected = self.model.load_state_dict(source.state_dict(), strict=False)
        if unexpected or any(not k.startswith("guidance.") for k in missing):
            raise TrainError(f"the student cannot start from {teacher.source}: weights do not match")
        self.teacher = copy.deepcopy(teacher.model).to(ctx.device).eval().requires_grad_(False)
        self.teacher_guided = self.teacher.config.guidance_embed
        if self.settings["phase"] == "guidance" and self.teacher_guided:
            raise TrainError("the teacher already takes rho as an input: use --phase progressive")
        self.net = ctx.prepare(self.model, find_unused=True)
        self.opt = adamw([self.model], ctx.hp)
        self.schedules = {"model": LRSchedule(self.opt, ctx.hp.lr, ctx.hp.warmup, ctx.total_steps)}
        self.round = 0
        self.steps_per_round = max(1, (ctx.total_steps or ctx.hp.steps) // self.settings["rounds"])
        self._setup_data(ctx, teacher.meta)

    def _setup_data(self, ctx: StageContext, teacher_meta: dict[str, Any]) -> None:
        """Latents and tokens as `DPDStage`, at the teacher's latent scale (its VAE's latents)."""
        from melody_core.train.cache import semantic_tokens, vae_latents
        from melody_core.train.data import fixed_items

        cfg = ctx.config
        self.chunks, self.p_uncond = cfg.train_chunks, cfg.cfg_dropout
        self.crop = ctx.config.train_length
        self.vae_encoder = encoder_hash(ctx.upstream["vae"].model)
        bundle_dpd = teacher_meta.get("stages", {}).get("dpd", {})  # a bundle names the DPD's VAE there
        trained_on = teacher_meta.get("vae_encoder_hash") or bundle_dpd.get("upstream", {}).get(
            "vae", {}
        ).get("encoder_hash")
        if "latent_scale" not in teacher_meta:
            raise TrainError("the teacher has no latent_scale (export it from a dpd run first)")
        if trained_on is not None and trained_on != self.vae_encoder:
            raise TrainError("the teacher was trained on another VAE's latents than the --upstream VAE")
        self.latent_scale = float(teacher_meta["latent_scale"])
        up, sets = ctx.upstream, [ctx.train, ctx.valid]
        self.latents, self.valid_latents = vae_latents(ctx.cache_dir, up["vae"], sets, ctx.dist, ctx.device)
        self.tokens, self.valid_tokens = semantic_tokens(
            ctx.cache_dir, up["ssl"], up["kmeans"], sets, ctx.dist, ctx.device
        )
        lengths = [min(len(z), FRAMES_PER_TOKEN * len(t)) for z, t in zip(self.latents, self.tokens)]
        self.sampler = self.make_sampler(lengths, self.crop, align=FRAMES_PER_TOKEN)
        valid_lengths = [
            min(len(z), FRAMES_PER_TOKEN * len(t)) for z, t in zip(self.valid_latents, self.valid_tokens)
        ]
        n_valid = ctx.hp.valid_batches * ctx.hp.batch_size
        self.valid_items = fixed_items(valid_lengths, self.crop, n_valid, ctx.opts.seed, FRAMES_PER_TOKEN)

    # ------------------------------------------------------------------ state
    def modules(self) -> dict[str, nn.Module]:
        return {self.component: self.model, "teacher": self.teacher}

    def extra_state(self) -> dict:
        settings = {**self.settings, "rho": list(self.settings["rho"])}
        return {"latent_scale": self.latent_scale, "round": self.round, "settings": settings}

    def load_extra_state(self, state: dict) -> None:
        saved, now = state.get("settings"), {**self.settings, "rho": list(self.settings["rho"])}
        if saved is not None and {**saved, "rho": list(saved["rho"])} != now:
            raise TrainError(f"this run was started with {saved}; resume it with the same options")
        self.latent_scale = float(state["latent_scale"])
        self.round = int(state.get("round", 0))

    def export_meta(self) -> dict:
        s = self.settings
        steps = s["teacher_steps"] // 2 ** (self.round + 1) if s["phase"] == "progressive" else None
        return {
            "latent_scale": self.latent_scale,
            "vae_encoder_hash": self.vae_encoder,
            "dpd_sampler": {
                "phase": s["phase"],
                "steps": steps,
                "schedule": "linear",
                "guidance_input": bool(self.model.config.guidance_embed),
                "rho_range": list(s["rho"]) if self.model.config.guidance_embed else [CFG_SCALE, CFG_SCALE],
            },
        }

    # ------------------------------------------------------------------ targets
    def _teacher_v(
        self,
        z: torch.Tensor,
        delta: torch.Tensor,
        tokens: torch.Tensor,
        uncond: torch.Tensor,
        rho: torch.Tensor,
    ) -> torch.Tensor:
        """The teacher's guided velocity at scale rho (B,): rho v_cond + (1 - rho) v_uncond (§5.1), or its
        guidance input; rows flagged `uncond` get the teacher's unconditional v."""
        t = self.teacher
        if self.teacher_guided:
            return t(z, delta, tokens, uncond, guidance=rho)
        b = z.shape[0]
        flags = torch.cat([torch.zeros(b, dtype=torch.bool, device=z.device), torch.ones_like(uncond)])
        v = t(torch.cat([z, z]), torch.cat([delta, delta]), torch.cat([tokens, tokens]), flags)  # (2B, L, D)
        r = rho.view(-1, 1, 1)
        return torch.where(uncond.view(-1, 1, 1), v[b:], r * v[:b] + (1 - r) * v[b:])  # CFG (§5.1)

    def _student_v(self, net, z, delta, tokens, uncond, rho) -> torch.Tensor:
        if self.model.config.guidance_embed:
            return net(z, delta, tokens, uncond, guidance=rho)
        return net(z, delta, tokens, uncond)

    def _rho(self, b: int, gen: torch.Generator | None) -> torch.Tensor:
        """rho per row: ~ U[--rho] for a student with the guidance input; a student without it (progressive
        distillation of a plain CFG teacher) learns the teacher at the paper's CFG scale (§5.1)."""
        lo, hi = self.settings["rho"]
        u = torch.rand(b, generator=gen, device=self.ctx.device)
        return lo + (hi - lo) * u if self.model.config.guidance_embed else torch.full_like(u, CFG_SCALE)

    def _progressive_example(self, z0: torch.Tensor, rho, tokens, uncond, gen) -> tuple[torch.Tensor, ...]:
        """(z_delta, delta vector, v~ target, scored-frame mask) for one student step of this round."""
        b, length, _ = z0.shape
        dev = z0.device
        n_student = self.settings["teacher_steps"] // 2 ** (self.round + 1)
        angles = step_angles(linear_schedule(n_student)).to(dev, torch.float32)  # δ_N ... δ_1, 0
        i = torch.randint(0, n_student, (b,), generator=gen, device=dev)
        d_hi, d_lo = angles[i], angles[i + 1]  # (B,) a student step δ -> δ'
        # continuation-style rows: the first c chunks (whole tokens) are clean context at angle 0
        bounds = torch.tensor(
            chunk_bounds(length, self.chunks, FRAMES_PER_TOKEN)[:-1], device=dev
        )  # L_0..L_M-1
        n_keep = torch.randint(1, self.chunks, (b,), generator=gen, device=dev)
        keep_rows = torch.rand(b, generator=gen, device=dev) < KEEP_P
        keep_to = torch.where(keep_rows, bounds[n_keep], torch.zeros_like(n_keep))  # (B,) frames kept
        keep = torch.arange(length, device=dev).unsqueeze(0) < keep_to.unsqueeze(1)  # (B, L)
        eps = torch.randn(z0.shape, generator=gen, device=dev)
        z = torch.where(keep.unsqueeze(-1), z0, noise(z0, eps, d_hi))

        def v_fn(zt: torch.Tensor, dvec: torch.Tensor) -> torch.Tensor:
            return self._teacher_v(zt, dvec, tokens, uncond, rho)

        with torch.no_grad():
            target = progressive_target(v_fn, z, keep, d_hi, d_lo)
        return z, torch.where(keep, 0.0, d_hi.unsqueeze(1)), target, ~keep

    def _example(self, z0, tokens, gen, p_uncond: float) -> tuple[torch.Tensor, ...]:
        """(z, delta, uncond, rho, target, scored mask) of one batch for the current phase."""
        b = z0.shape[0]
        uncond = torch.rand(b, generator=gen, device=z0.device) < p_uncond  # CFG dropout (§5.1)
        rho = self._rho(b, gen)
        if self.settings["phase"] == "guidance":
            ex = multi_chunk_training_example(z0, self.chunks, gen, grid=FRAMES_PER_TOKEN)  # Eq. 7-10
            with torch.no_grad():
                target = self._teacher_v(ex.z_noisy, ex.delta, tokens, uncond, rho)
            return ex.z_noisy, ex.delta, uncond, rho, target, None
        z, delta, target, scored = self._progressive_example(z0, rho, tokens, uncond, gen)
        return z, delta, uncond, rho, target, scored

    @staticmethod
    def _loss(v: torch.Tensor, target: torch.Tensor, scored: torch.Tensor | None) -> torch.Tensor:
        if scored is None:
            return F.mse_loss(v.float(), target)
        err = (v.float() - target).square().mean(dim=-1)  # (B, L)
        return (err * scored).sum() / scored.sum().clamp(min=1)

    # ------------------------------------------------------------------ loop
    def train_step(self, step: int) -> dict[str, float]:
        if self.settings["phase"] == "progressive":
            self._maybe_next_round(step)
        z0, tokens = self._batch(self.sampler.next(), self.latents, self.tokens)
        z, delta, uncond, rho, target, scored = self._example(z0, tokens, None, self.p_uncond)
        with self.ctx.autocast():
            v = self._student_v(self.net, z, delta, tokens, uncond, rho)
        loss = self._loss(v, target, scored)
        optimize(loss, self.opt, self.ctx.hp.grad_clip)
        return {"loss": float(loss.detach())}

    def _maybe_next_round(self, step: int) -> None:
        """Progressive rounds: the student of round r becomes the teacher of round r + 1."""
        target_round = min(step // self.steps_per_round, self.settings["rounds"] - 1)
        while self.round < target_round:
            self.teacher.load_state_dict(self.model.state_dict())
            self.teacher_guided = self.teacher.config.guidance_embed
            self.round += 1
            if self.ctx.dist.rank == 0:
                n = self.settings["teacher_steps"] // 2 ** (self.round + 1)
                print(f"dpd-distill: round {self.round + 1}, student of {n} steps", flush=True)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Loss of the current phase / round on the fixed validation crops (fixed noise, angles, rho)."""
        if not self.valid_items:
            return {}
        from melody_core.train.data import batches

        self.model.eval()
        gen = torch.Generator(device=self.ctx.device).manual_seed(VALID_SEED)
        total, n = 0.0, 0
        try:
            for items in batches(self.valid_items, self.ctx.hp.batch_size):
                z0, tokens = self._batch(items, self.valid_latents, self.valid_tokens)
                z, delta, uncond, rho, target, scored = self._example(z0, tokens, gen, 0.0)  # guided rows
                v = self._student_v(self.model, z, delta, tokens, uncond, rho)
                total += float(self._loss(v, target, scored)) * len(items)
                n += len(items)
        finally:
            self.model.train()
        return {"loss": total / n}
