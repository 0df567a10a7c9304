"""Shared layers used by several models."""

from melody_core.modules.attention import Attention, KVCache
from melody_core.modules.film import FiLM
from melody_core.modules.mlp import MLP, FeedForward, SwiGLU
from melody_core.modules.norm import RMSNorm
from melody_core.modules.rope import RotaryEmbedding, apply_rope
from melody_core.modules.segmentation import num_segments, overlap_add, segment

__all__ = [
    "Attention",
    "KVCache",
    "FiLM",
    "MLP",
    "FeedForward",
    "SwiGLU",
    "RMSNorm",
    "RotaryEmbedding",
    "apply_rope",
    "num_segments",
    "overlap_add",
    "segment",
]
