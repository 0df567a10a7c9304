"""`melody eval listen` command line (registered by `melody_core.commands.eval`; the sheet itself is
`melody_core.eval.listen`). Bad input is one `error:` line with exit status 2 (`CLIError`)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from melody_core.commands import CLIError
from melody_core.eval.listen import LISTEN_PROMPTS, MAX_FLAC_BYTES, ListenOptions

MAX_STEPS = 1000


def add_parser(what: argparse._SubParsersAction) -> None:
    n = len(LISTEN_PROMPTS)
    p = what.add_parser(
        "listen", help=f"listening sheet: {n} prompts across genres as FLAC + spectrograms + README",
        description=f"Generate {n} fixed prompts across the corpus genres (seed + i each), write them as "
                    f"16-bit FLAC files (at most {MAX_FLAC_BYTES / 1e6:g} MB in all), one 4x4 spectrogram "
                    "sheet (sheet.png), listen.json and README.md with, per clip, the BPM asked and "
                    "estimated and the hiss measure (spectral flatness between the harmonics of sustained "
                    "notes, dB). --data adds the same measure on held-out corpus clips as the reference.",
    )  # fmt: skip
    p.add_argument("--bundle", default="default", metavar="default|DIR",
                   help="bundle folder, or 'default' for the bundled model (default)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (e.g. docs/listen)")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each clip (default 10)")
    p.add_argument("--steps", type=int, default=10, help="DPD sampling steps (default 10)")
    p.add_argument("--seed", type=int, default=0, help="base seed: prompt i gets seed + i (default 0)")
    p.add_argument("--count", type=int, default=n, metavar="N",
                   help=f"only the first N of the {n} prompts, for a quick look (default {n})")
    p.add_argument("--data", metavar="CORPUS_DIR",
                   help="corpus folder: also measure hiss on its held-out clips as the reference level")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--device", default="cpu", help="cpu (default), auto, cuda[:N] or mps")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=run_cli)


def options_from_args(args: argparse.Namespace) -> ListenOptions:
    """Validated `ListenOptions` of the parsed command line (CLIError: one line)."""
    from melody_core.eval.listen import ListenError, check_options

    if not 1 <= args.steps <= MAX_STEPS:
        raise CLIError(f"--steps must be 1..{MAX_STEPS}, got {args.steps}")
    if not 0 <= args.seed < 2**62:
        raise CLIError(f"--seed must be an integer in [0, 2^62), got {args.seed}")
    if args.threads is not None and args.threads < 1:
        raise CLIError(f"--threads must be >= 1, got {args.threads}")
    if args.data is not None and not Path(args.data).is_dir():
        raise CLIError(f"{args.data}: {'not a folder' if Path(args.data).exists() else 'no such folder'}")
    opts = ListenOptions(seconds=args.seconds, steps=args.steps, seed=args.seed, count=args.count,
                         data=args.data)
    try:
        check_options(opts)
    except ListenError as exc:
        raise CLIError(str(exc)) from None
    return opts


def command_line(args: argparse.Namespace, opts: ListenOptions) -> str:
    """The command reproducing this run (options that differ from the defaults only)."""
    parts = ["melody", "eval", "listen", "--bundle", args.bundle, "--out", args.out]
    base = ListenOptions()
    numbers = (("--seconds", opts.seconds, base.seconds), ("--steps", opts.steps, base.steps),
               ("--seed", opts.seed, base.seed), ("--count", opts.count, base.count))
    for flag, value, default in numbers:
        if value != default:
            parts += [flag, f"{value:g}"]
    if opts.data:
        parts += ["--data", opts.data]
    if args.threads is not None:
        parts += ["--threads", str(args.threads)]
    if args.device != "cpu":
        parts += ["--device", args.device]
    return shlex.join(parts)


def run_cli(args: argparse.Namespace) -> int:
    from melody_core.audio import AudioError
    from melody_core.data.corpus import CorpusError
    from melody_core.eval.listen import ListenError, run_listen
    from melody_core.eval.suite.options import SuiteError
    from melody_core.generation.pipeline import MelodyPipeline
    from melody_core.generation.types import PipelineError

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    opts = options_from_args(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"{out}: not a folder")
    try:
        pipe = MelodyPipeline.load(None if args.bundle == "default" else args.bundle, device=args.device,
                                   threads=args.threads)  # fmt: skip
        results = run_listen(pipe, out, opts, log, command=command_line(args, opts))
    except (PipelineError, CorpusError, SuiteError, ListenError, AudioError) as exc:
        raise CLIError(str(exc)) from None
    except OSError as exc:
        raise CLIError(f"{out}: cannot write ({exc.strerror or exc})") from None
    print(f"wrote {len(results['clips'])} clips ({results['flac_bytes'] / 1e6:.2f} MB), "
          f"{out / 'sheet.png'} and {out / 'README.md'}")
    return 0
