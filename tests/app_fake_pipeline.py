"""A stand-in for `melody_core.generation.pipeline.MelodyPipeline` used by the app tests.

Same API and event types as the real pipeline (`melody_core.generation`), no torch: every chunk is a sine
whose pitch follows the prompt and the seed, so tests can tell takes apart and check steering.
Honours `StreamControl` (cancel between steps, prompt/style updates between chunks, stop after the
current chunk for endless streams). Class attributes tune speed and failures for a test.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from melody_core import SAMPLE_RATE
from melody_core.generation.decode import AudioSpool
from melody_core.generation.jobs import INPAINT_CROSSFADE_S
from melody_core.generation.types import (
    AudioChunk,
    GenerationCancelled,
    GenerationResult,
    GenerationSettings,
    PipelineError,
    Progress,
    StreamControl,
    StreamFinished,
)

Event = Progress | AudioChunk | StreamFinished


class FakePipeline:
    """Sine-wave "model" with the MelodyPipeline API."""

    sample_rate = SAMPLE_RATE
    controls: tuple[str, ...] = ()  # no explicit BPM / key controls (they go into the prompt text)
    chunk_seconds = 1.0  # audio per streamed chunk
    step_delay = 0.002  # seconds slept per diffusion step (simulates work; releases the GIL)
    fail_prompt = "FAIL"  # a prompt containing this raises RuntimeError mid-stream
    inpaint_leak = 1e-3  # change of the samples in the crossfades just outside an inpainted region
    crossfade_s = INPAINT_CROSSFADE_S  # their length on each side, as the core's

    def __init__(self, bundle: str | None, device: str) -> None:
        self.bundle = bundle
        self.device = "cpu" if device == "auto" else device
        self.model_hash = "fake0123abcd"
        self.bundle_path = None  # no bundle folder (the studio then shows no model card)
        self.last_inpaint: np.ndarray | None = None  # the last stream_inpaint result

    @classmethod
    def load(cls, bundle: str | Path | None = None, device: str = "auto", threads: int | None = None
             ) -> FakePipeline:
        if bundle is not None and not Path(bundle).exists():
            raise PipelineError(f"model bundle not found: {bundle}")
        if bundle is not None and Path(bundle).is_file():
            raise PipelineError(f"{Path(bundle).name}: not a model bundle (config.json missing)")
        if device not in ("auto", "cpu"):
            raise PipelineError(f"device {device!r} is not available on this machine")
        return cls(None if bundle is None else str(bundle), device)

    # ---------------------------------------------------------------- helpers
    def _freq(self, prompt: str | None, seed: int) -> float:
        return 220.0 + (zlib.crc32(f"{prompt or ''}|{seed}".encode()) % 440)

    def _tone(self, freq: float, start: int, n: int) -> np.ndarray:
        t = (np.arange(start, start + n, dtype=np.float64)) / self.sample_rate
        return (0.3 * np.sin(2 * math.pi * freq * t)).astype(np.float32)

    def _check(self, settings: GenerationSettings) -> None:
        if not (settings.prompt or "").strip() and not settings.style_audio_path:
            raise PipelineError("give a text prompt or a style audio file")
        if not 0.5 <= settings.seconds <= 600:
            raise PipelineError(f"length {settings.seconds:g} s is outside 0.5-600 s")

    def _metadata(self, settings: GenerationSettings, seed: int, nfe: int) -> dict:
        return {"settings": {**settings.to_dict(), "seed": seed}, "prompt": settings.prompt, "seed": seed,
                "model_hash": self.model_hash, "device": self.device, "nfe": nfe}

    # ---------------------------------------------------------------- API
    def stream(self, settings: GenerationSettings, control: StreamControl | None = None,
               endless: bool = False, continue_from: np.ndarray | None = None) -> Iterator[Event]:
        if continue_from is None:
            self._check(settings)
        control = control or StreamControl()
        seed = settings.seed if settings.seed is not None else int(time.time() * 1000) % 2**31
        chunk_n = int(self.chunk_seconds * self.sample_rate)
        total = int(round(settings.seconds * self.sample_rate))
        n_chunks = max(1, math.ceil(total / chunk_n))
        prompt = settings.prompt
        pieces = AudioSpool(spill=endless)  # like the core: an endless stream's audio is on disk
        produced, index, nfe = 0, 0, 0
        phase0 = 0 if continue_from is None else len(continue_from)  # a continuation carries on the tone
        cancelled = False
        while endless or index < n_chunks:
            prompt = control.take_updates().get("prompt", prompt)
            for step in range(settings.steps):
                if control.cancelled:
                    cancelled = True
                    break
                time.sleep(self.step_delay)
                nfe += 1
                yield Progress("dpd", step + 1, settings.steps, chunk_index=index)
            if cancelled:
                break
            if self.fail_prompt in (prompt or ""):
                raise RuntimeError("fake model exploded")
            n = chunk_n if endless else min(chunk_n, total - produced)
            pcm = self._tone(self._freq(prompt, seed), phase0 + produced, n)
            pieces.append(pcm)
            yield AudioChunk(index=index, start_sample=produced, pcm=pcm)
            produced += n
            index += 1
            if endless and control.stop_requested:
                break
        audio = pieces.read()
        result = GenerationResult(audio, self.sample_rate, self._metadata(settings, seed, nfe))
        yield StreamFinished(result, cancelled=cancelled)

    def generate(self, settings: GenerationSettings | None = None, control: StreamControl | None = None,
                 **kwargs: object) -> GenerationResult:
        settings = settings or GenerationSettings(**kwargs)  # type: ignore[arg-type]
        for event in self.stream(settings, control):
            if isinstance(event, StreamFinished):
                if event.cancelled:
                    raise GenerationCancelled("cancelled")
                return event.result
        raise AssertionError("stream ended without StreamFinished")

    def stream_inpaint(self, audio: np.ndarray, start_s: float, end_s: float, settings: GenerationSettings,
                       control: StreamControl | None = None) -> Iterator[Event]:
        """Like the core: [start, end) regenerated, `inpaint_leak` added over `crossfade_s` just
        outside both ends (where the core crossfades), every other sample unchanged."""
        audio = np.asarray(audio, np.float32)
        s, e = int(round(start_s * self.sample_rate)), int(round(end_s * self.sample_rate))
        if not 0 <= s < e <= len(audio):
            raise PipelineError(f"region {start_s:.2f}-{end_s:.2f} s is outside the clip")
        region = GenerationSettings(**{**settings.to_dict(), "seconds": (e - s) / self.sample_rate})
        for event in self.stream(region, control):
            if not isinstance(event, StreamFinished):
                if isinstance(event, Progress):
                    yield event
                continue
            fade = round(self.crossfade_s * self.sample_rate)
            out = audio.copy()
            out[max(0, s - fade) : e + fade] += np.float32(self.inpaint_leak)
            out[s:e] = event.result.audio[: e - s]
            self.last_inpaint = out
            meta = {**event.result.metadata, "region_s": [start_s, end_s]}
            yield StreamFinished(GenerationResult(out, self.sample_rate, meta), event.cancelled)


class SoakPipeline(FakePipeline):
    """The stand-in of CI's 2-minute soak (packaging/ci_soak.sh): 10 steps x 30 ms slept per 1 s chunk,
    i.e. ~3x real time like a model with headroom, so the lead gate keeps ~0.7 s queued (1.5 x 0.3 s
    + 0.25 s) and a gap needs the GUI thread to stall that long; sleeping costs no CPU, so the soak
    measures the app (memory, refcounts, feeding the device), not the machine's speed."""

    step_delay = 0.03
