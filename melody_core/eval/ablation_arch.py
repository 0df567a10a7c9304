"""Architecture ablation (poster, "Ablation on network architecture"): DPD vs UNet-1D at matched
parameter counts, scored by validation velocity MSE and SI-SNRi (paper: DPD 0.12 / 6.15 dB,
UNet-1D 0.13 / 5.33 dB; UNet-2D is not reproduced).

Training (`train_arms`): `melody train dpd` and `melody train unet1d` through the in-process trainer
(`melody_core.train.loop.train`) on the same corpus, the same upstream vae/ssl/kmeans (`--upstream`
bundle or runs), the same seed (so the same crops, noise, angles and CFG drops at every step), the
same hyper-parameters and either the same wall-clock budget per arm (`minutes_per_arm`; the steps
each arm reached are reported) or the same step count (`steps`). The UNet-1D config is
`UNet1DConfig.matching(dpd_config)` of the DPD config actually trained (upstream-derived fields
included), passed as config overrides. The latent/token caches are built before either arm starts,
so neither budget pays for feature extraction. In-run validation is off (`valid_every` 0: the
trainer validates once at the end, outside the budget check) so both arms spend the budget on
optimisation only. Warm-up *(our choice)*: with a time budget the trainer keeps the peak rate after
warm-up (no cosine), and the stage's 200 warm-up steps are more than a few CPU minutes reach (the
tiny DPD makes ~50 steps in 3 min on one thread), so budget runs warm up for BUDGET_WARMUP = 20
steps; step-budget runs keep the trainer's rule (min(200, steps / 10), then cosine decay).
Reuse: each arm folder gets `ablation.json` (settings signature, done flag); a finished arm with
the same signature is reused as is; with `steps`, an unfinished or shorter arm resumes (the
trainer's exact resumption); with `minutes_per_arm` it starts over *(our choice: a wall-clock
budget cannot be split across sessions fairly)*.

Evaluation (`evaluate_arms`), identical for both arms: the held-out ("valid") clips long enough for
one training window of L frames (L = the runs' crop, 2500 = 10 s for the tiny preset), at most
`valid_clips` of them spread evenly over the split; from each, the central L-frame crop (on the
10-frame token grid) of the trainer's cached VAE posterior means times each run's `latent_scale`
(x), with its semantic tokens. Seeds depend only on (seed, clip index), so both arms see the same
noise and angles.
- v-MSE: `card.metrics.velocity_mse`, the training objective (Eq. 8, multi-chunk angles Eq. 7-10,
  M = the DPD's train_chunks, chunk bounds on the token grid), `draws` (noise, angles) draws per
  clip; conditional (reported as `v_mse`), unconditional and the predict-zero reference.
- SI-SNRi *(our choice)*: the poster tabulates "SI-SNRi" and the paper (§6, Appendix E) only says
  the dual-path architecture "outperformed other architectures [23, 31] used for LDMs in terms of
  the signal-to-noise ratio (SNR) improvements using a subset of the training data"; the appendix
  is not in our copy, so the setup is ours: single chunk (one angle for the whole crop), fixed
  angles `levels` (default five evenly spaced in (0, π/2): 15°, 30°, 45°, 60°, 75°), fresh
  seeded ε per level; z_δ = cos δ x + sin δ ε (Eq. 2), v̂ = net(z_δ, δ, tokens) (conditional,
  not the CFG null path), x̂ = cos δ z_δ − sin δ v̂ (§4.2.1, `diffusion.predict_z0`);
  SI-SNRi = SI-SNR(x̂, x) − SI-SNR(z_δ, x) over the flattened (L·D) latent of each clip
  (`audio.features.si_sdr`: zero-mean, scale-invariant). Mean over clips per level, then over
  levels. A network predicting v̂ = 0 gives x̂ = cos δ z_δ, a rescaled z_δ: SI-SNRi = 0 exactly;
  the true v gives x̂ = x.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from melody_core import FRAMES_PER_TOKEN, LATENT_RATE
from melody_core.audio.features import si_sdr
from melody_core.diffusion import noise, predict_z0
from melody_core.eval.card.metrics import DPDForward, select_evenly, velocity_mse

Log = Callable[[str], None]
ARMS = ("dpd", "unet1d")  # training stage = bundle component of each arm
LABELS = {"dpd": "DPD", "unet1d": "UNet-1D"}
NEEDS = ("vae", "ssl", "kmeans")  # upstream components of both stages
DEFAULT_LEVELS = tuple(k * math.pi / 12 for k in range(1, 6))  # 15°, 30°, 45°, 60°, 75°
PAPER = {"dpd": {"v_mse": 0.12, "si_snri_db": 6.15}, "unet1d": {"v_mse": 0.13, "si_snri_db": 5.33}}
MARKER = "ablation.json"  # per-arm settings signature + done flag
RESULTS = "ablation_arch.json"  # results written into the work folder
BUDGET_WARMUP = 20  # warm-up steps of a wall-clock budget run (the tiny stage default 200 outlasts it)
SNR_SEED_OFFSET = 1_000_003  # seeds of the SI-SNRi noise, offset from the v-MSE seeds (seed + clip)


class AblationError(ValueError):
    """A user-facing problem with the ablation inputs (one line)."""


@dataclass
class ArchAblationOptions:
    """Settings of the architecture ablation (None = the `dpd` stage's tiny-preset default)."""

    minutes_per_arm: float = 8.0  # wall-clock budget of each arm's training (setup included)
    steps: int | None = None  # same step count for both arms instead of the time budget
    seed: int = 0  # training seed (data, init, noise) and base seed of the evaluation draws
    threads: int | None = None  # torch CPU threads for training and evaluation (None: torch's)
    valid_clips: int = 24  # held-out clips evaluated at most
    levels: tuple[float, ...] = DEFAULT_LEVELS  # SI-SNRi noise angles δ (radians, in (0, π/2))
    draws: int = 2  # (noise, angles) draws per clip for the v-MSE
    batch_size: int | None = None  # training batch size
    crop_seconds: float | None = None  # training window = evaluation crop (tiny default 10 s)
    warmup: int | None = None  # LR warm-up (None: BUDGET_WARMUP with minutes, the stage's rule with steps)
    dpd_overrides: dict[str, Any] = field(default_factory=dict)  # DPD config fields (UNet matched)
    weights: str = "last"  # evaluate the "last" or the "best" (trainer validation) weights
    device: str = "auto"  # training/evaluation device
    cache_dir: Path | None = None  # latent/token caches (default WORK/cache)

    def check(self) -> None:
        if self.steps is None and not (math.isfinite(self.minutes_per_arm) and self.minutes_per_arm > 0):
            raise AblationError(f"minutes per arm must be > 0, got {self.minutes_per_arm}")
        if self.steps is not None and self.steps < 1:
            raise AblationError(f"steps must be >= 1, got {self.steps}")
        if self.valid_clips < 1 or self.draws < 1:
            raise AblationError("valid clips and draws must be >= 1")
        if not self.levels or not all(0 < d < math.pi / 2 for d in self.levels):
            raise AblationError(f"noise levels must be angles in (0, π/2), got {self.levels}")
        if self.weights not in ("last", "best"):
            raise AblationError(f"weights must be 'last' or 'best', got {self.weights!r}")


# ------------------------------------------------------------------------------------------- metric
@torch.no_grad()
def si_snri_levels(
    net: DPDForward, x: Tensor, tokens: Tensor | None, levels: Tensor, eps: Tensor
) -> tuple[Tensor, Tensor]:
    """SI-SNR improvement of one-step denoising at each noise angle (module docstring).

    x: (L, D) clean scaled latents; tokens: (L // 10,) or None; levels: (n,) angles; eps: (n, L, D).
    Returns (SI-SNRi (n,), SI-SNR of the noisy input z_δ (n,)), both in dB.
    """
    n, (length, _) = len(levels), x.shape
    x = x.unsqueeze(0).expand(n, -1, -1)  # (n, L, D)
    delta = levels.to(x).view(n, 1).expand(n, length).contiguous()  # (n,) -> (n, L): one chunk, one angle
    z = noise(x, eps.to(x), delta)  # Eq. 2
    u = None if tokens is None else tokens.unsqueeze(0).expand(n, -1)  # (n, L // 10)
    x_hat = predict_z0(z, net(z, delta, u, None).float(), delta)  # x̂ = cos δ z_δ − sin δ v̂
    before = si_sdr(z.reshape(n, -1), x.reshape(n, -1))  # (n, L·D) flattened
    after = si_sdr(x_hat.reshape(n, -1), x.reshape(n, -1))
    return (after - before).cpu(), before.cpu()


# ------------------------------------------------------------------------------------------ training
def _upstream(upstream: Path, device: torch.device) -> dict:
    from melody_core.train.upstream import resolve_upstream

    return resolve_upstream([Path(upstream)], NEEDS, device)


def _caches(corpus: Path, up: dict, cache_dir: Path, splits: tuple[str, ...], device: torch.device):
    """Latents and tokens per split from the trainer's caches (built where missing)."""
    from melody_core.train.cache import semantic_tokens, vae_latents
    from melody_core.train.data import load_clips
    from melody_core.train.dist import DistContext

    sets = [load_clips(corpus, s) for s in splits]
    dist = DistContext(device=device)
    latents = vae_latents(cache_dir, up["vae"], sets, dist, device)
    tokens = semantic_tokens(cache_dir, up["ssl"], up["kmeans"], sets, dist, device)
    return sets, latents, tokens


def _train_options(corpus: Path, upstream: Path, out: Path, stage: str, cache: Path,
                   opts: ArchAblationOptions, overrides: dict, resume: bool):  # fmt: skip
    from melody_core.train.stage import TrainOptions

    return TrainOptions(
        stage=stage, data=Path(corpus), out=out, preset="tiny", steps=opts.steps,
        minutes=None if opts.steps is not None else opts.minutes_per_arm, batch_size=opts.batch_size,
        crop_seconds=opts.crop_seconds, valid_every=0, valid_batches=1,
        warmup=opts.warmup if opts.warmup is not None or opts.steps is not None else BUDGET_WARMUP,
        seed=opts.seed, resume=resume, upstream=[Path(upstream)], overrides=dict(overrides),
        cache_dir=cache, device=opts.device, threads=opts.threads, plot=False, progress=False,
    )  # fmt: skip


def _configs(corpus: Path, upstream: Path, work_dir: Path, up: dict, opts: ArchAblationOptions) -> dict:
    """Config overrides of each arm: the DPD's own, and `UNet1DConfig.matching` of the DPD config
    the `dpd` stage builds from them (upstream-derived fields included)."""
    from melody_core.models.unet1d import UNet1DConfig
    from melody_core.train import make_stage

    stage = make_stage("dpd")
    probe = _train_options(corpus, upstream, work_dir / "dpd", "dpd", work_dir, opts, opts.dpd_overrides,
                           resume=True)  # fmt: skip
    dpd_cfg = stage.make_config(probe, probe.hyper(stage.defaults("tiny")), up, None)
    return {"dpd": dict(opts.dpd_overrides), "unet1d": UNet1DConfig.matching(dpd_cfg).to_dict()}


class _LineLog(io.TextIOBase):
    """stdout stand-in passing the trainer's printed lines to `log` (run with the real stdout)."""

    def __init__(self, log: Log) -> None:
        self.log, self.buf, self.outer = log, "", sys.stdout

    def write(self, text: str) -> int:
        *lines, self.buf = (self.buf + text).split("\n")
        with contextlib.redirect_stdout(self.outer):
            for line in filter(str.strip, lines):
                self.log(line)
        return len(text)


def _read_marker(run: Path) -> dict | None:
    try:
        return json.loads((run / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _decide(run: Path, signature: dict, opts: ArchAblationOptions) -> str:
    """"reuse" a finished arm with these settings, "resume" a step-budget arm, or "fresh"."""
    old = _read_marker(run)
    if old is None or not (run / "checkpoints" / "last.pt").is_file():
        return "fresh"
    if old.get("signature") == signature and old.get("done"):
        return "reuse"
    strip = lambda s: {k: v for k, v in s.items() if k != "steps"}  # noqa: E731
    before = old.get("signature") or {}
    shorter = opts.steps is not None and 0 < (before.get("steps") or 0) <= opts.steps
    if shorter and strip(before) == strip(signature):
        return "resume"  # the trainer continues to the new total (never past it)
    return "fresh"


def train_arms(
    corpus: Path, upstream: Path, work_dir: Path, opts: ArchAblationOptions, log: Log
) -> dict[str, Path]:
    """Train (or reuse) both arms into work_dir/dpd and work_dir/unet1d; returns the run folders."""
    from melody_core.runtime import resolve_device
    from melody_core.train.loop import train
    from melody_core.train.state import write_json

    opts.check()
    work_dir = Path(work_dir)
    device = torch.device(resolve_device(opts.device))
    cache = Path(opts.cache_dir) if opts.cache_dir else work_dir / "cache"
    with _threads(opts.threads):
        up = _upstream(upstream, device)
        t0 = time.monotonic()
        _caches(corpus, up, cache, ("train", "valid"), device)  # before either budget starts
        log(f"caches ready in {time.monotonic() - t0:.1f} s ({cache})")
        overrides = _configs(corpus, upstream, work_dir, up, opts)
    sig_base = {
        "corpus": str(Path(corpus).resolve()), "upstream": {n: c.hash for n, c in up.items()},
        "train_warmup": _train_options(corpus, upstream, work_dir, "dpd", cache, opts, {}, True).warmup,
        **{k: v for k, v in dataclasses.asdict(opts).items() if k not in ("valid_clips", "levels", "draws",
                                                                       "weights", "cache_dir")},
    }  # fmt: skip
    runs = {}
    for arm in ARMS:
        run = work_dir / arm
        signature = json.loads(json.dumps({**sig_base, "overrides": overrides[arm]}, default=str))
        action = _decide(run, signature, opts)
        runs[arm] = run
        if action == "reuse":
            log(f"{arm}: reusing the finished run in {run}")
            continue
        log(f"{arm}: {'resuming' if action == 'resume' else 'training'} in {run}")
        write_json(run / MARKER, {"signature": signature, "done": False})
        t0 = time.monotonic()
        with contextlib.redirect_stdout(_LineLog(log)):
            summary = train(_train_options(corpus, upstream, run, arm, cache, opts, overrides[arm],
                                           resume=action == "resume"))  # fmt: skip
        write_json(run / MARKER, {"signature": signature, "done": True, "invocation_s": time.monotonic() - t0,
                            "summary": summary})  # fmt: skip
    return runs


@contextlib.contextmanager
def _threads(n: int | None):
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ---------------------------------------------------------------------------------------- evaluation
@dataclass
class _Crop:
    index: int  # position among the held-out clips (seeds)
    clip_id: str
    latents: Tensor  # (L, D) unscaled posterior means
    tokens: Tensor  # (L // 10,)


def _load_arm(run: Path, device: torch.device, which: str):
    """(Component with the `which` weights, {"steps", "wall_s"} of the last checkpoint); the last
    checkpoint (optimizer and RNG states included) is read once."""
    from melody_core.config import component_classes
    from melody_core.train.state import module_hash
    from melody_core.train.upstream import Component, run_component, run_weights

    info, last = run_weights(run, "last")
    trained = {"steps": int(last["step"]), "wall_s": float(last["wall_s"])}
    if which != "last":
        return run_component(run, device, which), trained
    cfg_cls, model_cls = component_classes(info["component"])
    cfg = cfg_cls.from_dict(info["config"])
    model = model_cls(cfg)
    model.load_state_dict(last["models"][info["component"]])
    meta = dict(info.get("export_meta", {}), **last.get("export_meta", {}))
    model = model.to(device).eval()
    comp = Component(info["component"], model, cfg, module_hash(model), f"run {run} (last)", meta)
    return comp, trained


def _held_out_crops(corpus: Path, up: dict, cache: Path, length: int, n_max: int, device) -> list[_Crop]:
    (valid,), (latents,), (tokens,) = _caches(corpus, up, cache, ("valid",), device)
    frames = [min(len(z), FRAMES_PER_TOKEN * len(u)) for z, u in zip(latents, tokens)]
    usable = [i for i, n in enumerate(frames) if n >= length]
    crops = []
    for i in (usable[k] for k in select_evenly(len(usable), n_max)):
        start = (frames[i] - length) // 2 // FRAMES_PER_TOKEN * FRAMES_PER_TOKEN  # central, on the token grid
        t0 = start // FRAMES_PER_TOKEN
        crops.append(_Crop(i, valid.records[i].id, latents[i][start : start + length],
                           tokens[i][t0 : t0 + length // FRAMES_PER_TOKEN]))  # fmt: skip
    return crops


def _score(net: DPDForward, scale: float, crops: list[_Crop], chunks: int, opts: ArchAblationOptions,
           device: torch.device) -> dict[str, Any]:  # fmt: skip
    levels = torch.tensor(opts.levels, dtype=torch.float64)
    mses, snri, snr_in = [], [], []
    for c in crops:
        x, u = (c.latents * scale).to(device), c.tokens.to(device)
        gen = torch.Generator(device=device).manual_seed(opts.seed + c.index)
        mses.append(velocity_mse(net, x, u, chunks, FRAMES_PER_TOKEN, opts.draws, gen))  # Eq. 8
        gen = torch.Generator(device=device).manual_seed(opts.seed + SNR_SEED_OFFSET + c.index)
        eps = torch.randn((len(levels), *x.shape), generator=gen, device=device)  # (n, L, D)
        gain, before = si_snri_levels(net, x, u, levels, eps)
        snri.append(gain)
        snr_in.append(before)
    per_level = torch.stack(snri).double().mean(0)  # (n_clips, n) -> (n,)
    cond, uncond, zero = (sum(m[k] for m in mses) / len(mses) for k in range(3))  # (cond, uncond, v = 0)
    return {
        "v_mse": cond, "v_mse_uncond": uncond, "v_mse_zero": zero,
        "si_snri_db": float(per_level.mean()), "si_snri_per_level": [float(v) for v in per_level],
        "si_snr_input_per_level": [float(v) for v in torch.stack(snr_in).double().mean(0)],
    }  # fmt: skip


def evaluate_arms(runs: dict[str, Path], corpus: Path, upstream: Path, opts: ArchAblationOptions,
                  log: Log) -> dict[str, Any]:  # fmt: skip
    """Score each run's network on the same held-out crops, noise and angles (module docstring).
    Returns {"arms": {arm: {...}}, "clips": [...ids], "crop_frames": L, "chunks": M}."""
    from melody_core.runtime import resolve_device
    from melody_core.train.stage import crop_units
    from melody_core.train.upstream import read_run

    opts.check()
    device = torch.device(resolve_device(opts.device))
    crop = lambda run: crop_units(read_run(run)["hyper"]["crop_seconds"], 1 / LATENT_RATE, FRAMES_PER_TOKEN)  # noqa: E731
    lengths = {arm: crop(run) for arm, run in runs.items()}
    if len(set(lengths.values())) != 1:
        raise AblationError(f"the runs were trained on different windows: {lengths}")
    length = next(iter(lengths.values()))
    first = Path(next(iter(runs.values())))
    cache = Path(opts.cache_dir or read_run(first)["options"].get("cache_dir") or first.parent / "cache")
    with _threads(opts.threads), torch.no_grad():
        comps = {arm: _load_arm(Path(run), device, opts.weights) for arm, run in runs.items()}
        ref = comps.get("dpd", next(iter(comps.values())))[0].config  # M of the DPD arm for both
        chunks = ref.train_chunks
        crops = _held_out_crops(corpus, _upstream(upstream, device), cache, length, opts.valid_clips, device)
        if not crops:
            raise AblationError(f"{corpus}: no held-out clip holds a {length / LATENT_RATE:g} s window")
        arms = {}
        for arm, (comp, trained) in comps.items():
            t0 = time.monotonic()
            scale = float(comp.meta["latent_scale"])
            scores = _score(comp.model, scale, crops, chunks, opts, device)
            arms[arm] = {
                "params": sum(p.numel() for p in comp.model.parameters()), **trained, **scores,
                "latent_scale": scale,
                "eval_s": time.monotonic() - t0, "weights": opts.weights, "run": str(runs[arm]),
            }  # fmt: skip
            log(f"{arm}: v-MSE {scores['v_mse']:.4f}, SI-SNRi {scores['si_snri_db']:.2f} dB "
                f"({arms[arm]['steps']} steps, {arms[arm]['eval_s']:.1f} s to evaluate)")  # fmt: skip
    return {"arms": arms, "clips": [c.clip_id for c in crops], "crop_frames": length, "chunks": chunks}


def run_arch_ablation(corpus: Path, upstream: Path, work_dir: Path, opts: ArchAblationOptions,
                      log: Log) -> dict[str, Any]:  # fmt: skip
    """Train both arms (or reuse them) and evaluate them; writes WORK/ablation_arch.json."""
    from melody_core.train.state import write_json

    runs = train_arms(corpus, upstream, work_dir, opts, log)
    ev = evaluate_arms(runs, corpus, upstream, opts, log)
    for arm, run in runs.items():
        ev["arms"][arm]["invocation_s"] = (_read_marker(run) or {}).get("invocation_s")
    n = {arm: a["params"] for arm, a in ev["arms"].items()}
    result = {
        "arms": ev["arms"], "paper": PAPER,
        "settings": {
            "corpus": str(corpus), "upstream": str(upstream), "preset": "tiny",
            "budget": "steps" if opts.steps is not None else "minutes",
            "minutes_per_arm": None if opts.steps is not None else opts.minutes_per_arm, "steps": opts.steps,
            "seed": opts.seed, "threads": opts.threads or torch.get_num_threads(),
            "batch_size": opts.batch_size,
            "crop_seconds": ev["crop_frames"] / LATENT_RATE, "crop_frames": ev["crop_frames"],
            "chunks": ev["chunks"], "draws": opts.draws, "levels_rad": list(opts.levels),
            "levels_deg": [round(math.degrees(d), 3) for d in opts.levels], "weights": opts.weights,
            "valid_clips": len(ev["clips"]), "clip_ids": ev["clips"], "dpd_overrides": opts.dpd_overrides,
            "param_ratio_unet_over_dpd": n["unet1d"] / n["dpd"],
        },
    }  # fmt: skip
    write_json(Path(work_dir) / RESULTS, result)
    return result


# ------------------------------------------------------------------------------------------------ CLI
def format_result(r: dict[str, Any]) -> str:
    s = r["settings"]
    budget = f"{s['steps']} steps" if s["budget"] == "steps" else f"{s['minutes_per_arm']:g} min"
    lines = [f"architecture ablation ({s['preset']} preset, {budget} per arm, seed {s['seed']}, "
             f"{s['valid_clips']} held-out clips x {s['crop_seconds']:g} s)",
             f"{'network':<9} {'params':>9} {'steps':>6} {'train s':>8} {'v-MSE':>7} {'SI-SNRi':>8}"
             f"   paper v-MSE / SI-SNRi"]  # fmt: skip
    for arm, a in r["arms"].items():
        p = r["paper"][arm]
        lines.append(f"{LABELS[arm]:<9} {a['params']:>9,} {a['steps']:>6} {a['wall_s']:>8.1f} "
                     f"{a['v_mse']:>7.4f} {a['si_snri_db']:>5.2f} dB   "
                     f"{p['v_mse']:.2f} / {p['si_snri_db']:.2f} dB")  # fmt: skip
    degs = " ".join(f"{d:g}°" for d in s["levels_deg"])
    lines.append(f"SI-SNRi per noise angle ({degs}):")
    for arm, a in r["arms"].items():
        lines.append(f"  {LABELS[arm]:<9} " + " ".join(f"{v:6.2f}" for v in a["si_snri_per_level"]))
    return "\n".join(lines) + "\n"
