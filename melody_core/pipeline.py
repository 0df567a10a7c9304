"""`MelodyPipeline`: text / audio prompt -> music (Fig. 1), continuation, inpainting and streaming.

    prompt / style audio -> MuLan -> RVQ -> 12 prefix tokens -> semantic LM (25 Hz tokens)
        -> DPD windows (CFG, angle schedule) -> latents (250 Hz) -> VAE decoder -> 24 kHz PCM

Public API (plain data in and out, see `pipeline_types`):
- `MelodyPipeline.load(bundle=None, device="auto", threads=None, ...)`
- `generate(prompt | settings, control=None, *, progress=None, **settings fields) -> GenerationResult`
- `continue_(audio, seconds, settings=None, control=None, ...) -> GenerationResult` (input kept exactly)
- `inpaint(audio, start_s, end_s, settings=None, control=None, ...) -> GenerationResult`
- `stream(settings | prompt, control=None, endless=False, continue_from=None, ...)` -> iterator of
  `Progress`, `AudioChunk` and finally `StreamFinished`.
Any length: the first window, then continuation windows (`_pipeline_plan` has the geometry: L = 10 s
windows, M = 4 chunks, continuation hop 630 frames = 63 whole tokens, ⌈T/M⌉ steps per continuation
window). `GenerationSettings.start`: "window" (paper, default) denoises the whole first window in T
steps — the first audio needs 250 LM tokens + T steps on 2500 frames; "progressive" *(our choice)*
grows the first window chunk by chunk, so the first audio needs 62 tokens + T steps on 620 frames
(measured ~5x lower time to first sound on a 2-core CPU; use it for live playback). The
DESIGN's "staggered start" (`diffusion.staggered_chunks`) cannot lower it with this DPD: every step
still runs on all L frames and chunk 0 is clean after the same T steps (and T + (M − 1)⌈T/M⌉ NFEs
in all), so it is not used.
Streaming, decoding and the equality of streamed and non-streamed audio: `_pipeline_decode`.
Sampling engine (LM + DPD, progress, cancellation, threads): `_pipeline_engine`. Continuation /
inpainting of user audio: `_pipeline_jobs`.

Determinism: every random draw comes from generators seeded from the job seed (noise on the CPU,
LM sampling on the model device), so the same seed, settings, bundle and device (and thread
count) give identical samples whatever the global RNG state.

Latent scale: the DPD works on `latent_scale` × VAE latents (`melody_core.train.dpd`), read from
the bundle meta `latent_scale` (written by `melody train export`) or a `latent_scale` field of the
DPD config, default 1.0.

Precision / speed options of `load` *(our choice)*: fp32 by default (`precision="auto"`); on CUDA
"tf32" (TensorFloat-32 matmuls) or "bf16"/"fp16" autocast for the DPD only — the VAE decoder stays
fp32 (streamed = full decode to 1e-4 needs it). bf16 is not the default because the SRU's CPU path
is not autocast-safe (measure it with packaging/gpu_bench.sh first). `compile=True` wraps the DPD in
`torch.compile` (for the paper-size model on CUDA).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from melody_core import SAMPLE_RATE, __version__
from melody_core._pipeline_decode import StreamDecoder, decode_range
from melody_core._pipeline_engine import FramesFinal, Stats, check_cancel
from melody_core._pipeline_jobs import (
    TOKEN_SAMPLES,
    Job,
    continuation_job,
    generation_job,
    inpaint_job,
    mix_inpaint,
)
from melody_core._pipeline_plan import START_MODES, Layout
from melody_core.diffusion import SCHEDULES
from melody_core.pipeline_types import (
    AudioChunk,
    GenerationCancelled,
    GenerationResult,
    GenerationSettings,
    PipelineError,
    Progress,
    StreamControl,
    StreamFinished,
)

BUNDLE_ENV = "MELODY_BUNDLE"  # environment variable naming the default bundle folder
DEFAULT_BUNDLE = Path(__file__).resolve().parents[1] / "resources" / "models" / "melody-tiny"
REQUIRED = ("vae", "dpd", "lm", "mulan")  # components generation needs; ssl + kmeans: continue/inpaint
MIN_SECONDS, MAX_SECONDS = 0.5, 600.0  # generated length limits (600 s = load_audio's limit)
MIN_SOURCE_SECONDS = 0.1  # shortest clip accepted for continue / inpaint
MIN_REGION_SECONDS = 0.02  # shortest inpainting region
MAX_STEPS = 1000
MAX_GUIDANCE = 20.0
DEFAULT_LM_GUIDANCE = 3.0  # LM CFG scale used when a setting leaves it None and the LM has a null prefix
MAX_TEMPERATURE = 10.0
# DPD precision: autocast dtype (None = fp32 weights and activations); "tf32" = fp32 with TensorFloat-32
# matmuls/convolutions (CUDA only; sets the process-wide torch.backends flags)
PRECISIONS = {"fp32": None, "tf32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
EMPTY_PROMPT = "give a text prompt or a style audio file (both are empty)"
STRING_TAGS = ("prompt", "model_hash", "mode", "device", "software")  # file tags stored as plain text

Event = Progress | AudioChunk | StreamFinished
ProgressFn = Callable[[Progress], None]


def default_bundle_path() -> Path:
    """$MELODY_BUNDLE, else resources/models/melody-tiny next to the package."""
    env = os.environ.get(BUNDLE_ENV)
    return Path(env) if env else DEFAULT_BUNDLE


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise PipelineError(message)


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def validate_settings(s: GenerationSettings, need_prompt: bool = True, check_length: bool = True) -> None:
    """Raise PipelineError (one line) for settings no generation should start with."""
    has_prompt = bool((s.prompt or "").strip()) or bool(s.style_audio_path)
    _check(not need_prompt or has_prompt, EMPTY_PROMPT)
    if check_length:
        _check(_finite(s.seconds) and MIN_SECONDS <= s.seconds <= MAX_SECONDS,
               f"length must be between {MIN_SECONDS:g} and {MAX_SECONDS:g} seconds, got {s.seconds}")
    _check(isinstance(s.steps, int) and 1 <= s.steps <= MAX_STEPS,
           f"steps must be 1..{MAX_STEPS}, got {s.steps}")
    cs = s.continuation_steps
    _check(cs is None or (isinstance(cs, int) and 1 <= cs <= MAX_STEPS),
           f"continuation steps must be 1..{MAX_STEPS}, got {cs}")
    _check(_finite(s.guidance) and 0 <= s.guidance <= MAX_GUIDANCE,
           f"guidance must be between 0 and {MAX_GUIDANCE:g}, got {s.guidance}")
    lg = s.lm_guidance
    _check(lg is None or (_finite(lg) and 0 <= lg <= MAX_GUIDANCE),
           f"LM guidance must be between 0 and {MAX_GUIDANCE:g}, got {lg}")
    _check(s.schedule in SCHEDULES, f"unknown schedule {s.schedule!r} (choose from {', '.join(SCHEDULES)})")
    _check(_finite(s.style_weight) and 0 <= s.style_weight <= 1,
           f"style weight must be in [0, 1], got {s.style_weight}")
    _check(_finite(s.temperature) and 0 <= s.temperature <= MAX_TEMPERATURE,
           f"temperature must be between 0 and {MAX_TEMPERATURE:g}, got {s.temperature}")
    _check(isinstance(s.top_k, int) and s.top_k >= 0, f"top-k must be an integer >= 0, got {s.top_k}")
    _check(_finite(s.top_p) and 0 < s.top_p <= 1, f"top-p must be in (0, 1], got {s.top_p}")
    _check(s.seed is None or (isinstance(s.seed, int) and 0 <= s.seed < 2**63),
           f"seed must be an integer in [0, 2^63), got {s.seed}")
    _check(s.start in START_MODES, f"unknown start mode {s.start!r} (choose from {', '.join(START_MODES)})")


def file_metadata(metadata: dict[str, Any]) -> dict[str, str]:
    """Flat string tags for an audio file (`audio.save_audio`): prompt, seed, mode, model hash,
    device, NFE, the settings as JSON (without the prompt, which is its own tag), and the
    continue/inpaint facts; `parse_file_metadata` inverts it for every key it writes."""
    keys = ("prompt", "seed", "mode", "model_hash", "device", "nfe", "settings", "seconds",
            "region_s", "crossfade_s", "continued_from_s", "prompt_changes")
    tags = {"software": f"MeLoDy Studio {__version__}"}
    for k in keys:
        if k in metadata and metadata[k] not in (None, []):
            v = metadata[k]
            if k == "settings" and isinstance(v, dict):  # the prompt has its own tag (WAV tags are ~2 KB)
                v = {name: x for name, x in v.items() if name != "prompt"}
            tags[k] = v if k in STRING_TAGS and isinstance(v, str) else json.dumps(v, sort_keys=True)
    return tags


def parse_file_metadata(tags: dict[str, str]) -> dict[str, Any]:
    """Inverse of `file_metadata` (JSON values decoded, text tags kept)."""
    return {k: v if k in STRING_TAGS else json.loads(v) for k, v in tags.items()}


def _as_wav(audio: Any, sample_rate: int, what: str) -> np.ndarray:
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
    _check(x.dim() == 1 and x.numel() > 0, f"{what} must be a non-empty mono (T,) or (C, T) array")
    _check(bool(torch.isfinite(x).all()), f"{what} contains NaN or infinite samples")
    if sample_rate != SAMPLE_RATE:
        x = resample(x, sample_rate, SAMPLE_RATE)
    return np.ascontiguousarray(x.numpy())


class MelodyPipeline:
    """A loaded bundle ready to generate. Attributes the app relies on: `model_hash` (str, full
    content hash), `device` (str), `sample_rate` (24000)."""

    sample_rate = SAMPLE_RATE

    def __init__(self, bundle: Any, threads: int, lm_threads: int | None, precision: str = "auto",
                 compile: bool = False) -> None:
        self.bundle = bundle
        self.torch_device: torch.device = bundle.device
        self.device = str(bundle.device)
        self.model_hash: str = bundle.model_hash
        self.short_hash: str = bundle.hash
        self.threads, self.lm_threads = threads, lm_threads
        m = bundle.models
        self.vae, self.dpd, self.lm, self.mulan = m["vae"], m["dpd"], m["lm"], m["mulan"]
        self.ssl, self.kmeans = m.get("ssl"), m.get("kmeans")
        cfg = self.dpd.config
        try:
            self.layout = Layout(cfg.train_length, cfg.train_chunks)
        except ValueError as exc:
            raise PipelineError(f"DPD window of this bundle is unusable: {exc}") from None
        scale = bundle.meta.get("latent_scale", getattr(cfg, "latent_scale", 1.0))
        _check(_finite(scale) and scale > 0, f"bundle latent_scale must be a positive number, got {scale!r}")
        self.latent_scale = float(scale)
        self.context_tokens = max(self.lm.config.window, (self.layout.length - self.layout.hop) // 10) + 1
        self.mulan_clip_samples = round(self.mulan.config.clip_seconds * SAMPLE_RATE)
        precision = "fp32" if precision == "auto" else precision
        _check(precision in PRECISIONS, f"precision must be one of auto, {', '.join(PRECISIONS)}")
        if precision == "tf32" and self.torch_device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.precision = precision
        self._dpd_net = torch.compile(self.dpd) if compile else self.dpd

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, bundle: str | os.PathLike | None = None, device: str = "auto", threads: int | None = None,
             lm_threads: int | None = 1, precision: str = "auto", compile: bool = False,
             verify_hash: bool = True) -> MelodyPipeline:
        """Load a bundle folder (None: `default_bundle_path()`) on `device` ("auto": CUDA, then MPS,
        then CPU). `threads`: torch threads for the DPD/VAE (None: all cores; the app passes one
        less to keep a core for the GUI); `lm_threads`: threads while sampling LM tokens (1 is
        fastest for batch-1 decoding on a CPU; None: same as `threads`)."""
        from melody_core.checkpoint import BundleError, load_bundle
        from melody_core.config import ConfigError, MelodyConfig
        from melody_core.runtime import resolve_device, tune_malloc

        path = Path(bundle) if bundle is not None else default_bundle_path()
        if bundle is None and not path.exists():
            raise PipelineError(f"no bundled model at {path}; pass a bundle folder (--bundle DIR) "
                                f"or set {BUNDLE_ENV}")
        try:
            dev = resolve_device(device)
        except ValueError as exc:
            raise PipelineError(str(exc)) from None
        n_threads = threads if threads is not None else (os.cpu_count() or 1)
        _check(isinstance(n_threads, int) and n_threads >= 1, f"threads must be >= 1, got {threads}")
        torch.set_num_threads(n_threads)
        if torch.device(dev).type == "cpu":  # as the CLI / app entry points do (`prepare_environment`):
            tune_malloc()  # library callers too get no page faults per DPD step (same outputs, ~-12 %)
        try:
            loaded = load_bundle(path, dev, verify_hash=verify_hash)
        except BundleError as exc:
            raise PipelineError(str(exc)) from None
        missing = [c for c in REQUIRED if c not in loaded.models]
        _check(not missing, f"{path}: bundle lacks component(s) {', '.join(missing)} needed to generate")
        try:
            MelodyConfig(components=dict(loaded.configs)).validate()
        except ConfigError as exc:
            raise PipelineError(f"{path}: {exc}") from None
        pipe = cls(loaded, n_threads, lm_threads, precision, compile)
        with torch.inference_mode():
            pipe.mulan.embed_text(["warm up"])  # loads a frozen pretrained text tower now, not mid-generation
        return pipe

    # ------------------------------------------------------------------ conditioning
    def dpd_forward(self, z: Tensor, delta: Tensor, tokens: Tensor | None, uncond: Tensor | None,
                    context: Any = None, **guidance: float) -> Tensor:
        """The DPD network contract (diffusion.DPDNetwork), under autocast when precision asks;
        `context` from `dpd_prepare` replaces tokens / uncond (DualPathDiffusion.prepare); `guidance`:
        rho of a guidance-distilled DPD."""
        kw = dict(guidance) if context is None else {"context": context}
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return self._dpd_net(z, delta, tokens, uncond, **kw)
        with torch.autocast(self.torch_device.type, dtype=dtype):
            return self._dpd_net(z, delta, tokens, uncond, **kw).float()

    def dpd_prepare(self, tokens: Tensor | None, uncond: Tensor | None, rows: int, length: int,
                    shared_input: bool = False, **guidance: float) -> Any:
        """Per-window DPD context (`DualPathDiffusion.prepare`), or None where the network has none
        or is compiled (then `dpd_forward` takes tokens / uncond)."""
        prepare = getattr(self.dpd, "prepare", None)
        if prepare is None or self._dpd_net is not self.dpd:
            return None
        dtype = PRECISIONS[self.precision]
        with torch.inference_mode():
            if dtype is None:
                return prepare(tokens, uncond, rows, length, shared_input, **guidance)
            with torch.autocast(self.torch_device.type, dtype=dtype):  # as the forward will run
                return prepare(tokens, uncond, rows, length, shared_input, **guidance)

    def condition(self, prompt: str | None, style: Tensor | None, style_weight: float) -> Tensor:
        """MuLan text and/or audio embedding, blended ((1 − w) text + w audio) -> RVQ -> (1, 12) tokens."""
        text = (prompt or "").strip() or None
        _check(text is not None or style is not None, EMPTY_PROMPT)
        with torch.inference_mode():
            t = self.mulan.embed_text([text]) if text is not None else None
            a = None if style is None else self.mulan.embed_audio(style.to(self.torch_device).unsqueeze(0))
            return self.mulan.conditioning_tokens(self.mulan.blend(t, a, style_weight))  # (1, n_prefix)

    def automation(self, s: GenerationSettings, style: Tensor | None, stats: Stats) -> Callable:
        """Handler of `StreamControl` updates between windows: new prefix tokens, or None if unchanged."""
        state = {"prompt": s.prompt, "style": style, "style_weight": s.style_weight}

        def update(updates: dict[str, Any]) -> Tensor | None:
            if "prompt" in updates:
                state["prompt"] = updates["prompt"]
            if "style_audio_path" in updates:
                path = updates["style_audio_path"]
                state["style"] = torch.from_numpy(_as_wav(path, SAMPLE_RATE, "style audio")) if path else None
            if "style_weight" in updates:
                _check(_finite(updates["style_weight"]) and 0 <= updates["style_weight"] <= 1,
                       "style weight must be in [0, 1]")
                state["style_weight"] = updates["style_weight"]
            if not (state["prompt"] or "").strip() and state["style"] is None:
                return None  # an empty prompt without style keeps the previous conditioning
            with stats.timed("condition"):
                return self.condition(state["prompt"], state["style"], state["style_weight"])

        return update

    # ------------------------------------------------------------------ settings
    def _settings(
        self, settings: GenerationSettings | str | None, options: dict[str, Any], need_prompt: bool = True,
        check_length: bool = True,
    ) -> tuple[GenerationSettings, Tensor | None, int]:
        """Merge settings and keyword overrides, validate, load the style audio, pick the seed."""
        base = settings if isinstance(settings, GenerationSettings) else GenerationSettings(prompt=settings)
        style_audio = options.pop("style_audio", None)
        style_array = None
        if isinstance(style_audio, str | os.PathLike):
            options["style_audio_path"] = str(style_audio)
        elif style_audio is not None:
            style_array = style_audio
        try:
            s = dataclasses.replace(base, **options)
        except TypeError as exc:
            raise PipelineError(f"unknown generation option: {exc}") from None
        validate_settings(s, need_prompt and style_array is None, check_length)
        style = None
        if style_array is not None:
            style = torch.from_numpy(_as_wav(style_array, SAMPLE_RATE, "style audio"))
        elif s.style_audio_path:
            style = torch.from_numpy(_as_wav(s.style_audio_path, SAMPLE_RATE, "style audio"))
        s = dataclasses.replace(s, lm_guidance=self.lm_guidance(s.lm_guidance))
        seed = s.seed if s.seed is not None else secrets.randbelow(2**31)
        return s, style, seed

    def lm_guidance(self, asked: float | None) -> float:
        """The LM guidance scale to use: `asked`, or the bundle's default for None. Guidance (!= 1)
        needs an LM trained with the null prefix (`LMConfig.prefix_dropout` > 0)."""
        trained = self.lm.config.prefix_dropout > 0
        if asked is None:
            return DEFAULT_LM_GUIDANCE if trained else 1.0
        _check(asked == 1.0 or trained,
               "this model's semantic LM was trained without the null prefix: LM guidance must be 1 (off)")
        return float(asked)

    def _source(self, audio: Any, sample_rate: int) -> np.ndarray:
        wav = _as_wav(audio, sample_rate, "audio")
        seconds = len(wav) / SAMPLE_RATE
        _check(seconds >= MIN_SOURCE_SECONDS,
               f"audio is too short ({seconds:.3f} s; need {MIN_SOURCE_SECONDS:g} s)")
        _check(seconds <= MAX_SECONDS, f"audio is too long ({seconds:.1f} s; limit {MAX_SECONDS:g} s)")
        return wav

    # ------------------------------------------------------------------ public API
    def generate(
        self, prompt: GenerationSettings | str | None = None, control: StreamControl | None = None, *,
        settings: GenerationSettings | None = None, progress: ProgressFn | None = None, **options: Any,
    ) -> GenerationResult:
        """Generate `seconds` of audio. `prompt` is a text prompt or a GenerationSettings; keyword
        options are GenerationSettings fields (`style_audio` = a path or a 24 kHz array). Raises
        PipelineError for bad input, GenerationCancelled when `control` is cancelled."""
        if settings is not None and isinstance(prompt, str):
            options["prompt"] = prompt
        s, style, seed = self._settings(settings if settings is not None else prompt, options)
        return self._finish(generation_job(self, s, seed, style, control, endless=False), progress)

    def continue_(self, audio: Any, seconds: float = 10.0, settings: GenerationSettings | None = None,
                  control: StreamControl | None = None, *, progress: ProgressFn | None = None,
                  sample_rate: int = SAMPLE_RATE, **options: Any) -> GenerationResult:
        """`audio` (path, or (T,) array at `sample_rate`) followed by `seconds` of continuation; the
        input samples are returned unchanged as the prefix."""
        s, style, seed = self._settings(settings, {**options, "seconds": seconds}, need_prompt=False)
        wav = self._source(audio, sample_rate)
        return self._finish(continuation_job(self, wav, s, seed, style, control, endless=False), progress)

    def inpaint(self, audio: Any, start_s: float, end_s: float, settings: GenerationSettings | None = None,
                control: StreamControl | None = None, *, progress: ProgressFn | None = None,
                sample_rate: int = SAMPLE_RATE, **options: Any) -> GenerationResult:
        """Regenerate [start_s, end_s) of `audio`; samples more than `INPAINT_CROSSFADE_S` outside the
        region are returned unchanged."""
        s, style, seed = self._settings(settings, options, need_prompt=False, check_length=False)
        wav = self._source(audio, sample_rate)
        dur = len(wav) / SAMPLE_RATE
        _check(_finite(start_s) and _finite(end_s), "region bounds must be finite numbers")
        _check(0 <= start_s < end_s <= dur + 0.5 / SAMPLE_RATE,
               f"region {start_s:g}-{end_s:g} s is outside the clip (0-{dur:.3f} s) or empty")
        _check(end_s - start_s >= MIN_REGION_SECONDS, f"region is shorter than {MIN_REGION_SECONDS:g} s")
        a, b = round(start_s * SAMPLE_RATE), min(len(wav), round(end_s * SAMPLE_RATE))
        return self._finish(inpaint_job(self, wav, a, b, s, seed, style, control), progress)

    def stream(self, settings: GenerationSettings | str | None = None, control: StreamControl | None = None,
               endless: bool = False, continue_from: Any = None, **options: Any) -> Iterator[Event]:
        """Generate while yielding `Progress` events and `AudioChunk`s as soon as each piece is
        decodable, then one `StreamFinished` (also after a cancel). With the same seed and settings
        the concatenated chunks equal `generate()` (or, with `continue_from`, the new part of
        `continue_()`). `endless`: keep going until `control.stop_after_current()` (or cancel).
        Prompt/style updates through `control` apply from the next window. Input is validated
        here, before the first event."""
        control = control or StreamControl()
        if continue_from is None:
            s, style, seed = self._settings(settings, options, check_length=not endless)
            job = generation_job(self, s, seed, style, control, endless)
        else:
            s, style, seed = self._settings(settings, options, need_prompt=False, check_length=not endless)
            wav = self._source(continue_from, SAMPLE_RATE)
            job = continuation_job(self, wav, s, seed, style, control, endless)
        return self._stream(job, control)

    # ------------------------------------------------------------------ internals
    def _finish(self, job: Job, progress: ProgressFn | None) -> GenerationResult:
        """Run a job to the end, decode its output range in one pass and build the result."""
        for event in job.engine.run():
            if progress is not None and isinstance(event, Progress):
                progress(event)
        end = job.decode_end
        assert end is not None and job.out_samples is not None
        with job.stats.timed("decode"):
            pcm = decode_range(self.vae, job.timeline.z, job.decode_first, end, job.context_end,
                               self.latent_scale)
        offset = job.out_start - job.decode_first * self.vae.hop
        audio = pcm[0, offset : offset + job.out_samples].float().cpu().numpy()
        if progress is not None:
            progress(Progress("decode", 1, 1, job.stats.windows - 1))
        if job.mode == "continue":
            assert job.source is not None
            audio = np.concatenate([job.source, audio])
        elif job.mode == "inpaint":
            audio = mix_inpaint(job, audio)
        return GenerationResult(audio, SAMPLE_RATE, self._metadata(job, len(audio)))

    def _stream(self, job: Job, control: StreamControl) -> Iterator[Event]:
        decoder = StreamDecoder(self.vae, self.latent_scale, job.decode_first, job.decode_end)
        pieces: list[np.ndarray] = []
        produced, final = 0, 0
        limit = 0 if job.out_samples is None else job.out_samples
        cancelled = False

        def emit(parts: Iterator[tuple[int, np.ndarray]]) -> Iterator[AudioChunk]:
            nonlocal produced
            while True:
                check_cancel(control)
                with job.stats.timed("decode"):
                    part = next(parts, None)
                if part is None:
                    return
                first_frame, pcm = part
                skip = max(0, job.out_start - first_frame * self.vae.hop)  # before the output start
                take = len(pcm) - skip if job.out_samples is None else min(len(pcm) - skip, limit - produced)
                pcm = pcm[skip : skip + max(0, take)]
                if len(pcm):
                    pieces.append(pcm)
                    yield AudioChunk(len(pieces) - 1, produced, pcm)
                    produced += len(pcm)

        try:
            for event in job.engine.run():
                if isinstance(event, FramesFinal):
                    final = event.end
                    yield from emit(decoder.ready(job.timeline.z, final))
                else:
                    yield event
            yield from emit(decoder.finish(job.timeline.z, final))
        except GenerationCancelled:
            cancelled = True
        audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        meta = self._metadata(job, len(audio), streamed=True)
        yield StreamFinished(GenerationResult(audio, SAMPLE_RATE, meta), cancelled=cancelled)

    def _metadata(self, job: Job, n_samples: int, streamed: bool = False) -> dict[str, Any]:
        st = job.stats
        return {
            "mode": job.mode,
            "prompt": job.settings.prompt,
            "seed": job.seed,
            "settings": {**job.settings.to_dict(), "seed": job.seed},
            "model_hash": self.model_hash,
            "device": self.device,
            "nfe": st.lm_tokens + st.dpd_nfe,  # Table 3: LM tokens + guided DPD evaluations
            "nfe_lm": st.lm_tokens,
            "nfe_dpd": st.dpd_nfe,
            "dpd_network_rows": st.dpd_rows,
            "windows": st.windows,
            "seconds": n_samples / SAMPLE_RATE,
            "sample_rate": SAMPLE_RATE,
            "timings": {k: round(v, 4) for k, v in st.seconds.items()},
            "window_frames": self.layout.length,
            "hop_frames": self.layout.hop,
            "latent_scale": self.latent_scale,
            "precision": self.precision,
            "threads": self.threads,
            "streamed": streamed,
            "prompt_changes": st.prompt_changes,
            **job.extra,
        }


__all__ = ["MelodyPipeline", "default_bundle_path", "file_metadata", "parse_file_metadata",
           "validate_settings", "TOKEN_SAMPLES"]
