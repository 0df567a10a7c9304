"""Onset check of a corpus' labelled BPMs (`melody data info --check-bpm N`).

Lives in eval/ because it uses the tempo estimator; the corpus reader is data/'s."""

from __future__ import annotations

from pathlib import Path

from melody_core import SAMPLE_RATE
from melody_core.audio import load_audio
from melody_core.data.corpus import read_corpus
from melody_core.eval.tempo import estimate_bpm

BPM_CHECK_TOLERANCE = 0.02  # relative
BPM_SEARCH = (0.8, 1.25)  # the onset check searches this range around the label (excludes 2x, 1/2x, 1.5x)


def bpm_check(folder: str | Path, max_clips: int) -> dict:
    """Onset check of labelled BPMs: for up to `max_clips` arranged clips, the beat period of the
    audio (`eval.tempo.estimate_bpm`, searched within BPM_SEARCH x the label) vs the label. Returns
    {"checked", "within", "per_genre": {genre: [within, checked]}, "misses": [(id, bpm, measured)]}."""
    recs = [r for r in read_corpus(folder) if r.attributes.get("kind") == "arrangement"][:max_clips]
    out: dict = {"checked": 0, "within": 0, "per_genre": {}, "misses": []}
    for r in recs:
        bpm = float(r.attributes["bpm"])
        wav = load_audio(Path(folder) / r.path)
        got = estimate_bpm(wav, SAMPLE_RATE, min_bpm=BPM_SEARCH[0] * bpm, max_bpm=BPM_SEARCH[1] * bpm)
        ok = abs(got / bpm - 1.0) <= BPM_CHECK_TOLERANCE
        g = out["per_genre"].setdefault(r.attributes.get("genre", "?"), [0, 0])
        g[0] += ok
        g[1] += 1
        out["checked"] += 1
        out["within"] += ok
        if not ok:
            out["misses"].append((r.id, bpm, round(got, 1)))
    return out
