"""Device runs: `melody train dpd` on a lent GPU machine from a device pack (`train/devpack.py`),
the weights back through $OUT, and home.

`train_on_device` unpacks the pack, runs the unchanged trainer under a time cap and, after every
checkpoint, `export_weights` writes the DPD weights into $OUT as fp32 safetensors shards under
16 MiB (the call returns at most 8 files of 16 MiB; a run killed at the call's limit still returns
its last checkpoint). `import_weights` makes a home run folder from them: a copy of the home run
whose weights are the device's, which `melody train dpd --out COPY` resumes (its optimizer,
schedule and data position stay the home run's) or `--init-from` starts from.

    python -m melody_core.train.devrun build RUN_DIR CORPUS PACK [--repo CHECKOUT] ...   (here)
    python -m melody_core.train.devrun train PACK --out OUT --minutes 8 [-- TRAINER OPTIONS]  (device)
    python -m melody_core.train.devrun import OUT --home RUN_DIR --into NEW_RUN_DIR            (here)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save

from melody_core.train import devpack
from melody_core.train.devpack import CARRY_LIMIT_MIB, MIB, build_pack
from melody_core.train.state import atomic_write, load_state, save_state, state_hash, write_json
from melody_core.train.upstream import CKPT_DIR, RUN_FILE, TrainError, read_run

RETURN_FILE_LIMIT = 16 * MIB  # the largest file $OUT may send back
SHARD_BYTES = 15 * MIB  # weight shards stay under RETURN_FILE_LIMIT with room for the header


# ------------------------------------------------------------------------- export / import
def export_weights(run_dir: Path, out: Path, done: dict[str, float] | None = None,
                   about: dict[str, Any] | None = None) -> list[str]:
    """Shards of the run's last/best DPD weights (fp32) in `out` when newer than in `done`
    ({which: mtime}, updated); plus metrics.csv and device.json (the run's run.json, what was
    exported, and `about`). Returns what was written."""
    run_dir, out = Path(run_dir), Path(out)
    done = {} if done is None else done
    wrote = []
    for which in ("last", "best"):
        ckpt_path = run_dir / CKPT_DIR / f"{which}.pt"
        if not ckpt_path.is_file() or done.get(which) == ckpt_path.stat().st_mtime:
            continue
        mtime = ckpt_path.stat().st_mtime
        state = load_state(ckpt_path)
        wrote += _write_shards(out, f"dpd-{which}", state["models"]["dpd"], {
            "step": str(state["step"]), "which": which, "wall_s": f"{float(state.get('wall_s', 0.0)):.1f}",
            "export_meta": json.dumps(state.get("export_meta", {}))})
        done[which] = mtime
    if wrote:
        if (run_dir / "metrics.csv").is_file():
            text = (run_dir / "metrics.csv").read_bytes()
            atomic_write(out / "metrics.csv", lambda f: f.write(text))
        if (run_dir / RUN_FILE).is_file():
            exported = {k: _shard_meta(out, f"dpd-{k}") for k in ("last", "best")
                        if (out / f"dpd-{k}.0.safetensors").is_file()}
            write_json(out / "device.json", {"run": read_run(run_dir), "exported": exported, **(about or {})})
    return wrote


def _write_shards(out: Path, stem: str, state: dict[str, torch.Tensor], meta: dict[str, str]) -> list[str]:
    groups: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k, v in state.items():
        n = v.numel() * v.element_size()
        if n > SHARD_BYTES:
            raise TrainError(f"{k}: a tensor of {n / MIB:.1f} MiB is over the {SHARD_BYTES // MIB} MiB shard")
        if size + n > SHARD_BYTES:
            groups.append({})
            size = 0
        groups[-1][k] = v.detach().cpu().contiguous()
        size += n
    names = []
    for i, g in enumerate(groups):
        name = f"{stem}.{i}.safetensors"
        blob = save(g, metadata={**meta, "shard": str(i), "shards": str(len(groups))})
        atomic_write(out / name, lambda f, b=blob: f.write(b))
        names.append(name)
    for stale in out.glob(f"{stem}.*.safetensors"):  # a shard count that shrank
        if int(stale.name.split(".")[1]) >= len(groups):
            stale.unlink()
    return names


def _shard_meta(out: Path, stem: str) -> dict[str, str]:
    with safe_open(str(out / f"{stem}.0.safetensors"), "pt") as f:
        return dict(f.metadata())


def read_shards(folder: Path, which: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The weights and metadata of `dpd-<which>.*.safetensors` in `folder` (all shards, one step)."""
    folder = Path(folder)
    first = folder / f"dpd-{which}.0.safetensors"
    if not first.is_file():
        raise TrainError(f"{folder}: no {which} weights (dpd-{which}.0.safetensors)")
    meta = _shard_meta(folder, f"dpd-{which}")
    state: dict[str, torch.Tensor] = {}
    for i in range(int(meta["shards"])):
        path = folder / f"dpd-{which}.{i}.safetensors"
        if not path.is_file():
            raise TrainError(f"{path}: missing shard")
        with safe_open(str(path), "pt") as f:
            if f.metadata().get("step") != meta["step"]:
                raise TrainError(f"{path}: shard of another step than {first.name}")
            state.update({k: f.get_tensor(k) for k in f.keys()})
    return state, meta


def import_weights(device_out: Path, home: Path, into: Path, which: str = "best", log=print) -> Path:
    """A copy of home run `home` in `into` whose DPD weights are the device's (`which`: best, or last;
    best falls back to last). Resuming `into` continues the home run (same step, optimizer, schedule,
    data position) from the device weights; `--init-from into` starts a new run from them."""
    home, into = Path(home), Path(into)
    if which not in ("best", "last"):
        raise TrainError(f"which must be best or last, got {which!r}")
    if into.exists() and any(into.iterdir()):
        raise TrainError(f"{into}: exists and is not empty")
    try:
        weights, meta = read_shards(device_out, which)
    except TrainError:
        if which != "best":
            raise
        weights, meta = read_shards(device_out, "last")
    run = read_run(home)
    state = load_state(home / CKPT_DIR / "last.pt")
    old = state["models"]["dpd"]
    if set(old) != set(weights) or any(old[k].shape != weights[k].shape for k in old):
        raise TrainError(f"{device_out}: the device weights do not fit the DPD of {home}")
    state["models"]["dpd"] = {k: weights[k].to(old[k].dtype) for k in old}
    state["best"] = None  # the home best score was of other weights: the next validation sets it
    dev_meta = json.loads(meta.get("export_meta", "{}"))
    if dev_meta.get("latent_scale") != run.get("export_meta", {}).get("latent_scale"):
        raise TrainError("the device run used another latent scale than the home run")
    device = {}
    if (Path(device_out) / "device.json").is_file():
        device = json.loads((Path(device_out) / "device.json").read_text(encoding="utf-8"))
    packed_at = device.get("pack", {}).get("home_step")
    if packed_at is not None and packed_at != state["step"]:
        log(f"note: the home run is at step {state['step']}, the pack was built at step {packed_at}: the "
            f"copy keeps the home position but its weights are the device's, trained from step {packed_at}")
    into.mkdir(parents=True, exist_ok=True)
    run["device_training"] = {
        "weights": meta["which"],
        "device_step": int(meta["step"]),
        "device_wall_s": float(device.get("exported", {}).get("last", meta).get("wall_s", 0.0)),
        "pack": device.get("pack"),
        "hardware": device.get("run", {}).get("hardware"),
        "hyper": device.get("run", {}).get("hyper"),
        "from": str(Path(device_out).resolve()),
        "home_step": int(state["step"]),
        "weights_hash": state_hash(state["models"]["dpd"]),
    }
    write_json(into / RUN_FILE, run)
    if (home / "metrics.csv").is_file():
        shutil.copy2(home / "metrics.csv", into / "metrics.csv")
    if (Path(device_out) / "metrics.csv").is_file():
        shutil.copy2(Path(device_out) / "metrics.csv", into / "device-metrics.csv")
    save_state(into / CKPT_DIR / "last.pt", state)
    log(f"{into}: home run {home} at step {state['step']} with the device's {meta['which']} weights "
        f"(device step {meta['step']}); resume it with the home run's `melody train dpd` options and "
        f"--out {into}, or start a new run with --init-from {into}")
    return into


# ---------------------------------------------------------------------------------- train
def train_on_device(
    pack: Path,
    out: Path,
    *,
    repo: Path,
    work: Path,
    minutes: float,
    ckpt_minutes: float = 2.0,
    extra: list[str] | None = None,
    poll_s: float = 5.0,
    log=print,
) -> int:
    """Unpack, run `melody train dpd` (subprocess) for at most `minutes` in all, and export the
    weights into `out` after every checkpoint; returns the trainer's exit status."""
    started = time.monotonic()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log_file = open(out / "train.log", "a", encoding="utf-8")  # noqa: SIM115 - closed at the end
    lock, seen = threading.Lock(), []
    echo = log

    def log(line: str) -> None:  # everything printed also goes to OUT/train.log
        with lock:
            echo(line)
            log_file.write(line + "\n")
            log_file.flush()

    try:
        return _train(pack, out, repo, work, minutes, ckpt_minutes, extra or [], poll_s, started, log, seen)
    finally:
        log_file.close()


def _train(pack, out, repo, work, minutes, ckpt_minutes, extra, poll_s, started, log, seen) -> int:
    upstream = devpack.unpack_pack(pack, work, repo, log=log)
    left = minutes - (time.monotonic() - started) / 60 - 0.25  # 15 s for the final export
    if left <= 0.1:
        raise TrainError(f"--minutes {minutes}: no time left for training after unpacking")
    run_dir = work / "run"
    crop = json.loads((Path(pack) / "pack.json").read_text(encoding="utf-8"))["run"]["hyper"]["crop_seconds"]
    argv = [sys.executable, "-m", "melody_core.cli", "train", "dpd", "--data", str(work / "corpus"),
            "--cache-dir", str(work / "cache"), "--init-from", str(work / "init"), "--out", str(run_dir),
            "--minutes", f"{left:.3f}", "--ckpt-minutes", str(ckpt_minutes), "--no-progress", "--no-plot",
            "--crop-seconds", str(crop)]  # the home crop: the model's train_length follows from it
    for p in upstream:
        argv += ["--upstream", str(p)]
    argv += list(extra)
    log("$ " + " ".join(argv[1:]))
    child = subprocess.Popen(argv, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=dict(os.environ, PYTHONUNBUFFERED="1"))
    old = {s: signal.signal(s, lambda n, f: child.send_signal(n)) for s in (signal.SIGINT, signal.SIGTERM)}

    def pump() -> None:
        for line in child.stdout:
            log(line.rstrip())

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    done: dict[str, float] = {}
    pmeta = json.loads((Path(pack) / "pack.json").read_text(encoding="utf-8"))
    keys = ("home_run", "home_step", "weights", "train_seconds", "window_seconds", "seed")
    about = {"pack": {k: pmeta[k] for k in keys} | {"train_windows": len(pmeta["windows"]["train"])}}
    last_report = 0.0
    cached = {str(p) for p in (work / "cache").rglob("*")}
    stray: set[str] = set()
    try:
        while child.poll() is None:
            time.sleep(poll_s)
            stray = {str(p) for p in (work / "cache").rglob("*")} - cached
            if stray:  # features encoded from the silent stand-ins: never train on them
                log(f"error: the trainer is encoding features of its own ({min(stray)}): the checkout's "
                    "upstream models or the stand-in files differ from the pack's; stopping it")
                child.kill()
                break
            for name in export_weights(run_dir, out, done, about):
                log(f"devrun: exported {name}")
            if time.monotonic() - last_report >= 30:
                last_report = time.monotonic()
                _progress(run_dir, pack, started, log, seen)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    reader.join(timeout=10)
    if stray:
        child.wait()
        return 3
    for name in export_weights(run_dir, out, done, about):
        log(f"devrun: exported {name}")
    _progress(run_dir, pack, started, log, seen)
    rc = child.wait()
    log(f"devrun: trainer exited with status {rc}; weights in {out}: "
        + ", ".join(sorted(p.name for p in out.glob("dpd-*.safetensors"))))
    return rc


def _progress(run_dir: Path, pack: Path, started: float, log, seen: list[int]) -> None:
    """One line from metrics.csv: step, loss, speed, passes over the pack's training audio."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return
    rows = [r.split(",") for r in path.read_text(encoding="utf-8").splitlines()[1:] if r]
    train = [r for r in rows if r[1] == "train"]
    valid = [r for r in rows if r[1] == "valid"]
    if not train:
        return
    step, wall = int(train[-1][0]), float(train[-1][2])
    if seen and seen[-1] == step:
        return
    seen.append(step)
    run = read_run(run_dir)
    meta = json.loads((Path(pack) / "pack.json").read_text(encoding="utf-8"))
    seen_s = step * run["hyper"]["batch_size"] * run["hyper"]["crop_seconds"]
    v = f", valid {float(valid[-1][4]):.4f} at step {valid[-1][0]}" if valid else ""
    log(f"devrun: {time.monotonic() - started:.0f} s: step {step}, loss {float(train[-1][4]):.4f}{v}; "
        f"{step / max(wall, 1e-9):.2f} steps/s; {seen_s / max(meta['train_seconds'], 1e-9):.1f} passes "
        "over the pack's training audio")


# ------------------------------------------------------------------------------------ CLI
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m melody_core.train.devrun", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write a pack from a home dpd run and its corpus")
    b.add_argument("run", type=Path, help="home dpd run folder (read only)")
    b.add_argument("corpus", type=Path, help="the run's corpus folder")
    b.add_argument("pack", type=Path, help="pack folder to write (inside the checkout, git-ignored)")
    b.add_argument("--repo", type=Path, default=Path.cwd(), help="the checkout a device call sends")
    b.add_argument("--window-seconds", type=float, default=12.0, help="audio taken from each clip")
    b.add_argument("--weights", choices=["bf16", "fp32"], default="bf16")
    b.add_argument("--data-mib", type=float, help="cap on the features (default: all that fits)")
    b.add_argument("--limit-mib", type=float, default=CARRY_LIMIT_MIB, help="checkout + carry limit")
    b.add_argument("--wheels", type=Path, help="folder of wheels to carry")
    b.add_argument("--cache-dir", type=Path, help="the home feature cache (default: the run's)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--measure", action="store_true", help="valid loss: bf16 vs fp32, uint8 vs float")
    t = sub.add_parser("train", help="(device) unpack, train with a time cap, export into --out; "
                       "`melody train dpd` options after --")
    t.add_argument("pack", type=Path)
    t.add_argument("--out", type=Path, required=True, help="folder of the returned files ($OUT)")
    t.add_argument("--minutes", type=float, required=True, help="wall-clock cap of the whole command")
    t.add_argument("--ckpt-minutes", type=float, default=2.0)
    t.add_argument("--work", type=Path, default=Path("/tmp/melody-devtrain"))
    t.add_argument("--repo", type=Path, default=Path.cwd())
    e = sub.add_parser("export", help="weights shards of a run's checkpoints into a folder")
    e.add_argument("run", type=Path)
    e.add_argument("out", type=Path)
    i = sub.add_parser("import", help="a copy of the home run with the device's weights")
    i.add_argument("device_out", type=Path, help="the files a device call returned")
    i.add_argument("--home", type=Path, required=True, help="home dpd run folder (read only)")
    i.add_argument("--into", type=Path, required=True, help="new run folder to write")
    i.add_argument("--weights", choices=["best", "last"], default="best")
    argv = list(sys.argv[1:] if argv is None else argv)
    trainer_args = argv[argv.index("--") + 1 :] if "--" in argv else []  # train: `melody train dpd` options
    args = p.parse_args(argv[: len(argv) - len(trainer_args) - (1 if "--" in argv else 0)])
    try:
        if args.cmd == "build":
            build_pack(args.run, args.corpus, args.pack, args.repo, window_seconds=args.window_seconds,
                       weights=args.weights, data_mib=args.data_mib, limit_mib=args.limit_mib,
                       wheels=args.wheels, cache_dir=args.cache_dir, seed=args.seed, measure=args.measure)
        elif args.cmd == "train":
            rc = train_on_device(args.pack, args.out, repo=args.repo, work=args.work, minutes=args.minutes,
                                 ckpt_minutes=args.ckpt_minutes, extra=trainer_args)
            return 0 if rc == 0 else (rc if rc > 0 else 1)
        elif args.cmd == "export":
            print("\n".join(export_weights(args.run, args.out)) or "nothing new")
        else:
            import_weights(args.device_out, args.home, args.into, args.weights)
    except (TrainError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
