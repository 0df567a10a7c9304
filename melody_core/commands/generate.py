"""`melody generate`, `melody continue`, `melody inpaint`: the pipeline from the command line.

Output is WAV or FLAC by extension, with the prompt, seed, settings, NFE and model hash embedded
as metadata tags (`audio.tags.file_metadata`; read back with `melody info --audio` or
`audio.read_metadata`). Every input check that needs no model runs before the bundle is loaded:
output extension and folder (a probe file is written), settings, the tags' size (WAV INFO tags hold
about 2 KB: a dry-run write of one sample with the longest tags the run can produce), input file and
its minimum length, region. Every user error is `error: ...`, exit 2. If the file still cannot be
written after generating (disk full, folder removed meanwhile), the audio is written to the temp
folder instead and the message says where: generated audio is never thrown away.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from melody_core.commands import CLIError
from melody_core.generation.types import GenerationSettings

OUTPUT_SUFFIXES = (".wav", ".flac")
D = GenerationSettings()  # the defaults of every generation option (one place: GenerationSettings)


def _common(p: argparse.ArgumentParser, prompt_option: bool) -> None:
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="output .wav or .flac")
    if prompt_option:
        p.add_argument("--prompt", default=None, help="text prompt (default: the input audio's own style)")
    p.add_argument("--style-audio", metavar="FILE", help="audio file used as a style prompt (MuLan)")
    p.add_argument("--style-weight", type=float, default=D.style_weight,
                   help="0 = text only .. 1 = style audio only")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    p.add_argument("--steps", type=int, default=D.steps,
                   help=f"DPD steps T of a full window (default {D.steps})")
    p.add_argument("--continuation-steps", type=int, default=None, help="steps per continuation chunk "
                   "(default ceil(T/M))")
    p.add_argument("--guidance", type=float, default=D.guidance,
                   help=f"classifier-free guidance scale (default {D.guidance:g})")
    p.add_argument("--schedule", default=D.schedule, help="angle schedule: linear (Eq. 4) or uniform")
    p.add_argument("--temperature", type=float, default=D.temperature,
                   help="semantic LM sampling temperature")
    p.add_argument("--top-k", type=int, default=D.top_k, help="semantic LM top-k (0 = off)")
    p.add_argument("--top-p", type=float, default=D.top_p, help="semantic LM nucleus threshold (1 = off)")
    p.add_argument("--lm-guidance", type=float, default=None, help="semantic LM guidance scale: how "
                   "closely the music follows the prompt (1 = off; default: the model's own)")
    p.add_argument("--bpm", default=None, help="tempo in BPM (the LM's BPM control; overrides '120 bpm' in "
                   "the prompt; a model without controls gets it as prompt text)")
    p.add_argument("--key", default=None, help='key, e.g. "D minor", "F# major", "Bb min" (as --bpm)')
    p.add_argument("--start-mode", default=D.start, help="first window: window (paper) or progressive")
    p.add_argument("--bundle", metavar="DIR", help="model bundle folder (default: the bundled model)")
    p.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda[:N] or mps")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-levels", action="store_true", help="write the raw decoder output: no loudness "
                   "normalisation (-14 LUFS) and no true-peak limiter (-1 dBTP); never clipped either way")


def register(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser("generate", help="generate music from a text prompt and/or style audio")
    g.add_argument("prompt", help='text prompt ("" with --style-audio for a style-only prompt)')
    g.add_argument("--seconds", type=float, default=D.seconds,
                   help=f"length in seconds (default {D.seconds:g})")
    _common(g, prompt_option=False)
    g.set_defaults(func=run_generate)

    c = sub.add_parser("continue", help="continue an audio file (its samples are kept exactly)")
    c.add_argument("input", help="audio file to continue")
    c.add_argument("--seconds", type=float, default=D.seconds,
                   help=f"seconds to add (default {D.seconds:g})")
    _common(c, prompt_option=True)
    c.set_defaults(func=run_continue)

    i = sub.add_parser("inpaint", help="regenerate a region of an audio file (the rest is kept)")
    i.add_argument("input", help="audio file")
    i.add_argument("--start", type=float, required=True, help="region start in seconds")
    i.add_argument("--end", type=float, required=True, help="region end in seconds")
    _common(i, prompt_option=True)
    i.set_defaults(func=run_inpaint)


# ---------------------------------------------------------------------------------------- helpers
def _settings(args: argparse.Namespace, prompt: str | None, seconds: float, need_prompt: bool) -> Any:
    from melody_core.generation.types import GenerationSettings, PipelineError
    from melody_core.generation.validation import validate_settings
    from melody_core.models.controls import BPM_RANGE, parse_bpm

    bpm = None
    if args.bpm is not None:
        bpm = parse_bpm(args.bpm)
        if bpm is None:
            lo, hi = BPM_RANGE
            raise CLIError(f"--bpm must be a number between {lo:g} and {hi:g}, got {args.bpm!r}")
    s = GenerationSettings(
        prompt=prompt, style_audio_path=args.style_audio, style_weight=args.style_weight, seconds=seconds,
        seed=args.seed, steps=args.steps, guidance=args.guidance, schedule=args.schedule,
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, lm_guidance=args.lm_guidance,
        continuation_steps=args.continuation_steps, start=args.start_mode, bpm=bpm, key=args.key,
    )
    try:
        validate_settings(s, need_prompt=need_prompt)
    except PipelineError as exc:
        raise CLIError(str(exc)) from None
    if args.style_audio:
        _audio_seconds(args.style_audio)
    return s


def _check_output(path: str) -> Path:
    """Extension, not a folder, and a writable folder (a probe file is created and removed there)."""
    out = Path(path)
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise CLIError(f"{path}: output must end in .wav or .flac")
    if out.is_dir():
        raise CLIError(f"{path}: is a folder, not an output file")
    folder = out.absolute().parent
    while not folder.exists() and folder != folder.parent:  # save_audio creates missing folders
        folder = folder.parent
    if not folder.is_dir():
        raise CLIError(f"{path}: {folder} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".melody-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:  # permission, read-only file system, disk full, ...
        raise CLIError(f"{path}: cannot write in {folder} ({exc.strerror or exc})") from None
    return out


# placeholders as long as the values the pipeline reports after generating (tags size check)
_TAG_PLACEHOLDERS = {"model_hash": "f" * 64, "device": "cuda:0", "nfe": 10**6, "seed": 2**63 - 1,
                     "seconds": 600.0 / 7, "crossfade_s": 0.1 / 7, "continued_from_s": 600.0 / 7,
                     "region_s": [600.0 / 7, 600.0 / 7], "controls": {"bpm": 600.0 / 7, "key": "C# minor"}}


def _check_tags(out: Path, settings: Any, mode: str) -> None:
    """Refuse a prompt/settings too long for the output's tags before generating: a dry-run write
    of one sample with tags at least as long as the real ones (WAV only; FLAC tags have no limit)."""
    if out.suffix.lower() != ".wav":
        return
    import numpy as np
    import torch

    from melody_core.audio import MetadataError, save_audio
    from melody_core.audio.tags import file_metadata

    meta = {**_TAG_PLACEHOLDERS, "mode": mode, "prompt": settings.prompt,
            "settings": {**settings.to_dict(), "seed": _TAG_PLACEHOLDERS["seed"]}}
    if mode != "continue":
        meta.pop("continued_from_s")
    if mode != "inpaint":
        meta.pop("region_s")
        meta.pop("crossfade_s")
    with tempfile.TemporaryDirectory(prefix="melody-tags-") as tmp:
        try:
            one = torch.from_numpy(np.zeros(1, np.float32))
            save_audio(Path(tmp) / "probe.wav", one, metadata=file_metadata(meta))
        except MetadataError:
            n = len(settings.prompt or "")
            raise CLIError(f"{out}: the prompt ({n} characters) and settings do not fit in WAV tags "
                           "(about 2 KB); shorten the prompt or write a .flac file") from None


def _check_source(path: str) -> float:
    """Duration of an input file for continue/inpaint, refused when shorter than the pipeline takes."""
    from melody_core.generation.validation import MIN_SOURCE_SECONDS

    seconds = _audio_seconds(path)
    if seconds < MIN_SOURCE_SECONDS:
        raise CLIError(f"{path}: audio is too short ({seconds:.3f} s; need {MIN_SOURCE_SECONDS:g} s)")
    return seconds


def _audio_seconds(path: str) -> float:
    from melody_core.audio import AudioError, audio_info

    try:
        return audio_info(path).duration_s
    except AudioError as exc:
        raise CLIError(str(exc)) from None


def _load(args: argparse.Namespace) -> Any:
    from melody_core.generation.pipeline import MelodyPipeline
    from melody_core.generation.types import PipelineError

    if args.threads is not None and args.threads < 1:
        raise CLIError(f"--threads must be >= 1, got {args.threads}")
    try:
        return MelodyPipeline.load(args.bundle, device=args.device, threads=args.threads)
    except PipelineError as exc:
        raise CLIError(str(exc)) from None


class ProgressBar:
    """tqdm bar over NFEs (LM tokens + DPD steps); the total grows as windows start."""

    def __init__(self, quiet: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=0, unit="NFE", file=sys.stderr, disable=quiet, leave=False, dynamic_ncols=True)
        self.seen: dict[tuple[str, int], int] = {}

    def __call__(self, event: Any) -> None:
        if event.stage not in ("lm", "dpd"):
            return
        key = (event.stage, event.chunk_index)
        if key not in self.seen:
            self.seen[key] = 0
            self.bar.total += event.total
        name = "semantic tokens" if event.stage == "lm" else "diffusion"
        self.bar.set_description(f"window {event.chunk_index + 1}: {name}", refresh=False)
        self.bar.update(event.done - self.seen[key])
        self.seen[key] = event.done

    def close(self) -> None:
        self.bar.close()


def _run(args: argparse.Namespace, call: Any) -> int:
    """Load the pipeline, run `call(pipe, progress)`, write the file, print one summary line."""
    from melody_core.audio import AudioError, save_audio
    from melody_core.audio.tags import file_metadata
    from melody_core.generation.types import PipelineError

    out = _check_output(args.output)
    pipe = _load(args)
    bar = ProgressBar(args.quiet)
    t0 = time.perf_counter()
    try:
        result = call(pipe, bar)
    except PipelineError as exc:
        raise CLIError(str(exc)) from None
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    import torch

    from melody_core.audio.levels import OFF, LevelSettings, master

    # a new clip is brought to the loudness target; continue/inpaint keep the input's level (its
    # samples stay as they were) and are only true-peak limited
    levels = LevelSettings() if result.metadata.get("mode") == "generate" else LevelSettings(target_lufs=None)
    tags = file_metadata(result.metadata)
    wav = torch.from_numpy(master(result.audio, result.sample_rate, OFF if args.no_levels else levels))
    try:
        save_audio(out, wav, result.sample_rate, metadata=tags)
    except (AudioError, OSError) as exc:  # checked up front, so rare (disk filled meanwhile, ...)
        kept = _keep_elsewhere(out, wav, result.sample_rate, tags)
        where = f"the audio was saved to {kept} instead" if kept else "the audio could not be saved anywhere"
        raise CLIError(f"cannot write {out} ({' '.join(str(exc).split())}); {where}") from None
    m = result.metadata
    print(f"wrote {out} ({result.seconds:.2f} s, seed {m['seed']}, {m['nfe']} NFE, {wall:.1f} s "
          f"on {m['device']}, model {str(m['model_hash'])[:12]})")
    return 0


def _keep_elsewhere(out: Path, wav: Any, sample_rate: int, tags: dict[str, str]) -> Path | None:
    """Last resort for generated audio the output path refused: a FLAC in the temp folder."""
    from melody_core.audio import AudioError, save_audio

    fd, name = tempfile.mkstemp(prefix=f"{out.stem[:40]}-", suffix=".flac")
    os.close(fd)
    try:
        return save_audio(name, wav, sample_rate, metadata=tags)
    except (AudioError, OSError):
        Path(name).unlink(missing_ok=True)
        return None


# ---------------------------------------------------------------------------------------- commands
def run_generate(args: argparse.Namespace) -> int:
    s = _settings(args, args.prompt, args.seconds, need_prompt=True)
    _check_tags(_check_output(args.output), s, "generate")
    return _run(args, lambda pipe, bar: pipe.generate(s, progress=bar))


def run_continue(args: argparse.Namespace) -> int:
    s = _settings(args, args.prompt, args.seconds, need_prompt=False)
    _check_tags(_check_output(args.output), s, "continue")
    _check_source(args.input)
    return _run(args, lambda pipe, bar: pipe.continue_(args.input, s, progress=bar))


def run_inpaint(args: argparse.Namespace) -> int:
    from melody_core.generation.validation import MIN_REGION_SECONDS

    s = _settings(args, args.prompt, D.seconds, need_prompt=False)  # seconds: unused by inpainting
    _check_tags(_check_output(args.output), s, "inpaint")
    duration = _check_source(args.input)
    if not 0 <= args.start < args.end <= duration + 1e-6:
        raise CLIError(f"region {args.start:g}-{args.end:g} s is outside the clip (0-{duration:.3f} s) "
                       "or empty")
    if args.end - args.start < MIN_REGION_SECONDS:
        raise CLIError(f"region is shorter than {MIN_REGION_SECONDS:g} s")
    return _run(args, lambda pipe, bar: pipe.inpaint(args.input, args.start, args.end, s, progress=bar))
