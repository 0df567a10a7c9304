"""Plain data types of the generation pipeline API (`melody_core.generation.pipeline.MelodyPipeline`).

These are the only objects the desktop app sees: settings in, PCM + metadata + progress out.
No torch tensors cross this boundary (numpy float32 PCM at 24 kHz mono).
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass
class GenerationSettings:
    """Everything that determines a generation (with the model hash and device: reproducible)."""

    prompt: str | None = None  # text prompt (None/empty: style audio only)
    style_audio_path: str | None = None  # audio file used as a style prompt (MuLan audio tower)
    style_weight: float = 0.5  # 0 = text only, 1 = style audio only (when both are given)
    seconds: float = 10.0  # length to generate
    seed: int | None = None  # None = pick a random seed (recorded in the result)
    steps: int = 10  # DPD sampling steps T for the first window
    guidance: float = 2.5  # CFG scale rho (§5.1)
    schedule: str = "linear"  # angle schedule: "linear" (Eq. 4) or "uniform"
    temperature: float = 1.0  # semantic LM sampling temperature
    top_k: int = 0  # semantic LM top-k (0 = off)
    top_p: float = 1.0  # semantic LM nucleus threshold (1 = off)
    lm_guidance: float | None = None  # semantic LM CFG scale (1 = off; None = the bundle's default)
    continuation_steps: int | None = None  # steps per continuation chunk (None = ceil(T/M))
    start: str = "window"  # first window: "window" (paper: all L frames in T steps) or "progressive"
    # (chunk by chunk, each new chunk like a continuation: lower time to first sound)
    bpm: float | None = None  # explicit tempo: the LM's BPM control (overrides "120 bpm" in the prompt);
    # an LM without controls gets it as prompt text ("..., 120 bpm")
    key: str | None = None  # explicit key, e.g. "D minor", "F# major", "Bb min" (same rules as bpm)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GenerationResult:
    """Finished audio and the metadata needed to reproduce it."""

    audio: np.ndarray  # (T,) float32 mono PCM
    sample_rate: int
    metadata: dict[str, Any]  # prompt, seed, all settings, model hash, NFE count, device, timings

    @property
    def seconds(self) -> float:
        return len(self.audio) / self.sample_rate


@dataclass
class Progress:
    """Progress event: `stage` in {"condition", "lm", "dpd", "decode"}; `done`/`total` units of it."""

    stage: str
    done: int
    total: int
    chunk_index: int = 0


@dataclass
class AudioChunk:
    """A decodable piece of PCM. Concatenating every chunk of a stream in order gives the audio."""

    index: int
    start_sample: int  # position of pcm[0] in the whole stream
    pcm: np.ndarray  # (n,) float32


@dataclass
class StreamFinished:
    """Last event of a stream (also after a cancel): the concatenated result so far."""

    result: GenerationResult
    cancelled: bool = False


@dataclass
class StreamControl:
    """Thread-safe handle a consumer uses to steer a running `stream()`.

    `cancel()` stops the stream between steps; `set_prompt()` / `set_style()` take effect from the
    next generated chunk (prompt automation while streaming); `stop_after_current()` ends an endless
    ("keep playing") stream cleanly after the chunk in progress.
    """

    _cancel: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pending: dict[str, Any] = field(default_factory=dict)

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def stop_after_current(self) -> None:
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def set_prompt(self, prompt: str | None) -> None:
        with self._lock:
            self._pending["prompt"] = prompt

    def set_style(self, style_audio_path: str | None = None, style_weight: float | None = None) -> None:
        with self._lock:
            if style_audio_path is not None:
                self._pending["style_audio_path"] = style_audio_path
            if style_weight is not None:
                self._pending["style_weight"] = style_weight

    def take_updates(self) -> dict[str, Any]:
        """Pending prompt/style changes (cleared on read). Called by the pipeline between chunks."""
        with self._lock:
            updates, self._pending = self._pending, {}
        return updates


class GenerationCancelled(Exception):
    """Raised inside the pipeline when a StreamControl was cancelled (never escapes `stream()`)."""


class PipelineError(ValueError):
    """Bad user input to the pipeline (empty prompt and no style audio, absurd length, region outside
    the clip, unreadable audio...): the message is one human-readable line."""
