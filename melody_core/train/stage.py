"""The contract between the generic loop (`loop.py`) and the per-stage modules.

A `Stage` builds its models, optimizers and data sampler in `setup`, runs one optimisation step
in `train_step(step)` and scores the fixed validation crops in `validate()`. Everything that must
survive a restart and is not a module, optimizer or the sampler goes through `extra_state()`.
Stages with no gradient loop (k-means) set `one_shot = True` and implement `fit()`.

Learning rate *(our choice)*: linear warm-up, then cosine decay to `MIN_LR_RATIO` x lr at the
final step; with a wall-clock budget and no step count the rate stays constant after warm-up.
AdamW; weight decay only on matrices and embedding tables (dim >= 2), not on gains or biases.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from melody_core import SAMPLE_RATE
from melody_core.config import BaseConfig, ConfigError, component_classes
from melody_core.train.data import ClipSet, CropSampler
from melody_core.train.dist import DistContext
from melody_core.train.upstream import Component, TrainError

MIN_LR_RATIO = 0.1  # cosine floor, as a fraction of the peak learning rate


@dataclass
class Hyper:
    """Optimisation and data settings of a stage (defaults per preset, overridable on the CLI)."""

    batch_size: int  # examples per process per step
    crop_seconds: float  # training crop / window length
    lr: float  # peak learning rate
    steps: int  # default number of optimizer steps (Lloyd iterations for k-means)
    warmup: int = 500  # linear warm-up steps
    weight_decay: float = 0.01  # AdamW weight decay on matrices
    grad_clip: float = 1.0  # global gradient-norm clip (0 = off)
    betas: tuple[float, float] = (0.9, 0.98)  # AdamW betas
    valid_every: int = 500  # steps between validations
    valid_batches: int = 4  # fixed validation batches


@dataclass
class TrainOptions:
    """Everything `melody train STAGE` was asked to do (None = the stage's preset default)."""

    stage: str
    data: Path
    out: Path
    preset: str = "tiny"
    steps: int | None = None
    minutes: float | None = None
    batch_size: int | None = None
    lr: float | None = None
    warmup: int | None = None
    crop_seconds: float | None = None
    grad_clip: float | None = None
    weight_decay: float | None = None
    valid_every: int | None = None
    valid_batches: int | None = None
    ckpt_every: int = 200
    ckpt_minutes: float = 10.0
    log_every: int = 1
    seed: int = 0
    resume: bool = True
    init_from: Path | None = None
    upstream: list[Path] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)  # model config fields (--set KEY=VALUE)
    training: dict[str, Any] = field(default_factory=dict)  # trainer options given explicitly (vae:
    # --adversarial-start-step, --freeze-encoder, ...; see `Stage.training_options`)
    cache_dir: Path | None = None
    device: str = "auto"
    amp: bool = True
    compile: bool = False
    threads: int | None = None
    objective: str = "wav2vec2"
    plot: bool = True
    progress: bool | None = None  # None: a bar only on a TTY
    kill_at_step: int | None = None  # fault injection for tests: SIGKILL self after this step
    stage_args: dict[str, Any] = field(default_factory=dict)  # dpd: size; dpd-distill: phase, rho, ...

    def hyper(self, defaults: Hyper) -> Hyper:
        """Preset defaults with the CLI's explicit values applied."""
        h = Hyper(**defaults.__dict__)
        for name in (
            "batch_size",
            "crop_seconds",
            "lr",
            "steps",
            "warmup",
            "weight_decay",
            "grad_clip",
            "valid_every",
            "valid_batches",
        ):
            value = getattr(self, name)
            if value is not None:
                setattr(h, name, value)
        if self.warmup is None and self.steps is not None:  # short runs: warm up for at most 10 %
            h.warmup = min(h.warmup, self.steps // 10)
        return h


@dataclass
class StageContext:
    """What a stage's setup receives from the loop."""

    opts: TrainOptions
    hp: Hyper
    dist: DistContext
    device: torch.device
    run_dir: Path
    cache_dir: Path
    config: BaseConfig
    train: ClipSet
    valid: ClipSet
    upstream: dict[str, Component]
    init: Component | None
    total_steps: int | None  # None: wall-clock budget only
    resuming: bool = False  # a checkpoint will be loaded after setup
    amp_ok: bool = True  # the stage's networks run under bf16 autocast (Stage.amp)
    training: BaseConfig | None = None  # the stage's trainer options (`Stage.training_options`), resolved

    def prepare(self, module: nn.Module, find_unused: bool = False) -> nn.Module:
        """The module the training step calls: DDP-wrapped when distributed, then torch.compile'd
        with --compile on CUDA (ignored on CPU). Checkpoints always hold the raw module."""
        net = self.dist.wrap(module, find_unused)
        if self.opts.compile and self.device.type == "cuda":
            net = torch.compile(net)
        return net

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on CUDA when --amp (default); a no-op on CPU."""
        enabled = self.opts.amp and self.amp_ok and self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)


class LRSchedule:
    """Warm-up + cosine multiplier of the peak rate, applied to an optimizer by `set(step)`."""

    def __init__(self, optimizer: torch.optim.Optimizer, lr: float, warmup: int, total: int | None) -> None:
        self.optimizer, self.lr, self.warmup, self.total = optimizer, lr, warmup, total
        self.last = 0.0

    def factor(self, step: int) -> float:
        if self.warmup > 0 and step < self.warmup:
            return (step + 1) / self.warmup
        if not self.total or self.total <= self.warmup:
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * progress))

    def set(self, step: int) -> float:
        self.last = self.lr * self.factor(step)
        for group in self.optimizer.param_groups:
            group["lr"] = self.last
        return self.last

    def state_dict(self) -> dict[str, Any]:
        return {"lr": self.lr, "warmup": self.warmup, "total": self.total, "last": self.last}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last = float(state.get("last", 0.0))  # lr/warmup/total come from this invocation


def adamw(modules: list[nn.Module], hp: Hyper) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; decay only on tensors with dim >= 2."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    other = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": hp.weight_decay}, {"params": other, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=hp.lr, betas=hp.betas)


def optimize(loss: torch.Tensor, optimizer: torch.optim.Optimizer, grad_clip: float) -> float:
    """zero_grad, backward, optional clip, step; returns the pre-clip gradient norm (0 if unclipped)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = 0.0
    if grad_clip > 0:
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        norm = float(torch.nn.utils.clip_grad_norm_(params, grad_clip))
    optimizer.step()
    return norm


class Stage:
    """Base class of a training stage; see the module docstring."""

    name = ""  # CLI stage name
    component = ""  # bundle component it trains
    needs: tuple[str, ...] = ()  # upstream components
    metrics: tuple[str, ...] = ("loss",)  # metrics.csv columns (train and valid)
    valid_key = "loss"  # validation metric that selects best.pt (lower is better)
    one_shot = False  # no step loop: `fit()` does the work
    amp = True  # bf16 autocast allowed on CUDA (--amp)
    unit_seconds = 1.0 / SAMPLE_RATE  # seconds per sampler unit (audio samples by default)
    # trainer options of the stage (a BaseConfig subclass with presets, e.g. `VAETraining`): how a run
    # trains, not what the model is, so they are kept in run.json's "training", never in the model config
    training_options: type[BaseConfig] | None = None

    def __init__(self) -> None:
        self.ctx: StageContext | None = None
        self.sampler: CropSampler | None = None
        self.schedules: dict[str, LRSchedule] = {}

    # -- configuration --------------------------------------------------------------------------
    def defaults(self, preset: str) -> Hyper:
        raise NotImplementedError

    def derived_config(self, upstream: dict[str, Component], hp: Hyper, opts: TrainOptions) -> dict[str, Any]:
        """Config fields fixed by upstream models or the crop (e.g. vocabulary sizes)."""
        return {}

    def make_config(
        self, opts: TrainOptions, hp: Hyper, upstream: dict[str, Component], init: Component | None
    ) -> BaseConfig:
        cfg_cls, _ = component_classes(self.component)
        try:
            base = init.config.to_dict() if init is not None else cfg_cls.preset(opts.preset).to_dict()
            forced = self.derived_config(upstream, hp, opts)
            clash = {k for k in forced if k in opts.overrides and opts.overrides[k] != forced[k]}
            if clash:
                raise TrainError(f"cannot override {', '.join(sorted(clash))}: set by the upstream models")
            return cfg_cls.from_dict({**base, **opts.overrides, **forced})
        except (ConfigError, TypeError) as exc:
            raise TrainError(f"{self.component} config: {exc}") from None

    def resolve_training(
        self, opts: TrainOptions, init: Component | None, resumed: dict[str, Any] | None
    ) -> tuple[BaseConfig | None, list[str]]:
        """(the trainer options of this run, notes to print). Each option comes from the first of:
        this invocation (a flag, or the old `--set KEY=VALUE` of a key that left the model config);
        the run being resumed (its run.json "training", or the model config of a run written before
        the move); an `--init-from` model config written before the move (so old recipes train as
        they did); the preset. A resumed run keeps its options: a different explicit value is an error."""
        cls = self.training_options
        if cls is None:
            return None, []
        names = [f.name for f in fields(cls)]
        explicit, notes = dict(opts.training), []
        for key in names:
            if key in opts.overrides:
                flag = "--" + key.replace("_", "-")
                notes.append(f"note: --set {key}=... is deprecated (a trainer option now, out of the model "
                             f"config and its hash): use {flag}")
                explicit.setdefault(key, opts.overrides[key])
        values = cls.preset(opts.preset).to_dict()
        if init is not None:
            values.update({k: v for k, v in init.moved_options.items() if k in names})
        if resumed is not None:
            cfg_cls, _ = component_classes(self.component)
            legacy = cfg_cls.moved_to_trainer(resumed.get("config") or {})
            before = {**legacy, **(resumed.get("training") or {})}
            before = {k: v for k, v in before.items() if k in names}
            try:
                before = cls.from_dict({**values, **before}).to_dict()
                now = cls.from_dict({**values, **before, **explicit}).to_dict()
            except (ConfigError, TypeError) as exc:
                raise TrainError(f"{self.name} trainer options: {exc}") from None
            differ = sorted(k for k in explicit if now[k] != before[k])
            if differ:
                raise TrainError(
                    f"{opts.out}: trainer option(s) {', '.join(differ)} differ from the run being resumed "
                    f"({', '.join(f'{k}={before[k]!r}' for k in differ)}; --no-resume to start over)"
                )
            values.update(before)
        values.update(explicit)
        try:
            return cls.from_dict(values), notes
        except (ConfigError, TypeError) as exc:
            raise TrainError(f"{self.name} trainer options: {exc}") from None

    # -- lifecycle ------------------------------------------------------------------------------
    def setup(self, ctx: StageContext) -> None:
        raise NotImplementedError

    def modules(self) -> dict[str, nn.Module]:
        """Raw (unwrapped) modules saved in checkpoints; must include `self.component`."""
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {}

    def train_step(self, step: int) -> dict[str, float]:
        raise NotImplementedError

    def validate(self) -> dict[str, float]:
        return {}

    def fit(self) -> list[dict[str, float]]:  # one-shot stages
        raise NotImplementedError

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def export_meta(self) -> dict[str, Any]:
        """Facts a bundle needs besides the weights (e.g. the DPD's latent_scale)."""
        return {}

    # -- helpers --------------------------------------------------------------------------------
    def set_lr(self, step: int) -> float:
        lrs = [s.set(step) for s in self.schedules.values()]
        return lrs[0] if lrs else 0.0

    def make_sampler(self, lengths: list[int], crop: int, align: int = 1) -> CropSampler:
        ctx = self.ctx
        assert ctx is not None
        try:
            return CropSampler(
                lengths, crop, ctx.hp.batch_size, ctx.dist.world, ctx.dist.rank, ctx.opts.seed, align
            )
        except ValueError:
            secs = crop * self.unit_seconds
            raise TrainError(
                f"no training clip is at least {secs:.2f} s long; lower --crop-seconds or add longer clips"
            ) from None

    def init_weights(self, model: nn.Module) -> None:
        """Copy --init-from weights (same component) into `model`."""
        ctx = self.ctx
        if ctx is not None and ctx.init is not None:
            model.load_state_dict(ctx.init.model.state_dict())


def crop_units(seconds: float, unit_seconds: float, align: int = 1) -> int:
    """Crop length in sampler units, rounded down to `align` (at least one `align`)."""
    n = int(round(seconds / unit_seconds))
    return max(align, n // align * align)


def describe_path(p: Path | None) -> str | None:
    return None if p is None else str(p)
