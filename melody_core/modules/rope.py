"""Rotary position embeddings (RoPE, Su et al. 2021) at arbitrary, possibly fractional, positions.

Positions are explicit so that queries and keys may live on a shared physical time axis, e.g.
DPD cross-attention puts segment centres (latent frames / 250 Hz) and semantic tokens (25 Hz) on
one axis measured in seconds.
"""

from __future__ import annotations

import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    """Produces (cos, sin) tables for given positions; `head_dim` must be even."""

    def __init__(self, head_dim: int, base: float = 10_000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head dim, got {head_dim}")
        self.head_dim, self.base = head_dim, base
        # no buffer: frequencies are recomputed on the positions' device, so a model built on the
        # meta device and then loaded (to_empty / assign) can never carry stale frequencies

    def inv_freq(self, device: torch.device) -> torch.Tensor:
        exponent = torch.arange(0, self.head_dim, 2, dtype=torch.float32, device=device) / self.head_dim
        return self.base**-exponent  # (hd/2,)

    def forward(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pos: (T,) or (B, T) float/int -> cos, sin: (..., T, head_dim)."""
        angles = pos.to(torch.float32).unsqueeze(-1) * self.inv_freq(pos.device)  # (..., T, hd/2)
        angles = torch.cat([angles, angles], dim=-1)  # (..., T, hd)
        return angles.cos(), angles.sin()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, H, T, hd); cos/sin: (T, hd) or (B, T, hd) -> rotated x, same dtype as x."""
    if cos.dim() == 3:  # (B, T, hd) -> (B, 1, T, hd)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return x * cos + _rotate_half(x) * sin


# --- complex form (fast path) -------------------------------------------------------------------
# Pairing dims (i, i + hd/2) of a head as one complex number z_i = x_i + j x_{i+hd/2}, the rotation
# above is z_i -> z_i exp(j pos theta_i): one complex multiply per pair instead of two products, a
# negation and a concatenation. It needs each pair adjacent in memory, which `interleave_rope_rows`
# arranges by reordering a projection's output rows; a dot product q.k is unchanged when q and k
# have their dims permuted the same way, so attention scores are the same.


def rope_phasors(rope: RotaryEmbedding, pos: torch.Tensor) -> torch.Tensor:
    """pos: (..., T) -> (..., T, hd/2, 2) float32 (cos, sin) of pos theta_i: the values of `rope(pos)`,
    laid out as the real view of the complex phasors exp(j pos theta_i)."""
    angles = pos.to(torch.float32).unsqueeze(-1) * rope.inv_freq(pos.device)  # (..., T, hd/2)
    return torch.stack([angles.cos(), angles.sin()], dim=-1)


def interleave_rope_rows(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Output rows of a projection (H*hd, d_in), per head in order (i, i + hd/2) -> adjacent pairs."""
    d_out, d_in = weight.shape
    halves = weight.view(n_heads, 2, d_out // (2 * n_heads), d_in)  # (H, 2 halves, hd/2, d_in)
    return halves.transpose(1, 2).reshape(d_out, d_in)  # (H, hd/2, 2, d_in) -> (H*hd, d_in)


def apply_rope_interleaved(x: torch.Tensor, phasors: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """x: (..., hd) with interleaved pairs (see `interleave_rope_rows`); phasors: (..., hd/2, 2) from
    `rope_phasors`, broadcastable -> rotated x (..., hd), same pair order (`inplace`: x, overwritten).

    float32/64 x on CPU/CUDA: one complex multiply on views (no copies; phasors should be contiguous).
    Half precision (autocast) rotates in float32; other devices use real arithmetic.
    """
    if x.dtype not in (torch.float32, torch.float64):
        y = apply_rope_interleaved(x.float(), phasors)
        return x.copy_(y) if inplace else y.to(x.dtype)
    phasors = phasors.to(x.dtype)
    pairs = x.unflatten(-1, (-1, 2))  # (..., hd/2, 2) view
    if x.device.type in ("cpu", "cuda"):
        z, rot = torch.view_as_complex(pairs), torch.view_as_complex(phasors)
        if inplace:
            z.mul_(rot)
            return x
        return torch.view_as_real(z * rot).flatten(-2)
    (re, im), (cos, sin) = pairs.unbind(-1), phasors.unbind(-1)
    y = torch.stack([re * cos - im * sin, re * sin + im * cos], dim=-1).flatten(-2)
    return x.copy_(y) if inplace else y
