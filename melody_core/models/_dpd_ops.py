"""Fused inference operations of the DPD blocks (see the "Speed" notes in `melody_core.models.dpd`):
pre-norm row scales with gains folded into the next weights, residual GEMMs accumulating in place,
one-matmul QKV with interleaved RoPE pairs. Same maths as the modules they read the weights of."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from melody_core.modules import Attention, RMSNorm
from melody_core.modules.rope import apply_rope_interleaved, interleave_rope_rows

_FiLM = tuple[torch.Tensor, torch.Tensor]  # (1 + gamma, beta) of one block, each (K, B, S, d)


def _in_place(x: torch.Tensor) -> bool:
    """Inference without autocast: activations may be overwritten in place (same values)."""
    return not torch.is_grad_enabled() and not torch.is_autocast_enabled(x.device.type)


def _inv_rms(x: torch.Tensor, norm: RMSNorm) -> torch.Tensor:
    """(..., d) -> (..., 1): 1 / sqrt(mean(x^2) + eps), the row scale of `norm` (one reduction pass).
    RMSNorm(x) = x * _inv_rms(x) * g; the gain g is folded into the weights that follow."""
    return torch.rsqrt(torch.linalg.vector_norm(x, dim=-1, keepdim=True).square() / x.shape[-1] + norm.eps)


def _add_linear(
    x: torch.Tensor, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Residual x + h W^T (+ b); in place as one GEMM accumulating onto x when `_in_place`."""
    if not _in_place(x):
        return x + F.linear(h, weight, bias).view(x.shape)
    flat = x.view(-1, x.shape[-1]).addmm_(h.reshape(-1, h.shape[-1]), weight.t())  # (N, d) += (N, m) W^T
    return (flat if bias is None else flat.add_(bias)).view(x.shape)


def _gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact (erf) GELU, in place when `_in_place`."""
    return torch.ops.aten.gelu_(x) if _in_place(x) else F.gelu(x)


def _qkv_weight(attn: Attention, gain: torch.Tensor) -> torch.Tensor:
    """[W_q; W_k; W_v] with the RoPE pairs of q and k interleaved, times the pre-norm gain: (3d, d)."""
    w_k, w_v = attn.kv.weight.chunk(2, dim=0)
    rows = [interleave_rope_rows(attn.q.weight, attn.n_heads), interleave_rope_rows(w_k, attn.n_heads), w_v]
    return torch.cat(rows) * gain  # (x g) W^T = x (W diag g)^T


def _sdpa(attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B, T, H, hd) views each -> (B, T, H*hd): scaled dot-product attention per head."""
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, hd) views
    y = F.scaled_dot_product_attention(q, k, v, dropout_p=attn.dropout if attn.training else 0.0)
    return y.transpose(1, 2).flatten(2)  # (B, H, T, hd) -> (B, T, H*hd)


def _self_attention(attn: Attention, w_qkv: torch.Tensor, h: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """RoPE self-attention with `attn`'s heads on normalised rows h: (B', T, d); w_qkv from
    `_qkv_weight`; rot: query and key phasors (T, 2, H, hd/2, 2) -> (B', T, d), before W_out."""
    b, t, d = h.shape
    qkv = F.linear(h, w_qkv).view(b, t, 3, attn.n_heads, attn.head_dim)  # (B', T, 3, H, hd)
    qk = apply_rope_interleaved(qkv[:, :, :2], rot, _in_place(qkv))  # q and k rotated in one pass
    return _sdpa(attn, qk[:, :, 0], qk[:, :, 1], qkv[:, :, 2])
