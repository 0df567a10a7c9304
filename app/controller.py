"""Application logic between the widgets and the pipeline (no widgets here).

Loads the engine in a thread, runs one generation job at a time in a `GenerationWorker`, plays
streamed chunks as they arrive, turns finished results into takes / arrangement edits, and turns
every failure into a `message` signal -- the session is never touched by a failed job.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
from PySide6.QtCore import QObject, QThread, QTimer, Signal

from app.engine import Engine, EngineFactory, load_engine
from app.lead import LeadGate
from app.model_info import ModelInfo, model_info
from app.playback import Playback
from app.session import SessionModel
from app.store import StorageError, StoredAudio, pcm_blocks, take_file_tags
from app.worker import GenerationWorker, Job, TaskWorker
from melody_core.generation import (
    AudioChunk,
    GenerationResult,
    GenerationSettings,
    Progress,
    StreamControl,
)

log = logging.getLogger(__name__)

SEED_RANGE = 2**31
FIRST_SOUND_POLL_MS = 5
LEAD_POLL_MS = 10  # the playhead is reported to the lead gate this often
FIRST_SOUND_TIMEOUT_S = 5.0


def random_seed() -> int:
    return random.randrange(SEED_RANGE)


@dataclass
class _Job:
    kind: str  # generate | stream | regenerate | extend | inpaint
    settings: GenerationSettings
    worker: GenerationWorker
    thread: QThread
    apply: Callable[[int], None]  # arrangement edit with the new take id
    parent_id: int | None = None
    live: bool = False
    stream: str | None = None  # live journal id (SessionModel.begin_live)
    pressed: float = field(default_factory=time.perf_counter)
    first_chunk: float = 0.0
    chunk_times: list[float] = field(default_factory=list)
    samples: int = 0
    gate: LeadGate | None = None  # keep playing: the bounded lead
    cut: dict[str, int] = field(default_factory=dict)  # "heard": samples heard when Stop was pressed
    markers_seen: int = 0  # gate markers already announced
    prompt: str | None = None  # the prompt the stream is steered to now


class Controller(QObject):
    message = Signal(str, str)  # level: info | warning | error, text
    busy_changed = Signal(bool, str)  # busy, job kind
    progress = Signal(str, int, int)  # stage, done, total
    engine_changed = Signal(str)  # "" = no engine; else a description
    engine_loading = Signal(bool)
    live_chunk = Signal(object, int)  # live (not yet saved) audio: pcm, its first sample in the stream
    live_cleared = Signal()
    seed_used = Signal(int)
    first_sound = Signal(float)  # milliseconds from Generate to the first sample at the device
    style_loaded = Signal(object, str)  # (audio or None, path)
    job_finished = Signal(str, object)  # kind, take id (None when cancelled/failed)
    marker_added = Signal(int, str)  # live stream sample where a new prompt starts, the prompt
    unheard_take = Signal(int)  # take id of the unheard tail kept after Stop (discardable; not arranged)

    def __init__(self, session: SessionModel, playback: Playback, engine_factory: EngineFactory,
                 threads: int | None = None) -> None:
        super().__init__()
        self.session = session
        self.playback = playback
        self._factory = engine_factory
        self._threads = threads
        self.engine: Engine | None = None
        self.engine_error = ""
        self._loading: tuple[TaskWorker, QThread] | None = None
        self._after_load: list[Callable[[], None]] = []
        self._job: _Job | None = None
        self._running: list[tuple[QObject, QThread]] = []  # every started worker until its thread ends
        # the running job's chunks: the samples, or only their count once the live journal holds them
        # (a "Keep playing" of any length then keeps no audio here: issue 18's memory bound)
        self._live: list[np.ndarray | int] = []
        self._live_stream: str | None = None  # the journal `_live`'s counts refer to
        self.live_samples = 0  # samples in `_live`
        self.last_first_sound_ms: float | None = None
        self._fs_timer = QTimer(self)
        self._fs_timer.setInterval(FIRST_SOUND_POLL_MS)
        self._fs_timer.timeout.connect(self._poll_first_sound)
        self._lead_timer = QTimer(self)
        self._lead_timer.setInterval(LEAD_POLL_MS)
        self._lead_timer.timeout.connect(self._poll_lead)
        playback.underrun.connect(self._on_underrun)
        playback.device_error.connect(
            lambda msg: self.message.emit("error", f"Playback stopped: {msg}"))

    # ------------------------------------------------------------------ engine
    @property
    def busy(self) -> bool:
        return self._job is not None

    @property
    def job_kind(self) -> str | None:
        """Kind of the running job (generate | stream | regenerate | extend | inpaint), None if idle."""
        return None if self._job is None else self._job.kind

    @property
    def loading(self) -> bool:
        return self._loading is not None

    def load_engine(self, bundle: str | None, device: str) -> None:
        """Load (or reload) the model in a thread; generation requests wait for it."""
        if self._loading is not None or self.busy:
            self.message.emit("warning", "Wait for the current job to finish before changing the model")
            return
        self.engine = None
        self.engine_changed.emit("")
        worker = TaskWorker(lambda: load_engine(self._factory, bundle, device, self._threads))
        worker.succeeded.connect(self._on_engine)
        worker.failed.connect(self._on_engine_failed)
        thread = self._spawn(worker)
        self._loading = (worker, thread)
        worker.done.connect(self._loading_done)
        self.engine_loading.emit(True)

    def _loading_done(self) -> None:
        self._loading = None
        self.engine_loading.emit(False)
        pending, self._after_load = self._after_load, []
        if self.engine is not None:
            for call in pending:
                call()

    @property
    def model_name(self) -> str:
        """The loaded bundle's folder name ("" when unknown)."""
        path = self.engine.bundle_path if self.engine is not None else None
        return path.name if path is not None else ""

    def model_info(self) -> ModelInfo | None:
        """Name, size and card line of the loaded bundle (None for engines without a bundle folder)."""
        path = self.engine.bundle_path if self.engine is not None else None
        return model_info(path) if path is not None else None

    def _on_engine(self, engine: Engine) -> None:
        self.engine, self.engine_error = engine, ""
        name = f"{self.model_name} " if self.model_name else ""
        desc = f"{engine.device.upper()} · model {name}{engine.model_hash[:12]}"
        log.info("engine ready: %s", desc)
        self.engine_changed.emit(desc)

    def _on_engine_failed(self, msg: str) -> None:
        self.engine_error = msg if msg.startswith("cannot") else f"cannot load the model: {msg}"
        self.message.emit("error", self.engine_error)

    def _ready(self, call: Callable[[], None]) -> bool:
        if self.busy:
            self.message.emit("warning", "A generation is running: cancel it first")
            return False
        if self.engine is None:
            if self._loading is not None:
                self._after_load.append(call)
                self.message.emit("info", "The model is loading; generation starts when it is ready")
            else:
                self.message.emit("error", self.engine_error or "No model is loaded")
            return False
        return True

    # ------------------------------------------------------------------ generation entry points
    def _seeded(self, settings: GenerationSettings) -> GenerationSettings:
        return settings if settings.seed is not None else replace(settings, seed=random_seed())

    def generate(self, settings: GenerationSettings) -> None:
        """New segment at the end of the arrangement; plays while it is generated."""
        if not self._ready(lambda: self.generate(settings)):
            return
        s = self._seeded(settings)
        self._start("generate", s, lambda ctl: self._engine().stream(s, ctl),
                    lambda tid: self.session.append(tid, "Generate"), live=True)

    def keep_playing(self, settings: GenerationSettings) -> None:
        """Endless stream steered by `steer()` until `stop_live()`; saved as one segment."""
        if not self._ready(lambda: self.keep_playing(settings)):
            return
        s = self._seeded(settings)
        # bounded lead; without an output device the playhead is a clock started by the first chunk
        gate = LeadGate(self.playback.sample_rate)

        def job(ctl: StreamControl):  # noqa: ANN202 - an event iterator
            events = self._engine().stream(s, ctl, endless=True)
            return gate.wrap(events, ctl)

        self._start("stream", s, job, lambda tid: self.session.append(tid, "Keep playing"), live=True,
                    gate=gate)

    def regenerate(self, index: int, settings: GenerationSettings, same_seed: bool) -> None:
        """Replace segment `index`: its own settings with a new seed, or `settings` with its seed."""
        if not self._ready(lambda: self.regenerate(index, settings, same_seed)):
            return
        take = self.session.take(self.session.take_ids[index])
        if same_seed:
            s = replace(settings, seed=take.seed)
        else:
            known = {k: v for k, v in take.settings.items() if k in GenerationSettings.__dataclass_fields__}
            s = replace(GenerationSettings(**known), seed=random_seed())
        self._start("regenerate", s, lambda ctl: self._engine().stream(s, ctl),
                    lambda tid: self.session.replace(index, tid, "Regenerate"), live=True, parent_id=take.id)

    def extend(self, index: int, settings: GenerationSettings) -> None:
        """Continue segment `index` from its end; the continuation becomes a new segment after it."""
        if not self._ready(lambda: self.extend(index, settings)):
            return
        take = self.session.take(self.session.take_ids[index])
        audio = self.session.audio(take.id)
        s = self._seeded(settings)
        # streamed, so the continuation plays as it is generated; its chunks are the new part only
        self._start("extend", s, lambda ctl: self._engine().stream(s, ctl, continue_from=audio),
                    lambda tid: self.session.insert(index + 1, tid, "Extend"), live=True, parent_id=take.id)

    def inpaint(self, index: int, start: int, end: int, settings: GenerationSettings) -> None:
        """Regenerate samples [start, end) of segment `index` only."""
        if not self._ready(lambda: self.inpaint(index, start, end, settings)):
            return
        take = self.session.take(self.session.take_ids[index])
        audio = self.session.audio(take.id)
        start, end = max(0, start), min(len(audio), end)
        if end - start < take.sample_rate // 10:
            self.message.emit("warning", "Select at least 0.1 s inside one segment to regenerate it")
            return
        s = self._seeded(settings)
        a, b = start / take.sample_rate, end / take.sample_rate
        # the core's inpainting as is (its one crossfade rule: generation.jobs.mix_inpaint, README)
        self._start("inpaint", s, lambda ctl: self._engine().stream_inpaint(audio, a, b, s, ctl),
                    lambda tid: self.session.replace(index, tid, "Inpaint"), parent_id=take.id)

    def variation(self, settings: GenerationSettings) -> bool:
        """One take of `settings` (its seed set) into the history only, not the arrangement and not
        played: a batch of them is `app.variations.VariationBatch`. False when it cannot start now."""
        if self.busy or self.engine is None:
            self.message.emit("warning" if self.busy else "error",
                              "A generation is running: cancel it first" if self.busy
                              else self.engine_error or "No model is loaded")
            return False
        self._start("variation", settings, lambda ctl: self._engine().stream(settings, ctl),
                    lambda _tid: None)
        return True

    def adopt_engine(self, engine: Engine) -> None:
        """Use an engine another controller loaded (a project switch keeps the model)."""
        self._on_engine(engine)

    def _engine(self) -> Engine:
        assert self.engine is not None
        return self.engine

    # ------------------------------------------------------------------ job plumbing
    def _start(self, kind: str, settings: GenerationSettings, job: Job, apply: Callable[[int], None],
               live: bool = False, parent_id: int | None = None, gate: LeadGate | None = None) -> None:
        store, model_hash = self.session.store, self._engine().model_hash
        # live audio is journalled chunk by chunk as it plays (a crash keeps everything heard)
        stream = self.session.begin_live(kind, settings.to_dict(), model_hash, parent_id) if live else None
        parent_file = self.session.take(parent_id).audio_file if parent_id is not None else None
        model_name = self.model_name
        cut: dict[str, int] = {}

        def finalize(result: GenerationResult) -> tuple[GenerationResult, StoredAudio | None,
                                                        StoredAudio | None]:
            """Runs in the worker thread: the take's FLAC, and after a Stop the unheard tail's."""
            audio = result.audio
            used = {**settings.to_dict(), "seed": result.metadata.get("seed", settings.seed)}
            tags = take_file_tags(kind, used, model_hash, parent_file, result.metadata, stream)
            if model_name:
                tags["model_name"] = model_name
            heard = cut.get("heard")
            # written block by block (a 30-minute stream: no whole-take copies; full disk: kept in memory)
            if heard is None:
                return result, store.write_audio_or_keep(pcm_blocks(audio), result.sample_rate, tags), None
            head, tail = audio[:heard], audio[heard:]
            tail_tags = take_file_tags("unheard", used, model_hash, parent_file, result.metadata)
            sr = result.sample_rate
            return (result, store.write_audio_or_keep(pcm_blocks(head), sr, tags) if len(head) else None,
                    store.write_audio_or_keep(pcm_blocks(tail), sr, tail_tags) if len(tail) else None)

        worker = GenerationWorker(job, StreamControl(), finalize)
        worker.progress.connect(self._on_progress)
        worker.chunk.connect(self._on_chunk)
        worker.finished.connect(self._on_finished)
        worker.failed.connect(self._on_failed)
        self._live, self._live_stream, self.live_samples = [], stream, 0
        thread = self._spawn(worker)  # its signals queue up until we return to the event loop
        self._job = _Job(kind, settings, worker, thread, apply, parent_id, live, stream, gate=gate, cut=cut,
                         prompt=settings.prompt)
        if gate is not None:
            self._lead_timer.start()
        worker.done.connect(self._job_thread_done)
        self.seed_used.emit(int(settings.seed or 0))
        log.info("%s started: prompt=%r seed=%s steps=%s", kind, settings.prompt, settings.seed,
                 settings.steps)
        self.busy_changed.emit(True, kind)

    def cancel(self) -> None:
        if self._job is not None:
            self._job.worker.cancel()
            if self._job.gate is not None:
                self._job.gate.release()
            if self._job.live:
                self.playback.stop_live()
            self.message.emit("info", "Cancelling…")

    def stop_live(self) -> None:
        """Stop of "keep playing": silence at once; what was heard becomes the segment, the unheard
        rest (generated ahead of the playhead) a separate take in the history."""
        job = self._job
        if job is None or job.kind != "stream":
            return
        heard = self.playback.stop_live_heard() if job.first_chunk else None
        if heard is not None:
            job.cut["heard"] = heard  # set before the worker can finalize (it waits for the stop)
        else:
            self.playback.stop_live()
        job.worker.control.stop_after_current()
        if job.gate is not None:
            job.gate.release()
        self._lead_timer.stop()
        self.message.emit("info", "Stopping: finishing the chunk in progress…")

    def _poll_lead(self) -> None:
        """GUI thread: report the playhead to the lead gate; announce new prompt markers."""
        job = self._job
        if job is None or job.gate is None:
            self._lead_timer.stop()
            return
        playback = self.playback
        if playback.available and playback.source_kind == "live":
            job.gate.set_heard(playback.source_position() + 1)
        elif not playback.available and job.first_chunk:
            job.gate.set_heard(int((time.perf_counter() - job.first_chunk) * playback.sample_rate))
        for marker in job.gate.markers[job.markers_seen:]:
            self.marker_added.emit(marker.sample, marker.prompt)
        job.markers_seen = len(job.gate.markers)

    def steer(self, prompt: str | None = None, style_weight: float | None = None,
              style_audio_path: str | None = None) -> None:
        """Change prompt/style of a running keep-playing stream (takes effect from the next chunk)."""
        job = self._job
        if job is None or job.kind != "stream":
            return
        control = job.worker.control
        if prompt is not None and prompt != job.prompt:
            control.set_prompt(prompt)
            job.prompt = prompt
            if job.gate is not None:
                job.gate.note_prompt(prompt)
        if style_weight is not None or style_audio_path is not None:
            control.set_style(style_audio_path, style_weight)

    def _on_progress(self, event: Progress) -> None:
        self.progress.emit(event.stage, event.done, event.total)

    def _on_chunk(self, chunk: AudioChunk) -> None:
        job = self._job
        if job is None:
            return
        now = time.perf_counter()
        job.chunk_times.append(now)
        job.samples += len(chunk.pcm)
        start, self.live_samples = self.live_samples, self.live_samples + len(chunk.pcm)
        if job.first_chunk == 0.0:
            job.first_chunk = now
            log.info("first chunk ready %.0f ms after Generate", 1000 * (now - job.pressed))
            if job.live:
                self.playback.start_live(len(self.session.arrangement_audio()))
                self._fs_timer.start()
        journalled = job.live and self.session.append_live_chunk(job.stream, chunk.pcm,
                                                                 self.playback.sample_rate)
        self._live.append(len(chunk.pcm) if journalled else chunk.pcm)
        if job.live:
            self.playback.append_live(chunk.pcm)
        self.live_chunk.emit(chunk.pcm, start)

    @property
    def live_samples_in_memory(self) -> int:
        """Samples of the running job held here (0 while the live journal takes every chunk)."""
        return sum(len(c) for c in self._live if not isinstance(c, int))

    def live_audio(self) -> np.ndarray:
        """The running job's audio so far: journalled chunks are read back from the journal (a chunk
        that cannot be read is silence of its length, logged), the others were kept in memory."""
        if not self._live:
            return np.zeros(0, np.float32)
        journal: list[np.ndarray] = []
        if self._live_stream is not None and any(isinstance(c, int) for c in self._live):
            try:
                journal = self.session.read_live(self._live_stream)
            except (OSError, sqlite3.Error, StorageError) as exc:
                log.warning("live journal unreadable: %s", exc)
        parts, it = [], iter(journal)
        for c in self._live:
            if isinstance(c, int):
                part = next(it, None)
                parts.append(part if part is not None and len(part) == c else np.zeros(c, np.float32))
            else:
                parts.append(c)
        return np.concatenate(parts)

    def _poll_first_sound(self) -> None:
        job = self._job
        t = self.playback.first_sound_time
        if job is not None and t:
            self._fs_timer.stop()
            ms = 1000 * (t - job.pressed)
            self.last_first_sound_ms = ms
            log.info("time from Generate to first sound: %.0f ms", ms)
            self.first_sound.emit(ms)
        elif job is None or time.perf_counter() - job.first_chunk > FIRST_SOUND_TIMEOUT_S:
            self._fs_timer.stop()  # no output device (or it never started)

    def _on_underrun(self, count: int) -> None:
        job = self._job
        rate = ""
        if job is not None and len(job.chunk_times) >= 2:
            secs = job.samples / self.playback.sample_rate
            rtf = secs / max(job.chunk_times[-1] - job.pressed, 1e-6)
            rate = f" (generating at {rtf:.2f}× real time)"
        gaps = f"{count} gap{'s' if count != 1 else ''}"
        self.message.emit("warning", f"The generator cannot keep up{rate}: playback waits for the next chunk "
                                     f"({gaps}). Fewer steps or the GPU help.")

    def _on_finished(self, payload: tuple[GenerationResult, StoredAudio | None, StoredAudio | None] | None,
                     cancelled: bool) -> None:
        job = self._job
        if job is None:
            return
        if cancelled or payload is None:
            self.session.discard_live(job.stream)
            self.message.emit("info", f"{job.kind.capitalize()} cancelled; the session is unchanged")
            self.job_finished.emit(job.kind, None)
            return
        result, stored, tail = payload
        meta = dict(result.metadata)
        settings = {**job.settings.to_dict(), "seed": meta.get("seed", job.settings.seed)}
        heard = job.cut.get("heard")
        if job.gate is not None:
            meta["prompt_markers"] = [[m.sample, m.prompt] for m in job.gate.markers
                                      if heard is None or m.sample < heard]
        if tail is not None:
            tail_take = self.session.add_take(tail, "unheard", settings, {**meta, "unheard_from": heard},
                                              self._engine().model_hash, None)
            self.unheard_take.emit(tail_take.id)
        if stored is None:
            self.session.discard_live(job.stream)  # its audio is the unheard take
            self.message.emit("info", "Stopped before anything was heard: the audio is in the history as an "
                                      "unheard take")
            self.job_finished.emit(job.kind, None)
            return
        take = self.session.add_take(stored, job.kind, settings, meta, self._engine().model_hash,
                                     job.parent_id, live_stream=job.stream)
        job.apply(take.id)
        if job.live:
            seg = next((s for s in self.session.segments() if s.take.id == take.id), None)
            self.playback.end_live(seg.start if seg else None)
        elapsed = time.perf_counter() - job.pressed
        extra = f"; {tail.audio.size / tail.sample_rate:.1f} s not heard kept in the history" if tail else ""
        self.message.emit("info", f"{job.kind.capitalize()}: {take.seconds:.1f} s in {elapsed:.1f} s "
                                  f"(seed {take.seed}){extra}")
        self.job_finished.emit(job.kind, take.id)

    def keep_partial(self) -> int | None:
        """Quit during a generation: save what has been generated so far as a take (GUI thread,
        synchronous) and add it like the finished job would. Returns the take id."""
        job = self._job
        audio = self.live_audio()
        if job is None or len(audio) == 0:
            return None
        sr = self.playback.sample_rate
        settings = job.settings.to_dict()
        model_hash = self._engine().model_hash
        tags = take_file_tags(job.kind, settings, model_hash, None, {"partial": True}, job.stream)
        stored = self.session.store.write_audio_or_keep(audio, sr, tags)
        take = self.session.add_take(stored, job.kind, settings, {"partial": True}, self._engine().model_hash,
                                     job.parent_id, live_stream=job.stream)  # closes the live journal
        job.apply(take.id)
        return take.id

    def discard_partial(self) -> None:
        """Quit during a generation, partial take not wanted: drop the live journal too."""
        if self._job is not None:
            self.session.discard_live(self._job.stream)

    def _on_failed(self, msg: str) -> None:
        job = self._job
        if job is not None and job.live:
            self.playback.stop_live()
        self.message.emit("error", msg)
        self.job_finished.emit(job.kind if job else "", None)

    def _job_thread_done(self) -> None:
        self._job = None
        self._live, self._live_stream, self.live_samples = [], None, 0
        self.live_cleared.emit()
        self.busy_changed.emit(False, "")

    # ------------------------------------------------------------------ style prompt files
    def load_style(self, path: str) -> None:
        """Decode a dropped file in a thread; `style_loaded(audio, path)` or an error message."""
        def decode() -> np.ndarray:
            from melody_core.audio import load_audio

            return load_audio(path).numpy()

        worker = TaskWorker(decode)
        worker.succeeded.connect(lambda audio: self.style_loaded.emit(audio, path))
        worker.failed.connect(lambda msg: self._style_failed(msg))
        self._spawn(worker)

    def _style_failed(self, msg: str) -> None:
        self.message.emit("error", f"Cannot use this file as a style prompt: {msg}")
        self.style_loaded.emit(None, "")

    # ------------------------------------------------------------------ shutdown
    def _spawn(self, worker: GenerationWorker | TaskWorker) -> QThread:
        """Start `worker` in its own thread; keep both alive until the thread has really ended."""
        thread = worker.start(self)
        entry = (worker, thread)
        self._running.append(entry)

        def reap() -> None:  # `done` is relayed in the GUI thread, after the body has returned
            thread.wait()  # the thread is quitting by itself: this is at most a moment
            self._running.remove(entry)

        worker.done.connect(reap)
        return thread

    def shutdown(self, timeout_ms: int = 5000) -> None:
        """Cancel the job and wait for every worker thread (a QThread must not die running)."""
        if self._job is not None:
            self._job.worker.cancel()
            if self._job.gate is not None:
                self._job.gate.release()
        for _, thread in list(self._running):
            thread.wait(timeout_ms)
