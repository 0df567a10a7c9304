"""Input checks of the generation API: settings, source audio and regions. Every failure is a
`PipelineError` with a one-line message (the CLI prints it as `error: ...`, the app shows it)."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch
from torch import Tensor

from melody_core import SAMPLE_RATE
from melody_core.diffusion import SCHEDULES
from melody_core.generation.plan import START_MODES
from melody_core.generation.types import GenerationSettings, PipelineError
from melody_core.models.controls import BPM_RANGE, KEY_EXAMPLES, parse_bpm, parse_key

MIN_SECONDS, MAX_SECONDS = 0.5, 600.0  # generated length limits (600 s = load_audio's limit)
MIN_SOURCE_SECONDS = 0.1  # shortest clip accepted for continue / inpaint
MIN_REGION_SECONDS = 0.02  # shortest inpainting region
MAX_STEPS = 1000
MAX_GUIDANCE = 20.0
MAX_TEMPERATURE = 10.0
EMPTY_PROMPT = "give a text prompt or a style audio file (both are empty)"


def check(ok: bool, message: str) -> None:
    if not ok:
        raise PipelineError(message)


def finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def validate_settings(s: GenerationSettings, need_prompt: bool = True, check_length: bool = True) -> None:
    """Raise PipelineError (one line) for settings no generation should start with."""
    has_prompt = bool((s.prompt or "").strip()) or bool(s.style_audio_path)
    check(not need_prompt or has_prompt, EMPTY_PROMPT)
    if check_length:
        check(finite(s.seconds) and MIN_SECONDS <= s.seconds <= MAX_SECONDS,
              f"length must be between {MIN_SECONDS:g} and {MAX_SECONDS:g} seconds, got {s.seconds}")
    check(isinstance(s.steps, int) and 1 <= s.steps <= MAX_STEPS,
          f"steps must be 1..{MAX_STEPS}, got {s.steps}")
    cs = s.continuation_steps
    check(cs is None or (isinstance(cs, int) and 1 <= cs <= MAX_STEPS),
          f"continuation steps must be 1..{MAX_STEPS}, got {cs}")
    check(finite(s.guidance) and 0 <= s.guidance <= MAX_GUIDANCE,
          f"guidance must be between 0 and {MAX_GUIDANCE:g}, got {s.guidance}")
    lg = s.lm_guidance
    check(lg is None or (finite(lg) and 0 <= lg <= MAX_GUIDANCE),
          f"LM guidance must be between 0 and {MAX_GUIDANCE:g}, got {lg}")
    check(s.schedule in SCHEDULES, f"unknown schedule {s.schedule!r} (choose from {', '.join(SCHEDULES)})")
    check(finite(s.style_weight) and 0 <= s.style_weight <= 1,
          f"style weight must be in [0, 1], got {s.style_weight}")
    check(finite(s.temperature) and 0 <= s.temperature <= MAX_TEMPERATURE,
          f"temperature must be between 0 and {MAX_TEMPERATURE:g}, got {s.temperature}")
    check(isinstance(s.top_k, int) and s.top_k >= 0, f"top-k must be an integer >= 0, got {s.top_k}")
    check(finite(s.top_p) and 0 < s.top_p <= 1, f"top-p must be in (0, 1], got {s.top_p}")
    check(s.seed is None or (isinstance(s.seed, int) and 0 <= s.seed < 2**63),
          f"seed must be an integer in [0, 2^63), got {s.seed}")
    check(s.bpm is None or (finite(s.bpm) and parse_bpm(s.bpm) is not None),
          f"BPM must be a number between {BPM_RANGE[0]:g} and {BPM_RANGE[1]:g}, got {s.bpm}")
    check(s.key is None or (isinstance(s.key, str) and parse_key(s.key) is not None),
          f"unknown key {s.key!r} ({KEY_EXAMPLES})")
    check(s.start in START_MODES, f"unknown start mode {s.start!r} (choose from {', '.join(START_MODES)})")


def as_wav(audio: Any, sample_rate: int, what: str) -> np.ndarray:
    """Path / array / tensor -> (T,) float32 at 24 kHz (mono mixdown of (C, T))."""
    from melody_core.audio import AudioError, load_audio, resample

    if isinstance(audio, str | os.PathLike):
        try:
            return load_audio(audio).numpy()
        except AudioError as exc:
            raise PipelineError(str(exc)) from None
    array = np.asarray(audio.detach().cpu() if isinstance(audio, Tensor) else audio)
    x = torch.as_tensor(array, dtype=torch.float32)
    if x.dim() == 2:
        x = x.mean(0)  # (C, T) -> (T,)
    check(x.dim() == 1 and x.numel() > 0, f"{what} must be a non-empty mono (T,) or (C, T) array")
    check(bool(torch.isfinite(x).all()), f"{what} contains NaN or infinite samples")
    if sample_rate != SAMPLE_RATE:
        x = resample(x, sample_rate, SAMPLE_RATE)
    return np.ascontiguousarray(x.numpy())


def source_audio(audio: Any, sample_rate: int) -> np.ndarray:
    """The clip to continue / inpaint as (T,) float32 at 24 kHz, within the length limits."""
    wav = as_wav(audio, sample_rate, "audio")
    seconds = len(wav) / SAMPLE_RATE
    check(seconds >= MIN_SOURCE_SECONDS,
          f"audio is too short ({seconds:.3f} s; need {MIN_SOURCE_SECONDS:g} s)")
    check(seconds <= MAX_SECONDS, f"audio is too long ({seconds:.1f} s; limit {MAX_SECONDS:g} s)")
    return wav


def region_samples(wav: np.ndarray, start_s: float, end_s: float) -> tuple[int, int]:
    """Inpainting region [start_s, end_s) of `wav` -> samples [a, b)."""
    dur = len(wav) / SAMPLE_RATE
    check(finite(start_s) and finite(end_s), "region bounds must be finite numbers")
    check(0 <= start_s < end_s <= dur + 0.5 / SAMPLE_RATE,
          f"region {start_s:g}-{end_s:g} s is outside the clip (0-{dur:.3f} s) or empty")
    check(end_s - start_s >= MIN_REGION_SECONDS, f"region is shorter than {MIN_REGION_SECONDS:g} s")
    return round(start_s * SAMPLE_RATE), min(len(wav), round(end_s * SAMPLE_RATE))
