"""FluidSynth rendering of MIDI files: in this process through libfluidsynth (`synth.py`, each
soundfont loaded once per process) when the renderer is the default `fluidsynth` and the library
loads, else by running the binary, always under a guard.

In process, a render stops at the expected length plus `TAIL_S` (a stuck voice cannot make it run
on). As a process, a score with a stuck voice makes `fluidsynth -F` render forever (and long
releases make it run on for many seconds: the builder's MIDI ends with "all sound off" for that),
so every render runs in its own process group with two limits: a wall-clock timeout
(`timeout_for`) and a size watchdog that kills
the renderer as soon as its output file is longer than the expected duration plus a tail. The
rendered length is checked again after loading. Failures raise `RenderError` (one line); the
builder logs and skips them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from melody_core import SAMPLE_RATE
from melody_core.audio import AudioError, load_audio
from melody_core.data import synth
from melody_core.data.midi import Track, midi_bytes

DEFAULT_SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
SOUNDFONT_CANDIDATES = (
    DEFAULT_SOUNDFONT,
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/soundfonts/default.sf2",
)
DEFAULT_GAIN = 0.6  # fluidsynth master gain (its default 0.2 leaves solo parts very quiet)
TAIL_S = 10.0  # tail allowed after the last note-off (the builder's MIDI silences all voices ~2.5 s
# after it; without that, FluidR3's harp and steel guitar ring on for 10-20 s)
KEEP_TAIL_S = 2.0  # the render is cut this long after the last note-off ...
FADE_OUT_S = 1.0  # ... with a fade-out of this length
SHORT_SLACK_S = 0.5  # a render may end this much before the expected length (rounding)
TIMEOUT_BASE_S = 30.0  # wall-clock limit: base ...
TIMEOUT_PER_AUDIO_S = 0.25  # ... plus this per second of expected audio (renders run ~60x real time)
WATCH_INTERVAL_S = 0.1  # how often the watchdog looks at the output file
WAV_HEADER_BYTES = 44
RENDER_CHANNELS = 2  # fluidsynth writes stereo
RENDER_BYTES_PER_SAMPLE = 2  # s16
SIZE_SLACK_S = 2.0  # extra seconds allowed by the size watchdog beyond expected + tail
STOP_MARGIN_S = 0.5  # "all sound off" this long after the kept tail (the render is trimmed anyway)


class RenderError(RuntimeError):
    """A render that failed, timed out or has the wrong length (one-line message)."""


@dataclass(frozen=True)
class Renderer:
    """How to call the synthesizer. `binary` may be any program taking fluidsynth's arguments."""

    binary: str = "fluidsynth"
    soundfont: str = DEFAULT_SOUNDFONT
    sample_rate: int = SAMPLE_RATE
    gain: float = DEFAULT_GAIN
    options: tuple[str, ...] = ()  # extra FluidSynth settings, "key=value" (passed as -o)
    library: bool = True  # in this process (synth.py) when `binary` is "fluidsynth" and the library loads

    def in_process(self) -> bool:
        return self.library and self.binary == "fluidsynth" and synth.available()

    def command(self, midi: Path, wav: Path) -> list[str]:
        opts = [arg for o in self.options for arg in ("-o", o)]
        return [
            self.binary, "-n", "-i", "-q", *opts, "-g", f"{self.gain:g}", "-r", str(self.sample_rate),
            "-T", "wav", "-O", "s16", "-F", str(wav), self.soundfont, str(midi),
        ]  # fmt: skip


def find_soundfont() -> str | None:
    for cand in SOUNDFONT_CANDIDATES:
        if os.path.isfile(cand):
            return cand
    return None


def fluidsynth_version(binary: str = "fluidsynth") -> str:
    """e.g. "2.3.1" ("" if it cannot be run)."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    for line in out.splitlines():
        if "version" in line.lower():
            return line.split()[-1]
    return ""


def timeout_for(expected_s: float) -> float:
    return TIMEOUT_BASE_S + TIMEOUT_PER_AUDIO_S * expected_s


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()


def run_guarded(cmd: list[str], out_file: Path, timeout_s: float, max_bytes: int | None = None) -> None:
    """Run `cmd` (writing `out_file`) in its own process group; kill it when it runs longer than
    `timeout_s` or `out_file` grows past `max_bytes`. Raises RenderError on any failure."""
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
    except OSError as exc:
        raise RenderError(f"cannot run {cmd[0]}: {exc.strerror or exc}") from None
    try:
        while proc.poll() is None:
            if time.monotonic() - start > timeout_s:
                _kill_group(proc)
                raise RenderError(f"renderer timed out after {timeout_s:.0f} s")
            if max_bytes is not None and out_file.exists() and out_file.stat().st_size > max_bytes:
                _kill_group(proc)
                raise RenderError("render ran past the expected length (stuck notes?)")
            time.sleep(WATCH_INTERVAL_S)
    finally:
        if proc.poll() is None:
            _kill_group(proc)
    err = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode != 0:
        last = err.strip().splitlines()[-1] if err.strip() else ""
        raise RenderError(f"renderer exited with status {proc.returncode}{': ' + last if last else ''}")
    if not out_file.is_file() or out_file.stat().st_size <= WAV_HEADER_BYTES:
        raise RenderError("renderer wrote no audio")


def render_midi(renderer: Renderer, midi: Path, wav: Path, expected_s: float) -> torch.Tensor:
    """Render `midi` to `wav` and return it as mono float32 (T,) at 24 kHz. `expected_s` is the
    time of the last note-off; the render must be between that and that + TAIL_S long, and is
    returned cut KEEP_TAIL_S after it."""
    limit_s = expected_s + TAIL_S + SIZE_SLACK_S
    bytes_per_s = renderer.sample_rate * RENDER_CHANNELS * RENDER_BYTES_PER_SAMPLE
    max_bytes = WAV_HEADER_BYTES + int(limit_s * bytes_per_s)
    run_guarded(renderer.command(midi, wav), wav, timeout_for(expected_s), max_bytes)
    try:
        audio = load_audio(wav, SAMPLE_RATE, max_seconds=limit_s)
    except AudioError as exc:
        raise RenderError(f"unreadable render ({exc.reason})") from None
    return _checked(audio, expected_s)


def _checked(audio: torch.Tensor, expected_s: float) -> torch.Tensor:
    got = audio.numel() / SAMPLE_RATE
    if got < expected_s - SHORT_SLACK_S or got > expected_s + TAIL_S:
        raise RenderError(f"rendered {got:.1f} s, expected {expected_s:.1f} s (+ up to {TAIL_S:g} s tail)")
    return trim_tail(audio, expected_s)


def render_in_process(renderer: Renderer, midi: bytes, expected_s: float) -> torch.Tensor:
    """`render_midi` for MIDI data, through libfluidsynth in this process (`synth.render`)."""
    if renderer.sample_rate != SAMPLE_RATE:
        raise RenderError(f"in-process renders are at {SAMPLE_RATE} Hz, not {renderer.sample_rate}")
    try:
        audio, finished = synth.render(midi, renderer.soundfont, renderer.sample_rate, renderer.gain,
                                       renderer.options, expected_s + TAIL_S)  # fmt: skip
    except synth.SynthError as exc:
        raise RenderError(str(exc)) from None
    if not finished:
        raise RenderError("render ran past the expected length (stuck notes?)")
    return _checked(torch.from_numpy(audio), expected_s)


def render_tracks(
    renderer: Renderer, tracks: list[Track], qpm: float, tmp_stem: Path, expected_s: float
) -> torch.Tensor:
    """Render `tracks` at `qpm` (MIDI ending with "all sound off" STOP_MARGIN_S after the kept
    tail) -> mono float32 (T,) cut KEEP_TAIL_S after `expected_s`. In process when
    `renderer.in_process()`, else through tmp_stem.mid / .wav (removed afterwards)."""
    data = midi_bytes(tracks, qpm, stop_after_s=KEEP_TAIL_S + STOP_MARGIN_S)
    if renderer.in_process():
        return render_in_process(renderer, data, expected_s)
    midi, wav = tmp_stem.with_name(tmp_stem.name + ".mid"), tmp_stem.with_name(tmp_stem.name + ".wav")
    try:
        midi.parent.mkdir(parents=True, exist_ok=True)
        midi.write_bytes(data)
        return render_midi(renderer, midi, wav, expected_s)
    finally:
        midi.unlink(missing_ok=True)
        wav.unlink(missing_ok=True)


def trim_tail(audio: torch.Tensor, expected_s: float) -> torch.Tensor:
    """Cut (T,) KEEP_TAIL_S after `expected_s`, fading out over the last FADE_OUT_S."""
    keep = min(audio.numel(), int((expected_s + KEEP_TAIL_S) * SAMPLE_RATE))
    audio = audio[:keep].clone()
    n = min(keep, int(FADE_OUT_S * SAMPLE_RATE))
    if n > 0:
        audio[keep - n :] *= torch.linspace(1.0, 0.0, n, dtype=audio.dtype)
    return audio
