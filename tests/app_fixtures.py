"""Shared fixtures/helpers of the app tests (imported by tests/test_app_*.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from app_fake_pipeline import FakePipeline

from app.engine import Engine
from app.studio import Studio

WAIT_MS = 20000


class CountingEngine:
    """Wraps an engine; `events` counts the events its streams have yielded so far (in the worker
    thread). A GUI-thread timer that reads it shows whether the event loop ran *while* the worker
    generated (an ordering check, no wall-clock threshold)."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.events = engine, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def stream(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        for event in self.engine.stream(*args, **kwargs):
            self.events += 1
            yield event


def counting(factory: Callable[[str | None, str, int | None], Engine]) -> Callable[..., Engine]:
    """`factory` whose engines are `CountingEngine`s."""
    return lambda bundle, device, threads: CountingEngine(factory(bundle, device, threads))


def ticks_during_generation(qtbot: Any, studio: Studio, start: Callable[[], None]) -> tuple[list[int], int]:
    """Run a generation job with a 10 ms GUI-thread timer reading `engine.events` at every tick;
    returns (the counts seen, the count at the end)."""
    from PySide6.QtCore import QTimer

    engine = studio.controller.engine
    seen: list[int] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: seen.append(engine.events))
    timer.start()
    with qtbot.waitSignal(studio.controller.job_finished, timeout=60000):
        start()
    timer.stop()
    return seen, engine.events


def fake_factory(cls: type[FakePipeline] = FakePipeline) -> Callable[[str | None, str, int | None], Engine]:
    def factory(bundle: str | None, device: str, threads: int | None) -> Engine:
        return cls.load(bundle, device=device, threads=threads)

    return factory


@pytest.fixture
def make_studio(qtbot, tmp_path: Path) -> Iterator[Callable[..., Studio]]:  # noqa: ANN001
    created: list[Studio] = []

    def make(data_dir: Path | None = None, backend: Any = None, factory: Any = None, wait: bool = True,
             **kwargs: Any) -> Studio:
        studio = Studio.create(data_dir or tmp_path / "data", factory or fake_factory(), backend,
                               threads=1, **kwargs)
        created.append(studio)
        studio.window.show()
        studio.window.activateWindow()
        qtbot.waitExposed(studio.window)
        if wait:
            qtbot.waitUntil(lambda: studio.controller.engine is not None, timeout=WAIT_MS)
        return studio

    yield make
    for studio in created:
        studio.close()


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:  # noqa: ANN001
    """A random tiny model bundle (real pipeline, meaningless audio), built once per test session."""
    from melody_core.checkpoint import random_bundle

    path = tmp_path_factory.mktemp("bundle") / "tiny"
    random_bundle(path, preset="tiny")
    return path


def run_job(qtbot, studio: Studio, action: Callable[[], None]) -> Any:  # noqa: ANN001
    """Trigger `action` and wait until the job has finished and its thread is gone; returns the take id."""
    with qtbot.waitSignal(studio.controller.job_finished, timeout=WAIT_MS) as blocker:
        action()
    qtbot.waitUntil(lambda: not studio.controller.busy, timeout=WAIT_MS)
    return blocker.args[1]


def generate(qtbot, studio: Studio, prompt: str = "calm piano", seconds: float = 2.0,  # noqa: ANN001
             steps: int = 4) -> Any:
    panel = studio.window.panel
    panel.prompt.setPlainText(prompt)
    panel.length.setValue(seconds)
    panel.steps.setValue(steps)
    return run_job(qtbot, studio, studio.window.generate)


# ------------------------------------------------------------------ keep playing (lead gate tests)
class HalfSecond(FakePipeline):
    chunk_seconds = 0.5  # a "window hop" of 0.5 s; each chunk takes ~2 ms x steps: far faster than real time


def keep_playing_studio(make_studio: Callable[..., Studio], backend: Any,
                        pipeline: type[FakePipeline]) -> tuple[Studio, list[Any]]:
    """A studio on `backend` and a fake `pipeline`, and the list its live chunks are copied into."""
    studio = make_studio(backend=backend, factory=fake_factory(pipeline))
    chunks: list[Any] = []
    studio.controller.live_chunk.connect(lambda pcm, start: chunks.append(pcm.copy()))
    return studio, chunks


def start_keep_playing(studio: Studio, prompt: str = "ambient pad", steps: int = 2) -> Any:
    """Keep playing `prompt`; returns the job's lead gate (its record: leads, waits, heard, markers)."""
    w = studio.window
    w.panel.prompt.setPlainText(prompt)
    w.panel.steps.setValue(steps)
    w.keep_playing()
    return studio.controller._job.gate  # noqa: SLF001 - the tests read the gate's record


def steer(studio: Studio, prompt: str) -> None:
    """Edit the prompt while keep playing runs, as the user does, without waiting for the debounce."""
    studio.window.panel.prompt.setPlainText(prompt)
    studio.window.panel._steer_timer.timeout.emit()  # noqa: SLF001 - skip the debounce


# ------------------------------------------------- capture at the ALSA `type file` device (subprocess)
TESTS = Path(__file__).parent
CAPTURE_SETUP = """
import os, sys, time, numpy as np
sys.path.insert(0, {tests!r})
from PySide6.QtWidgets import QApplication
app = QApplication([])
from app.studio import Studio, open_backend
from app_fixtures import fake_factory
from app_fake_pipeline import FakePipeline

class Loud(FakePipeline):  # decoder overshoot: a tone at 1.5 x full scale
    def _tone(self, freq, start, n):
        return 5 * super()._tone(freq, start, n)

studio = Studio.create({data!r}, fake_factory(Loud), None, threads=1)
done = []
studio.controller.job_finished.connect(lambda kind, tid: done.append(tid))
while studio.controller.engine is None:
    app.processEvents()
studio.window.panel.prompt.setPlainText({prompt!r})
studio.window.panel.length.setValue({seconds!r})
studio.window.generate()
while not done or studio.controller.busy:
    app.processEvents()
backend, reason = open_backend("auto")  # PortAudio on the ALSA default device (the capture file)
assert backend is not None, reason
studio.player.set_backend(backend)
"""


def run_capture(tmp_path: Path, prompt: str, seconds: float, body: str, timeout: float,
                **values: Any) -> Path:
    """In a subprocess whose ALSA default device is a `type file` capture (tests/asound_capture.conf):
    CAPTURE_SETUP (a studio with a loud fake pipeline, one take of `prompt` generated, the player on
    PortAudio), then `body`. Both are formatted with `values`, `tests`, `data` (the studio's folder),
    `capture` (the file the device writes float32 samples to) and `sr`. Returns the capture's path."""
    capture = tmp_path / "played.raw"
    env = {**os.environ, "ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{TESTS / 'asound_capture.conf'}",
           "MELODY_CAPTURE_FILE": str(capture), "QT_QPA_PLATFORM": "offscreen",
           "PYTHONPATH": str(TESTS.parent)}
    script = (CAPTURE_SETUP + body).format(tests=str(TESTS), data=str(tmp_path / "data"), prompt=prompt,
                                           seconds=seconds, capture=str(capture), sr=24000, **values)
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=TESTS.parent, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return capture
