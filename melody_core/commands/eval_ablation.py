"""`melody eval ablation-arch`: the parser and handler (the work is in `melody_core.eval.ablation_arch`,
imported only when the command runs, so the CLI starts without torch)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from melody_core.commands import CLIError


def _override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        return key.strip(), json.loads(raw)
    except ValueError:
        return key.strip(), raw


def add_parser(what: argparse._SubParsersAction) -> None:
    """Register `melody eval ablation-arch` on the `eval` subcommand's subparsers."""
    p = what.add_parser(
        "ablation-arch", help="DPD vs UNet-1D at matched size: velocity MSE and SI-SNRi (poster ablation)",
        description="Train the tiny DPD and a parameter-matched UNet-1D on CORPUS with the same data, "
        "seed and budget (into --work/dpd and --work/unet1d; finished runs are reused), then score "
        "both on the held-out clips: validation velocity MSE and SI-SNRi of one-step denoising.",
    )  # fmt: skip
    p.add_argument("--data", required=True, type=Path, metavar="CORPUS", help="corpus folder")
    p.add_argument("--bundle", type=Path, help="upstream vae/ssl/kmeans (default: the bundled model)")
    p.add_argument("--work", type=Path, help="runs, caches and results (default: the user cache dir, "
                   "shared with `melody eval all`)")
    p.add_argument("--minutes", type=float, default=8.0, help="training minutes per arm (default 8)")
    p.add_argument("--steps", type=int, help="same step count for both arms instead of --minutes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--valid-clips", type=int, default=24, help="held-out clips evaluated (default 24)")
    p.add_argument("--batch-size", type=int, help="training batch size (default: the dpd stage's)")
    p.add_argument("--crop-seconds", type=float, help="training window and evaluation crop (default 10)")
    p.add_argument("--warmup", type=int, help="LR warm-up steps (default 20 with --minutes; with --steps "
                   "min(200, steps/10))")  # fmt: skip
    p.add_argument("--set", dest="overrides", type=_override, action="append", default=[],
                   metavar="KEY=VALUE", help="DPD config override (UNet-1D matched to it)")  # fmt: skip
    p.add_argument("--weights", choices=["last", "best"], default="last", help="weights evaluated")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda[:N]")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    from melody_core.audio import AudioError
    from melody_core.checkpoint import BundleError
    from melody_core.config import ConfigError
    from melody_core.data.corpus import CorpusError
    from melody_core.eval.ablation_arch import (
        AblationError,
        ArchAblationOptions,
        format_result,
        run_arch_ablation,
    )
    from melody_core.generation.pipeline import default_bundle_path
    from melody_core.train.upstream import TrainError

    for name in ("threads", "batch_size", "valid_clips", "warmup"):
        value, least = getattr(args, name), 0 if name == "warmup" else 1
        if value is not None and value < least:
            raise CLIError(f"--{name.replace('_', '-')} must be >= {least}, got {value}")
    if args.crop_seconds is not None and not args.crop_seconds > 0:
        raise CLIError(f"--crop-seconds must be > 0, got {args.crop_seconds}")
    if not Path(args.data).is_dir():
        raise CLIError(f"{args.data}: not a folder")
    opts = ArchAblationOptions(
        minutes_per_arm=args.minutes, steps=args.steps, seed=args.seed, threads=args.threads,
        valid_clips=args.valid_clips, batch_size=args.batch_size, crop_seconds=args.crop_seconds,
        warmup=args.warmup, dpd_overrides=dict(args.overrides), weights=args.weights, device=args.device,
    )  # fmt: skip
    log = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    bundle = args.bundle if args.bundle is not None else default_bundle_path()
    if args.work is None:
        from melody_core.eval.suite.options import default_ablation_work

        args.work = default_ablation_work()
    try:
        opts.check()
        result = run_arch_ablation(args.data, bundle, args.work, opts, log)
    except (AblationError, TrainError, CorpusError, BundleError, ConfigError, AudioError) as exc:
        raise CLIError(str(exc)) from None
    except OSError as exc:
        raise CLIError(f"{args.work}: {exc.strerror or exc}") from None
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(format_result(result), end="")
    return 0
