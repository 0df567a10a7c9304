"""Multi-head attention on `scaled_dot_product_attention` (fused kernels on CPU and CUDA).

One module serves self-attention, cross-attention (pass `context`), RoPE at explicit positions
and KV-cached incremental decoding (pass a `KVCache`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from melody_core.modules.rope import RotaryEmbedding, apply_rope


@dataclass
class KVCache:
    """Keys/values seen so far for one attention layer: (B, H, T_past, hd) each (None when empty)."""

    k: torch.Tensor | None = None
    v: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.shape[2]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
        return self.k, self.v


class Attention(nn.Module):
    """Multi-head attention. x: (B, Tq, dim); context: (B or 1, Tk, d_context) or None (self).

    With `rope`, queries are rotated at `q_pos` and keys at `k_pos` (defaults: 0..T-1, shifted by
    the cache length for incremental decoding).
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        d_context: int | None = None,
        bias: bool = False,
        rope: bool = False,
        rope_base: float = 10_000.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim {dim} not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        d_context = d_context or dim
        self.q = nn.Linear(dim, dim, bias=bias)
        self.kv = nn.Linear(d_context, 2 * dim, bias=bias)
        self.out = nn.Linear(dim, dim, bias=bias)
        self.rope = RotaryEmbedding(self.head_dim, rope_base) if rope else None
        self.dropout = dropout

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        q_pos: torch.Tensor | None = None,
        k_pos: torch.Tensor | None = None,
        cache: KVCache | None = None,
        causal: bool = False,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, tq, dim = x.shape
        src = x if context is None else context
        q = self._heads(self.q(x))  # (B, H, Tq, hd)
        k, v = self._heads_kv(src)  # (B', H, Tk, hd)
        past = cache.length if cache is not None else 0
        if self.rope is not None:
            if q_pos is None:
                q_pos = torch.arange(past, past + tq, device=x.device)
            if k_pos is None:
                k_pos = torch.arange(past, past + k.shape[2], device=x.device)
            q = apply_rope(q, *self.rope(q_pos))
            k = apply_rope(k, *self.rope(k_pos))
        if cache is not None:
            k, v = cache.append(k, v)
        if k.shape[0] != b:  # shared context (batch 1) for every query sequence
            k, v = k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)
        mask = attn_mask
        is_causal = False
        if causal:
            if past == 0 and mask is None:
                is_causal = tq > 1
            else:  # query i (absolute past + i) sees keys j <= past + i
                tk = k.shape[2]
                qi = torch.arange(past, past + tq, device=x.device).unsqueeze(1)
                causal_mask = torch.arange(tk, device=x.device).unsqueeze(0) <= qi  # (Tq, Tk)
                mask = causal_mask if mask is None else (mask & causal_mask)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, Tq, hd)
        y = y.transpose(1, 2).reshape(b, tq, dim)  # (B, Tq, dim)
        return self.out(y)

    def _heads_kv(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv(src).chunk(2, dim=-1)
        return self._heads(k), self._heads(v)
