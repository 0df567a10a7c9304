"""Prompt-control sections of `melody eval all` (`melody_core.eval.suite`): does the music follow
the tempo and the instruments asked for?

- Tempo: prompts in the corpus's caption phrasing at each asked BPM (`sets.tempo_items`),
  `tempo.estimate_bpm` of the generated audio vs the BPM asked for (`tempo.tempo_error`: absolute
  error, Accuracy1 = within 4 %, Accuracy2 = also at half / double tempo). The same estimator on the
  reference clips vs their known `bpm` attribute shows its own accuracy on real renders (a ceiling
  for what the generated scores can mean). A clip without an estimate (no onsets, too short) counts
  as wrong and has no error.
- Instrument family: one prompt per corpus family (its template clip's caption), `family_seeds`
  seeds each; zero-shot classification with our MuLan: the audio embedding's nearest family by
  cosine, a family being the normalised mean text embedding of `sets.family_class_texts`.
  The same classifier on the reference clips of those families gives the ceiling.
- Two-way test (training issue): `PAIR_PROMPTS` x `pair_seeds` clips; each is assigned to the closer
  (cosine) of the two prompts' text embeddings; accuracy, per prompt, and the mean margin
  cos(own prompt) − cos(other prompt). The same test on the held-out clips of the two ensembles
  (`PAIR_ENSEMBLES`) and on their VAE round trips locates a failure: MuLan itself, the VAE, or
  the LM/DPD. The LM alone (`pair_tokens`): a logistic probe on token histograms, fitted on the
  training clips of the two ensembles, classifies LM samples for the two prompts (no DPD, no VAE).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from melody_core import SAMPLE_RATE, SEMANTIC_RATE, TOKEN_SAMPLES
from melody_core.eval.suite.gen import generate
from melody_core.eval.suite.options import Log, SuiteOptions
from melody_core.eval.suite.sets import (
    RefClip,
    caption_for,
    family_class_texts,
    tempo_items,
)
from melody_core.generation.pipeline import MelodyPipeline

PAIR_PROMPTS = ("solo piano", "string quartet")  # the training issue's two-way retrieval test
PAIR_ENSEMBLES = ("piano", "string_quartet")  # corpus `ensemble` attribute of each PAIR_PROMPTS entry
PAIR_PROBE_CLIPS = 40  # most training clips per ensemble for the token probe
TEMPO_FALLBACK_LABELS = ("solo piano", "a string quartet", "a church organ")  # corpora without families


def audio_embedding(pipe: MelodyPipeline, wav: np.ndarray | Tensor) -> Tensor:
    """(E,) unit MuLan audio embedding of one (T,) 24 kHz clip."""
    x = torch.as_tensor(np.asarray(wav, dtype=np.float32)).unsqueeze(0)  # (1, T)
    with torch.inference_mode():
        return F.normalize(pipe.models.mulan.embed_audio(x).float().cpu()[0], dim=-1)


def text_embeddings(pipe: MelodyPipeline, texts: list[str]) -> Tensor:
    """(N, E) unit MuLan text embeddings."""
    with torch.inference_mode():
        return F.normalize(pipe.models.mulan.embed_text(list(texts)).float().cpu(), dim=-1)


def _safe_bpm(wav: np.ndarray | Tensor) -> float:
    from melody_core.eval.tempo import estimate_bpm

    try:
        return float(estimate_bpm(torch.as_tensor(np.asarray(wav, dtype=np.float32)), SAMPLE_RATE))
    except ValueError:  # too short for the estimator's slowest tempo
        return math.nan


def tempo_summary(pairs: list[tuple[float, float]]) -> dict[str, Any]:
    """Scores of (estimated, asked) BPM pairs: n, estimated (finite), mean / median absolute error,
    Accuracy1 and Accuracy2 (fractions of all pairs)."""
    from melody_core.eval.tempo import tempo_error

    errs = [tempo_error(est, asked) for est, asked in pairs]
    finite = [e["abs_error"] for e in errs if math.isfinite(e["abs_error"])]
    n = len(pairs)
    return {
        "n": n, "estimated": len(finite),
        "mean_abs_error_bpm": float(np.mean(finite)) if finite else None,
        "median_abs_error_bpm": float(np.median(finite)) if finite else None,
        "accuracy1": sum(bool(e["accuracy1"]) for e in errs) / n if n else None,
        "accuracy2": sum(bool(e["accuracy2"]) for e in errs) / n if n else None,
    }  # fmt: skip


def measure_tempo(
    pipe: MelodyPipeline, templates: list[tuple[str, dict]], clips: list[RefClip], opts: SuiteOptions,
    log: Log,
) -> dict[str, Any]:
    chosen = templates[: opts.tempo_templates]
    items = tempo_items(
        chosen, opts.tempo_bpms, opts.tempo_seeds, TEMPO_FALLBACK_LABELS[: opts.tempo_templates]
    )
    for k, item in enumerate(items):
        item["seed"] = opts.seed + item.pop("seed_index")
        wav, _, wall = generate(pipe, item["prompt"], item["seed"], opts.tempo_seconds, opts.control_steps)
        item["estimated_bpm"] = _safe_bpm(wav)
        item["generation_s"] = wall
        log(f"tempo {k + 1}/{len(items)}: asked {item['asked_bpm']:g}, heard {item['estimated_bpm']:.1f} BPM")
    ref_items = [{"id": c.id, "known_bpm": c.bpm, "estimated_bpm": _safe_bpm(c.wav)} for c in clips if c.bpm]
    return {
        "generated": {**tempo_summary([(i["estimated_bpm"], i["asked_bpm"]) for i in items]), "items": items},
        "reference": {**tempo_summary([(i["estimated_bpm"], i["known_bpm"]) for i in ref_items]),
                      "items": ref_items},
        "bpms": list(opts.tempo_bpms), "seconds": opts.tempo_seconds, "steps": opts.control_steps,
    }  # fmt: skip


def _confusion(true: list[int], pred: list[int], k: int) -> list[list[int]]:
    m = [[0] * k for _ in range(k)]
    for t, p in zip(true, pred):
        m[t][p] += 1
    return m


def _class_scores(true: list[int], pred: list[int], families: list[str]) -> dict[str, Any]:
    k = len(families)
    per = {}
    for j, fam in enumerate(families):
        idx = [i for i, t in enumerate(true) if t == j]
        per[fam] = {"n": len(idx), "accuracy": sum(pred[i] == j for i in idx) / len(idx) if idx else None}
    n = len(true)
    return {
        "n": n,
        "accuracy": sum(t == p for t, p in zip(true, pred)) / n if n else None,
        "chance": 1.0 / k,
        "per_family": per,
        "confusion": _confusion(true, pred, k),
    }


def measure_instrument(
    pipe: MelodyPipeline,
    templates: list[tuple[str, dict]],
    labels: dict[str, list[str]],
    clips: list[RefClip],
    opts: SuiteOptions,
    log: Log,
) -> dict[str, Any]:
    families = [fam for fam, _ in templates]
    if len(families) < 2:
        return {
            "error": f"the corpus has {len(families)} instrument famil{'y' if len(families) == 1 else 'ies'}"
            " (attribute instrument_family); need at least 2"
        }
    class_texts = {f: family_class_texts(f, labels.get(f, [])) for f in families}
    class_emb = torch.stack(
        [F.normalize(text_embeddings(pipe, class_texts[f]).mean(0), dim=-1) for f in families]
    )  # (K, E)
    true, pred, items = [], [], []
    for j, (fam, attrs) in enumerate(templates):
        prompt = caption_for(attrs, f"eval-family/{fam}")
        for s in range(opts.family_seeds):
            wav, _, _ = generate(pipe, prompt, opts.seed + s, opts.seconds, opts.control_steps)
            p = int((class_emb @ audio_embedding(pipe, wav)).argmax())
            true.append(j)
            pred.append(p)
            items.append({"family": fam, "prompt": prompt, "seed": opts.seed + s, "predicted": families[p]})
        hits = sum(p == j for t, p in zip(true, pred) if t == j)
        log(f"instrument {j + 1}/{len(families)}: {fam}: {hits}/{opts.family_seeds} recognised")
    ref = [(families.index(c.family), c) for c in clips if c.family in families]
    ref_pred = [int((class_emb @ audio_embedding(pipe, c.wav)).argmax()) for _, c in ref]
    return {
        "families": families,
        "class_texts": class_texts,
        "steps": opts.control_steps,
        "generated": {**_class_scores(true, pred, families), "items": items},
        "reference": _class_scores([j for j, _ in ref], ref_pred, families),
    }


def _pair_scores(pipe: MelodyPipeline, text: Tensor, wavs: list[tuple[int, Any]]) -> dict[str, Any]:
    """Two-way retrieval of (label, (T,) audio) pairs: n, accuracy, per prompt, mean margin."""
    hits = {p: [] for p in PAIR_PROMPTS}
    margins = []
    for j, wav in wavs:
        sims = text @ audio_embedding(pipe, wav)  # (2,)
        hits[PAIR_PROMPTS[j]].append(int(sims.argmax()) == j)
        margins.append(float(sims[j] - sims[1 - j]))
    n = len(wavs)
    return {
        "n": n,
        "accuracy": sum(map(sum, hits.values())) / n if n else None,
        "per_prompt": {p: (sum(h) / len(h) if h else None) for p, h in hits.items()},
        "clips": {p: len(h) for p, h in hits.items()},
        "margin_mean": float(np.mean(margins)) if margins else None,
    }


def _pair_clips(clips: list[RefClip]) -> list[tuple[int, Tensor]]:
    """(label, (T,) audio) of the held-out clips of `PAIR_ENSEMBLES` (label = index in PAIR_PROMPTS)."""
    return [(PAIR_ENSEMBLES.index(c.attributes["ensemble"]), c.wav) for c in clips
            if c.attributes.get("ensemble") in PAIR_ENSEMBLES]  # fmt: skip


def pair_reference(pipe: MelodyPipeline, clips: list[RefClip], text: Tensor) -> dict[str, Any]:
    """The pair test on held-out clips of `PAIR_ENSEMBLES` and on their VAE round trips."""
    from melody_core.eval.reconstruct import round_trip

    ref = _pair_clips(clips)
    with torch.inference_mode():
        recon = [(j, round_trip(pipe.models.vae, wav)) for j, wav in ref]
    return {"reference": _pair_scores(pipe, text, ref), "reconstruction": _pair_scores(pipe, text, recon)}


def _clip_tokens(pipe: MelodyPipeline, wav: Tensor) -> Tensor:
    """(T,) 24 kHz -> (T // 960,) semantic tokens with the bundle's own tokenizer."""
    from melody_core.train.cache import ssl_features

    feats = ssl_features(pipe.models.ssl, wav, pipe.models.kmeans.config.layer, pipe.models.device)
    return pipe.models.kmeans.assign(feats.to(pipe.models.kmeans.centroids.device)).cpu()


def pair_tokens(pipe: MelodyPipeline, root: Any, clips: list[RefClip], opts: SuiteOptions) -> dict[str, Any]:
    """The two-way test on LM samples alone (module docstring); {"error": ...} without the data."""
    from melody_core.audio import AudioError, load_audio
    from melody_core.data.corpus import read_corpus
    from melody_core.eval.card.metrics import centre_crop, select_evenly
    from melody_core.eval.token_probe import fit_logistic, token_histogram

    if pipe.models.ssl is None or pipe.models.kmeans is None:
        return {"error": "the bundle has no tokenizer (ssl + kmeans)"}
    vocab, n_tok = pipe.models.lm.config.vocab_size, round(opts.seconds * SEMANTIC_RATE)
    x, y = [], []
    train = read_corpus(root, split="train")
    for j, ens in enumerate(PAIR_ENSEMBLES):
        recs = [r for r in train if r.attributes.get("ensemble") == ens]
        for r in (recs[i] for i in select_evenly(len(recs), PAIR_PROBE_CLIPS)):
            try:
                wav = load_audio(root / r.path)
            except AudioError:
                continue
            start, length = centre_crop(len(wav), opts.seconds, SAMPLE_RATE, TOKEN_SAMPLES)
            x.append(token_histogram(_clip_tokens(pipe, wav[start : start + length]), vocab))
            y.append(j)
    counts = [y.count(j) for j in range(len(PAIR_ENSEMBLES))]
    if min(counts) < 2:
        return {"error": f"the token probe needs >= 2 training clips per ensemble {PAIR_ENSEMBLES}, "
                         f"found {counts}"}  # fmt: skip
    predict = fit_logistic(torch.stack(x), torch.tensor(y), len(PAIR_ENSEMBLES))
    held_ok = [int(predict(token_histogram(_clip_tokens(pipe, w), vocab)[None])[0]) == j
               for j, w in _pair_clips(clips)]  # fmt: skip
    guidance = pipe.lm_guidance(None)
    hits: dict[str, list[bool]] = {}
    for j, prompt in enumerate(PAIR_PROMPTS):
        prefix = pipe.models.condition(prompt, None, 0.5).repeat(opts.pair_seeds, 1)  # (pair_seeds, n_prefix)
        gen = torch.Generator(pipe.models.device).manual_seed(opts.seed)
        with torch.inference_mode():
            toks = pipe.models.lm.generate(prefix, n_tok, generator=gen, guidance=guidance)  # (seeds, n_tok)
        pred = predict(torch.stack([token_histogram(t.cpu(), vocab) for t in toks]))  # (pair_seeds,)
        hits[prompt] = [int(p) == j for p in pred]
    n = sum(len(h) for h in hits.values())
    return {
        "probe_train_clips": dict(zip(PAIR_PROMPTS, counts)),
        "probe_held_out": {"n": len(held_ok), "accuracy": sum(held_ok) / len(held_ok) if held_ok else None},
        "lm_guidance": guidance,
        "n": n,
        "accuracy": sum(map(sum, hits.values())) / n,
        "per_prompt": {p: sum(h) / len(h) for p, h in hits.items()},
    }


def measure_pair(
    pipe: MelodyPipeline, root: Any, clips: list[RefClip], opts: SuiteOptions, log: Log
) -> dict[str, Any]:
    text = text_embeddings(pipe, list(PAIR_PROMPTS))  # (2, E)
    items = []
    lm_guidance = None
    for j, prompt in enumerate(PAIR_PROMPTS):
        for s in range(opts.pair_seeds):
            wav, meta, _ = generate(pipe, prompt, opts.seed + s, opts.seconds, opts.control_steps)
            lm_guidance = meta["settings"].get("lm_guidance")
            sims = text @ audio_embedding(pipe, wav)  # (2,)
            items.append(
                {
                    "prompt": prompt,
                    "seed": opts.seed + s,
                    "predicted": PAIR_PROMPTS[int(sims.argmax())],
                    "margin": float(sims[j] - sims[1 - j]),
                }
            )
        log(
            f"pair: {prompt!r}: {sum(i['predicted'] == prompt for i in items if i['prompt'] == prompt)}"
            f"/{opts.pair_seeds} retrieved"
        )
    per = {
        p: sum(i["predicted"] == p for i in items if i["prompt"] == p) / opts.pair_seeds for p in PAIR_PROMPTS
    }
    held_out = pair_reference(pipe, clips, text)
    tokens = pair_tokens(pipe, root, clips, opts)
    if "accuracy" in tokens:
        log(f"pair: LM tokens alone {tokens['accuracy']:.0%} told apart by the token probe")
    ref, rec = held_out["reference"], held_out["reconstruction"]
    if ref["n"]:
        log(f"pair: held-out clips {ref['accuracy']:.0%}, their VAE round trips "
            f"{rec['accuracy']:.0%} retrieved ({ref['n']} clips)")
    return {
        "prompts": list(PAIR_PROMPTS),
        "n": len(items),
        "steps": opts.control_steps,
        "lm_guidance": lm_guidance,
        **held_out,
        "tokens": tokens,
        "accuracy": sum(i["predicted"] == i["prompt"] for i in items) / len(items),
        "per_prompt": per,
        "margin_mean": float(np.mean([i["margin"] for i in items])),
        "items": items,
    }
