"""Job builders: turn validated settings (+ source audio) into an `Engine` over a latent timeline of
a `ModelSet`, and say which samples of the decoded timeline are the output.

Seed: the settings a job gets carry the seed (`settings.seed` is never None here); the LM and noise
generators are seeded from it (`sub_seed`), and the metadata reports it from the settings.

Sample coordinates: a job's timeline starts at sample `origin` of the source clip (0 for a fresh
generation); timeline frame f covers timeline samples [96 f, 96 f + 96).

Source audio (continue / inpaint) *(our choices)*:
- Only a segment around the point of interest is analysed: from `context_tokens` tokens before it
  (the LM's context window or the DPD's kept chunks, whichever is longer, + 1) to as many after
  it, on the 960-sample token grid of the clip, zero-padded to whole tokens. Its VAE posterior mean
  (× latent scale) gives the kept latents, SSL features + k-means its semantic tokens.
- Continuation: the latent frames fully inside the clip are kept; the LM restarts after the last
  whole token (tokens are its prompt), so the few frames of a trailing partial token are
  regenerated and hidden under the original samples, which are copied to the output unchanged.
- Inpainting: frames overlapping [start, end) are regenerated, with the tokens covering them
  (LM prompt = the tokens before, tokens after the region kept); the output is the input with
  the decoded region pasted in and `INPAINT_CROSSFADE_S` raised-cosine crossfades just outside
  both ends; every other sample is the input sample.
- Conditioning without a prompt or style file: the MuLan audio embedding of the clip itself (the
  last `clip_seconds` before the continuation point; the analysed segment for inpainting).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from melody_core import FRAMES_PER_TOKEN, LATENT_HOP, SAMPLE_RATE, TOKEN_SAMPLES
from melody_core.generation.decode import crossfade_ramp
from melody_core.generation.engine import Engine, LMJob, Stats, Timeline
from melody_core.generation.models import ModelSet
from melody_core.generation.plan import (
    Window,
    ceil_grid,
    continuation_windows,
    frames_for_samples,
    generation_windows,
    inpaint_windows,
)
from melody_core.generation.types import GenerationSettings, PipelineError, StreamControl
from melody_core.generation.validation import as_wav, check, finite

INPAINT_CROSSFADE_S = 0.05  # seconds of crossfade just outside each end of an inpainted region
ENCODE_BLOCK_TOKENS = 750  # 30 s: longer segments are analysed in blocks (bounded memory)


@dataclass
class Job:
    """Everything a public call needs after the engine has run."""

    mode: str  # "generate" | "continue" | "inpaint"
    settings: GenerationSettings  # with the seed resolved (never None)
    engine: Engine
    stats: Stats
    out_start: int  # first output sample, in timeline samples
    out_samples: int | None  # output length (None = endless stream)
    extra: dict[str, Any] = field(default_factory=dict)  # mode-specific metadata
    source: np.ndarray | None = None  # the source clip (continue / inpaint)
    origin: int = 0  # sample of the source clip where the timeline starts
    region: tuple[int, int] | None = None  # inpainted samples [a, b) of the source clip
    frames: int | None = None  # timeline length when fixed (inpainting): right context of the decode

    @property
    def timeline(self) -> Timeline:
        return self.engine.timeline

    @property
    def decode_first(self) -> int:
        """First timeline frame whose samples are output."""
        return self.out_start // LATENT_HOP

    @property
    def decode_end(self) -> int | None:
        """Timeline frames decoded (the decode's right edge), None while endless."""
        if self.out_samples is None:
            return None
        return math.ceil((self.out_start + self.out_samples) / LATENT_HOP)

    @property
    def context_end(self) -> int | None:
        """The decode's right edge: frames after it are not seen (None while endless)."""
        return self.frames if self.frames is not None else self.decode_end


def sub_seed(seed: int, name: str) -> int:
    """An independent 63-bit seed for one random stream of a job."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:8], "little") >> 1


def _engine(models: ModelSet, s: GenerationSettings, timeline: Timeline,
            windows: Iterator[Window] | list[Window], lm_pos: int, lm_end: int | None, prefix: Tensor,
            control: StreamControl | None, stats: Stats, stoppable: bool,
            on_update: Callable[[dict[str, Any]], Tensor | None] | None = None) -> Engine:
    assert s.seed is not None
    lm_gen = torch.Generator(device=models.device).manual_seed(sub_seed(s.seed, "lm"))
    noise_gen = torch.Generator().manual_seed(sub_seed(s.seed, "noise"))
    lm_guidance = 1.0 if s.lm_guidance is None else s.lm_guidance
    lm_job = LMJob(lm_pos, lm_end, s.temperature, s.top_k, s.top_p, lm_gen, lm_guidance)
    history = stream_history(models) if stoppable else None  # endless: a bounded timeline
    return Engine(models, timeline, windows, lm_job, prefix, noise_gen, s.guidance, s.schedule, control,
                  on_update, stoppable, stats, history)


def stream_history(models: ModelSet) -> int:
    """Frames an endless stream keeps behind its last final frame: everything still read later -- the
    next window's overlap (< one window), the streamed decoder's next piece with its left context
    (2 x VAE context), the LM's prompt on a restart (its token window) -- with a window to spare."""
    lm_frames = models.lm.config.window * FRAMES_PER_TOKEN
    need = max(models.layout.length, 2 * models.vae.context_frames, lm_frames)
    return need + models.layout.length


def automation(models: ModelSet, s: GenerationSettings, style: Tensor | None,
               stats: Stats) -> Callable[[dict[str, Any]], Tensor | None]:
    """Handler of `StreamControl` updates between windows: new prefix tokens, or None if unchanged."""
    state: dict[str, Any] = {"prompt": s.prompt, "style": style, "style_weight": s.style_weight}

    def update(updates: dict[str, Any]) -> Tensor | None:
        if "prompt" in updates:
            state["prompt"] = updates["prompt"]
        if "style_audio_path" in updates:
            path = updates["style_audio_path"]
            state["style"] = torch.from_numpy(as_wav(path, SAMPLE_RATE, "style audio")) if path else None
        if "style_weight" in updates:
            check(finite(updates["style_weight"]) and 0 <= updates["style_weight"] <= 1,
                  "style weight must be in [0, 1]")
            state["style_weight"] = updates["style_weight"]
        if not (state["prompt"] or "").strip() and state["style"] is None:
            return None  # an empty prompt without style keeps the previous conditioning
        with stats.timed("condition"):
            return models.condition(state["prompt"], state["style"], state["style_weight"], s.bpm, s.key)

    return update


def generation_job(models: ModelSet, s: GenerationSettings, style: Tensor | None,
                   control: StreamControl | None, endless: bool) -> Job:
    stats = Stats()
    with stats.timed("condition"):
        prefix = models.condition(s.prompt, style, s.style_weight, s.bpm, s.key)
    out_samples = None if endless else round(s.seconds * SAMPLE_RATE)
    n_frames = None if out_samples is None else frames_for_samples(out_samples, LATENT_HOP)
    chunk_steps = models.layout.chunk_steps(s.steps, s.continuation_steps)
    windows = generation_windows(models.layout, n_frames, s.steps, chunk_steps, s.start)
    timeline = Timeline(models.dpd.config.d_latent, models.device)
    on_update = automation(models, s, style, stats)
    engine = _engine(models, s, timeline, windows, 0, None, prefix, control, stats, endless, on_update)
    return Job("generate", s, engine, stats, 0, out_samples)


def continuation_job(models: ModelSet, wav: np.ndarray, s: GenerationSettings,
                     style: Tensor | None, control: StreamControl | None, endless: bool) -> Job:
    stats = Stats()
    n_src = len(wav)
    whole_tokens = n_src // TOKEN_SAMPLES
    origin = max(0, whole_tokens - models.context_tokens) * TOKEN_SAMPLES
    z, tokens = analyse_segment(models, wav, origin, n_src, stats)
    kept_frames, kept_tokens = (n_src - origin) // LATENT_HOP, whole_tokens - origin // TOKEN_SAMPLES
    timeline = Timeline(models.dpd.config.d_latent, models.device, z[:, :kept_frames],
                        tokens[:, :kept_tokens])
    with stats.timed("condition"):
        if s.prompt or style is not None:
            prefix = models.condition(s.prompt, style, s.style_weight, s.bpm, s.key)
        else:
            tail = wav[max(0, n_src - models.mulan_clip_samples) :]
            prefix = models.condition(None, torch.from_numpy(tail), 1.0, s.bpm, s.key)
    out_samples = None if endless else round(s.seconds * SAMPLE_RATE)
    n_frames = None if out_samples is None else frames_for_samples(n_src - origin + out_samples, LATENT_HOP)
    chunk_steps = models.layout.chunk_steps(s.steps, s.continuation_steps)
    windows = continuation_windows(models.layout, kept_tokens * FRAMES_PER_TOKEN, n_frames, chunk_steps)
    on_update = automation(models, s, style, stats)
    engine = _engine(models, s, timeline, windows, kept_tokens, None, prefix, control, stats, endless,
                     on_update)
    extra = {"source_samples": n_src, "continued_from_s": n_src / SAMPLE_RATE}
    return Job("continue", s, engine, stats, n_src - origin, out_samples, extra, wav, origin)


def inpaint_job(models: ModelSet, wav: np.ndarray, a: int, b: int, s: GenerationSettings,
                style: Tensor | None, control: StreamControl | None) -> Job:
    stats = Stats()
    n_src = len(wav)
    origin = max(0, a // TOKEN_SAMPLES - models.context_tokens) * TOKEN_SAMPLES
    last_token = min(math.ceil(n_src / TOKEN_SAMPLES), math.ceil(b / TOKEN_SAMPLES) + models.context_tokens)
    seg_end = last_token * TOKEN_SAMPLES
    z, tokens = analyse_segment(models, wav, origin, min(seg_end, n_src), stats)
    n_frames = z.shape[1]
    first, last = (a - origin) // LATENT_HOP, math.ceil((b - origin) / LATENT_HOP)
    timeline = Timeline(models.dpd.config.d_latent, models.device, z, tokens)
    with torch.inference_mode():
        timeline.known[first:last] = False
    with stats.timed("condition"):
        if s.prompt or style is not None:
            prefix = models.condition(s.prompt, style, s.style_weight, s.bpm, s.key)
        else:
            clip = wav[origin : min(seg_end, n_src)][: models.mulan_clip_samples]
            prefix = models.condition(None, torch.from_numpy(np.ascontiguousarray(clip)), 1.0, s.bpm, s.key)
    chunk_steps = models.layout.chunk_steps(s.steps, s.continuation_steps)
    windows = inpaint_windows(models.layout, first, last, n_frames, s.steps, chunk_steps)
    token_lo, token_hi = first // FRAMES_PER_TOKEN, ceil_grid(last) // FRAMES_PER_TOKEN
    engine = _engine(models, s, timeline, windows, token_lo, token_hi, prefix, control, stats, False)
    fade = round(INPAINT_CROSSFADE_S * SAMPLE_RATE)
    out_start = max(0, a - fade) - origin
    out_samples = min(n_src, b + fade) - origin - out_start
    extra = {"source_samples": n_src, "region_s": [a / SAMPLE_RATE, b / SAMPLE_RATE],
             "crossfade_s": INPAINT_CROSSFADE_S, "regenerated_frames": [first + origin // LATENT_HOP,
                                                                      last + origin // LATENT_HOP]}
    return Job("inpaint", s, engine, stats, out_start, out_samples, extra, wav, origin, (a, b),
               n_frames)


def analyse_segment(models: ModelSet, wav: np.ndarray, start: int, end: int,
                    stats: Stats) -> tuple[Tensor, Tensor]:
    """Samples [start, end) of the clip (start on the token grid), zero-padded to whole tokens ->
    (DPD-space latents (1, 10 n, D), semantic tokens (1, n)), analysed in blocks of at most
    ENCODE_BLOCK_TOKENS tokens."""
    if models.ssl is None or models.kmeans is None:
        raise PipelineError("this bundle has no SSL/k-means tokenizer: it cannot continue or inpaint audio")
    n_tok = math.ceil((end - start) / TOKEN_SAMPLES)
    seg = np.zeros(n_tok * TOKEN_SAMPLES, np.float32)
    seg[: end - start] = wav[start:end]
    zs, ts = [], []
    with stats.timed("encode"), torch.inference_mode():
        x = torch.from_numpy(seg).to(models.device).unsqueeze(0)  # (1, T)
        for t0 in range(0, n_tok, ENCODE_BLOCK_TOKENS):
            block = x[:, t0 * TOKEN_SAMPLES : (t0 + ENCODE_BLOCK_TOKENS) * TOKEN_SAMPLES]
            mean, _ = models.vae.encode(block)  # (1, frames, D) posterior mean
            zs.append(mean.float() * models.latent_scale)
            feats = models.ssl.extract(block, layer=models.kmeans.config.layer)  # (1, tokens, d)
            ts.append(models.kmeans.assign(feats))
    return torch.cat(zs, dim=1), torch.cat(ts, dim=1)


def mix_inpaint(job: Job, decoded: np.ndarray) -> np.ndarray:
    """THE inpainting crossfade rule (CLI, library and app): the region [a, b) is the decoded audio;
    the `INPAINT_CROSSFADE_S` (50 ms, fewer at the clip's ends) just outside each end are a
    raised-cosine crossfade from the source into the decoded audio (and back); every other sample
    is the source sample, bit for bit. `decoded`: the job's output range of the timeline."""
    assert job.source is not None and job.region is not None
    a, b = job.region
    lo = job.origin + job.out_start  # clip sample of decoded[0]
    out = job.source.copy()
    left, right = a - lo, lo + len(decoded) - b  # crossfade lengths actually available
    ramp_in, ramp_out = crossfade_ramp(left), crossfade_ramp(right)[::-1]
    out[lo:a] = job.source[lo:a] * (1 - ramp_in) + decoded[:left] * ramp_in
    out[a:b] = decoded[left : left + b - a]
    out[b : b + right] = job.source[b : b + right] * (1 - ramp_out) + decoded[left + b - a :] * ramp_out
    return out
