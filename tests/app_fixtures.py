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
