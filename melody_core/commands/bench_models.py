"""`melody bench-models`: forward time of each model of a preset + projected real-time factor."""

from __future__ import annotations

import argparse

from melody_core.commands import CLIError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench-models", help="time each model's forward pass on this machine")
    p.add_argument("--preset", default="tiny", choices=["tiny", "paper"])
    p.add_argument("--steps", type=int, default=10, help="DPD steps assumed for the projection")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per model (median reported)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--dpd-table", action="store_true",
                   help="DPD sizes (patch x width x blocks): params, FLOPs, ms per step (2 threads)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.steps <= 1000:
        raise CLIError(f"--steps must be between 1 and 1000, got {args.steps}")
    if not 1 <= args.repeats <= 100:
        raise CLIError(f"--repeats must be between 1 and 100, got {args.repeats}")
    from melody_core.eval.model_bench import run_dpd_table, run_model_bench

    if args.dpd_table:
        run_dpd_table(repeats=args.repeats, threads=args.threads or 2, as_json=args.json)
        return 0

    run_model_bench(preset=args.preset, steps=args.steps, repeats=args.repeats, threads=args.threads,
                    as_json=args.json)
    return 0
