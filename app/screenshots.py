"""Render the README screenshots of the main window (run under Xvfb or on a desktop)::

    xvfb-run -a -s "-screen 0 1600x1000x24" python -m app.screenshots docs/screenshots --bundle DIR

Writes main-idle.png, main-generating.png, main-rated.png (light theme) and main-rated-dark.png at
1600x1000, then main-1366-light.png and main-1366-dark.png with the window fitted to a 1366x768
screen, with a tempo set (bar grid, a bar-snapped selection looping), using a scratch session folder
and a silent real-time output device (so the transport looks as on a desktop with a sound card).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from app.audio.backend import OutputDevice
from melody_core import SAMPLE_RATE
from melody_core.runtime import prepare_environment

BPM, KEY = 90.0, "A minor"  # the musical fields shown
BLOCK = 480  # frames per callback of the silent device (20 ms)
PROMPTS = (("Warm lo-fi piano loop with vinyl crackle", 5), ("Upbeat funk groove, slap bass and brass", 3),
           ("Solemn baroque organ chorale", 4), ("Ambient pad with slow evolving strings", 2))


class SilentOutput:
    """Output backend that consumes audio in real time and discards it."""

    class _Stream:
        def __init__(self, rate: int, callback) -> None:  # noqa: ANN001
            self._rate, self._callback, self._run = rate, callback, False

        @property
        def active(self) -> bool:
            return self._run

        def start(self) -> None:
            self._run = True
            threading.Thread(target=self._loop, daemon=True).start()

        def _loop(self) -> None:
            out = np.zeros((BLOCK, 1), np.float32)
            while self._run:
                self._callback(out, BLOCK, None, None)
                time.sleep(BLOCK / self._rate)

        def stop(self) -> None:
            self._run = False

        close = stop

    def devices(self) -> list[OutputDevice]:
        return [OutputDevice(0, "Built-in Audio Analog Stereo", True)]

    def open(self, device, sample_rate: int, callback) -> _Stream:  # noqa: ANN001
        return self._Stream(sample_rate, callback)


def main(argv: list[str] | None = None) -> int:
    prepare_environment()
    p = argparse.ArgumentParser(prog="python -m app.screenshots")
    p.add_argument("out", help="output folder")
    p.add_argument("--bundle", help="model bundle (default: the bundled model)")
    p.add_argument("--engine", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from PySide6.QtCore import QRect
    from PySide6.QtWidgets import QApplication

    from app.engine import factory_from_spec, real_pipeline
    from app.studio import Studio

    app = QApplication.instance() or QApplication(sys.argv[:1])
    factory = factory_from_spec(args.engine) if args.engine else real_pipeline
    studio = Studio.create(tempfile.mkdtemp(prefix="melody-shots-"), factory, SilentOutput(),
                           bundle=args.bundle, device="cpu", theme_mode="light")
    w = studio.window
    w.resize(1600, 1000)
    w.fit_to_screen()
    w.show()

    def pump(until, timeout: float = 300.0) -> None:  # noqa: ANN001
        end = time.monotonic() + timeout
        while not until():
            app.processEvents()
            time.sleep(0.005)
            if time.monotonic() > end:
                raise TimeoutError("screenshot scenario timed out")

    def settle(seconds: float) -> None:  # let timers (playhead, position) run
        end = time.monotonic() + seconds
        pump(lambda: time.monotonic() > end)

    def shot(name: str) -> None:
        settle(0.1)
        w.grab().save(str(out / name))
        print(out / name)

    pump(lambda: studio.controller.engine is not None or not studio.controller.loading)
    if studio.controller.engine is None:
        print(f"error: {studio.controller.engine_error}", file=sys.stderr)
        return 1
    w.panel.prompt.setPlainText(PROMPTS[0][0])
    w.panel.length.setValue(8.0)
    w.panel.bpm.setValue(BPM)  # the musical grid: bar lines on the timeline, selections snap to bars
    w.panel.key.setCurrentIndex(max(0, w.panel.key.findData(KEY)))
    w.grid_controls.snap.setChecked(True)
    shot("main-idle.png")
    for i, (prompt, stars) in enumerate(PROMPTS):
        w.panel.prompt.setPlainText(prompt)
        w.panel.length.setValue(6.0 + 2 * (i % 2))
        if i < len(PROMPTS) - 1:
            w.generate()
        else:  # the last one streams ("keep playing") and is caught half-way
            w.keep_playing()
            pump(lambda: studio.controller.live_samples > 6 * SAMPLE_RATE)
            settle(0.5)
            shot("main-generating.png")
            w.cancel()  # Stop: keeps what was generated as a segment
        pump(lambda: studio.controller.busy)
        pump(lambda: not studio.controller.busy)
        w.rate(len(studio.session.take_ids) - 1, stars)
    studio.playback.stop()
    w.messages.hide()
    w.select_segment(2)
    w.arrangement.set_selection((15.0, 17.5))  # snapped to two bars
    w.transport.loop.setChecked(True)
    studio.playback.toggle()  # the seamless loop of the selection
    pump(lambda: studio.playback.position() > 0)
    settle(1.2)
    shot("main-rated.png")
    w.apply_theme("dark")
    shot("main-rated-dark.png")
    w.resize(1366, 768)
    w.fit_to_screen(QRect(0, 0, 1366, 768))
    settle(0.5)
    shot("main-1366-dark.png")
    w.apply_theme("light")
    shot("main-1366-light.png")
    studio.playback.stop()
    studio.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
