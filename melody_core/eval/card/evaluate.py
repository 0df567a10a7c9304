"""Measured figures of the bundled model's MODEL_CARD (`melody eval card`).

On the held-out split of a corpus (`read_corpus(dir, split="valid")`, at most `max_clips` clips
spread evenly over the id-sorted split), each clip's central crop of `seconds` (a whole number of
semantic tokens, 960 samples) is run through the trainer's own extractors
(`melody_core.train.cache`: VAE posterior mean, SSL + k-means tokens, MuLan embeddings and RVQ
codes — the crop plays the role of the clip) and scored:
- VAE reconstruction: decode(posterior mean) vs the crop — multi-resolution mel distance (L1 of
  log10 mel, 3 resolutions; 0 = identical) and SI-SDR (dB), means over clips.
- DPD validation velocity MSE: the multi-chunk v-prediction loss (Eq. 7-10, M = train_chunks, chunk
  bounds on the 10-frame token grid) on the first `train_length` frames of latent_scale x latents,
  with `dpd_draws` fixed (noise, angles) draws per clip seeded from (seed + clip index);
  conditional on the clip's semantic tokens and unconditional (CFG null condition), means over clips.
- LM validation perplexity: exp(total NLL / total tokens) of the clips' semantic tokens in
  `max_len` pieces, each with the RVQ prefix of the MuLan audio embedding of the window holding its
  centre (the `lm` stage's rule); next-token accuracy; the vocabulary size (perplexity of a
  uniform guess) and the unigram perplexity of the same tokens as references.
- MuLan text -> audio retrieval: each clip's first caption against all clips' audio embeddings
  (`card.metrics.retrieval_scores`), top-1 / top-5 and their chance levels.
- Three generated samples (`card.samples`): WAV + log-mel spectrogram PNG, generation time.
Outputs in `out`: metrics.json, metrics.md (card tables), sample_{1,2,3}.wav, spectrogram_{1,2,3}.png.
Deterministic for a given bundle, corpus, options, device and thread count.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from melody_core import FRAMES_PER_TOKEN, SAMPLE_RATE, SEMANTIC_RATE, TOKEN_SAMPLES, __version__
from melody_core.audio import AudioError, load_audio
from melody_core.data.corpus import read_corpus
from melody_core.eval.card.metrics import (
    centre_crop,
    lm_nll,
    reconstruction_scores,
    retrieval_scores,
    select_evenly,
    unigram_perplexity,
    velocity_mse,
)
from melody_core.eval.card.samples import CARD_PROMPTS, generate_samples
from melody_core.train.cache import latent_extractor, mulan_extractor, token_extractor
from melody_core.train.state import atomic_write, write_json

MIN_CROP_SECONDS = 1.0  # shorter held-out clips are skipped
METRICS_FORMAT = "melody-card-metrics"
Log = Callable[[str], None]


class CardError(ValueError):
    """A user-facing evaluation problem (empty split, nothing evaluable): one line."""


@dataclass
class CardOptions:
    """What `evaluate_card` measures."""

    seconds: float = 10.0  # crop of each held-out clip, and length of each generated sample
    max_clips: int = 48  # held-out clips evaluated at most (spread evenly over the split)
    seed: int = 0  # DPD draws of clip i: seed + i; sample k (0-based): seed + 1 + k
    dpd_draws: int = 2  # fixed (noise, angles) draws per clip for the DPD velocity MSE
    prompts: tuple[str, ...] = CARD_PROMPTS  # one generated sample per prompt
    samples: bool = True  # generate the samples (False: metrics only)


@dataclass
class _Totals:
    """Per-clip results accumulated over the held-out clips."""

    ids: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # clip id -> reason
    mel: list[float] = field(default_factory=list)
    sdr: list[float] = field(default_factory=list)
    dpd_cond: list[float] = field(default_factory=list)
    dpd_uncond: list[float] = field(default_factory=list)
    dpd_zero: list[float] = field(default_factory=list)  # MSE of predicting v = 0
    nll: float = 0.0
    n_tokens: int = 0
    n_correct: int = 0
    token_counts: torch.Tensor | None = None  # (vocab,) int64 histogram
    captions: list[str] = field(default_factory=list)
    text_clips: list[int] = field(default_factory=list)  # index into audio_emb of each caption
    audio_emb: list[torch.Tensor] = field(default_factory=list)  # (E,) per evaluated clip
    seconds: dict[str, float] = field(default_factory=dict)  # time per component

    def timed(self, name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        out = fn()
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
        return out


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _evaluate_clip(pipe: Any, crop: torch.Tensor, index: int, opts: CardOptions, tot: _Totals) -> None:
    """Score one (T,) crop (T a multiple of TOKEN_SAMPLES) with every component."""
    dev = pipe.models.device
    latents = tot.timed("vae", lambda: latent_extractor(pipe.models.vae, dev)(crop)["latents"])  # (L, D)
    recon = tot.timed("vae", lambda: pipe.models.vae.decode(latents.unsqueeze(0).to(dev))[0].float().cpu())
    mel, sdr = reconstruction_scores(recon[: len(crop)], crop)  # (L * hop,) = (T,)
    tot.mel.append(mel)
    tot.sdr.append(sdr)
    tokens = None
    if pipe.models.ssl is not None and pipe.models.kmeans is not None:
        extract = token_extractor(pipe.models.ssl, pipe.models.kmeans, dev)
        tokens = tot.timed("ssl_kmeans", lambda: extract(crop)["tokens"])
    mulan = tot.timed("mulan", lambda: mulan_extractor(pipe.models.mulan, dev)(crop))  # (n_win, E) (n_win, q)
    tot.audio_emb.append(F.normalize(mulan["embeddings"].mean(0), dim=-1))  # (E,)

    cfg = pipe.models.dpd.config
    chunks = cfg.train_chunks
    width = min(len(latents), cfg.train_length) // FRAMES_PER_TOKEN * FRAMES_PER_TOKEN
    if width // FRAMES_PER_TOKEN >= chunks:
        z0 = latents[:width].to(dev) * pipe.models.latent_scale  # (W, D), the DPD's data scale
        u = None if tokens is None else tokens[: width // FRAMES_PER_TOKEN].to(dev)  # (W / 10,)
        gen = torch.Generator(device=dev).manual_seed(opts.seed + index)
        cond, uncond, zero = tot.timed("dpd", lambda: velocity_mse(
            pipe.models.dpd_forward, z0, u, chunks, FRAMES_PER_TOKEN, opts.dpd_draws, gen))
        if cond is not None:
            tot.dpd_cond.append(cond)
        tot.dpd_uncond.append(uncond)
        tot.dpd_zero.append(zero)

    if tokens is not None and len(tokens):
        codes, window_s = mulan["codes"].to(dev), pipe.models.mulan.config.clip_seconds  # (n_win, n_q)
        nll, n, correct = tot.timed("lm", lambda: lm_nll(pipe.models.lm, tokens.to(dev), codes, window_s))
        tot.nll, tot.n_tokens, tot.n_correct = tot.nll + nll, tot.n_tokens + n, tot.n_correct + correct
        counts = torch.bincount(tokens.cpu(), minlength=pipe.models.lm.config.vocab_size)  # (V,)
        tot.token_counts = counts if tot.token_counts is None else tot.token_counts + counts


def _score_clips(pipe: Any, root: Path, records: list, opts: CardOptions, log: Log) -> _Totals:
    tot = _Totals()
    min_len = math.ceil(MIN_CROP_SECONDS * SEMANTIC_RATE) * TOKEN_SAMPLES
    with torch.inference_mode():
        for i, rec in enumerate(records):
            try:
                wav = load_audio(root / rec.path)
            except AudioError as exc:
                tot.skipped[rec.id] = str(exc)
                continue
            start, length = centre_crop(len(wav), opts.seconds, SAMPLE_RATE, TOKEN_SAMPLES)
            if length < min_len:
                tot.skipped[rec.id] = f"shorter than {MIN_CROP_SECONDS:g} s"
                continue
            _evaluate_clip(pipe, wav[start : start + length], i, opts, tot)
            if rec.captions:
                tot.captions.append(rec.captions[0])
                tot.text_clips.append(len(tot.ids))
            tot.ids.append(rec.id)
            log(f"clip {i + 1}/{len(records)}: {rec.id}")
    return tot


def _retrieval(pipe: Any, tot: _Totals) -> dict[str, Any] | None:
    """Text -> audio retrieval among the evaluated clips that have a caption."""
    if len(tot.captions) < 2:
        return None
    with torch.inference_mode():
        embed = pipe.models.mulan.embed_text
        text = tot.timed("mulan_text", lambda: embed(tot.captions).float().cpu())  # (N, E)
    audio = torch.stack([tot.audio_emb[j] for j in tot.text_clips])  # (N, E)
    return {"query": "first caption of each clip", **retrieval_scores(text, audio, tot.captions)}


def _metric_tables(pipe: Any, tot: _Totals, opts: CardOptions) -> dict[str, Any]:
    cfg = pipe.models.dpd.config
    chunks = cfg.train_chunks
    n_tok = tot.n_tokens
    lm = None
    if n_tok:
        assert tot.token_counts is not None
        lm = {"perplexity": math.exp(tot.nll / n_tok), "nll_nats_per_token": tot.nll / n_tok,
              "accuracy": tot.n_correct / n_tok, "tokens": n_tok,
              "vocab_size": pipe.models.lm.config.vocab_size,
              "unigram_perplexity": unigram_perplexity(tot.token_counts)}
    return {
        "vae": {"mel_distance": _mean(tot.mel), "si_sdr_db": _mean(tot.sdr), "clips": len(tot.mel),
                "latent": "posterior mean"},
        "dpd": {"velocity_mse": _mean(tot.dpd_cond), "velocity_mse_uncond": _mean(tot.dpd_uncond),
                "velocity_mse_zero_predictor": _mean(tot.dpd_zero),
                "clips": len(tot.dpd_uncond), "chunks": chunks, "grid": FRAMES_PER_TOKEN,
                "draws_per_clip": opts.dpd_draws, "window_frames": cfg.train_length,
                "latent_scale": pipe.models.latent_scale},
        "lm": lm,
    }


def evaluate_card(pipe: Any, corpus: str | Path, out: str | Path, opts: CardOptions | None = None,
                  log: Log = print) -> dict[str, Any]:
    """Measure the card figures of a loaded `MelodyPipeline` on `corpus`'s held-out split, write
    metrics.json, metrics.md, the samples and their spectrograms into `out`; returns the metrics."""
    opts = opts or CardOptions()
    t0 = time.perf_counter()
    root, out = Path(corpus), Path(out)
    records = sorted(read_corpus(root, split="valid"), key=lambda r: r.id)
    if not records:
        raise CardError(f"{root}: no held-out clips (split \"valid\") in this corpus")
    chosen = [records[i] for i in select_evenly(len(records), opts.max_clips)]
    out.mkdir(parents=True, exist_ok=True)
    tot = _score_clips(pipe, root, chosen, opts, log)
    if not tot.ids:
        raise CardError(f"{root}: none of the {len(chosen)} held-out clips could be evaluated")
    metrics: dict[str, Any] = {
        "format": METRICS_FORMAT,
        "bundle": {"path": str(pipe.bundle.info.path), "hash": pipe.model_hash,
                   "short_hash": pipe.short_hash, "preset": pipe.bundle.info.preset,
                   "random_init": bool(pipe.bundle.meta.get("random_init", False))},
        "data": {"corpus": str(root), "split": "valid", "valid_clips": len(records),
                 "evaluated_clips": len(tot.ids), "crop": f"centre, at most {opts.seconds:g} s",
                 "clip_ids": tot.ids, "skipped": tot.skipped},
        **_metric_tables(pipe, tot, opts),
        "mulan_retrieval": _retrieval(pipe, tot),
    }
    t_samples = time.perf_counter()
    metrics["samples"] = generate_samples(pipe, out, opts.seconds, opts.seed + 1, opts.prompts, log) \
        if opts.samples else []
    tot.seconds["samples"] = time.perf_counter() - t_samples
    metrics["options"] = {**asdict(opts), "prompts": list(opts.prompts)}
    metrics["environment"] = {"device": pipe.device, "threads": torch.get_num_threads(),
                              "torch": torch.__version__, "software": __version__}
    metrics["timings_s"] = {k: round(v, 3) for k, v in tot.seconds.items()}
    metrics["timings_s"]["total"] = round(time.perf_counter() - t0, 3)
    write_json(out / "metrics.json", metrics)
    text = format_card(metrics)
    atomic_write(out / "metrics.md", lambda f: f.write(text), mode="w")
    return metrics


# ------------------------------------------------------------------------------------------ report
def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def format_card(m: dict[str, Any]) -> str:
    """Markdown tables of the measured figures (for the MODEL_CARD)."""
    d, vae, dpd, lm, ret = m["data"], m["vae"], m["dpd"], m["lm"] or {}, m["mulan_retrieval"] or {}
    rows = [
        ("VAE reconstruction: multi-resolution mel distance", _fmt(vae["mel_distance"]), "0 = identical"),
        ("VAE reconstruction: SI-SDR", f"{_fmt(vae['si_sdr_db'], '+.2f')} dB", "higher is better"),
        ("DPD validation velocity MSE (conditional)", _fmt(dpd["velocity_mse"], ".4f"),
         f"unconditional {_fmt(dpd['velocity_mse_uncond'], '.4f')}; "
         f"predicting 0: {_fmt(dpd['velocity_mse_zero_predictor'], '.4f')}"),
        ("LM validation perplexity", _fmt(lm.get("perplexity"), ".1f"),
         f"vocabulary {lm.get('vocab_size', 'n/a')}, unigram {_fmt(lm.get('unigram_perplexity'), '.1f')}"),
        ("LM next-token accuracy", _fmt(lm.get("accuracy")), ""),
        ("MuLan text→audio top-1", _fmt(ret.get("top1")), f"chance {_fmt(ret.get('chance_top1'))}"),
        ("MuLan text→audio top-5", _fmt(ret.get("top5")), f"chance {_fmt(ret.get('chance_top5'))}"),
    ]
    lines = [
        f"Held-out split of `{d['corpus']}`: {d['evaluated_clips']} of {d['valid_clips']} clips "
        f"({d['crop']}); bundle `{m['bundle']['short_hash']}` ({m['bundle']['preset']}"
        f"{', random weights' if m['bundle']['random_init'] else ''}).",
        "",
        "| Metric | Value | Reference |",
        "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
    ]
    if m["samples"]:
        lines += ["", "| Prompt | Seed | Audio | Spectrogram | Generation time | Real-time factor |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {s['prompt']} | {s['seed']} | {s['wav']} | {s['spectrogram']} | "
                  f"{s['generation_s']:.1f} s ({m['environment']['device']}, {m['environment']['threads']} "
                  f"threads) | {s['realtime_factor']:.2f}x |" for s in m["samples"]]
    return "\n".join(lines) + "\n"
