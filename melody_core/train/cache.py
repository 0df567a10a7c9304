"""Per-clip caches of upstream outputs, built once and shared by later stages.

A cache lives in `<cache_dir>/<kind>-<key[:16]>/`, `key` being a hash of the upstream weights
(`state.module_hash`) and of the extraction settings, so a retrained upstream model gets a new
cache and never reads stale entries. One safetensors file per clip (named by a hash of the clip id,
path and file size), written atomically; an interrupted build resumes where it stopped. Under DDP
each rank builds its share of the missing clips, then all ranks wait for each other.

Kinds (all computed on whole clips, window by window with context, in eval mode):
- `latents`: VAE posterior means (L, D) float32, L = ceil(T / hop) — the DPD's z_0 *(our choice:
  the mean, not a posterior sample; the KL weight keeps the posterior narrow)*.
- `tokens`: semantic tokens (T // 960,) int64 = k-means ids of the SSL layer features.
- `mulan`: MuLan audio embeddings (n_win, E) of consecutive `clip_seconds` windows and their RVQ
  codes (n_win, 12) int64 — the LM prefix of a crop is the codes of the window nearest its centre.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save

from melody_core import SAMPLE_RATE
from melody_core.audio import load_audio
from melody_core.data.captions import short_prompts
from melody_core.models.ssl_conformer import HOP as SSL_HOP
from melody_core.models.ssl_conformer import token_feature_dim
from melody_core.train.data import ClipSet
from melody_core.train.dist import DistContext
from melody_core.train.state import atomic_write, combine_hashes, write_json

Extractor = Callable[[torch.Tensor], dict[str, torch.Tensor]]  # wav (T,) on CPU -> tensors

SSL_WINDOW_FRAMES = 250  # SSL frames per extraction window (10 s, the LM/DPD window)
SSL_CONTEXT_FRAMES = 25  # frames of context per side (1 s) around each window
VAE_WINDOW_FRAMES = 7500  # latent frames per encoding window (30 s)
VAE_CONTEXT_FRAMES = 64  # latent frames of context per side (> the encoder's receptive field)


class ClipCache:
    """Folder of per-clip tensor dicts for one (kind, upstream key)."""

    def __init__(self, cache_dir: Path, kind: str, key: str) -> None:
        self.folder = Path(cache_dir) / f"{kind}-{key[:16]}"
        self.kind, self.key = kind, key

    def file(self, clips: ClipSet, i: int) -> Path:
        rec = clips.records[i]
        size = clips.path(i).stat().st_size
        name = hashlib.sha1(f"{rec.id}|{rec.path}|{size}".encode()).hexdigest()[:24]
        return self.folder / f"{name}.safetensors"

    def build(self, clips: ClipSet, extract: Extractor, dist: DistContext, describe: dict) -> None:
        """Compute the missing entries of `clips` (rank-sharded), then synchronise."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if dist.is_main and not (self.folder / "info.json").is_file():
            write_json(self.folder / "info.json", {"kind": self.kind, "key": self.key, **describe})
        for i in range(dist.rank, len(clips), dist.world):
            path = self.file(clips, i)
            if path.is_file():
                continue
            tensors = {k: v.contiguous().cpu() for k, v in extract(load_audio(clips.path(i))).items()}
            blob = save(tensors)
            atomic_write(path, lambda f, b=blob: f.write(b))
        dist.barrier()

    def load_all(self, clips: ClipSet) -> list[dict[str, torch.Tensor]]:
        return [load_file(str(self.file(clips, i))) for i in range(len(clips))]


def build_cache(
    cache: ClipCache,
    clips: list[ClipSet],
    extract: Extractor,
    dist: DistContext,
    describe: dict,
) -> list[list[dict[str, torch.Tensor]]]:
    """Build (if needed) and load a cache for several clip sets; returns one list per set."""
    out = []
    for clip_set in clips:
        cache.build(clip_set, extract, dist, describe)
        out.append(cache.load_all(clip_set))
    return out


# ------------------------------------------------------------------------------------- extractors
def windowed(
    fn: Callable[[torch.Tensor], torch.Tensor], wav: torch.Tensor, hop: int, window: int, context: int
) -> torch.Tensor:
    """Apply a frame-synchronous model `fn((1, T)) -> (1, T // hop, C)` to a long (T,) waveform in
    windows of `window` frames with `context` frames on each side; returns (T // hop, C)."""
    n = wav.shape[-1] // hop
    parts = []
    for start in range(0, max(n, 1), window):
        lo, hi = max(0, start - context), min(n, start + window + context)
        seg = wav[lo * hop : hi * hop].unsqueeze(0)  # (1, (hi - lo) * hop)
        out = fn(seg)[0]  # (hi - lo, C)
        parts.append(out[start - lo : start - lo + min(window, n - start)])
    return torch.cat(parts)


@torch.no_grad()
def ssl_features(ssl, wav: torch.Tensor, layer: int, device: torch.device) -> torch.Tensor:
    """(T,) -> (T // 960, d_model) features of SSL layer `layer` (windowed, eval mode)."""
    if wav.shape[-1] < SSL_HOP:
        return torch.zeros(0, token_feature_dim(layer, ssl.config.d_model))
    fn = lambda seg: ssl.extract(seg.to(device), layer=layer).float().cpu()  # noqa: E731
    return windowed(fn, wav, SSL_HOP, SSL_WINDOW_FRAMES, SSL_CONTEXT_FRAMES)


def token_extractor(ssl, kmeans, device: torch.device) -> Extractor:
    layer = kmeans.config.layer

    def extract(wav: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = ssl_features(ssl, wav, layer, device)
        return {"tokens": kmeans.assign(feats.to(kmeans.centroids.device)).cpu()}

    return extract


def latent_extractor(vae, device: torch.device) -> Extractor:
    hop = vae.hop

    @torch.no_grad()
    def extract(wav: torch.Tensor) -> dict[str, torch.Tensor]:
        wav = F.pad(wav, (0, (-wav.shape[-1]) % hop))  # whole frames: L = ceil(T / hop)
        fn = lambda seg: vae.encode(seg.to(device))[0].float().cpu()  # noqa: E731
        return {"latents": windowed(fn, wav, hop, VAE_WINDOW_FRAMES, VAE_CONTEXT_FRAMES)}

    return extract


def mulan_extractor(mulan, device: torch.device) -> Extractor:
    clip = round(mulan.config.clip_seconds * SAMPLE_RATE)

    @torch.no_grad()
    def extract(wav: torch.Tensor) -> dict[str, torch.Tensor]:
        n_win = max(1, math.ceil(wav.shape[-1] / clip))
        embs = [
            mulan.embed_audio(wav[k * clip : (k + 1) * clip].unsqueeze(0).to(device)) for k in range(n_win)
        ]
        emb = torch.cat(embs)  # (n_win, E)
        return {"embeddings": emb.float().cpu(), "codes": mulan.conditioning_tokens(emb).cpu()}

    return extract


def window_index(center_seconds: float, window_seconds: float, n_windows: int) -> int:
    """Index of the MuLan window (consecutive, `window_seconds` long) holding `center_seconds`."""
    return min(n_windows - 1, max(0, int(center_seconds // window_seconds)))


# --------------------------------------------------------------------------- stage-facing builders
def tokens_cache(cache_dir: Path, ssl, kmeans) -> ClipCache:
    """Where the semantic tokens of `ssl` + `kmeans` (upstream Components) are cached."""
    parts = [ssl.hash, kmeans.hash, f"layer={kmeans.model.config.layer}"]
    return ClipCache(
        cache_dir, "tokens", combine_hashes("tokens", *parts, f"win={SSL_WINDOW_FRAMES}/{SSL_CONTEXT_FRAMES}")
    )


def latents_cache(cache_dir: Path, vae) -> ClipCache:
    """Where the latents of `vae` (an upstream Component) are cached."""
    key = combine_hashes("latents", vae.hash, f"win={VAE_WINDOW_FRAMES}/{VAE_CONTEXT_FRAMES}")
    return ClipCache(cache_dir, "latents", key)


def semantic_tokens(
    cache_dir: Path, ssl, kmeans, clip_sets: list[ClipSet], dist: DistContext, device: torch.device
) -> list[list[torch.Tensor]]:
    """(T // 960,) int64 tokens per clip, for each clip set (SSL + k-means upstream)."""
    layer = kmeans.model.config.layer
    sets = build_cache(
        tokens_cache(cache_dir, ssl, kmeans),
        clip_sets,
        token_extractor(ssl.model, kmeans.model, device),
        dist,
        {"ssl": ssl.source, "kmeans": kmeans.source, "layer": layer},
    )
    return [[d["tokens"] for d in s] for s in sets]


def vae_latents(
    cache_dir: Path, vae, clip_sets: list[ClipSet], dist: DistContext, device: torch.device
) -> list[list[torch.Tensor]]:
    """(L, D) float32 posterior means per clip, for each clip set (VAE upstream)."""
    sets = build_cache(
        latents_cache(cache_dir, vae),
        clip_sets,
        latent_extractor(vae.model, device),
        dist,
        {"vae": vae.source},
    )
    return [[d["latents"] for d in s] for s in sets]


def mulan_codes(
    cache_dir: Path, mulan, clip_sets: list[ClipSet], dist: DistContext, device: torch.device
) -> list[list[torch.Tensor]]:
    """(n_windows, n_q) int64 RVQ codes of consecutive clip_seconds windows per clip (MuLan upstream)."""
    parts = [mulan.hash, f"clip={mulan.model.config.clip_seconds}"]
    sets = build_cache(
        ClipCache(cache_dir, "mulan", combine_hashes("mulan", *parts)),
        clip_sets,
        mulan_extractor(mulan.model, device),
        dist,
        {"mulan": mulan.source},
    )
    return [[d["codes"] for d in s] for s in sets]


CAPTION_BATCH = 64  # captions per MuLan text-tower call


def clip_texts(record) -> list[str]:
    """A clip's captions, then the short prompts of its attributes (`captions.short_prompts`)."""
    return list(dict.fromkeys([*record.captions, *short_prompts(record.attributes or {})]))


@torch.no_grad()
def caption_codes(mulan, clips: ClipSet, device: torch.device) -> list[torch.Tensor]:
    """(n_texts, n_q) int64 RVQ codes of each clip's `clip_texts` through MuLan's text tower
    ((0, n_q) for a clip without any). Computed in memory: a few thousand short texts."""
    per_clip = [clip_texts(r) for r in clips.records]
    texts = [t for ts in per_clip for t in ts]
    codes = []
    was_training = mulan.training
    mulan.eval()
    try:
        for i in range(0, len(texts), CAPTION_BATCH):
            emb = mulan.embed_text(texts[i : i + CAPTION_BATCH])  # (b, E)
            codes.append(mulan.conditioning_tokens(emb).cpu())  # (b, n_q)
    finally:
        mulan.train(was_training)
    n_q = mulan.config.rvq_codebooks
    flat = torch.cat(codes) if codes else torch.zeros(0, n_q, dtype=torch.long)  # (n_texts, n_q)
    out, k = [], 0
    for ts in per_clip:
        out.append(flat[k : k + len(ts)])
        k += len(ts)
    return out
