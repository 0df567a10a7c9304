"""`melody bench`: end-to-end speed of the generation pipeline (see `melody_core.eval.bench`)."""

from __future__ import annotations

import argparse
import json
import math

from melody_core.commands import CLIError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="time the pipeline: per stage, end to end, streaming, NFE, memory",
        description="Times MuLan, the semantic LM, one DPD step and VAE decoding, then a whole "
        "generation, the first streamed chunk and sustained streaming. Use --bundle DIR for a trained "
        "bundle or --preset P --random-init for random weights of a preset (speed does not depend on "
        "training).",
    )
    p.add_argument("--bundle", metavar="DIR", help="bundle folder (default: the bundled model)")
    p.add_argument("--preset", choices=["tiny", "paper"], default=None, help="preset for --random-init")
    p.add_argument("--random-init", action="store_true", help="random weights of --preset (default tiny)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda[:N] or mps")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--lm-threads", type=int, default=1, help="threads while sampling LM tokens (default 1)")
    p.add_argument("--precision", default="auto", help="DPD precision: auto (= fp32), fp32, tf32, bf16, fp16")
    p.add_argument("--compile", action="store_true", help="torch.compile the DPD (CUDA)")
    p.add_argument("--hash-text-tower", action="store_true", help="with --random-init: MuLan's hashed "
                   "text backbone instead of MiniLM (for machines without the MiniLM package)")
    p.add_argument("--seconds", type=float, default=10.0, help="clip length of the end-to-end run")
    p.add_argument("--steps", type=int, default=10, help="DPD steps T (default 10)")
    p.add_argument("--guidance", type=float, default=2.5, help="CFG scale (default 2.5)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median)")
    p.add_argument("--stream-seconds", type=float, default=20.0, help="length of the streaming runs")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from melody_core.generation.pipeline import MelodyPipeline
    from melody_core.generation.types import PipelineError
    from melody_core.generation.validation import MAX_SECONDS, MAX_STEPS, MIN_SECONDS

    if args.bundle and args.random_init:
        raise CLIError("give either --bundle DIR or --random-init, not both")
    if args.preset and not args.random_init:
        raise CLIError("--preset needs --random-init (or give a trained bundle with --bundle)")
    for name, value, lo, hi in (("--seconds", args.seconds, MIN_SECONDS, MAX_SECONDS),
                                ("--stream-seconds", args.stream_seconds, MIN_SECONDS, MAX_SECONDS),
                                ("--steps", args.steps, 1, MAX_STEPS), ("--repeats", args.repeats, 1, 100)):
        if not (math.isfinite(value) and lo <= value <= hi):
            raise CLIError(f"{name} must be between {lo:g} and {hi:g}, got {value}")
    if args.threads is not None and args.threads < 1:
        raise CLIError(f"--threads must be >= 1, got {args.threads}")
    from melody_core.eval.bench import format_report, random_pipeline, run_bench

    kw = {"lm_threads": args.lm_threads, "precision": args.precision, "compile": args.compile}
    try:
        if args.random_init:
            preset = args.preset or "tiny"
            pipe = random_pipeline(preset, args.device, args.threads, args.hash_text_tower, **kw)
        else:
            pipe = MelodyPipeline.load(args.bundle, device=args.device, threads=args.threads, **kw)
        report = run_bench(pipe, args.seconds, args.steps, args.guidance, args.repeats, args.stream_seconds)
    except (PipelineError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    print(json.dumps(report, sort_keys=True) if args.json else format_report(report))
    return 0
