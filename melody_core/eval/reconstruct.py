"""VAE reconstruction of any folder of audio (`melody eval reconstruct`): how well the bundle's
VAE-GAN (§4.1) encodes and decodes music it never saw.

Each file is loaded as mono at the VAE's rate (`load_audio`: channel mean, soxr resampling; files
over load_audio's 600 s limit are skipped), its central crop of at most `max_seconds` (a whole
number of VAE hops) is encoded with the trainer's windowed encoder (`train.cache.latent_extractor`),
the posterior mean is decoded in one pass, and the round trip is scored as in `eval card`
(`card.metrics.reconstruction_scores`): multi-resolution mel distance (L1 of log10 mel over 3
resolutions; 0 = identical) and SI-SDR (dB), plus the spectral convergence in dB
(20·log10 ‖|S| − |Ŝ|‖ / ‖|S|‖, one STFT of 1024 / hop 256, Hann; the measure of the PGHI paper).
`set_phase` picks the iSTFT decoder's phase at inference for a comparison (the decoder's own, or
PGHI from its magnitudes; and the Griffin-Lim projections after it). The summary is the mean over
files (each file weighs the same, whatever its length). Unreadable or too-short files are skipped
with a reason.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from melody_core.audio import AudioError, load_audio
from melody_core.audio.features import stft_magnitude
from melody_core.eval.card.metrics import centre_crop, reconstruction_scores
from melody_core.train.cache import latent_extractor

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif")  # what soundfile decodes
MIN_SECONDS = 0.1  # shorter crops are skipped (a few mel frames at the coarsest resolution)
Log = Callable[[str], None]


class ReconstructError(ValueError):
    """A user-facing problem (no files, nothing could be evaluated): one line."""


def audio_files(folder: str | Path) -> list[Path]:
    """Audio files under `folder` (recursive, by extension, case-insensitive), sorted by path."""
    root = Path(folder)
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())


SC_FFT, SC_HOP = 1024, 256  # STFT of the spectral convergence


def spectral_convergence_db(recon: torch.Tensor, reference: torch.Tensor) -> float:
    """20·log10(‖|S_ref| − |S_rec|‖_F / ‖|S_ref|‖_F) of two (T,) signals; lower is better."""
    a = stft_magnitude(recon.reshape(1, -1).float(), SC_FFT, SC_HOP)  # (1, F, N)
    b = stft_magnitude(reference.reshape(1, -1).float(), SC_FFT, SC_HOP)
    ratio = float((a - b).norm() / b.norm().clamp(min=1e-12))
    return 20 * math.log10(max(ratio, 1e-12))


def set_phase(vae: torch.nn.Module, phase: str | None = None, iters: int | None = None) -> None:
    """Override the iSTFT decoder's inference phase: `phase` "head" | "pghi" (VAEConfig.istft_phase),
    `iters` Griffin-Lim projections (VAEConfig.istft_phase_iters); None keeps the bundle's setting.
    Raises ReconstructError for a decoder without an iSTFT head or an unknown value."""
    from melody_core.models._vae_blocks import ISTFTDecoder
    from melody_core.models.vae_gan import ISTFT_PHASES

    if phase is None and iters is None:
        return
    dec = getattr(vae, "decoder", None)
    if not isinstance(dec, ISTFTDecoder):
        raise ReconstructError("phase options need a VAE with the iSTFT decoder")
    if phase is not None and phase not in ISTFT_PHASES:
        raise ReconstructError(f"phase must be one of {', '.join(ISTFT_PHASES)}, got {phase!r}")
    if iters is not None and iters < 0:
        raise ReconstructError(f"phase iterations must be >= 0, got {iters}")
    changes = {k: v for k, v in (("istft_phase", phase), ("istft_phase_iters", iters)) if v is not None}
    vae.config = dataclasses.replace(vae.config, **changes)
    dec.phase_source = vae.config.istft_phase
    dec.phase_iters = vae.config.istft_phase_iters


def round_trip(vae: torch.nn.Module, crop: torch.Tensor) -> torch.Tensor:
    """(T,) crop, T a multiple of the hop -> (T,) decode(posterior mean of encode(crop))."""
    device = next(vae.parameters()).device
    latents = latent_extractor(vae, device)(crop)["latents"]  # (T / hop, D)
    return vae.decode(latents.unsqueeze(0).to(device))[0].float().cpu()[: len(crop)]  # (T,)


def reconstruct_files(vae: torch.nn.Module, paths: Sequence[str | Path], max_seconds: float = 30.0,
                      log: Log | None = None, warn: Log | None = None) -> dict[str, Any]:
    """Score the VAE round trip of each file (module docstring).

    Returns {"mel_distance", "si_sdr" (dB), "spectral_convergence_db": means over evaluated files,
    "files": evaluated, "skipped": count, "skipped_files": [{"path", "reason"}], "per_file": [{"path",
    "mel_distance", "si_sdr", "spectral_convergence_db", "seconds"}], "audio_seconds": total
    evaluated, "max_seconds", "wall_s"}. `log` gets one progress line per file, `warn` one line per
    skipped file (default: `log`). Raises
    ReconstructError when `paths` is empty or no file could be evaluated.
    """
    if not paths:
        raise ReconstructError("no audio files to evaluate")
    if not max_seconds >= MIN_SECONDS:
        raise ReconstructError(f"max_seconds must be >= {MIN_SECONDS:g}, got {max_seconds}")
    say = log or (lambda _: None)
    warn = warn or say
    rate, hop = vae.config.sample_rate, vae.config.hop
    t0 = time.perf_counter()
    per_file: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    with torch.inference_mode():
        for i, path in enumerate(paths):
            try:
                wav = load_audio(path, sample_rate=rate)
            except AudioError as exc:
                skipped.append({"path": str(path), "reason": exc.reason})
                warn(f"warning: skipped {path}: {exc.reason}")
                continue
            start, length = centre_crop(len(wav), max_seconds, rate, hop)
            if length < MIN_SECONDS * rate:
                reason = f"shorter than {MIN_SECONDS:g} s"
                skipped.append({"path": str(path), "reason": reason})
                warn(f"warning: skipped {path}: {reason}")
                continue
            crop = wav[start : start + length]  # (length,)
            recon = round_trip(vae, crop)
            mel, sdr = reconstruction_scores(recon, crop)
            sc = spectral_convergence_db(recon, crop)
            per_file.append({"path": str(path), "mel_distance": mel, "si_sdr": sdr,
                             "spectral_convergence_db": sc, "seconds": length / rate})
            say(f"[{i + 1}/{len(paths)}] {path}: mel distance {mel:.3f}, SI-SDR {sdr:+.2f} dB, "
                f"SC {sc:+.2f} dB")
    if not per_file:
        raise ReconstructError(f"none of the {len(paths)} audio files could be evaluated")
    n = len(per_file)
    return {
        "mel_distance": sum(f["mel_distance"] for f in per_file) / n,
        "si_sdr": sum(f["si_sdr"] for f in per_file) / n,
        "spectral_convergence_db": sum(f["spectral_convergence_db"] for f in per_file) / n,
        "files": n,
        "skipped": len(skipped),
        "skipped_files": skipped,
        "per_file": per_file,
        "audio_seconds": sum(f["seconds"] for f in per_file),
        "max_seconds": max_seconds,
        "wall_s": time.perf_counter() - t0,
    }


def format_reconstruct(result: dict[str, Any], root: str | Path | None = None) -> str:
    """A short plain-text table of `reconstruct_files`'s result (paths relative to `root`)."""

    def name(p: str) -> str:
        if root is not None:
            try:
                return str(Path(p).relative_to(root))
            except ValueError:
                pass
        return p

    def cells(f: dict[str, Any]) -> tuple[str, str, str]:
        sc = f.get("spectral_convergence_db")
        return f"{f['mel_distance']:.3f}", f"{f['si_sdr']:+.2f}", "" if sc is None else f"{sc:+.2f}"

    rows = [(name(f["path"]), f"{f['seconds']:.1f}", *cells(f)) for f in result["per_file"]]
    rows.append((f"mean of {result['files']} file(s)", f"{result['audio_seconds']:.1f}", *cells(result)))
    head = ("file", "seconds", "mel distance", "SI-SDR dB", "SC dB")
    widths = [max(len(r[c]) for r in [head, *rows]) for c in range(5)]

    def line(r: Sequence[str]) -> str:
        return "  ".join([r[0].ljust(widths[0]), *(v.rjust(w) for v, w in zip(r[1:], widths[1:]))])

    out = [line(head), *(line(r) for r in rows[:-1]), "-" * len(line(head)), line(rows[-1])]
    if result["skipped"]:
        out.append(f"skipped {result['skipped']} file(s) (see the warnings)")
    out.append(f"({result['wall_s']:.1f} s; mel distance: 0 = identical; SI-SDR: higher is better; "
               "SC: spectral convergence, lower is better)")
    return "\n".join(out) + "\n"


__all__ = [
    "AUDIO_EXTENSIONS",
    "ReconstructError",
    "audio_files",
    "format_reconstruct",
    "reconstruct_files",
    "set_phase",
    "spectral_convergence_db",
]
