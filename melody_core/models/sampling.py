"""Next-token sampling for the semantic LM: temperature / top-k / top-p (DESIGN §2; not in the paper).

Small pure functions on logits of shape (B, V):
- `apply_temperature`: logits / T (T > 0).
- `top_k_filter`: keep exactly the k largest logits, -inf elsewhere.
- `top_p_filter`: nucleus filtering, keep the smallest set of most likely tokens whose total
  probability reaches p.
- `sample_next`: the three combined, then one categorical draw per row (argmax when T = 0).

Ties *(our choice)*: both filters rank tokens with a *stable* descending sort, so among equal
logits the lower token id ranks first, exactly like `torch.argmax`. The filters therefore keep
exactly k (resp. the nucleus prefix of that order) even when logits tie at the boundary, and
`top_k=1`, a tiny `top_p` and `temperature=0` all select `argmax`, ties included.
Draws use the exponential race (`categorical`) with an optional `torch.Generator`, so a seeded
generator gives reproducible samples.
"""

from __future__ import annotations

import torch


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits / temperature; temperature must be > 0 (use argmax for 0)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 here, got {temperature}")
    return logits if temperature == 1.0 else logits / temperature


def _descending_order(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stable descending sort over the last dim: equal logits keep ascending token id order."""
    return torch.sort(logits, dim=-1, descending=True, stable=True)


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the `top_k` largest logits per row (exactly k, ties to the lower id); others -> -inf.

    top_k <= 0 or >= V disables the filter.
    """
    vocab = logits.shape[-1]
    if top_k <= 0 or top_k >= vocab:
        return logits
    _, order = _descending_order(logits)  # (B, V)
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, order[..., :top_k], True)
    return logits.masked_fill(~keep, float("-inf"))


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filter: keep the shortest prefix of the descending order whose mass reaches `top_p`.

    The most likely token is always kept; top_p >= 1 disables the filter.
    """
    if not 0.0 < top_p:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if top_p >= 1.0:
        return logits
    sorted_logits, order = _descending_order(logits)  # (B, V)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above each one
    keep_sorted = mass_before < top_p
    keep_sorted[..., 0] = True
    keep = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)
    return logits.masked_fill(~keep, float("-inf"))


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw one token per row. logits: (B, V) -> (B,) int64.

    temperature = 0 is greedy (argmax, first index on ties); otherwise logits are divided by the
    temperature, then top-k, then top-p filtered, then sampled from the softmax.
    """
    if logits.dim() != 2:
        raise ValueError(f"expected logits (B, V), got shape {tuple(logits.shape)}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = apply_temperature(logits.float(), temperature)
    logits = top_k_filter(logits, top_k)
    logits = top_p_filter(logits, top_p)
    return categorical(logits.softmax(dim=-1), generator)


def categorical(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw per row of probs (B, V) -> (B,), by the exponential race argmax_i p_i / E_i.

    With E_i ~ Exp(1) i.i.d., P(argmax = i) = p_i (the Gumbel-max trick in the probability
    domain): same law as `torch.multinomial`, fewer kernels. E is clamped away from 0 so a
    zero-probability token can never win (0 / 0).
    """
    noise = torch.empty_like(probs).exponential_(generator=generator)
    return (probs / noise.clamp_min_(torch.finfo(probs.dtype).tiny)).argmax(dim=-1)  # (B,)
