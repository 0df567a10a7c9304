"""Residual vector quantiser (RVQ) of MuLan embeddings: the 12 conditioning tokens (§3.1.1, §5.1).

MusicLM/MeLoDy tokenise the MuLan embedding with a separately learned RVQ (§3.1.1); §5.1 sets
12 codebooks of 1024 entries, giving the 12 prefix tokens of the semantic LM. The RVQ is trained on
*audio* embeddings; at inference a text or an audio embedding goes through the same RVQ.

Stage q quantises the residual left by stages 1..q-1 to its nearest codeword (squared Euclidean
distance); the quantised vector is the sum of the chosen codewords.

*(our choice)* details the paper leaves open, after SoundStream / EnCodec:
- codebooks learn by exponential moving averages (EMA, decay ~0.99) of the assigned residuals,
  with Laplace smoothing of the counts, not by gradients; the straight-through estimator passes
  gradients to the input, and a commitment loss ||r - sg(q(r))||^2 is returned for an encoder
  that wants it.
- dead codes: a codeword whose EMA usage falls below `dead_ratio` x the usage it would have under
  uniform use (batch / codebook size) is re-seeded with a random residual from the current batch
  (this also initialises the codebooks: while a codebook's counts are all zero, i.e. before its
  first training batch, every codeword is seeded from the batch). Train on large batches of
  precomputed embeddings (hundreds to thousands) so a 1024-entry codebook sees enough data.
- every EMA statistic is a persistent buffer, so the state_dict reproduces the quantiser exactly.
  Under DDP, buffers are broadcast from rank 0 each step (DistributedDataParallel's default).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_DECAY = 0.99  # EMA decay of the codebook statistics (SoundStream / EnCodec value)
DEFAULT_EPS = 1e-5  # Laplace smoothing of the EMA counts
DEFAULT_DEAD_RATIO = 0.1  # dead if EMA usage < this x the uniform-usage count (batch / codebook size)
INIT_SCALE = 0.1  # std of the initial (pre-seeding) codewords, small next to unit-norm embeddings


class RVQOutput(NamedTuple):
    """quantized: (B, D) straight-through; codes: (B, n_q) int64; commit_loss: scalar."""

    quantized: torch.Tensor
    codes: torch.Tensor
    commit_loss: torch.Tensor


class ResidualVQ(nn.Module):
    """Residual VQ with EMA codebooks.

    forward(x: (B, D)) -> RVQOutput(quantized (B, D), codes (B, n_q) int64 in [0, codebook_size),
    commit_loss scalar). In training mode the codebooks are updated from the batch (EMA + dead-code
    re-seeding); in eval mode the module is a pure function of its buffers.
    encode(x: (B, D)) -> (B, n_q) codes; decode(codes: (B, k), k <= n_q) -> (B, D), the sum of the
    first k codebooks' codewords.
    """

    def __init__(
        self,
        dim: int,
        n_q: int = 12,
        codebook_size: int = 1024,
        decay: float = DEFAULT_DECAY,
        eps: float = DEFAULT_EPS,
        dead_ratio: float = DEFAULT_DEAD_RATIO,
    ) -> None:
        super().__init__()
        self.dim, self.n_q, self.codebook_size = dim, n_q, codebook_size
        self.decay, self.eps, self.dead_ratio = decay, eps, dead_ratio
        self.register_buffer("codebooks", torch.randn(n_q, codebook_size, dim) * INIT_SCALE)  # (Q, K, D)
        self.register_buffer("cluster_size", torch.zeros(n_q, codebook_size))  # EMA counts (Q, K)
        self.register_buffer("embed_sum", torch.zeros(n_q, codebook_size, dim))  # EMA sums (Q, K, D)

    # ----------------------------------------------------------------------------------------- public
    def forward(self, x: torch.Tensor) -> RVQOutput:
        self._check(x)
        x = x.float()
        residual = x
        quantized = torch.zeros_like(x)
        codes, commit = [], x.new_zeros(())
        for q in range(self.n_q):
            idx = self._nearest(residual, q)  # (B,)
            if self.training:
                self._ema_update(residual.detach(), idx, q)
                idx = self._nearest(residual, q)  # re-seeded codes may now be nearer
            chosen = self.codebooks[q][idx]  # (B, D)
            commit = commit + F.mse_loss(residual, chosen.detach())
            quantized = quantized + chosen
            residual = residual - chosen.detach()
            codes.append(idx)
        quantized = x + (quantized - x).detach()  # straight-through estimator
        return RVQOutput(quantized, torch.stack(codes, dim=1), commit / self.n_q)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, n_q) int64 codes (no codebook update)."""
        self._check(x)
        residual = x.float()
        codes = []
        for q in range(self.n_q):
            idx = self._nearest(residual, q)
            residual = residual - self.codebooks[q][idx]
            codes.append(idx)
        return torch.stack(codes, dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, k) codes of the first k <= n_q codebooks -> (B, D) sum of codewords."""
        if codes.dim() != 2 or codes.shape[1] > self.n_q:
            raise ValueError(f"codes must be (B, k <= {self.n_q}), got {tuple(codes.shape)}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.codebook_size})")
        out = self.codebooks.new_zeros(codes.shape[0], self.dim)
        for q in range(codes.shape[1]):
            out = out + self.codebooks[q][codes[:, q]]
        return out

    # --------------------------------------------------------------------------------------- internal
    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected (B, {self.dim}) embeddings, got {tuple(x.shape)}")

    def _nearest(self, r: torch.Tensor, q: int) -> torch.Tensor:
        book = self.codebooks[q]  # (K, D)
        dist = r.pow(2).sum(1, keepdim=True) - 2 * r @ book.t() + book.pow(2).sum(1)  # (B, K)
        return dist.argmin(dim=1)

    @torch.no_grad()
    def _ema_update(self, r: torch.Tensor, idx: torch.Tensor, q: int) -> None:
        fresh = bool(self.cluster_size[q].sum() == 0)  # never trained: seed every code from the batch
        onehot = F.one_hot(idx, self.codebook_size).to(r.dtype)  # (B, K)
        counts = onehot.sum(0)  # (K,)
        sums = onehot.t() @ r  # (K, D)
        self.cluster_size[q].mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum[q].mul_(self.decay).add_(sums, alpha=1 - self.decay)
        self._reseed_dead(r, q, everything=fresh)
        size = self.cluster_size[q]
        total = size.sum()
        smoothed = (size + self.eps) / (total + self.codebook_size * self.eps) * total  # Laplace, (K,)
        used = size > 0
        self.codebooks[q][used] = self.embed_sum[q][used] / smoothed[used].unsqueeze(1)

    def _reseed_dead(self, r: torch.Tensor, q: int, everything: bool = False) -> None:
        """Replace rarely used codewords with random batch residuals; their EMA restarts there."""
        b = r.shape[0]
        uniform = b / self.codebook_size  # expected EMA count of a code under uniform use
        dead = self.cluster_size[q] < self.dead_ratio * uniform  # (K,)
        if everything:
            dead = torch.ones_like(dead)
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        if n_dead <= b:  # distinct batch vectors when there are enough
            pick = torch.randperm(b, device=r.device)[:n_dead]
        else:
            pick = torch.randint(0, b, (n_dead,), device=r.device)
        self.codebooks[q][dead] = r[pick]
        self.cluster_size[q][dead] = uniform
        self.embed_sum[q][dead] = r[pick] * uniform
