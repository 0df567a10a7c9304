"""The player: a source (a clip, or a live stream that grows chunk by chunk) -> ring buffer -> device.

Threads: everything here runs on the GUI thread except `_callback`, which PortAudio calls on its
own thread and which only copies from the ring (`RingBuffer.read_into`), applies the volume in
place and bumps counters -- no allocation of buffers, no Qt signals, no locks. A QTimer on the
GUI thread (`_tick`) tops the ring up from the source, notices the end of playback, device
failures and underruns, and turns them into Qt signals. The GUI polls `position()`.

With no backend (no PortAudio, no device) the player still accepts every call and does nothing;
`available` is False and `unavailable_reason` says why.

Levels: every source goes through `melody_core.audio.levels` on the GUI thread before it reaches the
ring -- a clip through `master(exact=False)` (loudness target + lookahead true-peak limiter, cached
for the last clip), a live stream through a `LiveMaster`, which holds back the limiter's lookahead
(a few ms) until `end_live` flushes it. Source sample i is always the levelled input sample i, so
positions, loops and seeks are unchanged. `levels=OFF` plays the samples as they are.
"""

from __future__ import annotations

import logging
import time
from enum import Enum

import numpy as np
from PySide6.QtCore import QObject, QTimer, Signal

from app.audio.backend import BackendUnavailable, DeviceError, OutputBackend, OutputDevice, OutputStreamLike
from app.audio.ring import RingBuffer
from melody_core.audio.levels import OFF, LevelSettings, LiveMaster, master

log = logging.getLogger(__name__)

RING_SECONDS = 1.5  # audio queued ahead of the device (the feeder timer only has to run 1.5 s apart)
TICK_MS = 15  # feeder / watchdog period
IDLE_CLOSE_S = 1.5  # stop the device stream this long after playback ends (lets the device drain)
LIVE_PREALLOC_S = 60.0  # initial capacity of the live buffer (doubles when full)
LIVE_KEEP_S = 10.0  # live: samples this far behind the feed cursor are dropped (bounded memory)


class State(str, Enum):
    STOPPED = "stopped"
    PLAYING = "playing"
    PAUSED = "paused"


class Player(QObject):
    """Plays float32 mono PCM at `sample_rate` through an output backend."""

    state_changed = Signal(str)  # State value
    finished = Signal()  # the source ran out (not emitted by stop())
    device_error = Signal(str)  # playback had to stop: one-line reason
    underrun = Signal(int)  # live audio ran dry (total gaps so far)

    def __init__(self, backend: OutputBackend | None, sample_rate: int, parent: QObject | None = None,
                 unavailable_reason: str = "", levels: LevelSettings = OFF) -> None:
        super().__init__(parent)
        self.sample_rate = sample_rate
        self.levels = levels
        self._mastered: tuple[np.ndarray, LevelSettings, np.ndarray] | None = None  # (in, settings, out)
        self._live_master: LiveMaster | None = None
        self.live_received = 0  # live input samples received (the levelled source may lag by the lookahead)
        self._backend = backend
        self.unavailable_reason = unavailable_reason if backend is None else ""
        self._device: int | str | None = None
        self._stream: OutputStreamLike | None = None
        self._ring = RingBuffer(int(RING_SECONDS * sample_rate))
        self._state = State.STOPPED
        self._idle_since = 0.0
        # source (GUI thread only)
        self._src = np.zeros(0, dtype=np.float32)
        self._src_len = 0
        self._base = 0  # source sample held at _src[0] (> 0 once a live stream dropped its played part)
        self._cursor = 0
        self._end = 0
        self._loop: tuple[int, int] | None = None
        self._live = False
        self._live_open = False  # more live audio is expected
        # shared with the callback (plain attributes; each written by one side)
        self._paused = False
        self._volume = 1.0
        self._underruns = 0
        self._reported_underruns = 0
        self._starving = False
        self.first_sound_time = 0.0  # perf_counter() when the first sample after play/live reached the device
        self._timer = QTimer(self)
        self._timer.setInterval(TICK_MS)
        self._timer.timeout.connect(self._tick)

    # ------------------------------------------------------------------ device
    @property
    def available(self) -> bool:
        return self._backend is not None

    def set_backend(self, backend: OutputBackend | None, unavailable_reason: str = "") -> None:
        """Switch output backends (e.g. after re-scanning devices); stops playback."""
        self.stop()
        self._close_stream()
        self._backend = backend
        self.unavailable_reason = unavailable_reason if backend is None else ""

    def devices(self) -> list[OutputDevice]:
        return self._backend.devices() if self._backend else []

    @property
    def device(self) -> int | str | None:
        return self._device

    def set_device(self, device: int | str | None) -> None:
        """Choose the output device (None = system default); reopens the stream if needed."""
        self._device = device
        if self._stream is not None:
            was_running = self._state is State.PLAYING
            self._close_stream()
            if was_running:
                self._ensure_stream()

    def _ensure_stream(self) -> bool:
        if self._backend is None:
            return False
        try:
            if self._stream is None:
                self._stream = self._backend.open(self._device, self.sample_rate, self._callback)
            if not self._stream.active:
                self._ring.apply_flush()
                self._stream.start()
        except (DeviceError, BackendUnavailable) as exc:
            self._fail(str(exc))
            return False
        except Exception as exc:  # noqa: BLE001 - PortAudio raises its own types
            self._fail(f"audio output failed ({' '.join(str(exc).split())})")
            return False
        return True

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        try:
            stream.stop()
            stream.close()
        except Exception as exc:  # noqa: BLE001 - a vanished device may refuse to stop
            log.warning("closing the output stream failed: %s", exc)
        self._ring.reset()

    def _fail(self, reason: str) -> None:
        log.warning("playback stopped: %s", reason)
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close()
            except Exception:  # noqa: BLE001 - the device is gone; nothing more to do
                pass
        self._ring.reset()
        self._set_state(State.STOPPED)
        self._timer.stop()
        self.device_error.emit(reason)

    # ------------------------------------------------------------------ the audio callback
    def _callback(self, outdata, frames, time_info, status) -> None:  # noqa: ANN001 - PortAudio thread
        out = outdata[:, 0]
        if self._paused:
            self._ring.apply_flush()
            out.fill(0.0)
            return
        n = self._ring.read_into(out)
        if n < frames:
            out[n:] = 0.0
            if self._live_open and not self._starving and self.first_sound_time != 0.0:
                self._starving = True
                self._underruns += 1
        elif self._starving:
            self._starving = False
        if n and self.first_sound_time == 0.0:
            self.first_sound_time = time.perf_counter()
        if self._volume != 1.0:
            out *= self._volume

    # ------------------------------------------------------------------ levels
    def set_levels(self, levels: LevelSettings) -> None:
        """Level settings for what is played next (the current source keeps its levels)."""
        self.levels = levels
        self._mastered = None

    def _master(self, audio: np.ndarray) -> np.ndarray:
        a = np.asarray(audio, dtype=np.float32)
        if not self.levels.enabled or self._backend is None:  # no output: nothing to level
            return a
        cached = self._mastered
        if cached is not None and cached[0] is audio and cached[1] == self.levels:
            return cached[2]
        out = master(a, self.sample_rate, self.levels, exact=False)
        self._mastered = (audio, self.levels, out)
        return out

    # ------------------------------------------------------------------ sources
    def play(self, audio: np.ndarray, start: int = 0, end: int | None = None,
             loop: tuple[int, int] | None = None) -> None:
        """Play `audio[start:end]` (or loop `audio[loop[0]:loop[1]]` from `start`), levelled."""
        self._stop_source()
        self._src = self._master(audio)
        self._src_len = len(self._src)
        self._base = 0
        self._end = self._src_len if end is None else max(0, min(end, self._src_len))
        self._cursor = max(0, min(start, self._end))
        self._loop = loop if loop and loop[1] > loop[0] else None
        self._live = self._live_open = False
        self._start()

    def start_live(self) -> None:
        """Begin a live stream: audio arrives through `append_live` and plays as it comes."""
        self._stop_source()
        self._src = np.zeros(int(LIVE_PREALLOC_S * self.sample_rate), dtype=np.float32)
        self._src_len = self._cursor = self._end = self._base = 0
        self._loop = None
        self._live = self._live_open = True
        self._live_master = LiveMaster(self.sample_rate, self.levels if self._backend is not None else OFF)
        self.live_received = 0
        self._start()

    def append_live(self, pcm: np.ndarray) -> None:
        if not self._live or self._live_master is None:
            return
        self.live_received += len(pcm)
        self._append_source(self._live_master.process(pcm))

    def _append_source(self, pcm: np.ndarray) -> None:
        """Live: append `pcm` to the source. Source positions stay absolute; what lies more than
        `LIVE_KEEP_S` behind the feed cursor was handed to the device and is dropped, so a stream of
        any length holds at most the keep window + the unplayed lead (+ the buffer's slack)."""
        drop = self._cursor - self._base - int(LIVE_KEEP_S * self.sample_rate)
        if drop > 0:  # shift the unplayed part down (cheap: a few seconds of samples)
            kept = self._src_len - self._base - drop
            self._src[:kept] = self._src[drop : drop + kept]
            self._base += drop
        held = self._src_len - self._base
        need = held + len(pcm)
        if need > len(self._src):
            grown = np.zeros(max(need, 2 * len(self._src)), dtype=np.float32)
            grown[:held] = self._src[:held]
            self._src = grown
        self._src[held:need] = pcm
        self._src_len = self._end = self._base + need
        self._feed()

    def end_live(self) -> None:
        """No more live audio: play what is buffered (and the limiter's lookahead), then finish."""
        if self._live and self._live_open and self._live_master is not None:
            self._append_source(self._live_master.flush())
        self._live_open = False

    def stop_live_heard(self, timeout_s: float = 0.5) -> int:
        """Stop a live stream; returns how many of its samples were handed to the device -- exactly:
        the ring is flushed and the consumer's last position is read once it has applied the flush."""
        if not self._live:
            return 0
        self._ring.flush()
        deadline = time.monotonic() + timeout_s
        while (self._stream is not None and self._stream.active and not self._ring.flush_applied()
               and time.monotonic() < deadline):
            time.sleep(0.001)
        heard = self._ring.last_position + 1 if self.first_sound_time else 0
        self.stop()
        return max(0, min(heard, self.live_received))

    @property
    def held_samples(self) -> int:
        """Source samples held in memory (live: the keep window + the unplayed lead)."""
        return self._src_len - self._base

    @property
    def is_live(self) -> bool:
        return self._live

    def _start(self) -> None:
        self._paused = False
        self._underruns = self._reported_underruns = 0
        self._starving = False
        self.first_sound_time = 0.0
        if self._backend is None:
            return  # no output: nothing plays, the caller's state stays consistent (stopped)
        self._set_state(State.PLAYING)
        self._feed()
        self._ensure_stream()
        if self._state is State.PLAYING:
            self._timer.start()

    def _stop_source(self) -> None:
        self._ring.flush()
        self._live = self._live_open = False
        if self._stream is None or not self._stream.active:
            self._ring.reset()

    # ------------------------------------------------------------------ transport
    @property
    def state(self) -> State:
        return self._state

    def _set_state(self, state: State) -> None:
        if state is not self._state:
            self._state = state
            self.state_changed.emit(state.value)

    def pause(self) -> None:
        if self._state is State.PLAYING:
            self._paused = True
            self._set_state(State.PAUSED)

    def resume(self) -> None:
        if self._state is State.PAUSED:
            self._paused = False
            self._set_state(State.PLAYING)

    def toggle_pause(self) -> None:
        self.pause() if self._state is State.PLAYING else self.resume()

    def stop(self) -> None:
        self._stop_source()
        self._paused = False
        self._idle_since = time.monotonic()
        self._set_state(State.STOPPED)

    def seek(self, position: int) -> None:
        """Continue playback from source sample `position` (drops what is queued)."""
        if self._state is State.STOPPED:
            return
        self._ring.flush()
        self._cursor = max(self._base, min(position, self._end))
        self._feed()

    def set_loop(self, loop: tuple[int, int] | None) -> None:
        self._loop = loop if loop and loop[1] > loop[0] else None

    def set_volume(self, volume: float) -> None:
        self._volume = float(min(max(volume, 0.0), 1.0))

    @property
    def volume(self) -> float:
        return self._volume

    def position(self) -> int:
        """Source sample last handed to the device (-1 before the first)."""
        return self._ring.position() if self._state is not State.STOPPED else -1

    @property
    def underruns(self) -> int:
        return self._underruns

    # ------------------------------------------------------------------ feeder / watchdog
    def _feed(self) -> None:
        if self._state is State.STOPPED:
            return
        while self._ring.available_space() > 0:
            if self._loop is not None and self._cursor >= self._loop[1]:
                self._cursor = self._loop[0]
            stop = self._loop[1] if self._loop is not None else self._end
            if self._cursor >= stop:
                return
            piece = self._src[self._cursor - self._base : stop - self._base]
            written = self._ring.write(piece, self._cursor)
            if written == 0:
                return
            self._cursor += written

    def _tick(self) -> None:
        if self._state is State.STOPPED:
            if self._stream is not None and time.monotonic() - self._idle_since > IDLE_CLOSE_S:
                self._close_stream()
            if self._stream is None:
                self._timer.stop()
            return
        if self._stream is not None and not self._stream.active:
            self._fail("the audio output device stopped (disconnected?)")
            return
        self._feed()
        if self._underruns != self._reported_underruns:
            self._reported_underruns = self._underruns
            self.underrun.emit(self._underruns)
        drained = self._ring.buffered() <= 0
        if not self._live_open and self._loop is None and self._cursor >= self._end and drained:
            self._live = False
            self._idle_since = time.monotonic()
            self._set_state(State.STOPPED)
            self.finished.emit()

    def shutdown(self) -> None:
        self._timer.stop()
        self._close_stream()
