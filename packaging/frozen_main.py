"""Entry point of the frozen app (packaging/melody-studio.spec): one executable, two commands.

Started as `melody-studio` it is the studio (app.main); started as `melody` (a link or copy next to it,
see packaging/build_app.sh) or as `melody-studio --cli ...` it is the command line (melody_core.cli);
with app.audio.backend.PROBE_FLAG it is the studio's PortAudio probe (a child process).
"""

from __future__ import annotations

import multiprocessing
import sys
from pathlib import Path


def main() -> int:
    multiprocessing.freeze_support()  # DataLoader workers / spawn in a frozen app
    from app.audio.backend import PROBE_FLAG

    if sys.argv[1:2] == [PROBE_FLAG]:  # the studio's PortAudio probe runs the frozen app with this flag
        from app.audio.backend import probe_main

        return probe_main()
    if sys.argv[1:2] == ["--cli"]:
        del sys.argv[1]
        cli = True
    else:
        cli = Path(sys.argv[0]).stem.lower() == "melody"
    if cli:
        from melody_core.cli import main as run
    else:
        from app.main import main as run
    return int(run() or 0)


if __name__ == "__main__":
    sys.exit(main())
