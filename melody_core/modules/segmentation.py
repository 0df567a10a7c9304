"""Dual-path segmentation (§4.2.3, Fig. 3) and its inverse, overlap-add.

A sequence H of length L is zero-padded by P = K/2 frames on the left and enough on the right,
then cut into S = ceil(2L/K) + 1 half-overlapping segments of length K (hop P). Segment s covers
real frames [s*P - P, s*P + P), so its centre sits on real frame s*P. Every real frame lies in
exactly two segments; `overlap_add` averages them, which is the exact inverse on real frames.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def num_segments(length: int, segment_size: int) -> int:
    """S = ceil(2L/K) + 1 (§4.2.3)."""
    return math.ceil(2 * length / segment_size) + 1


def _padding(length: int, segment_size: int) -> tuple[int, int]:
    hop = segment_size // 2
    s = num_segments(length, segment_size)
    total = (s - 1) * hop + segment_size
    return hop, total - length - hop


def segment(x: torch.Tensor, segment_size: int) -> torch.Tensor:
    """x: (B, L, D) -> (B, S, K, D), half-overlapping, zero-padded."""
    if segment_size % 2:
        raise ValueError(f"segment size K must be even, got {segment_size}")
    b, length, d = x.shape
    left, right = _padding(length, segment_size)
    padded = F.pad(x, (0, 0, left, right))  # (B, P + L + R, D)
    segs = padded.unfold(1, segment_size, segment_size // 2)  # (B, S, D, K)
    return segs.transpose(2, 3).contiguous()  # (B, S, K, D)


def overlap_add(segs: torch.Tensor, length: int) -> torch.Tensor:
    """(B, S, K, D) -> (B, L, D): inverse of `segment` on the L real frames (mean of overlaps)."""
    b, s, k, d = segs.shape
    hop = k // 2
    left, right = _padding(length, k)
    total = left + length + right
    if (s - 1) * hop + k != total:
        raise ValueError(f"{s} segments of {k} do not cover length {length}")
    # sum the two half-segment streams: first halves at s*hop, second halves at s*hop + hop
    first, second = segs[:, :, :hop], segs[:, :, hop:]  # (B, S, P, D) each
    out = segs.new_zeros(b, s + 1, hop, d)
    out[:, :s] += first
    out[:, 1:] += second
    out = out.reshape(b, (s + 1) * hop, d)  # (B, total, D)
    return out[:, left : left + length] * 0.5


# --- time-major layout (K, B, S, D), used by the DPD blocks -------------------------------------


def pad_for_segments(x: torch.Tensor, segment_size: int) -> torch.Tensor:
    """x: (B, L, D) -> zero-padded (B, P + L + R, D) = (B, (S + 1) * P, D), the input of `segment_view`."""
    left, right = _padding(x.shape[1], segment_size)
    return F.pad(x, (0, 0, left, right))


def segment_view(padded: torch.Tensor, segment_size: int) -> torch.Tensor:
    """Padded (B, (S + 1) * P, D) -> (K, B, S, D) view (no copy): element [k, b, s] = padded[b, s*P + k]."""
    segs = padded.unfold(1, segment_size, segment_size // 2)  # (B, S, D, K)
    return segs.permute(3, 0, 1, 2)  # (K, B, S, D)


def overlap_add_time_major(segs: torch.Tensor, length: int) -> torch.Tensor:
    """(K, B, S, D) -> (B, L, D): `overlap_add` for the time-major layout, same arithmetic.

    Real frame (s - 1) * P + j (s = 1 .. S-1) is the mean of position j of segment s and position
    P + j of segment s - 1; the first half of segment 0 and the second half of segment S-1 are padding.
    """
    k, b, s, d = segs.shape
    hop = k // 2
    if s != num_segments(length, k):
        raise ValueError(f"{s} segments of {k} do not cover length {length}")
    mean = (segs[:hop, :, 1:] + segs[hop:, :, :-1]) * 0.5  # (P, B, S-1, D)
    return mean.permute(1, 2, 0, 3).reshape(b, (s - 1) * hop, d)[:, :length]  # (B, (S-1)*P, D) -> (B, L, D)
