"""Metric helpers of the model card evaluation (`melody_core.eval.card`): pure functions on tensors.

- `select_evenly` / `centre_crop`: which held-out clips and which part of each are evaluated.
- `reconstruction_scores`: multi-resolution mel distance and SI-SDR of a VAE round trip.
- `velocity_mse`: the DPD's multi-chunk v-prediction loss (Eq. 8) with fixed noise and angles,
  conditional and unconditional (the CFG null condition) in one batch.
- `lm_nll`: summed negative log-likelihood of semantic tokens under the LM (Eq. 1), prefix = the
  MuLan RVQ codes of the window nearest each piece's centre, as the trainer's `lm` stage builds it.
- `retrieval_scores`: MuLan text -> audio top-k retrieval with caption-equivalent positives.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from melody_core import SEMANTIC_RATE
from melody_core.audio.features import mel_distance, si_sdr
from melody_core.diffusion import multi_chunk_training_example
from melody_core.train.cache import window_index

DPDForward = Callable[[Tensor, Tensor, Tensor | None, Tensor | None], Tensor]


def select_evenly(n_total: int, n: int) -> list[int]:
    """`min(n, n_total)` indices spread evenly over range(n_total) (all of them when n >= n_total)."""
    if n >= n_total:
        return list(range(n_total))
    return [i * n_total // n for i in range(n)]


def centre_crop(n_samples: int, seconds: float, sample_rate: int, align: int) -> tuple[int, int]:
    """(start, length) of the central crop of at most `seconds`, both multiples of `align`
    (length 0 when the clip is shorter than one `align`)."""
    want = int(seconds * sample_rate) // align * align
    length = min(want, n_samples // align * align)
    start = (n_samples - length) // 2 // align * align
    return start, length


def reconstruction_scores(recon: Tensor, reference: Tensor) -> tuple[float, float]:
    """(mel distance, SI-SDR in dB) of one (T,) reconstruction against its (T,) reference."""
    recon, reference = recon.reshape(1, -1).float(), reference.reshape(1, -1).float()  # (1, T)
    return float(mel_distance(recon, reference)), float(si_sdr(recon, reference)[0])


def velocity_mse(
    dpd: DPDForward,
    z0: Tensor,
    tokens: Tensor | None,
    n_chunks: int,
    grid: int,
    draws: int,
    generator: torch.Generator,
) -> tuple[float | None, float, float]:
    """Mean v-MSE (Eq. 8) of one clip over `draws` fixed (noise, angles) draws.

    z0: (L, D) scaled latents, L a multiple of `grid`; tokens: (L // grid,) or None.
    Returns (conditional MSE or None without tokens, unconditional MSE, MSE of predicting v = 0:
    the mean square of the targets, the reference an untrained network is near).
    """
    z = z0.unsqueeze(0).expand(draws, -1, -1)  # (draws, L, D)
    ex = multi_chunk_training_example(z, n_chunks, generator=generator, grid=grid)  # Eq. 7-10
    zero = float(ex.v_target.float().pow(2).mean())
    if tokens is None:
        v = dpd(ex.z_noisy, ex.delta, None, None)  # (draws, L, D), all rows unconditional
        return None, float(F.mse_loss(v.float(), ex.v_target)), zero
    z_in = torch.cat([ex.z_noisy, ex.z_noisy])  # (2 draws, L, D): conditional rows, then unconditional
    delta = torch.cat([ex.delta, ex.delta])  # (2 draws, L)
    u = tokens.unsqueeze(0).expand(2 * draws, -1)  # (2 draws, L // grid)
    uncond = torch.arange(2 * draws, device=z0.device) >= draws  # (2 draws,)
    v = dpd(z_in, delta, u, uncond)  # (2 draws, L, D)
    err = (v.float() - torch.cat([ex.v_target, ex.v_target])).pow(2).mean(dim=(1, 2))  # (2 draws,)
    return float(err[:draws].mean()), float(err[draws:].mean()), zero


def lm_nll(
    lm: torch.nn.Module, tokens: Tensor, codes: Tensor, window_seconds: float
) -> tuple[float, int, int]:
    """(summed NLL in nats, number of tokens, correct argmax predictions) of a clip's (T_st,) tokens,
    scored in consecutive pieces of `lm.config.max_len`. Each piece's prefix is the row of `codes`
    (n_windows, n_prefix) of the MuLan window holding the piece's centre (the lm stage's rule)."""
    max_len = lm.config.max_len
    nll, correct = 0.0, 0
    for start in range(0, len(tokens), max_len):
        piece = tokens[start : start + max_len].unsqueeze(0)  # (1, n)
        centre = (start + piece.shape[1] / 2) / SEMANTIC_RATE
        prefix = codes[window_index(centre, window_seconds, len(codes))].unsqueeze(0)  # (1, n_prefix)
        logits = lm(prefix, piece)  # (1, n, V)
        nll += float(F.cross_entropy(logits[0].float(), piece[0], reduction="sum"))
        correct += int((logits[0].argmax(-1) == piece[0]).sum())
    return nll, len(tokens), correct


def unigram_perplexity(counts: Tensor) -> float:
    """exp(entropy) of a token histogram: the perplexity of a context-free model fitted to it."""
    p = counts.double() / counts.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def retrieval_scores(
    text_emb: Tensor, audio_emb: Tensor, captions: Sequence[str], ks: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """Text -> audio retrieval: for each text i, rank all clips by cosine similarity.

    text_emb, audio_emb: (N, E) (row i = clip i). Clips sharing text i's caption all count as
    positives *(our choice: as in MuLan's loss, equal captions are co-positives)*. Ties count
    against the query (a negative scoring >= the best positive ranks above it). Returns
    `top{k}` accuracies, their chance levels `chance_top{k}` (a uniformly random ranking), the
    median rank of the best positive (1 = first) and `n`.
    """
    n = len(captions)
    sims = F.normalize(text_emb.float(), dim=-1) @ F.normalize(audio_emb.float(), dim=-1).T  # (N, N)
    ids = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    label = torch.tensor([ids[c] for c in captions])
    positive = label.unsqueeze(1) == label.unsqueeze(0)  # (N, N) [text, clip]
    best_pos = sims.masked_fill(~positive, -math.inf).max(dim=1).values  # (N,)
    rank = ((sims >= best_pos.unsqueeze(1)) & ~positive).sum(dim=1)  # negatives at or above it
    n_pos = positive.sum(dim=1)
    out: dict[str, float] = {"n": n, "median_rank": float(rank.float().median()) + 1}
    for k in ks:
        out[f"top{k}"] = int((rank < k).sum()) / n
        out[f"chance_top{k}"] = sum(chance_hit(n, int(p), k) for p in n_pos) / n
    return out


def chance_hit(n: int, n_pos: int, k: int) -> float:
    """P(at least one of `n_pos` positives among the first k of a random ranking of n items)."""
    if k >= n:
        return 1.0
    return 1.0 - math.comb(n - n_pos, k) / math.comb(n, k)
