"""Workers that run pipeline work off the GUI thread (superqt GeneratorWorker style).

`GenerationWorker` drives a generator of pipeline events (`Progress`, `AudioChunk`,
`StreamFinished`) in a QThread and re-emits each one as a signal; between events it checks the
`StreamControl`, so a cancel stops the flow of signals at once (the pipeline itself also checks
between diffusion steps). Signal order for one run, always::

    started, (progress | chunk)*, (finished | failed), done

`finished(result, cancelled)`: `result` is what `finalize(GenerationResult)` returned (run in the
worker thread, e.g. writing the FLAC), or None when cancelled. `TaskWorker` runs one callable
(model loading, decoding a dropped file) with `succeeded`/`failed`/`done`.

Threading: the public worker objects live in the GUI thread and emit their signals there. The
body runs in a `_Runner` moved to a QThread, which hands each (signal name, args) to the worker
through a queued connection. So every slot -- a widget method, a lambda, a pytest-qt blocker --
runs in the GUI thread, in emission order (PySide calls plain Python callables connected to a
signal emitted from another thread directly in that thread, which is never what the GUI wants).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

from app.engine import Event, one_line
from melody_core.generation import (
    AudioChunk,
    GenerationCancelled,
    GenerationResult,
    PipelineError,
    Progress,
    StreamControl,
    StreamFinished,
)

log = logging.getLogger(__name__)

Job = Callable[[StreamControl], Iterable[Event]]
Finalize = Callable[[GenerationResult], Any]


def describe_error(exc: BaseException) -> str:
    """One readable line for a failed job."""
    if isinstance(exc, PipelineError | OSError | ValueError):
        return one_line(exc)
    return f"generation failed: {type(exc).__name__}: {one_line(exc)}"


class _Runner(QObject):
    """Lives in the worker thread; runs `body(emit)` and forwards each emit as a queued signal."""

    emitted = Signal(str, object)  # signal name, args tuple

    def __init__(self, body: Callable[[Callable[..., None]], None]) -> None:
        super().__init__()
        self._body = body

    @Slot()
    def run(self) -> None:
        try:
            self._body(lambda name, *args: self.emitted.emit(name, args))
        finally:
            QThread.currentThread().quit()  # the thread ends on its own (the GUI may be waiting on it)


class _ThreadedWorker(QObject):
    """Base of the public workers: owns the thread and re-emits the runner's signals here."""

    done = Signal()  # always the last signal

    def __init__(self) -> None:
        super().__init__()
        self.thread: QThread | None = None
        self._runner: _Runner | None = None

    def _body(self, emit: Callable[..., None]) -> None:
        raise NotImplementedError

    def start(self, parent: QObject | None = None) -> QThread:
        """Run in a new QThread (which ends after the body); keep a reference until `thread.finished`."""
        thread = QThread(parent)
        runner = _Runner(self._body)
        runner.moveToThread(thread)
        runner.emitted.connect(self._relay, Qt.ConnectionType.QueuedConnection)
        thread.started.connect(runner.run)
        self.thread, self._runner = thread, runner
        thread.start()
        return thread

    @Slot(str, object)
    def _relay(self, name: str, args: tuple) -> None:
        getattr(self, name).emit(*args)


class GenerationWorker(_ThreadedWorker):
    """Runs `job(control)` (a generator of pipeline events) and emits one signal per event."""

    started = Signal()
    progress = Signal(object)  # Progress
    chunk = Signal(object)  # AudioChunk
    finished = Signal(object, bool)  # finalize(result) or None, cancelled
    failed = Signal(str)  # one-line message

    def __init__(self, job: Job, control: StreamControl | None = None,
                 finalize: Finalize | None = None) -> None:
        super().__init__()
        self.control = control or StreamControl()
        self._job = job
        self._finalize = finalize

    def cancel(self) -> None:
        self.control.cancel()

    def _body(self, emit: Callable[..., None]) -> None:  # worker thread
        emit("started")
        events = None
        try:
            events = iter(self._job(self.control))
            self._drive(events, emit)
        except GenerationCancelled:
            emit("finished", None, True)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a message, never a crash
            log.warning("generation failed", exc_info=True)
            emit("failed", describe_error(exc))
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()  # runs the pipeline's cleanup if we stopped early
            emit("done")

    def _drive(self, events: Iterable[Event], emit: Callable[..., None]) -> None:
        for event in events:
            if isinstance(event, StreamFinished):
                if event.cancelled or self.control.cancelled:
                    emit("finished", None, True)
                else:
                    payload = self._finalize(event.result) if self._finalize else event.result
                    emit("finished", payload, False)
                return
            if self.control.cancelled:  # between steps: stop forwarding at once
                emit("finished", None, True)
                return
            if isinstance(event, AudioChunk):
                emit("chunk", event)
            elif isinstance(event, Progress):
                emit("progress", event)
        raise RuntimeError("the pipeline stream ended without a result")


class TaskWorker(_ThreadedWorker):
    """Runs one callable in a thread: `succeeded(value)` or `failed(message)`, then `done`."""

    succeeded = Signal(object)
    failed = Signal(str)

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__()
        self._fn = fn

    def _body(self, emit: Callable[..., None]) -> None:  # worker thread
        try:
            value = self._fn()
        except Exception as exc:  # noqa: BLE001
            log.info("task failed: %s", exc)
            emit("failed", one_line(exc))
        else:
            emit("succeeded", value)
        finally:
            emit("done")
