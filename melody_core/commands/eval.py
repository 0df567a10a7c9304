"""`melody eval`: measurements of a bundle. `melody eval card` computes the MODEL_CARD figures
(`melody_core.eval.card`): VAE reconstruction, DPD validation velocity MSE, LM validation
perplexity and MuLan retrieval on a corpus's held-out split, plus three generated samples with
their spectrograms. `melody eval reconstruct DIR` scores the bundle's VAE round trip
(`melody_core.eval.reconstruct`) on any folder of audio. `melody eval listen` writes the listening
sheet (`melody_core.eval.listen`): 16 prompts as FLAC, spectrograms, tempo and hiss per clip."""

from __future__ import annotations

import argparse
import json
import math
import sys

from melody_core.commands import CLIError, eval_ablation, eval_listen, eval_suite

MAX_CARD_SECONDS = 60.0  # longest crop / sample of `eval card`
MAX_RECONSTRUCT_SECONDS = 600.0  # longest crop of `eval reconstruct` (load_audio's file limit)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a bundle (model card figures)",
                       description="Evaluation commands. `card`: the measured figures of a MODEL_CARD; "
                       "`reconstruct`: the VAE round trip on any folder of audio.")
    what = p.add_subparsers(dest="eval_command", required=True, metavar="WHAT")
    c = what.add_parser(
        "card",
        help="model card figures on a corpus's held-out split + three generated samples",
        description="On the held-out (\"valid\") clips of CORPUS_DIR: VAE reconstruction (mel distance, "
        "SI-SDR), DPD validation velocity MSE, LM validation perplexity, MuLan text->audio retrieval "
        "top-1/top-5; then three generated samples (WAV + spectrogram PNG). Writes metrics.json, "
        "metrics.md, sample_N.wav and spectrogram_N.png into --out.",
    )
    c.add_argument("--bundle", metavar="DIR", help="bundle folder (default: the bundled model)")
    c.add_argument("--data", metavar="CORPUS_DIR", required=True, help="corpus folder (captions.jsonl)")
    c.add_argument("--out", metavar="DIR", required=True, help="folder for metrics, samples and images")
    c.add_argument("--max-clips", type=int, default=48, help="held-out clips evaluated at most (default 48)")
    c.add_argument("--seconds", type=float, default=10.0,
                   help="crop of each held-out clip and length of each sample (default 10)")
    c.add_argument("--seed", type=int, default=0, help="base seed of the DPD draws and samples (default 0)")
    c.add_argument("--dpd-draws", type=int, default=2, help="noise/angle draws per clip for the DPD MSE")
    c.add_argument("--no-samples", action="store_true", help="metrics only, no generated samples")
    c.add_argument("--device", default="cpu", help="cpu (default), auto, cuda[:N] or mps")
    c.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    c.add_argument("--json", action="store_true", help="print metrics.json instead of the tables")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    c.set_defaults(func=run_card)
    _register_reconstruct(what)
    eval_ablation.add_parser(what)
    eval_suite.add_parser(what)
    eval_listen.add_parser(what)


def _check_args(args: argparse.Namespace) -> None:
    if not (math.isfinite(args.seconds) and 1.0 <= args.seconds <= MAX_CARD_SECONDS):
        raise CLIError(f"--seconds must be between 1 and {MAX_CARD_SECONDS:g}, got {args.seconds}")
    if args.max_clips < 1:
        raise CLIError(f"--max-clips must be >= 1, got {args.max_clips}")
    if not 1 <= args.dpd_draws <= 64:
        raise CLIError(f"--dpd-draws must be 1..64, got {args.dpd_draws}")
    if not 0 <= args.seed < 2**62:
        raise CLIError(f"--seed must be an integer in [0, 2^62), got {args.seed}")
    if args.threads is not None and args.threads < 1:
        raise CLIError(f"--threads must be >= 1, got {args.threads}")


def run_card(args: argparse.Namespace) -> int:
    _check_args(args)
    from melody_core.audio import AudioError
    from melody_core.data.corpus import CorpusError
    from melody_core.eval.card.evaluate import CardError, CardOptions, evaluate_card, format_card
    from melody_core.generation.pipeline import MelodyPipeline
    from melody_core.generation.types import PipelineError

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    opts = CardOptions(seconds=args.seconds, max_clips=args.max_clips, seed=args.seed,
                       dpd_draws=args.dpd_draws, samples=not args.no_samples)
    try:
        pipe = MelodyPipeline.load(args.bundle, device=args.device, threads=args.threads)
        metrics = evaluate_card(pipe, args.data, args.out, opts, log)
    except (PipelineError, CorpusError, CardError, AudioError) as exc:
        raise CLIError(str(exc)) from None
    except OSError as exc:
        raise CLIError(f"{args.out}: cannot write ({exc.strerror or exc})") from None
    if args.json:
        print(json.dumps(metrics, indent=2, sort_keys=True))
    else:
        print(format_card(metrics), end="")
        print(f"wrote {args.out}/metrics.json")
    return 0


def _register_reconstruct(what: argparse._SubParsersAction) -> None:
    r = what.add_parser(
        "reconstruct",
        help="VAE encode -> decode of every audio file in a folder: mel distance and SI-SDR",
        description="Encode each audio file under DIR (recursive; wav, flac, ogg, mp3, aiff) with the "
        "bundle's VAE, decode the posterior mean and compare with the input: multi-resolution mel "
        "distance (0 = identical) and SI-SDR (dB) of the central crop, means over files. Unreadable "
        "files are skipped with a warning.",
    )
    r.add_argument("dir", metavar="DIR", help="folder of audio files")
    r.add_argument("--bundle", metavar="DIR", help="bundle folder (default: the bundled model)")
    r.add_argument("--max-seconds", type=float, default=30.0,
                   help="central crop of each file in seconds (default 30)")
    r.add_argument("--device", default="cpu", help="cpu (default), auto, cuda[:N] or mps")
    r.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    r.add_argument("--phase", choices=("head", "pghi"), default=None,
                   help="iSTFT decoder phase at inference: its own (head) or PGHI from its magnitudes "
                   "(default: the bundle's setting)")
    r.add_argument("--phase-iters", type=int, default=None, metavar="N",
                   help="Griffin-Lim projections after the iSTFT (default: the bundle's setting)")
    r.add_argument("--json", action="store_true", help="print the result as one JSON object")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    r.set_defaults(func=run_reconstruct)


def run_reconstruct(args: argparse.Namespace) -> int:
    from pathlib import Path

    from melody_core.eval.reconstruct import (
        AUDIO_EXTENSIONS,
        MIN_SECONDS,
        ReconstructError,
        audio_files,
        format_reconstruct,
        reconstruct_files,
        set_phase,
    )

    if not (math.isfinite(args.max_seconds) and MIN_SECONDS <= args.max_seconds <= MAX_RECONSTRUCT_SECONDS):
        raise CLIError(f"--max-seconds must be between {MIN_SECONDS:g} and {MAX_RECONSTRUCT_SECONDS:g}, "
                       f"got {args.max_seconds}")
    if args.threads is not None and args.threads < 1:
        raise CLIError(f"--threads must be >= 1, got {args.threads}")
    folder = Path(args.dir)
    if not folder.is_dir():
        raise CLIError(f"{folder}: {'not a folder' if folder.exists() else 'no such folder'}")
    paths = audio_files(folder)
    if not paths:
        raise CLIError(f"{folder}: no audio files ({', '.join(e[1:] for e in AUDIO_EXTENSIONS)})")
    if args.phase_iters is not None and args.phase_iters < 0:
        raise CLIError(f"--phase-iters must be >= 0, got {args.phase_iters}")
    vae = _load_vae(args)
    try:
        set_phase(vae, args.phase, args.phase_iters)
    except ReconstructError as exc:
        raise CLIError(str(exc)) from None

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    def warn(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        result = reconstruct_files(vae, paths, args.max_seconds, log=log, warn=warn)
    except ReconstructError as exc:
        raise CLIError(f"{folder}: {exc}") from None
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(format_reconstruct(result, folder), end="")
    return 0


def _load_vae(args: argparse.Namespace):
    """Only the VAE of the bundle (validated, on the device), with the torch thread count set."""
    import os

    import torch

    from melody_core.checkpoint import BundleError, load_bundle
    from melody_core.generation.pipeline import default_bundle_path
    from melody_core.runtime import resolve_device

    torch.set_num_threads(args.threads if args.threads is not None else (os.cpu_count() or 1))
    path = default_bundle_path() if args.bundle is None else args.bundle
    try:
        device = resolve_device(args.device)
        return load_bundle(path, device, components=["vae"])["vae"]
    except (BundleError, ValueError) as exc:
        raise CLIError(str(exc)) from None
