"""Musical key of a waveform: the Krumhansl-Kessler key-finding method on a chroma profile (an
independent judge of `melody eval all`: the key heard vs the key a prompt names).

Method (Krumhansl & Kessler 1982 probe-tone profiles, correlated as in Krumhansl's "Cognitive
Foundations of Musical Pitch", 1990, the usual key-finding baseline):
1. Chroma: `librosa.feature.chroma_cqt` (constant-Q, librosa's defaults: hop 512, 36 bins per octave
   folded onto 12 pitch classes, each frame max-normalised), averaged over all frames of the clip
   -> a (12,) pitch-class profile, C first.
2. Pearson correlation of that profile with the major and the minor KK profile rotated to each of the
   12 tonics: 24 scores; the key is the best one.
Key index as `models.controls`: tonic pitch class (C = 0 ... B = 11) + 12 for minor, so an estimate
compares directly with `find_controls(prompt).key` and `clip_controls(attributes).key`.
A silent or perfectly flat profile has no key (None). `mirex_score` is the MIREX key score of
`mir_eval.key.weighted_score` (1 same key, 0.5 a fifth away, 0.3 relative, 0.2 parallel, else 0).

Nothing here imports librosa or mir_eval at module level (evaluation-only dependencies, the `eval`
extra).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from melody_core.models.controls import key_name

# Krumhansl & Kessler (1982) probe-tone ratings, tonic first (C major / C minor)
KK_MAJOR = (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88)
KK_MINOR = (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17)
MIN_PROFILE_SPREAD = 1e-6  # a chroma profile flatter than this (std) has no key


@dataclass(frozen=True)
class KeyEstimate:
    """The key found in a clip."""

    key: int | None  # tonic pitch class + 12 * minor (None: no key found)
    score: float  # Pearson correlation of the chosen key's profile (NaN without a key)
    scores: tuple[float, ...]  # (24,) correlations, index = key index

    @property
    def name(self) -> str | None:
        return None if self.key is None else key_name(self.key)


def chroma_profile(wav: Any, sample_rate: int) -> np.ndarray:
    """(12,) mean constant-Q chroma of a (T,) waveform, C first (step 1 of the module docstring)."""
    import librosa

    y = np.ascontiguousarray(np.asarray(wav, dtype=np.float32).reshape(-1))
    chroma = librosa.feature.chroma_cqt(y=y, sr=sample_rate)  # (12, n_frames)
    return chroma.mean(axis=1).astype(np.float64)


def key_scores(profile: np.ndarray) -> np.ndarray:
    """(24,) Pearson correlations of a (12,) pitch-class profile with the rotated KK profiles:
    index tonic for major, 12 + tonic for minor (NaN for a flat profile)."""
    p = np.asarray(profile, dtype=np.float64).reshape(12)
    out = np.full(24, np.nan)
    if not np.isfinite(p).all() or p.std() < MIN_PROFILE_SPREAD:
        return out
    for mode, ref in enumerate((KK_MAJOR, KK_MINOR)):
        for tonic in range(12):
            rotated = np.roll(np.asarray(ref), tonic)  # rotated[tonic] = the tonic's rating
            out[12 * mode + tonic] = np.corrcoef(p, rotated)[0, 1]
    return out


def estimate_key(wav: Any, sample_rate: int) -> KeyEstimate:
    """The key of a (T,) waveform (module docstring)."""
    scores = key_scores(chroma_profile(wav, sample_rate))
    if not np.isfinite(scores).any():
        return KeyEstimate(None, float("nan"), tuple(float(s) for s in scores))
    best = int(np.nanargmax(scores))
    return KeyEstimate(best, float(scores[best]), tuple(float(s) for s in scores))


def mirex_score(reference: int, estimated: int | None) -> float:
    """MIREX key score of an estimate against a reference key index (0 without an estimate)."""
    if estimated is None:
        return 0.0
    import mir_eval

    return float(mir_eval.key.weighted_score(key_name(reference), key_name(estimated)))


__all__ = [
    "KK_MAJOR",
    "KK_MINOR",
    "KeyEstimate",
    "chroma_profile",
    "estimate_key",
    "key_scores",
    "mirex_score",
]
