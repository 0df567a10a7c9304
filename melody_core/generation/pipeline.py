"""`MelodyPipeline`: text / audio prompt -> music (Fig. 1), continuation, inpainting and streaming.

    prompt / style audio -> MuLan -> RVQ -> 12 prefix tokens -> semantic LM (25 Hz tokens)
        -> DPD windows (CFG, angle schedule) -> latents (250 Hz) -> VAE decoder -> 24 kHz PCM

Public API (plain data in and out, see `generation.types`); settings enter one way, as a
`GenerationSettings` (its `seed`, or a random one, is the seed of the job and of the metadata):
- `MelodyPipeline.load(bundle=None, device="auto", threads=None, ...)`; `controls`: the explicit
  controls ("bpm", "key") its LM takes (`GenerationSettings.bpm` / `key`; models.controls)
- `generate(settings, control=None, *, progress=None, style_audio=None) -> GenerationResult`
- `continue_(audio, settings, control=None, *, progress=None, ...) -> GenerationResult`: the input
  followed by `settings.seconds` of continuation (input kept exactly)
- `inpaint(audio, start_s, end_s, settings, control=None, *, progress=None, ...) -> GenerationResult`
- `stream(settings, control=None, endless=False, continue_from=None)` and
  `stream_inpaint(audio, start_s, end_s, settings, control=None)` -> iterators of `Progress`,
  `AudioChunk` (not for inpainting: its output is the whole clip) and finally `StreamFinished`.
Any length: the first window, then continuation windows (`generation.plan` has the geometry: L = 10 s
windows, M = 4 chunks, continuation hop 630 frames = 63 whole tokens, ⌈T/M⌉ steps per continuation
window). `GenerationSettings.start`: "window" (paper, default) denoises the whole first window in T
steps — the first audio needs 250 LM tokens + T steps on 2500 frames; "progressive" *(our choice)*
grows the first window chunk by chunk, so the first audio needs 62 tokens + T steps on 620 frames
(measured ~5x lower time to first sound on a 2-core CPU; use it for live playback). The
DESIGN's "staggered start" (not implemented) cannot lower it with this DPD: every step
still runs on all L frames and chunk 0 is clean after the same T steps (and T + (M − 1)⌈T/M⌉ NFEs
in all), so it is not used.
Streaming, decoding and the equality of streamed and non-streamed audio: `generation.decode`.
Sampling engine (LM + DPD, progress, cancellation, threads): `generation.engine`. Continuation /
inpainting of user audio (and the one inpainting crossfade rule): `generation.jobs`. Input checks:
`generation.validation`; the loaded networks, DPD precision and MuLan conditioning:
`generation.models`.

Determinism: every random draw comes from generators seeded from the job seed (noise on the CPU,
LM sampling on the model device), so the same seed, settings, bundle and device (and thread
count) give identical samples whatever the global RNG state.

Latent scale and precision options of `load`: `generation.models`.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from melody_core import SAMPLE_RATE
from melody_core.checkpoint import Bundle, BundleError, load_bundle
from melody_core.generation.decode import AudioSpool, StreamDecoder, decode_range
from melody_core.generation.engine import FramesFinal, check_cancel
from melody_core.generation.jobs import Job, continuation_job, generation_job, inpaint_job, mix_inpaint
from melody_core.generation.models import ModelSet
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
from melody_core.generation.validation import (
    as_wav,
    check,
    region_samples,
    source_audio,
    validate_settings,
)

BUNDLE_ENV = "MELODY_BUNDLE"  # environment variable naming the default bundle folder
# the bundled model: the checkout's copy (repo, editable install), else the copy that wheels and the frozen
# app carry inside the package (setup.py / packaging/melody-studio.spec put it in melody_core/bundled/)
REPO_BUNDLE = Path(__file__).resolve().parents[2] / "resources" / "models" / "melody-tiny"
PACKAGED_BUNDLE = Path(__file__).resolve().parents[1] / "bundled" / "melody-tiny"
DEFAULT_BUNDLE = REPO_BUNDLE if REPO_BUNDLE.is_dir() else PACKAGED_BUNDLE
REQUIRED = ("vae", "dpd", "lm", "mulan")  # components generation needs; ssl + kmeans: continue/inpaint
DEFAULT_LM_GUIDANCE = 3.0  # LM CFG scale used when a setting leaves it None and the LM has a null prefix

Event = Progress | AudioChunk | StreamFinished
ProgressFn = Callable[[Progress], None]


def default_bundle_path() -> Path:
    """$MELODY_BUNDLE, else the bundled model (resources/models/melody-tiny, or its packaged copy)."""
    env = os.environ.get(BUNDLE_ENV)
    return Path(env) if env else DEFAULT_BUNDLE


class MelodyPipeline:
    """A loaded bundle ready to generate. Attributes the app relies on: `model_hash` (str, full
    content hash), `device` (str), `sample_rate` (24000), `bundle_path` (the bundle folder). `models`
    is the loaded `ModelSet`, `bundle` the `checkpoint.Bundle` (paths, meta)."""

    sample_rate = SAMPLE_RATE

    def __init__(self, bundle: Bundle, models: ModelSet, threads: int) -> None:
        self.bundle, self.models, self.threads = bundle, models, threads
        self.device = str(models.device)
        self.model_hash: str = bundle.model_hash
        self.short_hash: str = bundle.hash

    @property
    def bundle_path(self) -> Path:
        """The loaded bundle's folder."""
        return self.bundle.info.path

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, bundle: str | os.PathLike | None = None, device: str = "auto", threads: int | None = None,
             lm_threads: int | None = 1, precision: str = "auto", compile: bool = False,
             verify_hash: bool = True) -> MelodyPipeline:
        """Load a bundle folder (None: `default_bundle_path()`) on `device` ("auto": CUDA, then MPS,
        then CPU). `threads`: torch threads for the DPD/VAE (None: all cores; the app passes one
        less to keep a core for the GUI); `lm_threads`: threads while sampling LM tokens (1 is
        fastest for batch-1 decoding on a CPU; None: same as `threads`)."""
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
        check(isinstance(n_threads, int) and n_threads >= 1, f"threads must be >= 1, got {threads}")
        torch.set_num_threads(n_threads)
        if torch.device(dev).type == "cpu":  # as the CLI / app entry points do (`prepare_environment`):
            tune_malloc()  # library callers too get no page faults per DPD step (same outputs, ~-12 %)
        try:
            loaded = load_bundle(path, dev, verify_hash=verify_hash)
        except BundleError as exc:
            raise PipelineError(str(exc)) from None
        missing = [c for c in REQUIRED if c not in loaded.models]
        check(not missing, f"{path}: bundle lacks component(s) {', '.join(missing)} needed to generate")
        try:
            MelodyConfig(components=dict(loaded.configs)).validate()
        except ConfigError as exc:
            raise PipelineError(f"{path}: {exc}") from None
        pipe = cls(loaded, ModelSet.from_bundle(loaded, lm_threads, precision, compile), n_threads)
        with torch.inference_mode():
            pipe.models.mulan.embed_text(["warm up"])  # loads a frozen pretrained text tower now
        return pipe

    # ------------------------------------------------------------------ settings
    def _settings(self, settings: GenerationSettings, style_audio: Any = None, need_prompt: bool = True,
                  check_length: bool = True) -> tuple[GenerationSettings, Tensor | None]:
        """Validate, load the style audio (`style_audio` array, else `settings.style_audio_path`),
        resolve the LM guidance and the seed: the returned settings are what the job runs."""
        if not isinstance(settings, GenerationSettings):
            raise PipelineError(f"settings must be a GenerationSettings, got {type(settings).__name__}")
        validate_settings(settings, need_prompt and style_audio is None, check_length)
        style = None
        if style_audio is not None:
            style = torch.from_numpy(as_wav(style_audio, SAMPLE_RATE, "style audio"))
        elif settings.style_audio_path:
            style = torch.from_numpy(as_wav(settings.style_audio_path, SAMPLE_RATE, "style audio"))
        seed = settings.seed if settings.seed is not None else secrets.randbelow(2**31)
        s = dataclasses.replace(settings, lm_guidance=self.lm_guidance(settings.lm_guidance), seed=seed)
        return s, style

    def lm_guidance(self, asked: float | None) -> float:
        """The LM guidance scale to use: `asked`, or the bundle's default for None. Guidance (!= 1)
        needs an LM trained with the null prefix (`LMConfig.prefix_dropout` > 0)."""
        trained = self.models.lm.config.prefix_dropout > 0
        if asked is None:
            return DEFAULT_LM_GUIDANCE if trained else 1.0
        check(asked == 1.0 or trained,
              "this model's semantic LM was trained without the null prefix: LM guidance must be 1 (off)")
        return float(asked)

    # ------------------------------------------------------------------ public API
    def generate(self, settings: GenerationSettings, control: StreamControl | None = None, *,
                 progress: ProgressFn | None = None, style_audio: Any = None) -> GenerationResult:
        """Generate `settings.seconds` of audio (`style_audio`: a 24 kHz array used as the style
        prompt instead of `settings.style_audio_path`). Raises PipelineError for bad input,
        GenerationCancelled when `control` is cancelled."""
        s, style = self._settings(settings, style_audio)
        return self._finish(generation_job(self.models, s, style, control, endless=False), progress)

    def continue_(self, audio: Any, settings: GenerationSettings, control: StreamControl | None = None, *,
                  progress: ProgressFn | None = None, sample_rate: int = SAMPLE_RATE) -> GenerationResult:
        """`audio` (path, or (T,) array at `sample_rate`) followed by `settings.seconds` of
        continuation; the input samples are returned unchanged as the prefix."""
        s, style = self._settings(settings, need_prompt=False)
        wav = source_audio(audio, sample_rate)
        return self._finish(continuation_job(self.models, wav, s, style, control, endless=False), progress)

    def inpaint(self, audio: Any, start_s: float, end_s: float, settings: GenerationSettings,
                control: StreamControl | None = None, *, progress: ProgressFn | None = None,
                sample_rate: int = SAMPLE_RATE) -> GenerationResult:
        """Regenerate [start_s, end_s) of `audio` (`settings.seconds` is not used); the crossfade
        rule is `generation.jobs.mix_inpaint`'s."""
        return self._finish(self._inpaint_job(audio, start_s, end_s, settings, None, sample_rate, control),
                            progress)

    def stream(self, settings: GenerationSettings, control: StreamControl | None = None,
               endless: bool = False, continue_from: Any = None) -> Iterator[Event]:
        """Generate while yielding `Progress` events and `AudioChunk`s as soon as each piece is
        decodable, then one `StreamFinished` (also after a cancel). With the same seed and settings
        the concatenated chunks equal `generate()` (or, with `continue_from`, the new part of
        `continue_()`). `endless`: keep going until `control.stop_after_current()` (or cancel).
        Prompt/style updates through `control` apply from the next window. Input is validated
        here, before the first event."""
        control = control or StreamControl()
        if continue_from is None:
            s, style = self._settings(settings, check_length=not endless)
            job = generation_job(self.models, s, style, control, endless)
        else:
            s, style = self._settings(settings, need_prompt=False, check_length=not endless)
            wav = source_audio(continue_from, SAMPLE_RATE)
            job = continuation_job(self.models, wav, s, style, control, endless)
        return self._stream(job, control)

    def stream_inpaint(self, audio: Any, start_s: float, end_s: float, settings: GenerationSettings,
                       control: StreamControl | None = None,
                       sample_rate: int = SAMPLE_RATE) -> Iterator[Event]:
        """`inpaint` as a stream: `Progress` events, then one `StreamFinished` whose result equals
        `inpaint()`'s (cancelled: the input unchanged). Input is validated here."""
        control = control or StreamControl()
        job = self._inpaint_job(audio, start_s, end_s, settings, None, sample_rate, control)
        return self._inpaint_stream(job, control)

    # ------------------------------------------------------------------ internals
    def _inpaint_job(self, audio: Any, start_s: float, end_s: float, settings: GenerationSettings,
                     style_audio: Any, sample_rate: int, control: StreamControl | None) -> Job:
        s, style = self._settings(settings, style_audio, need_prompt=False, check_length=False)
        wav = source_audio(audio, sample_rate)
        a, b = region_samples(wav, start_s, end_s)
        return inpaint_job(self.models, wav, a, b, s, style, control)

    def _run(self, job: Job) -> Iterator[Progress | GenerationResult]:
        """Run a job to the end (its Progress events), decode its output range in one pass and
        yield the result last."""
        vae = self.models.vae
        yield from (e for e in job.engine.run() if isinstance(e, Progress))
        end = job.decode_end
        assert end is not None and job.out_samples is not None
        with job.stats.timed("decode"):
            pcm = decode_range(vae, job.timeline.z, job.decode_first, end, job.context_end,
                               self.models.latent_scale)
        offset = job.out_start - job.decode_first * vae.hop
        audio = pcm[0, offset : offset + job.out_samples].float().cpu().numpy()
        yield Progress("decode", 1, 1, job.stats.windows - 1)
        if job.mode == "continue":
            assert job.source is not None
            audio = np.concatenate([job.source, audio])
        elif job.mode == "inpaint":
            audio = mix_inpaint(job, audio)
        yield GenerationResult(audio, SAMPLE_RATE, self._metadata(job, len(audio)))

    def _finish(self, job: Job, progress: ProgressFn | None) -> GenerationResult:
        for event in self._run(job):
            if isinstance(event, GenerationResult):
                return event
            if progress is not None:
                progress(event)
        raise AssertionError("a job ends with its result")

    def _inpaint_stream(self, job: Job, control: StreamControl) -> Iterator[Event]:
        try:
            for event in self._run(job):
                if isinstance(event, GenerationResult):
                    yield StreamFinished(event)
                    return
                yield event
        except GenerationCancelled:
            assert job.source is not None
            meta = self._metadata(job, len(job.source), streamed=True)
            yield StreamFinished(GenerationResult(job.source.copy(), SAMPLE_RATE, meta), cancelled=True)

    def _stream(self, job: Job, control: StreamControl) -> Iterator[Event]:
        vae = self.models.vae
        decoder = StreamDecoder(vae, self.models.latent_scale, job.decode_first, job.decode_end)
        pieces = AudioSpool(spill=job.out_samples is None)  # endless: on disk, not in RAM
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
                skip = max(0, job.out_start - first_frame * vae.hop)  # before the output start
                take = len(pcm) - skip if job.out_samples is None else min(len(pcm) - skip, limit - produced)
                pcm = pcm[skip : skip + max(0, take)]
                if len(pcm):
                    pieces.append(pcm)
                    yield AudioChunk(pieces.count - 1, produced, pcm)
                    produced += len(pcm)

        try:
            for event in job.engine.run():
                if isinstance(event, FramesFinal):
                    final = event.end
                    yield from emit(decoder.ready(job.timeline.z, final, job.timeline.base))
                else:
                    yield event
            yield from emit(decoder.finish(job.timeline.z, final, job.timeline.base))
        except GenerationCancelled:
            cancelled = True
        audio = pieces.read()
        meta = self._metadata(job, len(audio), streamed=True)
        yield StreamFinished(GenerationResult(audio, SAMPLE_RATE, meta), cancelled=cancelled)

    def _metadata(self, job: Job, n_samples: int, streamed: bool = False) -> dict[str, Any]:
        st, models = job.stats, self.models
        return {
            "mode": job.mode,
            "prompt": job.settings.prompt,
            "seed": job.settings.seed,
            "settings": job.settings.to_dict(),
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
            "window_frames": models.layout.length,
            "hop_frames": models.layout.hop,
            "latent_scale": models.latent_scale,
            "precision": models.precision,
            "threads": self.threads,
            "streamed": streamed,
            "prompt_changes": st.prompt_changes,
            **self._controls_meta(job.settings),
            **job.extra,
        }

    def _controls_meta(self, s: GenerationSettings) -> dict[str, Any]:
        """{"controls": {"bpm", "key"}} the LM was given (explicit or parsed; None = null), when it
        has controls; nothing otherwise (the metadata of older bundles is unchanged)."""
        ctl = self.models.controls(s.prompt, s.bpm, s.key)
        return {} if ctl is None else {"controls": {"bpm": ctl.bpm, "key": ctl.key_name}}

    @property
    def controls(self) -> tuple[str, ...]:
        """The explicit controls this bundle's LM takes ("bpm", "key"); () = none (write them into
        the prompt text instead; `generate` does that itself for `GenerationSettings.bpm` / `key`)."""
        return self.models.lm.config.controls


__all__ = ["MelodyPipeline", "default_bundle_path", "DEFAULT_BUNDLE", "REQUIRED"]
