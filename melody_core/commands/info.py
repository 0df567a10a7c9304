"""`melody info`: parameter counts, audio file facts, bundle contents."""

from __future__ import annotations

import argparse
import json

from melody_core.commands import CLIError


def register(sub: argparse._SubParsersAction) -> None:
    info = sub.add_parser(
        "info",
        help="parameter counts, audio file or bundle information",
        description=(
            "--params PRESET counts the parameters of every component built from a preset (on the meta "
            "device: nothing is allocated). VAE = encoder + decoder + discriminators (what the paper's "
            "100.1M appears to count; see VAEConfig); MuLan = audio tower + projection heads + RVQ + the "
            "pretrained MiniLM text tower (see MuLanConfig); DPD, SSL and LM = every parameter."
        ),
    )
    info.add_argument("--params", choices=["tiny", "paper"], help="count parameters of a preset")
    info.add_argument("--audio", metavar="FILE", help="duration, sample rate, channels and peak of an audio "
                      "file (every sample is decoded: NaN/Inf samples are an error)")
    info.add_argument("--bundle", metavar="DIR_OR_FILE", help="components and hash of a checkpoint bundle")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not (args.params or args.audio or args.bundle):
        raise CLIError("info needs one of --params PRESET, --audio FILE, --bundle PATH")
    if args.params:
        _params(args.params, args.json)
    if args.audio:
        _audio(args.audio, args.json)
    if args.bundle:
        _bundle(args.bundle, args.json)
    return 0


def _params(preset: str, as_json: bool) -> None:
    from melody_core.eval.params import PAPER_COUNTS, parameter_counts

    counts = parameter_counts(preset)
    if as_json:
        print(json.dumps(counts))
        return
    print(f"parameters of the {preset!r} preset (MuLan includes its MiniLM text tower):")
    for name, n in counts.items():
        ref = PAPER_COUNTS[name]
        extra = f"   paper: {ref / 1e6:.1f}M ({(n - ref) / ref:+.1%})" if preset == "paper" else ""
        print(f"  {name:<6} {n / 1e6:9.2f}M{extra}")


SCAN_BLOCK_FRAMES = 1 << 16  # frames decoded per block by the sample scan (bounds memory)


def _audio(path: str, as_json: bool) -> None:
    from melody_core.audio import AudioError, audio_info

    try:
        info = audio_info(path)
    except AudioError as exc:
        raise CLIError(str(exc)) from None
    peak = _scan_samples(path)
    if as_json:
        print(json.dumps(dict(info.__dict__, path=path, peak=peak, samples_checked=True)))
    else:
        print(
            f"{path}: {info.duration_s:.3f} s, {info.sample_rate} Hz, {info.channels} channel(s), "
            f"{info.format}/{info.subtype}, {info.frames} frames, peak {peak:.4f} (all samples finite)"
        )


def _scan_samples(path: str) -> float:
    """Decode every sample (block by block): the peak |sample|; NaN/Inf or an unreadable block is a
    CLIError naming the first bad frame."""
    import numpy as np
    import soundfile as sf

    peak, n, bad = 0.0, 0, 0
    first_bad: int | None = None
    try:
        with sf.SoundFile(path) as f:
            for block in f.blocks(SCAN_BLOCK_FRAMES, dtype="float32", always_2d=True):  # (frames, ch)
                finite = np.isfinite(block).all(axis=1)
                if not finite.all():
                    bad += int((~finite).sum())
                    first_bad = n + int(np.argmin(finite)) if first_bad is None else first_bad
                if finite.any():
                    peak = max(peak, float(np.abs(block[finite]).max()))
                n += len(block)
    except (sf.SoundFileError, RuntimeError) as exc:
        detail = " ".join(str(exc).split())
        raise CLIError(f"{path}: audio data is corrupt after frame {n} ({detail})") from None
    if bad:
        raise CLIError(f"{path}: {bad} of {n} frames hold NaN or infinite samples (the first: frame "
                       f"{first_bad})")
    return peak


def _bundle(path: str, as_json: bool) -> None:
    from melody_core.checkpoint import BundleError, describe_bundle, inspect_bundle

    try:
        info = inspect_bundle(path)
    except BundleError as exc:
        raise CLIError(str(exc)) from None
    print(json.dumps(info.to_dict()) if as_json else describe_bundle(info))
