"""Shared fixtures/helpers of the app tests (imported by tests/test_app_*.py)."""

from __future__ import annotations

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
