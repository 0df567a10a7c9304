"""Cutting long audio into clips, dropping near-silent ones, setting the level.

*(our choices)*
- A render of T seconds is cut into n = max(1, round(T / target)) equal clips, so every clip of
  a render at least `min_s` long is between `min_s` and ~1.5 x target long (10-30 s with the
  defaults; the models train on 10 s crops). Renders shorter than `min_s` give no clip.
- Cut points get a short fade so clips do not start or end with a click.
- "Near-silent": fewer than `min_active` of the 100 ms frames above `ACTIVE_DBFS`.
- Level: a render is scaled so that its peak sits at a level tied to its dynamics marking
  (`PEAK_DBFS`), which keeps soft / loud comparable across instruments without clipping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from melody_core import SAMPLE_RATE

FADE_S = 0.01  # fade in/out at cut points
FRAME_S = 0.1  # frame length of the activity measure
ACTIVE_DBFS = -45.0  # a frame with RMS above this is "active"
EPS = 1e-12
PEAK_DBFS = {"soft": -9.0, "medium": -4.0, "loud": -1.0}  # render peak level per dynamics marking


@dataclass(frozen=True)
class ClipSpec:
    """How to cut."""

    target_s: float = 20.0  # typical clip length
    min_s: float = 10.0  # shorter renders give no clip
    min_active: float = 0.5  # share of active frames a kept clip needs


def db_to_gain(db: float) -> float:
    return 10.0 ** (db / 20.0)


def normalize_peak(wav: torch.Tensor, peak_dbfs: float) -> torch.Tensor:
    """Scale (T,) so that max |x| is `peak_dbfs` (silence is returned unchanged)."""
    peak = float(wav.abs().max()) if wav.numel() else 0.0
    if peak <= EPS:
        return wav
    return wav * (db_to_gain(peak_dbfs) / peak)


def active_fraction(wav: torch.Tensor, sample_rate: int = SAMPLE_RATE) -> float:
    """Share of FRAME_S frames whose RMS exceeds ACTIVE_DBFS."""
    frame = max(1, int(FRAME_S * sample_rate))
    n = wav.numel() // frame
    if n == 0:
        return 0.0
    frames = wav[: n * frame].reshape(n, frame)  # (frames, samples)
    rms_db = 10.0 * torch.log10(frames.pow(2).mean(dim=1) + EPS)
    return float((rms_db > ACTIVE_DBFS).float().mean())


def _fade(wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
    n = min(int(FADE_S * sample_rate), wav.numel() // 2)
    if n <= 0:
        return wav
    ramp = torch.linspace(0.0, 1.0, n, dtype=wav.dtype)
    out = wav.clone()
    out[:n] *= ramp
    out[-n:] *= ramp.flip(0)
    return out


def cut_clips(
    wav: torch.Tensor, spec: ClipSpec, sample_rate: int = SAMPLE_RATE
) -> list[tuple[int, torch.Tensor]]:
    """(T,) -> [(index, clip)] of the non-silent equal-length pieces (index = position in the
    render, so ids stay stable when a neighbour is dropped)."""
    total = wav.numel()
    if total < spec.min_s * sample_rate:
        return []
    n = max(1, round(total / (spec.target_s * sample_rate)))
    bounds = [math.floor(i * total / n) for i in range(n + 1)]
    out = []
    for i in range(n):
        clip = wav[bounds[i] : bounds[i + 1]]
        if active_fraction(clip, sample_rate) >= spec.min_active:
            out.append((i, _fade(clip, sample_rate)))
    return out
