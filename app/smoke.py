"""`melody-studio --smoke-test`: real window, generate a 4 s clip, play it, optional screenshot, exit.

Exit status 0 on success; otherwise one line `error: ...` on stderr and status 1.
"""

from __future__ import annotations

import sys
import time

from PySide6.QtCore import QObject, QTimer
from PySide6.QtWidgets import QApplication

from app.studio import Studio

SMOKE_PROMPT = "calm piano with soft strings"
SMOKE_SECONDS = 4.0
SMOKE_TIMEOUT_S = 600


class SmokeTest(QObject):
    def __init__(self, app: QApplication, studio: Studio, screenshot: str | None) -> None:
        super().__init__()
        self.app, self.studio, self.screenshot = app, studio, screenshot
        self.started = time.perf_counter()
        self.exit_code: int | None = None
        c = studio.controller
        c.message.connect(self._on_message)
        c.engine_changed.connect(self._on_engine)
        c.job_finished.connect(self._on_job)
        studio.player.finished.connect(self._finish)
        QTimer.singleShot(SMOKE_TIMEOUT_S * 1000, lambda: self._fail(f"timed out after {SMOKE_TIMEOUT_S} s"))

    def _on_message(self, level: str, text: str) -> None:
        if level == "error":
            self._fail(text)

    def _on_engine(self, description: str) -> None:
        if not description:
            return
        panel = self.studio.window.panel
        panel.prompt.setPlainText(SMOKE_PROMPT)
        panel.length.setValue(SMOKE_SECONDS)
        self.studio.window.generate()

    def _on_job(self, kind: str, take_id: int | None) -> None:
        if take_id is None:
            self._fail("the generation did not produce a clip")
            return
        take = self.studio.session.take(take_id)
        print(f"generated {take.seconds:.2f} s (seed {take.seed}, model {take.model_hash[:12]}) "
              f"in {time.perf_counter() - self.started:.1f} s")
        ms = self.studio.controller.last_first_sound_ms
        if ms is not None:
            print(f"time from Generate to first sound: {ms:.0f} ms")
        if not self.studio.player.available:
            print(f"note: no audio output ({self.studio.player.unavailable_reason}); playback skipped")
            QTimer.singleShot(0, self._finish)
        # otherwise the live stream is still playing: `finished` ends the test when it is done

    def _finish(self) -> None:
        if self.exit_code is not None:
            return
        if not self.studio.session.take_ids:
            return  # a playback that ended before the take was saved
        if self.screenshot:
            self.studio.window.grab().save(self.screenshot)
            print(f"screenshot saved to {self.screenshot}")
        print("smoke test ok")
        self._exit(0)

    def _fail(self, message: str) -> None:
        if self.exit_code is None:
            print(f"error: {message}", file=sys.stderr)
            self._exit(1)

    def _exit(self, code: int) -> None:
        self.exit_code = code
        QTimer.singleShot(0, lambda: self.app.exit(code))
