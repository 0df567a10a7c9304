"""`melody` command line: model/bundle/audio information and model benchmarks.

Every failure the user can cause prints one line `error: ...` and exits with status 2; nothing
prints a traceback unless `--debug` is given.
"""

from __future__ import annotations

import argparse
import json
import sys

from melody_core.runtime import prepare_environment

prepare_environment()  # before torch is imported anywhere

EXIT_USAGE = 2


class CLIError(Exception):
    """A user-facing error: printed as `error: <message>`, exit status 2."""


def _params_report(preset: str) -> dict[str, int]:
    from melody_core.eval.params import parameter_counts

    return parameter_counts(preset)


def cmd_info(args: argparse.Namespace) -> int:
    if not (args.params or args.audio or args.bundle):
        raise CLIError("info needs one of --params PRESET, --audio FILE, --bundle PATH")
    if args.params:
        from melody_core.eval.params import PAPER_COUNTS, parameter_counts

        counts = parameter_counts(args.params)
        if args.json:
            print(json.dumps(counts))
        else:
            print(f"parameters of the {args.params!r} preset (MuLan includes its MiniLM text tower):")
            for name, n in counts.items():
                ref = PAPER_COUNTS.get(name)
                extra = f"   paper: {ref / 1e6:.1f}M ({(n - ref) / ref:+.1%})" if ref and args.params == "paper" else ""
                print(f"  {name:<6} {n / 1e6:9.2f}M{extra}")
    if args.audio:
        from melody_core.audio import AudioError, audio_info

        try:
            info = audio_info(args.audio)
        except AudioError as exc:
            raise CLIError(str(exc)) from None
        if args.json:
            print(json.dumps(info.__dict__))
        else:
            print(
                f"{args.audio}: {info.duration_s:.3f} s, {info.sample_rate} Hz, {info.channels} channel(s), "
                f"{info.format}/{info.subtype}"
            )
    if args.bundle:
        from melody_core.checkpoint import BundleError, describe_bundle, inspect_bundle

        try:
            info = inspect_bundle(args.bundle)
        except BundleError as exc:
            raise CLIError(str(exc)) from None
        print(describe_bundle(info))
    return 0


def cmd_bench_models(args: argparse.Namespace) -> int:
    from melody_core.eval.bench_models import run_model_bench

    run_model_bench(preset=args.preset, steps=args.steps, repeats=args.repeats, threads=args.threads,
                    as_json=args.json)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="melody", description="MeLoDy music generation toolkit")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser(
        "info",
        help="parameter counts, audio file or bundle information",
        description=(
            "--params PRESET counts the parameters of every component built from a preset (no weights "
            "allocated). VAE = encoder + decoder + discriminators (what the paper's 100.1M appears to "
            "count; see VAEConfig); MuLan = audio tower + projection heads + RVQ + the MiniLM text tower."
        ),
    )
    info.add_argument("--params", choices=["tiny", "paper"], help="count parameters of a preset")
    info.add_argument("--audio", metavar="FILE", help="duration, sample rate and channels of an audio file")
    info.add_argument("--bundle", metavar="DIR_OR_FILE", help="components and hash of a checkpoint bundle")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(func=cmd_info)

    bench = sub.add_parser("bench-models", help="time each model's forward pass on this machine")
    bench.add_argument("--preset", default="tiny", choices=["tiny", "paper"])
    bench.add_argument("--steps", type=int, default=10, help="DPD steps assumed for the projection")
    bench.add_argument("--repeats", type=int, default=5)
    bench.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(func=cmd_bench_models)
    return parser




def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed "usage ... error: ..."
        return int(exc.code or 0)
    try:
        return int(args.func(args) or 0)
    except CLIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, no traceback
        if args.debug:
            raise
        print(f"error: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
