"""Audio output backends: sounddevice (PortAudio) for real use, anything with the same shape in tests.

PortAudio reads the ALSA configuration once, when `sounddevice` is first imported, so the import
happens here lazily and every failure (no PortAudio library, a malformed ALSA configuration --
`PortAudioError` -- no output device) becomes `BackendUnavailable` with a readable line: the app then
runs without playback and the transport says why.

Some ALSA faults do not raise at all: with an empty ALSA configuration alsa-lib fails an assertion
and aborts the whole process (SIGABRT, exit 134) inside `Pa_Initialize`. So before importing
`sounddevice` in the app's process, `probe_portaudio()` initialises PortAudio once in a short child
process (`python -m app.audio.backend`, or `melody-studio --probe-audio` when frozen) and only an
answer of "ok" lets the app import it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

OUTPUT_LATENCY_S = 0.08  # requested output latency: low enough for live steering, safe for Python
PROBE_TIMEOUT_S = 30.0  # the child that initialises PortAudio gets this long (a hung ALSA plugin)
PROBE_FLAG = "--probe-audio"  # argument of the frozen app that runs `probe_main`
PROBE_OK = "portaudio-ok"  # the child's last stdout line when PortAudio initialised
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

    def __init__(self, probe: bool = True) -> None:
        if probe:
            probe_portaudio()  # raises BackendUnavailable where initialising PortAudio would abort us
        try:
            import sounddevice
        except (OSError, ImportError) as exc:  # libportaudio missing
            raise BackendUnavailable(f"audio library unavailable ({_one_line(exc)})") from None
        except Exception as exc:  # noqa: BLE001 - sd.PortAudioError: e.g. a malformed ~/.asoundrc
            raise BackendUnavailable(f"the audio system failed to start ({_one_line(exc)}); "
                                     f"{ALSA_HINT}") from None
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


ALSA_HINT = "check ~/.asoundrc and ALSA_CONFIG_PATH"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def probe_command() -> list[str]:
    """The child process that initialises PortAudio (the frozen app runs itself with PROBE_FLAG)."""
    if getattr(sys, "frozen", False):
        return [sys.executable, PROBE_FLAG]
    return [sys.executable, "-m", "app.audio.backend"]


def probe_portaudio(timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Initialise PortAudio in a child process; BackendUnavailable (one line) unless it said ok."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # the folder holding the `app` package
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    try:
        proc = subprocess.run(probe_command(), capture_output=True, text=True, timeout=timeout_s, env=env,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BackendUnavailable(f"the audio system did not answer in {timeout_s:g} s; {ALSA_HINT}") from None
    except OSError as exc:
        log.warning("cannot run the audio probe (%s); initialising PortAudio in-process", exc)
        return
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode == 0 and lines and lines[-1] == PROBE_OK:
        return
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name if -proc.returncode in signal.valid_signals() else "?"
        raise BackendUnavailable(f"the audio system crashed while starting ({name}); {ALSA_HINT}")
    if proc.returncode == PROBE_REFUSED and lines:
        raise BackendUnavailable(lines[-1])  # the child's own one-line reason
    detail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    raise BackendUnavailable(f"the audio system failed to start (exit {proc.returncode}: {detail}); "
                             f"{ALSA_HINT}")


PROBE_REFUSED = 3  # exit status of the child when PortAudio raised (its last stdout line says why)


def probe_main() -> int:
    """Child side of `probe_portaudio`: import sounddevice (Pa_Initialize) and list the devices."""
    try:
        SoundDeviceBackend(probe=False)
    except BackendUnavailable as exc:
        print(str(exc), flush=True)
        return PROBE_REFUSED
    print(PROBE_OK, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(probe_main())
