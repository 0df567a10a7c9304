"""Audio output backends: sounddevice (PortAudio) for real use, anything with the same shape in tests.

PortAudio reads the ALSA configuration once, when `sounddevice` is first imported, so the import
happens here lazily and every failure (no PortAudio library, no output device) becomes
`BackendUnavailable` with a readable line: the app then runs without playback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)

OUTPUT_LATENCY_S = 0.08  # requested output latency: low enough for live steering, safe for Python
Callback = Callable[[Any, int, Any, Any], None]  # (outdata (frames, 1) float32, frames, time, status)


class BackendUnavailable(Exception):
    """No usable audio output (message is one line)."""


class DeviceError(Exception):
    """Opening/starting/stopping a stream failed (message is one line)."""


@dataclass(frozen=True)
class OutputDevice:
    index: int
    name: str
    is_default: bool


class OutputStreamLike(Protocol):
    @property
    def active(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...


class OutputBackend(Protocol):
    def devices(self) -> list[OutputDevice]: ...

    def open(self, device: int | str | None, sample_rate: int, callback: Callback) -> OutputStreamLike: ...


class SoundDeviceBackend:
    """PortAudio output through `sounddevice`: mono float32 streams."""

    def __init__(self) -> None:
        try:
            import sounddevice
        except (OSError, ImportError) as exc:  # libportaudio missing
            raise BackendUnavailable(f"audio library unavailable ({exc})") from None
        self._sd = sounddevice
        if not self.devices():
            raise BackendUnavailable("no audio output device found")

    def devices(self) -> list[OutputDevice]:
        try:
            all_devices = self._sd.query_devices()
            default_out = self._sd.default.device[1]
        except Exception as exc:  # noqa: BLE001 - PortAudio errors come in several types
            log.warning("query_devices failed: %s", exc)
            return []
        return [OutputDevice(int(d["index"]), str(d["name"]), int(d["index"]) == default_out)
                for d in all_devices if d["max_output_channels"] > 0]

    def open(self, device: int | str | None, sample_rate: int, callback: Callback) -> OutputStreamLike:
        try:
            return self._sd.OutputStream(samplerate=sample_rate, channels=1, dtype="float32", device=device,
                                         latency=OUTPUT_LATENCY_S, callback=callback)
        except Exception as exc:  # noqa: BLE001 - sd.PortAudioError, ValueError for bad device ids
            raise DeviceError(f"cannot open audio output ({' '.join(str(exc).split())})") from None
