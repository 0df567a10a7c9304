"""`melody` command line. Subcommands live in `melody_core.commands`.

Every failure the user can cause prints one line `error: ...` and exits with status 2; nothing
prints a traceback unless `--debug` is given.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from melody_core.runtime import prepare_environment

prepare_environment()  # before torch is imported anywhere

from melody_core.commands import COMMAND_MODULES, CLIError  # noqa: E402

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="melody", description="MeLoDy music generation toolkit")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse printed "usage ... error: ..." (status 2) or help (0)
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
        msg = str(exc).splitlines()[0] if str(exc) else ""
        print(f"error: internal error: {type(exc).__name__}: {msg} (rerun with --debug)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
