"""An in-process output backend for app tests: a thread calls the player's callback in real time and
records what it was given; `vanish()` makes the device disappear like an unplugged USB card.
`paced=True`: the device plays only the samples the test `allow`s (then at `speed`), so a test that
feeds a live stream cannot underrun however slowly the machine runs it."""

from __future__ import annotations

import threading
import time

import numpy as np

from app.audio.backend import OutputDevice

BLOCK = 240  # frames per callback (10 ms at 24 kHz)


class _Flags:
    output_underflow = False


class FakeStream:
    def __init__(self, backend: FakeBackend, sample_rate: int, callback) -> None:  # noqa: ANN001
        self._backend = backend
        self._rate = sample_rate
        self._callback = callback
        self._running = False
        self._thread: threading.Thread | None = None

    @property
    def active(self) -> bool:
        return self._running and not self._backend.vanished

    def start(self) -> None:
        if self._backend.vanished:
            raise RuntimeError("device unavailable")
        self._running = True
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        block = self._backend.block
        out = np.zeros((block, 1), np.float32)
        t = time.perf_counter()
        while self._running and not self._backend.vanished:
            if not self._backend.take(block):
                time.sleep(0.001)
                t = time.perf_counter()
                continue
            self._callback(out, block, None, _Flags())
            self._backend.played.append(out[:, 0].copy())
            t += block / self._rate / self._backend.speed
            time.sleep(max(0.0, t - time.perf_counter()))

    def stop(self) -> None:
        self._running = False
        if self._thread is not None:
            self._thread.join(1.0)

    def close(self) -> None:
        self.stop()


class FakeBackend:
    def __init__(self, speed: float = 1.0, block: int = BLOCK, paced: bool = False) -> None:
        self.speed = speed  # >1 consumes audio faster than real time (shorter tests)
        self.block = block  # frames per callback
        self.paced = paced  # play only what `allow` granted
        self.vanished = False
        self.played: list[np.ndarray] = []
        self.opened = 0
        self._allowed = 0  # samples the paced device may still play
        self._lock = threading.Lock()

    def allow(self, samples: int | None) -> None:
        """Paced: let the device play `samples` more (None: everything from now on)."""
        with self._lock:
            if samples is None:
                self.paced = False
            else:
                self._allowed += samples

    def take(self, frames: int) -> bool:
        """Whether the device may play the next `frames` (stream thread)."""
        with self._lock:
            if not self.paced:
                return True
            if self._allowed < frames:
                return False
            self._allowed -= frames
            return True

    def devices(self) -> list[OutputDevice]:
        return [] if self.vanished else [OutputDevice(0, "fake output", True)]

    def open(self, device, sample_rate: int, callback) -> FakeStream:  # noqa: ANN001
        if self.vanished:
            from app.audio.backend import DeviceError

            raise DeviceError("cannot open audio output (device gone)")
        self.opened += 1
        return FakeStream(self, sample_rate, callback)

    def vanish(self) -> None:
        self.vanished = True

    def captured(self) -> np.ndarray:
        return np.concatenate(self.played) if self.played else np.zeros(0, np.float32)
