"""`melody eval all` command line (registered by `melody_core.commands.eval`; the suite itself is
`melody_core.eval.suite`).

Bad input is one `error:` line with exit status 2 (`CLIError`). `--report-only` rewrites README.md
and the plots from an existing results.json (no bundle, no corpus); with `--baseline` it first adds
that baseline (and the recomputed targets) to results.json.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path

from melody_core.commands import CLIError
from melody_core.eval.suite.options import RESULTS_FORMAT, SKIPPABLE, SuiteError, SuiteOptions

MAX_SECONDS = 60.0  # longest crop / generated clip of the grid
MAX_CLIPS = 1000
MAX_STEPS = 1000
DEFAULT_OUT = "docs/results"


def add_parser(what: argparse._SubParsersAction) -> None:
    a = what.add_parser(
        "all", help="the whole evaluation suite: tables + plots in docs/results/README.md",
        description="Reproduce the paper's claims at our scale and measure prompt control: reference set "
                    "(musicnn FAD reference, MCC, VAE reconstruction), steps x angle-schedule grid (speed, "
                    "FAD, MCC: Table 2 and the schedule ablation), tempo / instrument / piano-vs-quartet "
                    "control, continuation seams, DPD vs UNet-1D ablation. Writes results.json, README.md "
                    "and PNG plots into --out.",
    )  # fmt: skip
    a.add_argument("--bundle", default="default", metavar="default|DIR",
                   help="bundle folder, or 'default' for the bundled model (default)")
    a.add_argument("--data", metavar="CORPUS_DIR",
                   help="corpus folder with a held-out split (default: the one `melody data build` writes)")
    a.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"output folder (default {DEFAULT_OUT})")
    a.add_argument("--clips", type=int, default=32, help="held-out clips = prompts per grid cell (32)")
    a.add_argument("--seconds", type=float, default=10.0, help="clip crop and generated length (10)")
    a.add_argument("--seed", type=int, default=0, help="base seed (0)")
    a.add_argument("--steps", default="5,10,20", help="DPD steps of the grid, comma-separated (5,10,20)")
    a.add_argument("--ablation-minutes", type=float, default=8.0, help="training minutes per ablation arm")
    a.add_argument("--ablation-work", metavar="DIR", help="ablation work folder (default: user cache dir)")
    a.add_argument("--reuse-ablation", action="store_true",
                   help="reuse finished ablation arms with the same settings instead of retraining them")
    a.add_argument("--baseline", metavar="RESULTS_JSON",
                   help="results.json of the earlier bundle's run on the same reference set: the FAD target "
                        "is half its 10-step FAD (with --report-only: added to --out/results.json)")
    a.add_argument("--skip", default="", metavar="LIST", help=f"sections to skip: {','.join(SKIPPABLE)}")
    a.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    a.add_argument("--device", default="cpu", help="cpu (default), auto, cuda[:N] or mps")
    a.add_argument("--report-only", action="store_true",
                   help="only rewrite README.md and the plots from --out/results.json")
    a.add_argument("--json", action="store_true", help="print results.json when done")
    a.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    a.set_defaults(func=run_cli)


def _int_list(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise CLIError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values or not all(1 <= v <= MAX_STEPS for v in values):
        raise CLIError(f"{what} must be integers in 1..{MAX_STEPS}, got {text!r}")
    return tuple(sorted(set(values)))


def options_from_args(args: argparse.Namespace) -> SuiteOptions:
    """Validated `SuiteOptions` of the parsed command line (CLIError: one line)."""
    if not 1 <= args.clips <= MAX_CLIPS:
        raise CLIError(f"--clips must be 1..{MAX_CLIPS}, got {args.clips}")
    if not (math.isfinite(args.seconds) and 1.0 <= args.seconds <= MAX_SECONDS):
        raise CLIError(f"--seconds must be between 1 and {MAX_SECONDS:g}, got {args.seconds}")
    if not 0 <= args.seed < 2**62:
        raise CLIError(f"--seed must be an integer in [0, 2^62), got {args.seed}")
    if not (math.isfinite(args.ablation_minutes) and 0 < args.ablation_minutes <= 600):
        raise CLIError(f"--ablation-minutes must be in (0, 600], got {args.ablation_minutes}")
    if args.threads is not None and args.threads < 1:
        raise CLIError(f"--threads must be >= 1, got {args.threads}")
    skip = frozenset(s.strip() for s in args.skip.split(",") if s.strip())
    try:
        return SuiteOptions(clips=args.clips, seconds=args.seconds, seed=args.seed,
                            steps=_int_list(args.steps, "--steps"), ablation_minutes=args.ablation_minutes,
                            ablation_work=args.ablation_work,
                            reuse_ablation=args.reuse_ablation, skip=skip, device=args.device,
                            baseline=args.baseline)  # fmt: skip
    except SuiteError as exc:
        raise CLIError(f"--skip: {exc}") from None


def command_line(args: argparse.Namespace, opts: SuiteOptions) -> str:
    """The command reproducing this run (options that differ from the defaults only)."""
    parts = ["melody", "eval", "all", "--bundle", args.bundle, "--data", args.data]
    base = SuiteOptions()
    if args.out != DEFAULT_OUT:
        parts += ["--out", args.out]
    numbers = (("--clips", opts.clips, base.clips), ("--seconds", opts.seconds, base.seconds),
               ("--seed", opts.seed, base.seed),
               ("--ablation-minutes", opts.ablation_minutes, base.ablation_minutes))  # fmt: skip
    for flag, value, default in numbers:
        if value != default:
            parts += [flag, f"{value:g}"]
    if opts.steps != base.steps:
        parts += ["--steps", ",".join(map(str, opts.steps))]
    if opts.skip:
        parts += ["--skip", ",".join(sorted(opts.skip))]
    if args.threads is not None:
        parts += ["--threads", str(args.threads)]
    if args.device != "cpu":
        parts += ["--device", args.device]
    if opts.reuse_ablation:
        parts.append("--reuse-ablation")
    if opts.baseline:
        parts += ["--baseline", opts.baseline]
    return shlex.join(parts)


def run_cli(args: argparse.Namespace) -> int:
    from melody_core.audio import AudioError
    from melody_core.data.corpus import CorpusError
    from melody_core.eval.suite.run import run_suite
    from melody_core.generation.pipeline import MelodyPipeline
    from melody_core.generation.types import PipelineError

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    out = Path(args.out)
    if args.report_only:
        return _report_only(out, args)
    opts = options_from_args(args)
    _baseline(args)  # a bad baseline file: one line before the bundle loads
    if not args.data:
        from melody_core.data.build import default_out

        args.data = str(default_out())
        if not Path(args.data).is_dir():
            raise CLIError(f"no corpus at {args.data}: build one with `melody data build --hours 3 --seed 0` "
                           "or pass --data CORPUS_DIR")  # fmt: skip
    if not Path(args.data).is_dir():
        raise CLIError(f"{args.data}: not a folder")
    try:
        pipe = MelodyPipeline.load(None if args.bundle == "default" else args.bundle, device=args.device,
                                   threads=args.threads)  # fmt: skip
        results = run_suite(pipe, args.data, out, opts, log, command=command_line(args, opts))
    except (PipelineError, CorpusError, SuiteError, AudioError) as exc:
        raise CLIError(str(exc)) from None
    except OSError as exc:
        raise CLIError(f"{out}: cannot write ({exc.strerror or exc})") from None
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
    else:
        print(f"wrote {out / 'README.md'} and {out / 'results.json'} "
              f"({results['timings_s']['total'] / 60:.1f} min)")
    return 0


def _report_only(out: Path, args: argparse.Namespace) -> int:
    from melody_core.eval.suite.report import write_report

    path = out / "results.json"
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CLIError(f"{path}: cannot read results ({exc})") from None
    if not isinstance(results, dict) or results.get("format") != RESULTS_FORMAT:
        raise CLIError(f"{path}: not a results file of `melody eval all`")
    if args.baseline:
        from melody_core.eval.suite.targets import targets
        from melody_core.train.state import write_json

        results["baseline"] = _baseline(args)
        results["targets"] = targets(results)
        write_json(path, results)
    write_report(out, results)
    print(json.dumps(results, indent=2, sort_keys=True) if args.json else f"wrote {out / 'README.md'}")
    return 0


def _baseline(args: argparse.Namespace) -> dict | None:
    """`targets.read_baseline` of --baseline (CLIError: one line); None without it."""
    from melody_core.eval.suite.targets import read_baseline

    if not args.baseline:
        return None
    try:
        return read_baseline(args.baseline)
    except SuiteError as exc:
        raise CLIError(str(exc)) from None
