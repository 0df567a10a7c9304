"""The generation worker: signal order, cancel between steps, failures, and a responsive GUI thread."""

from __future__ import annotations

import numpy as np
from app_fake_pipeline import FakePipeline
from app_fixtures import WAIT_MS, counting, fake_factory, make_studio, ticks_during_generation  # noqa: F401

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
        steps_taken = 0

        def stream(self, settings, control=None, endless=False, continue_from=None):  # noqa: ANN001
            for event in super().stream(settings, control, endless, continue_from):
                self.steps_taken += isinstance(event, Progress)
                yield event

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
    with qtbot.waitSignals([worker.finished, worker.done], order="strict", timeout=WAIT_MS):
        at_cancel = pipe.steps_taken
        worker.cancel()
    assert pipe.steps_taken - at_cancel <= 2  # stops within a step or two, not after 60 s of audio
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
    """The GUI thread's timer keeps firing *between* the worker's steps (ordering, not wall time)."""
    studio = make_studio(factory=counting(fake_factory(Busy)))
    panel = studio.window.panel
    panel.prompt.setPlainText("busy")
    panel.length.setValue(3.0)
    panel.steps.setValue(12)
    seen, total = ticks_during_generation(qtbot, studio, studio.window.generate)
    during = sorted({n for n in seen if 0 < n < total})  # ticks handled while the worker was mid-run
    print(f"GUI timer ticks: {len(seen)}, at {len(during)} distinct points of {total} worker events")
    assert total > 30 and len(during) >= 5, f"GUI thread blocked: ticks at worker events {during}"
