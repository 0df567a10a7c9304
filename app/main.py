"""`melody-studio` entry point: the desktop app, or `--smoke-test [--screenshot FILE]`."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from melody_core.runtime import prepare_environment

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="melody-studio", description="MeLoDy Studio desktop app")
    p.add_argument("--bundle", help="model bundle folder (default: the bundled model)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="compute device (default: auto)")
    p.add_argument("--project", "--data-dir", dest="data_dir", metavar="FOLDER",
                   help="project folder to open (default: the last project, else the per-user data folder)")
    p.add_argument("--theme", choices=("system", "light", "dark"), default="system")
    p.add_argument("--no-audio", action="store_true", help="run without audio output")
    p.add_argument("--smoke-test", action="store_true",
                   help="open the window, generate a 4 s clip, play it, exit 0 "
                        "(or print error: ... and exit 1)")
    p.add_argument("--screenshot", metavar="FILE", help="with --smoke-test: save a screenshot of the window")
    p.add_argument("--engine", metavar="MODULE:NAME", help=argparse.SUPPRESS)  # tests: a stand-in pipeline
    p.add_argument("--probe-audio", action="store_true", help=argparse.SUPPRESS)  # app.audio.backend
    p.add_argument("--verbose", action="store_true", help="log to stderr")
    return p


def _setup_logging(data_dir: Path | None, verbose: bool) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    handlers[0].setLevel(logging.INFO if verbose else logging.WARNING)
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(data_dir / "studio.log", encoding="utf-8")
        file_handler.setLevel(logging.INFO)
        handlers.append(file_handler)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, handlers=handlers, force=True)


def _display_problem() -> str | None:
    """Qt aborts the process (no exception) when it has no display: say so in one line instead."""
    import os

    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM"):
        return None
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return None
    return ("no display to open a window on (DISPLAY/WAYLAND_DISPLAY unset); run it in a desktop "
            "session, under xvfb-run, or with QT_QPA_PLATFORM=offscreen")


def _another_project(app, reason: str) -> Path | None:  # noqa: ANN001 - QApplication
    """The project asked for is open in another window: let the user pick another (None: quit)."""
    from PySide6.QtWidgets import QFileDialog, QMessageBox

    box = QMessageBox(QMessageBox.Icon.Warning, "MeLoDy Studio", reason[0].upper() + reason[1:])
    open_other = box.addButton("Open Another Project…", QMessageBox.ButtonRole.AcceptRole)
    box.addButton(QMessageBox.StandardButton.Close)
    box.exec()
    if box.clickedButton() is not open_other:
        return None
    path = QFileDialog.getExistingDirectory(None, "Open project folder (or an empty folder for a new one)")
    return Path(path) if path else None


def main(argv: list[str] | None = None) -> int:
    prepare_environment()  # before torch is imported anywhere
    args = build_parser().parse_args(argv)
    if args.probe_audio:  # the frozen app's child process that tries PortAudio (may abort: ALSA)
        from app.audio.backend import probe_main

        return probe_main()
    if args.screenshot and not args.smoke_test:
        print("error: --screenshot needs --smoke-test", file=sys.stderr)
        return 2
    from app.engine import EngineError, factory_from_spec, real_pipeline
    from app.projects import RecentProjects
    from app.store import default_data_dir

    data_dir = Path(args.data_dir) if args.data_dir else (
        Path(tempfile.mkdtemp(prefix="melody-smoke-")) if args.smoke_test
        else RecentProjects().last() or default_data_dir())
    _setup_logging(data_dir, args.verbose or args.smoke_test)
    try:
        factory = factory_from_spec(args.engine) if args.engine else real_pipeline
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    problem = _display_problem()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2

    from PySide6.QtWidgets import QApplication

    from app.store import StoreLocked
    from app.studio import Studio

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("MeLoDy Studio")
    app.setOrganizationName("melody-studio")
    interactive = not args.smoke_test and app.platformName() not in ("offscreen", "minimal")
    while True:
        try:
            studio = Studio.create(data_dir, factory, None if args.no_audio else "auto", bundle=args.bundle,
                                   device=args.device, theme_mode=args.theme)
            break
        except StoreLocked as exc:  # the project is open in another window: offer to open another
            other = _another_project(app, str(exc)) if interactive else None
            if other is None:
                print(f"error: cannot start: {' '.join(str(exc).split())}", file=sys.stderr)
                return 1
            data_dir = other
        except Exception as exc:  # noqa: BLE001 - e.g. an unwritable data folder: one line, no traceback
            logging.getLogger(__name__).exception("startup failed")
            text = f"cannot start: {' '.join(str(exc).split())}"
            print(f"error: {text}", file=sys.stderr)
            if interactive:
                from PySide6.QtWidgets import QMessageBox

                QMessageBox.critical(None, "MeLoDy Studio", text[0].upper() + text[1:])  # started from a menu
            return 1
    studio.window.show()
    smoke = None
    if args.smoke_test:
        from app.smoke import SmokeTest

        smoke = SmokeTest(app, studio, args.screenshot)
    code = app.exec()
    studio.close()
    return smoke.exit_code if smoke is not None and smoke.exit_code is not None else code


if __name__ == "__main__":
    sys.exit(main())
