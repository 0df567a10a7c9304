"""Subcommands of the `melody` CLI. Each module exposes `register(subparsers)` which adds its
parser(s) with `set_defaults(func=...)`; a handler returns an exit code or raises `CLIError`.

To add a command group, create a module here and list it in `COMMAND_MODULES`.
"""

from __future__ import annotations

COMMAND_MODULES: tuple[str, ...] = (
    "melody_core.commands.info",
    "melody_core.commands.bench_models",
    "melody_core.commands.generate",
    "melody_core.commands.bench",
    "melody_core.commands.train",
    "melody_core.commands.data",
    "melody_core.commands.eval",
    "melody_core.commands.eval_tokens",
)


class CLIError(Exception):
    """A user-facing error: printed as `error: <message>`, exit status 2."""
