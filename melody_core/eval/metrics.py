"""Evaluation metrics on tensors (no model loading here): FAD, MuLan cycle consistency, spectral flux
and continuation seams, SI-SNR improvement.

- Fréchet audio distance [74] between two sets of clip embeddings (any embedding: musicnn, MuLan,
  ...): fit a Gaussian to each set (mean, unbiased covariance) and take the Fréchet distance
  |mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2)). The trace of the matrix square root is computed
  from symmetric eigendecompositions in float64: (C1 C2)^(1/2) has the same eigenvalues as the
  symmetric PSD matrix C1^(1/2) C2 C1^(1/2), so tr (C1 C2)^(1/2) = sum sqrt(eig(C1^(1/2) C2 C1^(1/2)))
  with round-off negatives clamped to 0 (no non-symmetric sqrtm, no complex parts to discard).
- MuLan cycle consistency (MCC, §5.2 and [5]): cosine between a caption's text embedding and the
  embedding of the audio made for it (or of a reference clip with its own caption), with our MuLan.
  Audio of any length is embedded whole by `MuLan.embed_audio` (windows of `clip_seconds`,
  averaged), as `eval card` does for its samples.
- Spectral flux: per STFT frame, the half-wave rectified increase of log magnitude over the previous
  frame, summed over frequency bins (onset detection function). *(our choice)* the log is the
  compressed log(1 + |X| / knee) of onset detection (Klapuri; Böck's "logarithmic filtered" flux)
  with the knee FLUX_KNEE_DB below the clip's loudest bin: gain-invariant, silence contributes
  nothing, and a quiet noise floor (whose log magnitude fluctuates as much as a loud one's) is
  muted instead of dominating the sum. The STFT is centred with zero padding: the clip is taken
  to start and end in silence (no mirror-image artefacts at the edges).
- Continuation seam ratio *(our choice of definition)*: for each chunk join, the largest flux within
  ±`tolerance_s` of it, divided by the median flux of the frames farther than `tolerance_s` + one
  frame from every join and whose window lies inside the clip ("inside" the chunks); the clip's
  ratio is the mean over joins. About 1 for a seamless join (a join looks like any other moment),
  >> 1 for an audible click or jump. A fall in level alone is not seen (the flux is rectified); a
  hard cut also spreads energy over all bins, which is. Measured on 12 rendered held-out clips:
  fake joins every 2.5 s of the untouched music give a median ratio of 1.6, the same clips cut
  into 2.5 s pieces from random places and spliced give 9.2 (knee 50 dB; ROC AUC 0.87).
- SI-SNR improvement (the paper's Appendix E ablation): SI-SNR(estimate, clean) - SI-SNR(noisy,
  clean) per item, with `melody_core.audio.features.si_sdr`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from melody_core import SAMPLE_RATE
from melody_core.audio.features import si_sdr

FLUX_KNEE_DB = 50.0  # knee of the flux's log(1 + |X| / knee) compression, below the loudest bin (dB)
SEAM_EPS = 1e-8  # added to numerator and denominator of a seam ratio (silence: 0 / 0 -> 1)


# ---------------------------------------------------------------------------------------------- FAD
def gaussian_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """(N, D) embeddings -> float64 mean (D,) and unbiased covariance (D, D); needs N >= 2."""
    if x.dim() != 2:
        raise ValueError(f"expected (N, D) embeddings, got shape {tuple(x.shape)}")
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 embeddings for a covariance, got {x.shape[0]}")
    x = x.detach().to("cpu", torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError("embeddings contain NaN or infinite values")
    mu = x.mean(dim=0)  # (D,)
    centred = x - mu  # (N, D)
    return mu, centred.T @ centred / (x.shape[0] - 1)


def _psd_sqrt(c: Tensor) -> Tensor:
    """Symmetric square root of a symmetric PSD matrix (negative round-off eigenvalues -> 0)."""
    evals, evecs = torch.linalg.eigh(0.5 * (c + c.T))
    return (evecs * evals.clamp(min=0).sqrt()) @ evecs.T


def frechet_distance(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """Fréchet distance between N(mu1, cov1) and N(mu2, cov2) (FAD formula, module docstring)."""
    mu1, mu2, cov1, cov2 = (t.detach().to("cpu", torch.float64) for t in (mu1, mu2, cov1, cov2))
    d = mu1.shape[-1]
    if mu2.shape != (d,) or cov1.shape != (d, d) or cov2.shape != (d, d):
        raise ValueError(f"shape mismatch: means {tuple(mu1.shape)}, {tuple(mu2.shape)}; "
                         f"covariances {tuple(cov1.shape)}, {tuple(cov2.shape)}")
    s1 = _psd_sqrt(cov1)
    middle = s1 @ cov2 @ s1  # (D, D) symmetric PSD, same eigenvalues as cov1 @ cov2
    tr_sqrt = torch.linalg.eigvalsh(0.5 * (middle + middle.T)).clamp(min=0).sqrt().sum()
    dist = (mu1 - mu2).pow(2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * tr_sqrt
    return max(float(dist), 0.0)  # >= 0 in exact arithmetic


def fad(a: Tensor, b: Tensor) -> float:
    """Fréchet audio distance between embedding sets a (N, D) and b (M, D), N, M >= 2."""
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected (N, D) and (M, D) embeddings, got {tuple(a.shape)} and {tuple(b.shape)}")
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))


# ---------------------------------------------------------------------------------------------- MCC
def cosine_rows(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise cosine similarity of (N, D) and (N, D) -> (N,) float64 (a zero row gives 0)."""
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"expected two (N, D) tensors of one shape, got {tuple(a.shape)}, {tuple(b.shape)}")
    return F.cosine_similarity(a.detach().double(), b.detach().double(), dim=-1, eps=1e-12)


def _summary(values: Tensor) -> dict[str, Any]:
    n = values.numel()
    std = float(values.std()) if n > 1 else 0.0
    return {"mean": float(values.mean()), "std": std, "n": n, "per_item": [float(v) for v in values]}


def mcc(mulan: torch.nn.Module, captions: Sequence[str], wavs: Sequence[Tensor],
        sample_rate: int = SAMPLE_RATE) -> dict[str, Any]:
    """MuLan cycle consistency: cosine(embed_text(caption_i), embed_audio(wav_i)) for each pair.

    captions: N strings; wavs: N (T_i,) waveforms (any lengths) at `sample_rate` (resampled to the
    MuLan's rate when different). Returns {"mean", "std" (unbiased; 0 for one item), "n",
    "per_item": N floats}.
    """
    if len(captions) != len(wavs):
        raise ValueError(f"{len(captions)} captions for {len(wavs)} waveforms")
    if not captions:
        raise ValueError("mcc needs at least one (caption, audio) pair")
    rate = mulan.config.sample_rate
    with torch.inference_mode():
        text = mulan.embed_text(list(captions)).float().cpu()  # (N, E)
        audio = []
        for wav in wavs:
            if wav.dim() != 1:
                raise ValueError(f"expected (T,) waveforms, got shape {tuple(wav.shape)}")
            if sample_rate != rate:
                from melody_core.audio import resample

                wav = resample(wav.cpu(), sample_rate, rate)
            audio.append(mulan.embed_audio(wav.unsqueeze(0)).float().cpu())  # (1, E)
    return _summary(cosine_rows(text, torch.cat(audio)))


# ------------------------------------------------------------------------------ flux and seam ratio
def spectral_flux(wav: Tensor, sample_rate: int, n_fft: int = 1024, hop: int = 256) -> tuple[Tensor, float]:
    """(T,) waveform -> (flux (n_frames,) float64, frame rate in Hz).

    Frame i is centred at i * hop / sample_rate s (centred, zero-padded STFT, Hann window);
    flux[i] = sum_k max(0, C[k, i] - C[k, i - 1]) with C = log(1 + |X| / knee), knee FLUX_KNEE_DB
    below the clip's loudest bin (module docstring); flux[0] = 0.
    """
    if wav.dim() != 1:
        raise ValueError(f"expected a (T,) waveform, got shape {tuple(wav.shape)}")
    x = wav.detach().to("cpu", torch.float64)
    window = torch.hann_window(n_fft, dtype=torch.float64)
    mag = torch.stft(x, n_fft, hop, window=window, center=True, pad_mode="constant",
                     return_complex=True).abs()  # (F, n_frames)
    knee = float(mag.max()) * 10 ** (-FLUX_KNEE_DB / 20)
    if knee <= 0:  # digital silence
        return x.new_zeros(mag.shape[1]), sample_rate / hop
    logmag = torch.log1p(mag / knee)  # (F, n_frames)
    rise = (logmag[:, 1:] - logmag[:, :-1]).clamp(min=0).sum(dim=0)  # (n_frames - 1,)
    return torch.cat([rise.new_zeros(1), rise]), sample_rate / hop


def seam_ratio(wav: Tensor, sample_rate: int, joins_s: Sequence[float], tolerance_s: float = 0.05,
               n_fft: int = 1024, hop: int = 256) -> dict[str, Any]:
    """Flux at chunk joins relative to the flux inside chunks (definition: module docstring).

    wav: (T,); joins_s: join times in seconds, inside the clip. Returns {"ratio": mean over joins,
    "per_join": one ratio per join, "median_inside": median flux of the inside frames}. Raises
    ValueError without joins, with a join outside the clip or when no frame is far from every join.
    """
    if not joins_s:
        raise ValueError("seam_ratio needs at least one join")
    if tolerance_s <= 0:
        raise ValueError(f"tolerance_s must be > 0, got {tolerance_s}")
    flux, rate = spectral_flux(wav, sample_rate, n_fft, hop)
    times = torch.arange(len(flux), dtype=torch.float64) / rate  # (n_frames,)
    duration = wav.shape[-1] / sample_rate
    joins = torch.tensor([float(j) for j in joins_s], dtype=torch.float64)  # (J,)
    if not bool(((joins > 0) & (joins < duration)).all()):
        raise ValueError(f"joins must lie inside the clip (0, {duration:.3f}) s, got {list(joins_s)}")
    dist = (times.unsqueeze(0) - joins.unsqueeze(1)).abs()  # (J, n_frames)
    inside = dist.min(dim=0).values > tolerance_s + 1 / rate
    half = n_fft / 2 / sample_rate  # frames whose window reaches past an edge of the clip are left out
    inside &= (times >= half) & (times <= duration - half)
    if not bool(inside.any()):
        raise ValueError("no frames inside the chunks: joins too dense for the tolerance")
    median = float(flux[inside].median())
    peaks = [float(flux[row <= tolerance_s].max()) for row in dist]  # each join has >= 1 frame near it
    per_join = [(p + SEAM_EPS) / (median + SEAM_EPS) for p in peaks]
    return {"ratio": sum(per_join) / len(per_join), "per_join": per_join, "median_inside": median}


# ------------------------------------------------------------------------------------------- SI-SNR
def si_snr_improvement(estimate: Tensor, noisy: Tensor, clean: Tensor) -> Tensor:
    """SI-SNR(estimate, clean) - SI-SNR(noisy, clean) in dB per item: (B, ...) x3 -> (B,) float64.

    Each item is flattened; a (T,) input is one item. 0 when the estimate is the noisy input.
    """
    if not estimate.shape == noisy.shape == clean.shape:
        raise ValueError(f"shape mismatch: estimate {tuple(estimate.shape)}, noisy {tuple(noisy.shape)}, "
                         f"clean {tuple(clean.shape)}")
    b = 1 if estimate.dim() == 1 else estimate.shape[0]
    est, nsy, ref = (t.detach().to("cpu", torch.float64).reshape(b, -1) for t in (estimate, noisy, clean))
    return si_sdr(est, ref) - si_sdr(nsy, ref)


__all__ = ["cosine_rows", "fad", "frechet_distance", "gaussian_stats", "mcc", "seam_ratio",
           "si_snr_improvement", "spectral_flux"]
