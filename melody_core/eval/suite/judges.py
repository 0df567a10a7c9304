"""The "judges" section of `melody eval all` (issue 16): genre prompts judged by ears this project
did not write, next to its own.

Clips: each of the first `judge_genres` `sets.JUDGE_PROMPTS` (16 genres) x `judge_seeds` seeds
(seed = base seed + s), `seconds` long, `control_steps` DPD steps, through `MelodyPipeline.generate`
(a bundle whose LM has BPM / key controls reads them from the prompt). The asked tempo and key are
what `models.controls.find_controls` reads in the prompt.

Judges, on every generated clip and, as the ceiling row, on the reference set's held-out clips with
the matching labels (`genre` attribute among the 16 genres, `instrument_family`, `bpm`, `key` or
`tonic` + `mode`):
- genre, zero-shot with the bundle's MuLan: the nearest (cosine) of the 16 genres' class embeddings
  (normalised mean text embedding of `sets.genre_class_texts`); chance 1/16.
- musicnn (`eval.judges`): the asked genre's MSD tags among the clip's top 5 genre tags, and the
  lead's instrument family's MSD tags among its top 5 of all 50 tags (rules, tag maps and chance in
  that module's docstring; genres and families without an MSD tag are not scored).
- tempo: librosa's beat tracker (`judges.librosa_bpm`) and our estimator (`tempo.estimate_bpm`) vs
  the asked BPM: Accuracy1 (within 4 %) and Accuracy2 (also x2 / x1/2), `control.tempo_summary`.
- key: `eval.key.estimate_key` (Krumhansl-Kessler on mean chroma) on the clips whose prompt names a
  key: exact matches and the mean MIREX score.
A judge that cannot run (no musicnn taggram: a stand-in embedder) leaves {"error": ...} in its place.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from melody_core import SAMPLE_RATE
from melody_core.eval.suite.control import (
    _class_scores,
    _safe_bpm,
    audio_embedding,
    tempo_summary,
    text_embeddings,
)
from melody_core.eval.suite.gen import generate
from melody_core.eval.suite.options import Log, SuiteOptions
from melody_core.eval.suite.sets import JUDGE_PROMPTS, RefClip, genre_class_texts
from melody_core.generation.pipeline import MelodyPipeline
from melody_core.models.controls import clip_controls, find_controls, key_name

GENRES = tuple(p.genre for p in JUDGE_PROMPTS)  # the zero-shot classes (always all 16)


def _genre_classifier(pipe: MelodyPipeline) -> torch.Tensor:
    """(16, E) unit class embeddings of `GENRES`."""
    return torch.stack(
        [F.normalize(text_embeddings(pipe, genre_class_texts(g)).mean(0), dim=-1) for g in GENRES]
    )


def judge_clip(
    pipe: MelodyPipeline,
    embedder: Any,
    classes: torch.Tensor | None,
    wav: Any,
    *,
    genre: str | None,
    family: str | None,
    bpm: float | None,
    key: int | None,
) -> dict[str, Any]:
    """Every judge's verdict on one (T,) clip; a judge without its label is left out (None)."""
    from melody_core.eval.judges import clip_tags, family_hit, genre_hit, librosa_bpm, top_tags
    from melody_core.eval.key import estimate_key, mirex_score

    out: dict[str, Any] = {"genre": genre, "family": family, "asked_bpm": bpm,
                           "asked_key": None if key is None else key_name(key)}  # fmt: skip
    if genre is not None and classes is not None:
        out["mulan_genre"] = GENRES[int((classes @ audio_embedding(pipe, wav)).argmax())]
    if bpm is not None:
        out["ours_bpm"], out["librosa_bpm"] = _safe_bpm(wav), librosa_bpm(wav, SAMPLE_RATE)
    if key is not None:
        est = estimate_key(wav, SAMPLE_RATE)
        out.update(estimated_key=est.name, key_ok=est.key == key, key_mirex=mirex_score(key, est.key))
    if hasattr(embedder, "taggram"):
        scores = clip_tags(embedder, wav, SAMPLE_RATE)
        out["top_tags"] = top_tags(scores)
        out["musicnn_genre_ok"] = genre_hit(scores, genre) if genre else None
        out["musicnn_family_ok"] = family_hit(scores, family)
    return out


def _share(items: list[dict], key: str) -> dict[str, Any]:
    """{"n": items with a verdict, "hits", "accuracy"} of a boolean verdict field."""
    vals = [bool(i[key]) for i in items if i.get(key) is not None]
    return {"n": len(vals), "hits": sum(vals), "accuracy": sum(vals) / len(vals) if vals else None}


def _tempo(items: list[dict]) -> dict[str, Any]:
    timed = [i for i in items if i.get("asked_bpm") is not None]
    return {name: tempo_summary([(i[f"{name}_bpm"], i["asked_bpm"]) for i in timed])
            for name in ("ours", "librosa")}  # fmt: skip


def _mulan(items: list[dict]) -> dict[str, Any]:
    rated = [i for i in items if i.get("mulan_genre") is not None]
    s = _class_scores([GENRES.index(i["genre"]) for i in rated], [GENRES.index(i["mulan_genre"])
                      for i in rated], list(GENRES))  # fmt: skip
    return {**{k: v for k, v in s.items() if k != "per_family"}, "per_genre": s["per_family"]}


def _musicnn(items: list[dict], embedder: Any) -> dict[str, Any]:
    from melody_core.eval.judges import FAMILY_TAGS, GENRE_TAGS, MSD_GENRE_TAGS, TAGS, tag_chance

    if not hasattr(embedder, "taggram"):
        return {"error": f"{type(embedder).__name__} has no musicnn taggram"}
    g = [i for i in items if i.get("musicnn_genre_ok") is not None]
    f = [i for i in items if i.get("musicnn_family_ok") is not None]
    return {
        "genre": {**_share(items, "musicnn_genre_ok"),
                  "chance": float(np.mean([tag_chance(len(GENRE_TAGS[i["genre"]]), len(MSD_GENRE_TAGS))
                                           for i in g])) if g else None,
                  "per_genre": {x: _share([i for i in g if i["genre"] == x], "musicnn_genre_ok")
                                for x in dict.fromkeys(i["genre"] for i in g)}},
        "family": {**_share(items, "musicnn_family_ok"),
                   "chance": float(np.mean([tag_chance(len(FAMILY_TAGS[i["family"]]), len(TAGS))
                                            for i in f])) if f else None,
                   "per_family": {x: _share([i for i in f if i["family"] == x], "musicnn_family_ok")
                                  for x in dict.fromkeys(i["family"] for i in f)}},
    }  # fmt: skip


def _key(items: list[dict]) -> dict[str, Any]:
    keyed = [i for i in items if i.get("key_ok") is not None]
    return {**_share(keyed, "key_ok"),
            "mirex": float(np.mean([i["key_mirex"] for i in keyed])) if keyed else None}  # fmt: skip


def summarise(items: list[dict], embedder: Any) -> dict[str, Any]:
    """Every judge's scores over a list of `judge_clip` records."""
    return {"clips": len(items), "mulan_genre": _mulan(items), "musicnn": _musicnn(items, embedder),
            "tempo": _tempo(items), "key": _key(items)}  # fmt: skip


def per_genre(items: list[dict]) -> dict[str, dict[str, float | None]]:
    """genre -> share of its clips each judge passes (None where it judged none): the plot's data."""
    out = {}
    for g in dict.fromkeys(i["genre"] for i in items):
        mine = [i for i in items if i["genre"] == g]
        mulan = [i for i in mine if i.get("mulan_genre") is not None]
        row = {"mulan": sum(i["mulan_genre"] == g for i in mulan) / len(mulan) if mulan else None}
        for name, t in _tempo(mine).items():
            row[f"tempo_{name}"] = t["accuracy1"]
        row["musicnn_genre"] = _share(mine, "musicnn_genre_ok")["accuracy"]
        row["key"] = _share(mine, "key_ok")["accuracy"]
        out[g] = row
    return out


def _reference_items(
    pipe: MelodyPipeline, embedder: Any, classes: torch.Tensor, clips: list[RefClip]
) -> list:
    items = []
    for c in clips:
        genre = c.attributes.get("genre") if c.attributes.get("genre") in GENRES else None
        ctl = clip_controls(c.attributes)
        if genre is None and c.bpm is None and ctl.key is None:
            continue
        items.append(
            {
                "id": c.id,
                **judge_clip(
                    pipe, embedder, classes, c.wav, genre=genre, family=c.family, bpm=c.bpm, key=ctl.key
                ),
            }
        )
    return items


def measure_judges(
    pipe: MelodyPipeline, clips: list[RefClip], embedder: Any, opts: SuiteOptions, log: Log
) -> dict[str, Any]:
    try:
        import librosa  # noqa: F401  (evaluation-only dependency)
        import mir_eval  # noqa: F401
    except ImportError as exc:
        msg = f"the judges need librosa and mir_eval ({exc}): pip install 'melody-studio[eval]'"
        raise RuntimeError(msg) from None
    classes = _genre_classifier(pipe)
    chosen = JUDGE_PROMPTS[: opts.judge_genres]
    items = []
    for j, p in enumerate(chosen):
        asked = find_controls(p.text)
        for s in range(opts.judge_seeds):
            wav, meta, wall = generate(pipe, p.text, opts.seed + s, opts.seconds, opts.control_steps)
            rec = judge_clip(pipe, embedder, classes, wav, genre=p.genre, family=p.family, bpm=asked.bpm,
                             key=asked.key)  # fmt: skip
            items.append({"prompt": p.text, "seed": opts.seed + s, "lm_controls": meta.get("controls"),
                          "generation_s": wall, **rec})  # fmt: skip
        mine = items[-opts.judge_seeds :]
        log(f"judges {j + 1}/{len(chosen)} {p.genre}: MuLan genre "
            f"{sum(i['mulan_genre'] == p.genre for i in mine)}/{len(mine)}, BPM asked {asked.bpm:g}, heard "
            + ", ".join(f"{i['librosa_bpm']:.0f}" for i in mine) + " (librosa)")  # fmt: skip
    ref = _reference_items(pipe, embedder, classes, clips)
    from melody_core.eval.judges import FAMILY_TAGS, GENRE_TAGS, MSD_GENRE_TAGS, TOP_K

    rules = {"top_k": TOP_K, "genre_pool": list(MSD_GENRE_TAGS),
             "genre": {g: list(GENRE_TAGS[g]) for g in GENRES},
             "family": {f: list(t) for f, t in FAMILY_TAGS.items()}}  # fmt: skip
    return {
        "musicnn_tags": rules,
        "genres": list(GENRES), "class_texts": {g: genre_class_texts(g) for g in GENRES},
        "prompts": [p.text for p in chosen], "seeds": opts.judge_seeds, "seconds": opts.seconds,
        "steps": opts.control_steps, "lm_controls": list(pipe.controls),
        "generated": {**summarise(items, embedder), "per_genre": per_genre(items), "items": items},
        "reference": {**summarise(ref, embedder), "items": ref},
    }  # fmt: skip
