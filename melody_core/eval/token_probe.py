"""Linear probe: do the semantic tokens carry musical information?

For every clip of a corpus, the whole clip goes through the trained SSL model and k-means
(`melody_core.train.cache.ssl_features`, the exact extraction the LM/DPD training caches use) and
becomes a normalised bag-of-tokens histogram (V,). A multinomial logistic regression on these
histograms predicts clip attributes (instrument family, key tonic pitch class, major/minor mode);
its accuracy on held-out clips is compared with chance (the majority class of the training labels,
and 1/C). Two controls tell whether the learned tokens beat trivial features:
- `random_kmeans`: the same SSL features, assigned to V centroids that are random feature rows
  (a tokenizer that learned nothing beyond the SSL features' own geometry);
- `mel_stats`: per-clip mean and std of the 25 Hz log-mel frames of `hubert_frame_features`
  (no SSL model at all).

Two evaluations: the corpus's valid split (small), and k-fold cross-validation over all clips with
folds grouped by `attributes['work']` (clips of one work never straddle train/test), which is the
less noisy figure *(our choice: the corpus splits by work, so grouping keeps the same guarantee)*.

The classifier is an L2-regularised softmax regression on z-scored inputs, fitted full-batch with
L-BFGS *(our choice: convex, deterministic, and fast enough for a few hundred clips on one core)*.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from melody_core.models.ssl_conformer import HOP as SSL_HOP
from melody_core.models.ssl_conformer import hubert_frame_features

TARGETS = ("instrument", "tonic", "mode", "key", "tempo_class", "bpm_4pct")  # probed attributes
TEMPO_RANGE = (60.0, 180.0)  # BPM range of the tempo targets (clamped)
TEMPO_CLASSES = 8  # log-spaced tempo classes over TEMPO_RANGE
BPM_BIN_RATIO = 1.08  # bpm_4pct: log bins 8 % wide, so a right bin puts its centre within +-4 %
N_BPM_BINS = math.ceil(math.log(TEMPO_RANGE[1] / TEMPO_RANGE[0]) / math.log(BPM_BIN_RATIO))  # 15
FEATURE_SETS = ("tokens", "random_kmeans", "mel_stats")  # learned tokens and the two controls
NATURAL_PC = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
ACCIDENTAL = {"#": 1, "s": 1, "b": -1, "-": -1}  # music21 writes flats as "-"
N_PITCH_CLASSES = 12
N_CLASSES = {"tonic": 12, "key": 24, "tempo_class": TEMPO_CLASSES, "bpm_4pct": N_BPM_BINS}  # for 1/C
STD_FLOOR = 1e-6  # z-scoring: floor on a feature's std (constant features stay 0)


class ProbeError(ValueError):
    """A user-facing probe problem (unusable corpus, mismatched models): one line."""


@dataclass
class ProbeOptions:
    max_clips: int | None = None  # clips used at most (evenly strided over the corpus); None = all
    folds: int = 5  # grouped cross-validation folds
    steps: int = 100  # L-BFGS iterations of the logistic regression
    l2: float = 1e-2  # L2 penalty on the weights (per clip, on z-scored inputs)
    seed: int = 0  # random k-means centroids and fold assignment


# ----------------------------------------------------------------------------------------- labels
def tonic_pitch_class(name: Any) -> int | None:
    """"F#" -> 6, "Eb" / "E-" -> 3, "c" -> 0; None for anything unparsable."""
    if not isinstance(name, str) or not name.strip():
        return None
    name = name.strip()
    base = NATURAL_PC.get(name[0].upper())
    if base is None or any(ch not in ACCIDENTAL for ch in name[1:]):
        return None
    return (base + sum(ACCIDENTAL[ch] for ch in name[1:])) % N_PITCH_CLASSES


def clip_labels(attributes: dict[str, Any]) -> dict[str, str | None]:
    """The probed targets of one clip (None where the attribute is missing)."""
    tonic = attributes.get("tonic")
    if tonic is None and isinstance(attributes.get("key"), str):
        tonic = attributes["key"].split()[0] if attributes["key"].split() else None
    pc = tonic_pitch_class(tonic)
    mode = attributes.get("mode")
    fam = attributes.get("instrument_family")
    mode = str(mode) if mode in ("major", "minor") else None
    bpm = attributes.get("bpm")
    bpm = float(bpm) if isinstance(bpm, int | float) and bpm > 0 else None
    return {
        "instrument": str(fam) if fam else None,
        "tonic": None if pc is None else str(pc),
        "mode": mode,
        "key": None if pc is None or mode is None else f"{pc} {mode}",
        "tempo_class": None if bpm is None else str(tempo_bin(bpm, TEMPO_CLASSES)),
        "bpm_4pct": None if bpm is None else str(bpm_4pct_bin(bpm)),
    }


def tempo_bin(bpm: float, n_bins: int) -> int:
    """Index of `bpm` among n_bins log-spaced bins over TEMPO_RANGE (clamped)."""
    lo, hi = TEMPO_RANGE
    pos = math.log(min(max(bpm, lo), hi) / lo) / math.log(hi / lo)
    return min(n_bins - 1, int(pos * n_bins))


def bpm_4pct_bin(bpm: float) -> int:
    """Index of the BPM_BIN_RATIO-wide log bin from TEMPO_RANGE[0] that holds `bpm` (clamped):
    predicting the right bin means predicting a tempo (its geometric centre) within +-4 %."""
    lo, hi = TEMPO_RANGE
    return min(N_BPM_BINS - 1, int(math.log(min(max(bpm, lo), hi) / lo) / math.log(BPM_BIN_RATIO)))


# --------------------------------------------------------------------------------------- features
def token_histogram(tokens: torch.Tensor, vocab: int) -> torch.Tensor:
    """(T,) int64 -> (vocab,) float32 normalised bag of tokens (zeros for an empty sequence)."""
    counts = torch.bincount(tokens.reshape(-1), minlength=vocab).float()[:vocab]
    return counts / counts.sum().clamp(min=1.0)


def mel_statistics(wav: torch.Tensor) -> torch.Tensor:
    """(T,) waveform -> (2 F,) mean and std over time of the 25 Hz log-mel(+delta) frames."""
    frames = hubert_frame_features(wav.unsqueeze(0))[0]  # (n, F)
    return torch.cat([frames.mean(0), frames.std(0, unbiased=False)])


def random_centroids(features: list[torch.Tensor], vocab: int, seed: int) -> torch.Tensor:
    """(vocab, d): random rows of the pooled per-clip features (a k-means that learned nothing)."""
    pool = torch.cat(features)  # (N, d)
    if pool.shape[0] < vocab:
        raise ProbeError(f"only {pool.shape[0]} feature frames for {vocab} random centroids")
    gen = torch.Generator().manual_seed(seed)
    return pool[torch.randperm(pool.shape[0], generator=gen)[:vocab]].clone()


def nearest(features: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """(n, d), (V, d) -> (n,) int64 nearest-centroid ids."""
    return torch.cdist(features, centroids).argmin(-1)


# ------------------------------------------------------------------------------------- classifier
def fit_logistic(
    x: torch.Tensor, y: torch.Tensor, n_classes: int, steps: int = 100, l2: float = 1e-2
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Softmax regression on z-scored x (N, F), labels y (N,) in [0, C); returns predict(x) -> (N,)."""
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp(min=STD_FLOOR)
    z = (x - mean) / std  # (N, F)
    w = torch.zeros(x.shape[1], n_classes, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, history_size=10, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z @ w + b, y) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    w, b = w.detach(), b.detach()
    return lambda xt: (((xt - mean) / std) @ w + b).argmax(-1)


def probe_split(
    x: torch.Tensor, y: torch.Tensor, train: torch.Tensor, test: torch.Tensor, n_classes: int,
    opts: ProbeOptions,
) -> tuple[int, int, int]:
    """(correct, majority-baseline correct, n_test) of a classifier fitted on `train` rows."""
    if train.numel() == 0 or test.numel() == 0:
        return 0, 0, 0
    predict = fit_logistic(x[train], y[train], n_classes, opts.steps, opts.l2)
    majority = torch.bincount(y[train], minlength=n_classes).argmax()
    correct = int((predict(x[test]) == y[test]).sum())
    return correct, int((y[test] == majority).sum()), int(test.numel())


def grouped_folds(groups: list[str], k: int, seed: int = 0) -> list[list[int]]:
    """Row indices of k folds; all rows of one group land in one fold (groups ordered by a seeded
    hash, each placed in the currently smallest fold)."""
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    order = sorted(members, key=lambda g: hashlib.sha1(f"{seed}|{g}".encode()).hexdigest())
    order.sort(key=lambda g: -len(members[g]))  # stable: big groups first, then by hash
    folds: list[list[int]] = [[] for _ in range(k)]
    for g in order:
        min(folds, key=len).extend(members[g])
    return [sorted(f) for f in folds]


def _score(correct: int, majority: int, n: int, n_classes: int) -> dict[str, Any]:
    return {
        "accuracy": correct / n if n else None,
        "majority": majority / n if n else None,
        "uniform": 1.0 / n_classes,
        "n_test": n,
    }


def evaluate_target(
    x: torch.Tensor, labels: list[str | None], splits: list[str], groups: list[str], n_classes: int | None,
    opts: ProbeOptions,
) -> dict[str, Any]:
    """Valid-split and grouped-CV accuracies vs chance for one target and one feature set."""
    rows = [i for i, lab in enumerate(labels) if lab is not None]
    classes = sorted({labels[i] for i in rows})
    if len(classes) < 2:
        return {"skipped": "fewer than 2 classes"}
    index = {c: j for j, c in enumerate(classes)}
    n_cls = max(n_classes or 0, len(classes))
    xs = x[rows]  # (N, F)
    y = torch.tensor([index[labels[i]] for i in rows])
    sp = [splits[i] for i in rows]
    tr = torch.tensor([j for j, s in enumerate(sp) if s != "valid"], dtype=torch.long)
    te = torch.tensor([j for j, s in enumerate(sp) if s == "valid"], dtype=torch.long)
    out = {"classes": len(classes), "valid": _score(*probe_split(xs, y, tr, te, n_cls, opts), n_cls)}
    folds = grouped_folds([groups[i] for i in rows], opts.folds, opts.seed)
    tot = [0, 0, 0]
    for f in folds:
        test = torch.tensor(f, dtype=torch.long)
        train = torch.tensor(sorted(set(range(len(rows))) - set(f)), dtype=torch.long)
        tot = [a + b for a, b in zip(tot, probe_split(xs, y, train, test, n_cls, opts))]
    out["cv"] = _score(*tot, n_cls)
    return out


# ------------------------------------------------------------------------------------------ probe
def _subset(records: list, max_clips: int | None) -> list:
    if max_clips is None or max_clips >= len(records):
        return records
    stride = len(records) / max_clips
    return [records[int(i * stride)] for i in range(max_clips)]


@torch.no_grad()
def extract_clip_features(
    ssl, kmeans, corpus: str | Path, opts: ProbeOptions, log: Callable[[str], None] = lambda s: None
) -> dict[str, Any]:
    """Per clip: token histogram, random-k-means histogram, mel statistics, labels, split, group."""
    from melody_core.audio import load_audio
    from melody_core.data.corpus import read_corpus
    from melody_core.train.cache import ssl_features

    records = _subset(read_corpus(corpus), opts.max_clips)
    vocab, layer = kmeans.config.n_clusters, kmeans.config.layer
    if kmeans.config.dim != ssl.config.d_model:
        raise ProbeError(f"k-means dim {kmeans.config.dim} != SSL d_model {ssl.config.d_model}")
    feats, hists, mels, kept = [], [], [], []
    t0 = time.perf_counter()
    for n, rec in enumerate(records, 1):
        wav = load_audio(Path(corpus) / rec.path)
        if wav.shape[-1] < SSL_HOP:
            continue
        f = ssl_features(ssl, wav, layer, torch.device("cpu"))  # (T // 960, d)
        feats.append(f)
        hists.append(token_histogram(kmeans.assign(f), vocab))
        mels.append(mel_statistics(wav))
        kept.append(rec)
        if n % 50 == 0 or n == len(records):
            log(f"features: {n}/{len(records)} clips ({time.perf_counter() - t0:.0f} s)")
    if len(kept) < 2 * opts.folds:
        raise ProbeError(f"{corpus}: {len(kept)} usable clips, need at least {2 * opts.folds}")
    cent = random_centroids(feats, vocab, opts.seed)
    rand = [token_histogram(nearest(f, cent), vocab) for f in feats]
    x = {"tokens": torch.stack(hists), "random_kmeans": torch.stack(rand), "mel_stats": torch.stack(mels)}
    return {
        "x": x,
        "labels": [clip_labels(r.attributes) for r in kept],
        "splits": [r.split for r in kept],
        "groups": [str(r.attributes.get("work", r.id)) for r in kept],
        "tokens_used": int((x["tokens"].sum(0) > 0).sum()),
        "vocab": vocab,
        "seconds": time.perf_counter() - t0,
    }


def probe_features(data: dict[str, Any], opts: ProbeOptions) -> dict[str, Any]:
    """Results per target and feature set: {target: {feature_set: evaluate_target(...)}}."""
    results: dict[str, Any] = {}
    for target in TARGETS:
        labels = [lab[target] for lab in data["labels"]]
        n_cls = N_CLASSES.get(target)
        results[target] = {
            name: evaluate_target(x, labels, data["splits"], data["groups"], n_cls, opts)
            for name, x in data["x"].items()
        }
    return results


def run_probe(
    ssl_path: str | Path, kmeans_path: str | Path, corpus: str | Path, opts: ProbeOptions,
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """Load SSL + k-means (run folders or bundles), extract, probe; returns the JSON report."""
    from melody_core.train.upstream import load_component

    cpu = torch.device("cpu")
    ssl = load_component(Path(ssl_path), "ssl", cpu)
    km = load_component(Path(kmeans_path), "kmeans", cpu)
    data = extract_clip_features(ssl.model, km.model, corpus, opts, log)
    t0 = time.perf_counter()
    results = probe_features(data, opts)
    return {
        "ssl": ssl.source,
        "kmeans": km.source,
        "corpus": str(corpus),
        "clips": len(data["labels"]),
        "valid_clips": sum(s == "valid" for s in data["splits"]),
        "works": len(set(data["groups"])),
        "folds": opts.folds,
        "vocab": data["vocab"],
        "tokens_used": data["tokens_used"],
        "label_counts": {t: dict(Counter(lab[t] for lab in data["labels"] if lab[t])) for t in TARGETS},
        "results": results,
        "extract_seconds": round(data["seconds"], 1),
        "probe_seconds": round(time.perf_counter() - t0, 1),
    }


@torch.no_grad()
def extract_frame_features(
    corpus: str | Path, layers: tuple[int, ...], opts: ProbeOptions,
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """Per clip and network-free token layer (`ssl_conformer.frame_token_features`): the (n, d) frames;
    plus mel statistics, labels, splits and groups."""
    from melody_core.audio import load_audio
    from melody_core.data.corpus import read_corpus
    from melody_core.models.ssl_conformer import frame_token_features

    records = _subset(read_corpus(corpus), opts.max_clips)
    frames: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    mels, kept = [], []
    t0 = time.perf_counter()
    for n, rec in enumerate(records, 1):
        wav = load_audio(Path(corpus) / rec.path)
        if wav.shape[-1] < SSL_HOP:
            continue
        for layer in layers:
            frames[layer].append(frame_token_features(wav.unsqueeze(0), layer)[0])
        mels.append(mel_statistics(wav))
        kept.append(rec)
        if n % 50 == 0 or n == len(records):
            log(f"features: {n}/{len(records)} clips ({time.perf_counter() - t0:.0f} s)")
    if len(kept) < 2 * opts.folds:
        raise ProbeError(f"{corpus}: {len(kept)} usable clips, need at least {2 * opts.folds}")
    return {
        "frames": frames,
        "mel_stats": torch.stack(mels),
        "labels": [clip_labels(r.attributes) for r in kept],
        "splits": [r.split for r in kept],
        "groups": [str(r.attributes.get("work", r.id)) for r in kept],
        "seconds": time.perf_counter() - t0,
    }


FIT_FRAMES = 100_000  # frames k-means is fit on at most (seeded subsample of the train-split clips)
FIT_ITERATIONS = 30


def run_feature_probe(
    corpus: str | Path, layers: tuple[int, ...], vocab: int, opts: ProbeOptions,
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """Compare token feature sets without a trained SSL model: for each network-free layer, fit a
    `vocab`-centroid k-means on frames of the train-split clips only, tokenize every clip, probe the
    token histograms (valid split and CV grouped by work / arrangement); mel statistics as control."""
    from melody_core.models.kmeans import KMeansConfig, KMeansTokenizer

    data = extract_frame_features(corpus, layers, opts, log)
    x: dict[str, torch.Tensor] = {}
    used = {}
    for layer in layers:
        feats = data["frames"][layer]
        train = torch.cat([f for f, s in zip(feats, data["splits"]) if s != "valid"])  # (N, d)
        gen = torch.Generator().manual_seed(opts.seed)
        if len(train) > FIT_FRAMES:
            train = train[torch.randperm(len(train), generator=gen)[:FIT_FRAMES]]
        if len(train) < vocab:
            raise ProbeError(f"only {len(train)} training frames for {vocab} centroids")
        km = KMeansTokenizer(KMeansConfig(n_clusters=vocab, dim=train.shape[1], layer=layer))
        km.fit(train, n_iter=FIT_ITERATIONS, seed=opts.seed)
        name = f"tokens_layer{layer}"
        x[name] = torch.stack([token_histogram(km.assign(f), vocab) for f in feats])
        used[name] = int((x[name].sum(0) > 0).sum())
        log(f"{name}: k-means fit on {len(train)} frames, {used[name]}/{vocab} tokens used")
    x["mel_stats"] = data["mel_stats"]
    data["x"] = x
    t0 = time.perf_counter()
    results = probe_features(data, opts)
    return {
        "ssl": "none (network-free token features)",
        "kmeans": f"fit here: {vocab} centroids per layer {list(layers)} on train-split frames",
        "corpus": str(corpus),
        "clips": len(data["labels"]),
        "valid_clips": sum(s == "valid" for s in data["splits"]),
        "works": len(set(data["groups"])),
        "folds": opts.folds,
        "vocab": vocab,
        "tokens_used": used,
        "label_counts": {t: dict(Counter(lab[t] for lab in data["labels"] if lab[t])) for t in TARGETS},
        "results": results,
        "extract_seconds": round(data["seconds"], 1),
        "probe_seconds": round(time.perf_counter() - t0, 1),
    }


def format_report(report: dict[str, Any]) -> str:
    """Plain-text table: accuracy vs chance per target and feature set (valid split, grouped CV)."""
    lines = [
        f"SSL: {report['ssl']}",
        f"k-means: {report['kmeans']} (tokens used: {report['tokens_used']} of {report['vocab']})",
        f"clips: {report['clips']} ({report['valid_clips']} valid, {report['works']} works), "
        f"{report['folds']}-fold CV grouped by work",
        "",
        f"{'target':<12}{'features':<20}{'valid acc':>10}{'major.':>8}{'CV acc':>9}{'major.':>8}{'1/C':>7}",
    ]
    for target, by_set in report["results"].items():
        for name, r in by_set.items():
            if "skipped" in r:
                lines.append(f"{target:<12}{name:<20}  skipped: {r['skipped']}")
                continue
            v, c = r["valid"], r["cv"]
            lines.append(
                f"{target:<12}{name:<20}{_num(v['accuracy'], 10)}{_num(v['majority'], 8)}"
                f"{_num(c['accuracy'], 9)}{_num(c['majority'], 8)}{_num(c['uniform'], 7)}"
            )
    return "\n".join(lines)


def _num(value: float | None, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.3f}"
