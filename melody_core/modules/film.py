"""FiLM (Perez et al. 2018): feature-wise affine modulation y = x * (1 + gamma(c)) + beta(c)."""

from __future__ import annotations

import torch
from torch import nn


class FiLM(nn.Module):
    """Modulate features `x` (..., dim) by a condition `cond` (..., d_cond) broadcastable to x.

    The projection is zero-initialised so a fresh FiLM is the identity.
    """

    def __init__(self, dim: int, d_cond: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_cond, 2 * dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.proj(cond).chunk(2, dim=-1)
        return torch.addcmul(beta, x, 1.0 + gamma)  # x * (1 + gamma) + beta in one pass
