"""The generation worker: signal order, cancel between steps, failures, and a responsive GUI thread."""

from __future__ import annotations

import time

import numpy as np
from app_fake_pipeline import FakePipeline
from app_fixtures import WAIT_MS, fake_factory, make_studio  # noqa: F401
from PySide6.QtCore import QElapsedTimer, QTimer

from app.worker import GenerationWorker
from melody_core.generation.types import AudioChunk, GenerationSettings, Progress, StreamControl


def _settings(seconds: float = 2.0, steps: int = 3, prompt: str = "test") -> GenerationSettings:
    return GenerationSettings(prompt=prompt, seconds=seconds, steps=steps, seed=7)


def _run(qtbot, worker: GenerationWorker):  # noqa: ANN001
    return worker.start()


def test_signal_order_strict(qtbot):  # noqa: ANN001
    pipe = FakePipeline(None, "cpu")
    worker = GenerationWorker(lambda ctl: pipe.stream(_settings(2.0, 2), ctl))
    events: list[object] = []
    worker.progress.connect(lambda e: events.append(("progress", e.chunk_index, e.done)))
    worker.chunk.connect(lambda c: events.append(("chunk", c.index, c.start_sample)))
    expected = [worker.started, worker.progress, worker.progress, worker.chunk,
                worker.progress, worker.progress, worker.chunk, worker.finished, worker.done]
    with qtbot.waitSignals(expected, order="strict", timeout=WAIT_MS):
        thread = _run(qtbot, worker)
    thread.wait(WAIT_MS)
    assert events == [("progress", 0, 1), ("progress", 0, 2), ("chunk", 0, 0),
                      ("progress", 1, 1), ("progress", 1, 2), ("chunk", 1, 24000)]


def test_finalize_runs_in_worker_and_result_arrives(qtbot):  # noqa: ANN001
    pipe = FakePipeline(None, "cpu")
    seen = {}

    def finalize(result):  # noqa: ANN001
        import threading

        seen["thread"] = threading.current_thread().name
        return len(result.audio)

    worker = GenerationWorker(lambda ctl: pipe.stream(_settings(1.5, 1), ctl), finalize=finalize)
    with qtbot.waitSignal(worker.finished, timeout=WAIT_MS) as blocker:
        thread = _run(qtbot, worker)
    thread.wait(WAIT_MS)
    assert blocker.args == [36000, False]
    assert seen["thread"] != "MainThread"


def test_cancel_between_steps(qtbot):  # noqa: ANN001
    class Slow(FakePipeline):
        step_delay = 0.05

    pipe = Slow(None, "cpu")
    control = StreamControl()
    worker = GenerationWorker(lambda ctl: pipe.stream(_settings(60.0, 50), ctl), control)
    chunks: list[AudioChunk] = []
    progress: list[Progress] = []
    finished: list[tuple] = []
    worker.chunk.connect(chunks.append)
    worker.progress.connect(progress.append)
    worker.finished.connect(lambda *args: finished.append(args))
    with qtbot.waitSignal(worker.progress, timeout=WAIT_MS):
        thread = _run(qtbot, worker)
    t0 = time.perf_counter()
    with qtbot.waitSignals([worker.finished, worker.done], order="strict", timeout=WAIT_MS):
        worker.cancel()
    assert time.perf_counter() - t0 < 1.0  # stops within a step or two, not after 60 s of audio
    assert finished == [(None, True)]
    assert chunks == [] and len(progress) < 10
    assert thread.wait(WAIT_MS)


def test_failure_becomes_message(qtbot):  # noqa: ANN001
    pipe = FakePipeline(None, "cpu")
    worker = GenerationWorker(lambda ctl: pipe.stream(_settings(prompt="FAIL"), ctl))
    messages: list[str] = []
    worker.failed.connect(messages.append)
    with qtbot.waitSignals([worker.started, worker.failed, worker.done], order="strict", timeout=WAIT_MS):
        thread = _run(qtbot, worker)
    thread.wait(WAIT_MS)
    assert len(messages) == 1 and "fake model exploded" in messages[0]


class Busy(FakePipeline):
    """CPU-bound stand-in: numpy work (GIL released) plus pure-Python work (GIL held) per step."""

    step_delay = 0.0

    def stream(self, settings, control=None, endless=False, continue_from=None):  # noqa: ANN001
        rng = np.random.default_rng(0)
        a = rng.standard_normal((384, 384)).astype(np.float32)
        for event in super().stream(settings, control, endless, continue_from):
            if isinstance(event, Progress):
                for _ in range(12):
                    a = np.tanh(a @ a.T * 1e-2)
                sum(i * i for i in range(20000))
            yield event


def test_gui_stays_responsive_during_generation(qtbot, make_studio):  # noqa: ANN001, F811
    studio = make_studio(factory=fake_factory(Busy))
    gaps: list[float] = []
    clock = QElapsedTimer()
    timer = QTimer()
    timer.setInterval(10)

    def tick() -> None:
        gaps.append(clock.restart())

    timer.timeout.connect(tick)
    panel = studio.window.panel
    panel.prompt.setPlainText("busy")
    panel.length.setValue(3.0)
    panel.steps.setValue(12)
    clock.start()
    timer.start()
    with qtbot.waitSignal(studio.controller.job_finished, timeout=60000):
        studio.window.generate()
    timer.stop()
    gaps = gaps[1:]
    assert len(gaps) > 20, "the generation was too short to measure"
    worst = max(gaps)
    p95 = float(np.percentile(gaps, 95))
    print(f"event-loop gaps during generation: median {np.median(gaps):.0f} ms, p95 {p95:.0f} ms, "
          f"max {worst} ms at tick {gaps.index(worst)} of {len(gaps)}")
    assert p95 < 60 and worst < 250, f"GUI thread blocked: p95 {p95:.0f} ms, worst {worst} ms"
