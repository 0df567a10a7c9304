"""Feed-forward blocks.

- `MLP`: the projection MLP of Eq. 11, MLP(x) = RMSNorm(W2 GELU(x W1 + b1) + b2).
- `FeedForward`: a plain GELU FFN (Transformer / Roformer layers).
- `SwiGLU`: the LLaMA FFN, W2 (SiLU(x W1) * x W3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from melody_core.modules.norm import RMSNorm


class MLP(nn.Module):
    """Eq. 11: RMSNorm(W2 GELU(x W1 + b1) + b2), D_in -> D_out."""

    def __init__(self, d_in: int, d_out: int, d_hidden: int | None = None) -> None:
        super().__init__()
        d_hidden = d_hidden or d_out
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.fc2 = nn.Linear(d_hidden, d_out)
        self.norm = RMSNorm(d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.fc2(F.gelu(self.fc1(x))))


class FeedForward(nn.Module):
    """Linear -> GELU -> (dropout) -> Linear."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(F.gelu(self.fc1(x))))


class SwiGLU(nn.Module):
    """LLaMA feed-forward: W2 (SiLU(x W1) * x W3), no biases."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))
