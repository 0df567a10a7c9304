"""The generic training loop shared by every stage: resume, steps, validation, checkpoints.

Resumption is exact: `checkpoints/last.pt` holds the modules, optimizers, LR schedules, the crop
sampler (epoch, position, permutation, generator state), every rank's python/numpy/torch RNG
states, the stage's extra state, the step and the accumulated wall time. Validation runs on
rank 0 with the global RNG saved and restored around it, so it never shifts the training stream;
after a `kill -9` the resumed run repeats the uninterrupted run's losses exactly (on the same
hardware and thread count). metrics.csv rows past the checkpoint are dropped on resume.

Stopping: `--steps` (total optimizer steps), `--minutes` (wall-clock budget of this invocation,
setup included), SIGINT/SIGTERM (finish the step, checkpoint, exit). Rank 0 decides and every
rank follows (one tiny all-reduce per step), so DDP ranks always stop together.
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import signal
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from melody_core.config import ConfigError
from melody_core.data.corpus import CorpusError
from melody_core.runtime import resolve_device
from melody_core.train.data import ClipSet, corpus_summary, load_clips
from melody_core.train.dist import DistContext, init_distributed, shutdown_distributed
from melody_core.train.metrics import MetricsLog, plot_metrics
from melody_core.train.stage import Stage, StageContext, TrainOptions
from melody_core.train.state import (
    StateFileError,
    capture_rng,
    combine_hashes,
    encoder_hash,
    load_state,
    restore_rng,
    save_state,
    seed_all,
    write_json,
)
from melody_core.train.upstream import (
    CKPT_DIR,
    RUN_FILE,
    TrainError,
    is_run,
    load_component,
    read_run,
    resolve_upstream,
)

STATE_FORMAT = "melody-train-state"
STATE_VERSION = 1
RUN_FORMAT = "melody-train-run"
DDP_CHECK_FILE = "ddp_check.json"
RUN_FILES = (RUN_FILE, CKPT_DIR, "metrics.csv", "loss.png", DDP_CHECK_FILE)


def train(opts: TrainOptions) -> dict[str, Any]:
    """Run (or resume) one stage; returns a summary dict. Raises TrainError on user errors."""
    from melody_core.train import make_stage

    stage = make_stage(opts.stage)
    started = time.monotonic()
    try:
        device = torch.device(resolve_device(opts.device))
    except ValueError as exc:
        raise TrainError(str(exc)) from None
    dist = init_distributed(device)
    threads = torch.get_num_threads()
    try:
        _set_threads(opts, dist)
        return _Runner(stage, opts, dist, started).run()
    finally:
        torch.set_num_threads(threads)  # in-process callers (tests, smoke runs) get theirs back
        shutdown_distributed()


def _set_threads(opts: TrainOptions, dist: DistContext) -> None:
    if opts.threads:
        torch.set_num_threads(opts.threads)
    elif dist.distributed and dist.device.type == "cpu":
        local = int(os.environ.get("LOCAL_WORLD_SIZE", dist.world))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))


def params_hash(module: torch.nn.Module) -> str:
    """Hash of the parameters only (buffers such as EMA statistics may lag on non-zero ranks)."""
    from melody_core.train.state import state_hash

    return state_hash({k: p.detach() for k, p in module.named_parameters()})


class _Runner:
    def __init__(self, stage: Stage, opts: TrainOptions, dist: DistContext, started: float) -> None:
        self.stage, self.opts, self.dist, self.started = stage, opts, dist, started
        self.run_dir = Path(opts.out)
        self.ckpt_dir = self.run_dir / CKPT_DIR
        self.step, self.wall, self.best, self.saved_step = 0, 0.0, None, -1
        self.log_file: MetricsLog | None = None
        self.stop_reason: str | None = None
        self._signal = False

    # ------------------------------------------------------------------------------------- setup
    def run(self) -> dict[str, Any]:
        opts, stage, dist = self.opts, self.stage, self.dist
        resuming = self._prepare_run_dir()
        if opts.compile and dist.device.type != "cuda":
            self._log("note: --compile only applies on CUDA; ignored")
        try:
            train, valid = load_clips(opts.data, "train"), load_clips(opts.data, "valid")
        except CorpusError as exc:
            raise TrainError(str(exc)) from None
        if not len(train):
            raise TrainError(f"{opts.data}: no clips in the train split")
        hp = opts.hyper(stage.defaults(opts.preset))
        upstream = resolve_upstream(opts.upstream, stage.needs, dist.device)
        init = load_component(opts.init_from, stage.component, dist.device) if opts.init_from else None
        config = stage.make_config(opts, hp, upstream, init)
        resumed = read_run(self.run_dir) if resuming and is_run(self.run_dir) else None
        if resuming:
            self._check_same_run(config.to_dict(), type(config))
        training, notes = stage.resolve_training(opts, init, resumed)
        for note in notes:
            self._log(note)
        total = hp.steps if (opts.steps is not None or opts.minutes is None) else None
        cache_dir = Path(opts.cache_dir) if opts.cache_dir else self.run_dir.parent / ".melody-cache"
        seed_all(opts.seed)
        ctx = StageContext(
            opts=opts,
            hp=hp,
            dist=dist,
            device=dist.device,
            run_dir=self.run_dir,
            cache_dir=cache_dir,
            config=config,
            train=train,
            valid=valid,
            upstream=upstream,
            init=init,
            total_steps=total,
            resuming=resuming,
            amp_ok=stage.amp,
            training=training,
        )
        stage.ctx = ctx
        stage.setup(ctx)
        if dist.is_main:
            self.log_file = MetricsLog(self.run_dir / "metrics.csv", stage.metrics)
        if resuming:
            self._load_checkpoint()
        else:
            if self.log_file is not None:  # a run killed before its first checkpoint left rows of steps
                self.log_file.truncate_after(0)  # that will run again: drop them (keep the header)
            seed_all(int(combine_hashes(str(opts.seed), str(dist.rank))[:8], 16))
        if dist.is_main:  # after the checkpoint: export_meta (e.g. latent_scale) is the restored one
            self._write_run_json(ctx, train, valid)
        self._log(
            f"{stage.name}: {'resuming at step ' + str(self.step) if resuming else 'starting'}; "
            f"{len(train)} train / {len(valid)} valid clips, device {dist.device}, world {dist.world}"
        )
        try:
            return self._one_shot(ctx) if stage.one_shot else self._loop(ctx)
        finally:
            if self.log_file is not None:
                self.log_file.close()

    def _prepare_run_dir(self) -> bool:
        """True when a checkpoint will be resumed; --no-resume clears the run files first."""
        last = self.ckpt_dir / "last.pt"
        if self.opts.resume:
            return last.is_file()
        if self.dist.is_main and self.run_dir.exists():
            for name in RUN_FILES:
                p = self.run_dir / name
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
        self.dist.barrier()
        return False

    def _check_same_run(self, config: dict[str, Any], config_cls: type | None = None) -> None:
        """Refuse to resume a run of another stage or config. The saved config is read through the
        config class first, so a field added later with a default (e.g. `LMConfig.bpm_buckets`,
        0 = off) does not stop a run saved before it from resuming."""
        if not is_run(self.run_dir):
            return
        run = read_run(self.run_dir)
        if run.get("stage") != self.stage.name:
            raise TrainError(f"{self.run_dir} holds a {run.get('stage')!r} run; use another --out")
        saved = run.get("config")
        if config_cls is not None and isinstance(saved, dict):
            try:
                saved = config_cls.from_dict(saved).to_dict()
            except (ConfigError, TypeError, ValueError):
                pass  # compared as saved: it differs
        if _jsonable(saved) != _jsonable(config):
            raise TrainError(
                f"{self.run_dir}: the model config differs from the run being resumed "
                "(same --preset/--set/--upstream, or --no-resume to start over)"
            )

    def _write_run_json(self, ctx: StageContext, train: ClipSet, valid: ClipSet) -> None:
        opts = self.opts
        data = {
            "format": RUN_FORMAT,
            "stage": self.stage.name,
            "component": self.stage.component,
            "preset": opts.preset,
            "config": ctx.config.to_dict(),
            "training": None if ctx.training is None else ctx.training.to_dict(),
            "hyper": asdict(ctx.hp),
            "options": {
                k: (str(v) if isinstance(v, Path) else v)
                for k, v in asdict(opts).items()
                if k not in ("upstream", "kill_at_step")
            },
            "data": corpus_summary(train, valid),
            "upstream": {n: _provenance(n, c) for n, c in ctx.upstream.items()},
            "init_from": None if ctx.init is None else {"hash": ctx.init.hash, "source": ctx.init.source},
            "export_meta": self.stage.export_meta(),
            "hardware": hardware(self.dist),
        }
        data["options"]["upstream"] = [str(p) for p in opts.upstream]
        write_json(self.run_dir / RUN_FILE, _jsonable(data))

    # ------------------------------------------------------------------------------------ the loop
    def _loop(self, ctx: StageContext) -> dict[str, Any]:
        opts, stage, dist = self.opts, self.stage, self.dist
        total = ctx.total_steps
        show = (opts.progress if opts.progress is not None else sys.stderr.isatty()) and dist.is_main
        bar = tqdm(total=total, initial=self.step, desc=stage.name, disable=not show, dynamic_ncols=True)
        last_ckpt = time.monotonic()
        session_start, wall_start = time.monotonic(), self.wall
        restore = self._install_signals()
        try:
            while total is None or self.step < total:
                elapsed = time.monotonic() - self.started
                time_up = opts.minutes is not None and elapsed >= opts.minutes * 60
                ckpt_due = time.monotonic() - last_ckpt >= opts.ckpt_minutes * 60
                time_up, sig, ckpt_due = dist.all_reduce_max(
                    [float(time_up), float(self._signal), float(ckpt_due)]
                )
                if time_up or sig:
                    self.stop_reason = "time budget" if time_up else "signal"
                    break
                lr = stage.set_lr(self.step)
                values = dist.all_reduce_mean(stage.train_step(self.step))
                self.step += 1
                self.wall = wall_start + time.monotonic() - session_start
                bad = [k for k, v in values.items() if not math.isfinite(v)]
                if bad:
                    raise TrainError(
                        f"{stage.name}: {', '.join(bad)} became non-finite at step {self.step}; "
                        f"last checkpoint: step {max(self.saved_step, 0)} (lower --lr?)"
                    )
                if self.log_file is not None and self.step % opts.log_every == 0:
                    self.log_file.write(self.step, "train", self.wall, lr, values)
                bar.update(1)
                if show:
                    bar.set_postfix(loss=f"{values.get('loss', float('nan')):.4f}", refresh=False)
                if ctx.hp.valid_every > 0 and self.step % ctx.hp.valid_every == 0:
                    self._validate(lr, bar)
                if self.step % opts.ckpt_every == 0 or ckpt_due:
                    self._save()
                    last_ckpt = time.monotonic()
                if opts.kill_at_step is not None and self.step == opts.kill_at_step:
                    os.kill(os.getpid(), signal.SIGKILL)  # fault injection (tests): no cleanup at all
        finally:
            restore()
            bar.close()
        if self.saved_step != self.step:
            if ctx.hp.valid_every <= 0 or self.step % ctx.hp.valid_every:  # not validated at this step yet
                self._validate(self._lr(), None)
            self._save()
        self._finish()
        return self._summary()

    def _one_shot(self, ctx: StageContext) -> dict[str, Any]:
        if self.step > 0:
            self._log(f"{self.stage.name}: already fitted (step {self.step}); nothing to do")
            return self._summary()
        t0 = time.monotonic()
        rows = self.stage.fit() if self.dist.is_main else []
        self.dist.barrier()
        self.wall = time.monotonic() - t0
        for i, row in enumerate(rows, 1):
            if self.log_file is not None:
                self.log_file.write(i, "train", self.wall * i / len(rows), 0.0, row)
        self.step = max(1, len(rows))
        self._validate(0.0, None)
        self._save()
        self._finish()
        return self._summary()

    # ------------------------------------------------------------------------- validation / state
    def _validate(self, lr: float, bar: tqdm | None) -> None:
        values: dict[str, float] = {}
        if self.dist.is_main and len(self.stage.ctx.valid):
            rng = capture_rng()
            try:
                seed_all(self.opts.seed)
                values = self.stage.validate()
            finally:
                restore_rng(rng)
        self.dist.barrier()
        if not values or self.log_file is None:
            return
        self.log_file.write(self.step, "valid", self.wall, lr, values)
        shown = ", ".join(f"{k} {v:.4g}" for k, v in values.items())
        (bar.write if bar is not None and not bar.disable else self._log)(f"step {self.step} valid: {shown}")
        score = values.get(self.stage.valid_key)
        if score is not None and (self.best is None or score < self.best["value"]):
            self.best = {"step": self.step, "value": score}
            models = {self.stage.component: self.stage.modules()[self.stage.component].state_dict()}
            save_state(
                self.ckpt_dir / "best.pt",
                {
                    "format": STATE_FORMAT,
                    "step": self.step,
                    "models": models,
                    "export_meta": self.stage.export_meta(),
                },
            )

    def _save(self) -> None:
        rngs = self.dist.gather_objects(capture_rng())
        if self.dist.is_main:
            stage = self.stage
            state = {
                "format": STATE_FORMAT,
                "version": STATE_VERSION,
                "stage": stage.name,
                "step": self.step,
                "wall_s": self.wall,
                "best": self.best,
                "world": self.dist.world,
                "models": {k: m.state_dict() for k, m in stage.modules().items()},
                "optimizers": {k: o.state_dict() for k, o in stage.optimizers().items()},
                "schedules": {k: s.state_dict() for k, s in stage.schedules.items()},
                "sampler": stage.sampler.state_dict() if stage.sampler is not None else None,
                "data": self._data_fingerprint(),
                "extra": stage.extra_state(),
                "rng": rngs,
                "export_meta": stage.export_meta(),
            }
            save_state(self.ckpt_dir / "last.pt", state)
        self.saved_step = self.step

    def _load_checkpoint(self) -> None:
        try:
            state = load_state(self.ckpt_dir / "last.pt")
        except StateFileError as exc:
            raise TrainError(f"{exc}; --no-resume starts the run over") from None
        if state.get("format") != STATE_FORMAT or state.get("stage") != self.stage.name:
            raise TrainError(f"{self.ckpt_dir / 'last.pt'}: not a {self.stage.name!r} training checkpoint")
        stage = self.stage
        for k, m in stage.modules().items():
            m.load_state_dict(state["models"][k])
        for k, o in stage.optimizers().items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in stage.schedules.items():
            s.load_state_dict(state["schedules"][k])
        if stage.sampler is not None and state.get("sampler") is not None:
            if state.get("data") == self._data_fingerprint():
                stage.sampler.load_state_dict(state["sampler"])
            else:  # other clips than at the checkpoint: the old data position means nothing
                self._log("note: the training clips changed since the checkpoint; the sampler starts afresh")
        stage.load_extra_state(state.get("extra", {}))
        self.step, self.wall, self.best = int(state["step"]), float(state["wall_s"]), state.get("best")
        self.saved_step = self.step
        rngs = state["rng"]
        if len(rngs) == self.dist.world:
            restore_rng(rngs[self.dist.rank])
        else:  # resumed with another world size: data stream stays exact, noise streams are re-seeded
            self._log(f"note: checkpoint from {len(rngs)} process(es), now {self.dist.world}; RNG re-seeded")
            seed_all(int(combine_hashes(str(self.opts.seed), str(self.step), str(self.dist.rank))[:8], 16))
        if self.log_file is not None:
            self.log_file.truncate_after(self.step)

    def _finish(self) -> None:
        hashes = self.dist.gather_objects({k: params_hash(m) for k, m in self.stage.modules().items()})
        if not self.dist.is_main:
            return
        if self.dist.distributed:
            same = all(h == hashes[0] for h in hashes)
            write_json(
                self.run_dir / DDP_CHECK_FILE,
                {"step": self.step, "world": self.dist.world, "params_hashes": hashes, "identical": same},
            )
            if not same:
                self._log("warning: parameters differ across DDP ranks (see ddp_check.json)")
        if self.opts.plot and self.log_file is not None:
            try:
                plot_metrics(
                    self.run_dir / "metrics.csv",
                    self.run_dir / "loss.png",
                    f"{self.stage.name} ({self.opts.preset})",
                    self.stage.metrics,
                )
            except Exception as exc:  # noqa: BLE001 - a plot never fails a training run
                self._log(f"note: could not plot the metrics ({type(exc).__name__}: {exc})")
        why = f" ({self.stop_reason})" if self.stop_reason else ""
        self._log(
            f"{self.stage.name}: stopped at step {self.step}{why}; {self.wall:.1f} s of training; "
            f"checkpoint {self.ckpt_dir / 'last.pt'}"
        )

    def _summary(self) -> dict[str, Any]:
        return {
            "stage": self.stage.name,
            "step": self.step,
            "wall_s": self.wall,
            "best": self.best,
            "stopped": self.stop_reason,
            "run_dir": str(self.run_dir),
        }

    # ---------------------------------------------------------------------------------- utilities
    def _data_fingerprint(self) -> str:
        train = self.stage.ctx.train
        return combine_hashes(*(f"{r.id}:{n}" for r, n in zip(train.records, train.lengths)))

    def _lr(self) -> float:
        return next(iter(self.stage.schedules.values())).last if self.stage.schedules else 0.0

    def _install_signals(self):
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum, frame):  # noqa: ARG001
            self._signal = True

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        return lambda: [signal.signal(s, h) for s, h in old.items()]

    def _log(self, msg: str) -> None:
        if self.dist.is_main:
            print(msg, flush=True)


def _provenance(name: str, component: Any) -> dict[str, str]:
    """What a run records about an upstream model: its hash and source (+ the VAE's encoder hash)."""
    out = {"hash": component.hash, "source": component.source}
    if name == "vae":
        out["encoder_hash"] = encoder_hash(component.model)
    return out


def hardware(dist: DistContext) -> dict[str, Any]:
    dev = dist.device
    name = (
        torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine()
    )
    return {
        "device": str(dev.type),
        "device_name": name,
        "world_size": dist.world,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def _jsonable(x: Any) -> Any:
    """Tuples -> lists, Paths -> str, recursively (what a JSON round trip gives)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    return x
