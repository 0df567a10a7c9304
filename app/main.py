"""`melody-studio` entry point."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from melody_core.runtime import prepare_environment

    prepare_environment()
    print(
        "error: the MeLoDy Studio window is not built yet; use the `melody` command line meanwhile",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
