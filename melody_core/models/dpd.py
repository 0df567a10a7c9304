"""Dual-path diffusion network (DPD, §4.2.3, Fig. 2-3): predicts the velocity v from noisy latents.

    E_delta = MLP1(sin(delta) (x) e_start + cos(delta) (x) e_end)          Eq. 11, e in R^256
    E_ST    = MLP2(Embedding(u))                                         semantic tokens, 25 Hz
    H       = RMSNorm(z W_in + E_delta) -> segment: S = ceil(2L/K) + 1 half-overlapping K-frame segments
    N dual-path blocks, each:
      coarse path (across the S segments, for each of the K positions): Roformer layer =
          RoPE self-attention, RoPE cross-attention to E_ST, FFN
      fine path (across the K frames inside each segment): 2-layer bidirectional SRU, FiLM on
          E_delta (segmented) + mean-pooled E_ST, [optional FFN]
    overlap-add back to L frames -> RMSNorm -> linear to D

Choices where the paper is silent *(our choice)*:
- Pre-norm residuals (RMSNorm) on every sub-layer of both paths: stable at depth, no warm-up tricks.
- RoPE positions are latent-frame times (250 Hz): in cross-attention every query sits at its own
  frame time (s*K/2 - K/2 + k) and semantic token j at the centre of the frames it covers,
  10 j + 4.5 (token j covers frames [10j, 10j+10)). Self-attention over segments (and its CFG
  twin) puts query s at the segment centre s*K/2 but key s at index s: the first implementation
  passed only q_pos to `Attention`, whose keys then default to 0..S-1. The first trained tiny
  bundle depends on it and says so in its config (`self_attn_key_centres: false`, also the
  default for configs that do not name the field); the presets put keys at s*K/2 too.
- CFG (§5.1): for rows flagged `uncond` (and all rows when `tokens` is None or empty) the cross-
  attention layer attends to its own input sequence instead (self-attention over the segments,
  same weights and positions as the self-attention), and FiLM sees a learned null vector instead
  of the pooled E_ST. Conditional and unconditional rows of one batch are computed separately,
  each only on its own rows. Dropping the condition with p = 0.1 is the trainer's job
  (`cfg_dropout` only documents it).
- Tokens are placed by index (token j at frame 10 j + 4.5) whatever their count: ceil(L/10) covers
  the window exactly; extra tokens act as context beyond the end, missing ones leave the tail
  without nearby tokens (cross-attention still sees all given tokens). Nothing is trimmed or padded.
- Internal layout (K, B, S, D_hid), time-major: the SRU reads it as (time K, batch B*S) and
  self-attention as batch K*B over S without copies; only cross-attention regroups its rows to
  (B, K*S), which is a free view for one conditional row (the CFG batch [cond, uncond]).
- Block contents and the paper's 296.6M parameters: see `DPDConfig`.

Patches *(our choice, CPU preset v2; `DPDConfig.patch` = P, 1 = the paper)*: the network works on
N = L / P positions of P latent frames each, entirely inside `forward`; the samplers and the pipeline
still see frames:
    z (B, L, D) -> (B, N, P*D) (frame-major in a position) -> W_in ... W_out -> (B, N, P*D) -> (B, L, D)
    delta (B, L) -> (B, N): the largest angle of the position's frames (constant within a position for
    chunks and continuation, whose bounds are whole tokens of 10 frames and P divides 10)
Segments, overlap-add and the SRU run over positions (K positions per segment); RoPE positions stay
latent-frame times: position n sits at nP + (P - 1)/2, so with P = 10 position n and semantic token n
share the time 10 n + 4.5 (cross-attention aligned 1:1). P = 1 is bit-identical to the paper network.
Guidance input *(our choice, `guidance_embed`)*: see `GuidanceEncoder`.

Speed *(our choice)*, the same maths (tests/test_dpd.py, tests/test_speed_equivalence.py: outputs and
gradients against the module-by-module reference to 1e-5): the blocks run on their modules'
weights, not their forward methods. RMSNorm = row scale (one reduction) x gain folded into the next
projection; one q|k|v matmul with RoPE pairs made adjacent by reordering its rows (q.k unchanged),
so the rotation is one in-place complex multiply; residual updates accumulate as GEMMs (`addmm_`);
without autograd every update, GELU and FiLM is in place and the SRU takes its no-autograd path.
Per window, not per step, `prepare` builds a `DPDContext` with all that depends on the tokens, CFG
rows, L and the weights but not on z or delta (fused weights, E_ST and its rotated keys/values per
block, pooled E_ST / null FiLM rows, phasors); samplers pass it to every step. Without autograd the
angle MLP (Eq. 11) and the FiLM projection run on the runs of equal angles of delta (one or two per
sampler step) and are gathered per frame. CFG twins (`shared_input`): a guided step's cond and uncond
rows share z and delta, so the input stage and the first self-attention run once per pair.
Tiny preset, guided step (L = 2500): ~3.9 GFLOP (matmuls + attention); attention ~30 %, SRU ~30 %
(its 64-step loop is per-op bound), other matmuls ~25 %. Bundled model, 1 thread, 2-core machine at
load ~2.5, 80 interleaved runs, lower-quartile mean of CPU time: 105 ms with context + twins, 113 ms
with a context, 118 ms plain, 122 ms before the context / angle runs / twins (twice the same rows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from melody_core import FRAMES_PER_TOKEN
from melody_core.config import BaseConfig
from melody_core.models._dpd_ops import (
    _add_linear,
    _FiLM,
    _gelu,
    _in_place,
    _inv_rms,
    _qkv_weight,
    _sdpa,
    _self_attention,
)
from melody_core.models.sru import SRU
from melody_core.modules import MLP, Attention, FeedForward, FiLM, RMSNorm, RotaryEmbedding
from melody_core.modules.rope import apply_rope_interleaved, interleave_rope_rows, rope_phasors
from melody_core.modules.segmentation import (
    num_segments,
    overlap_add_time_major,
    pad_for_segments,
    segment_view,
)


@dataclass
class DPDConfig(BaseConfig):
    """Dual-path diffusion network.

    Parameter count of the paper preset (§5.1: D_hid = d = 768, N = 8, "296.6M"). Per block:
      coarse path: self-attention 4d^2 + cross-attention 4d^2 + FFN x4 8d^2            = 16 d^2
      fine path:   2-layer bi-SRU, h = 1152 = 1.5d per direction (output 3d):
                   layer 1 d x (3d * 4 matrices) = 12 d^2, layer 2 3d x (3d * 3) = 27 d^2,
                   projection 3d -> d 3 d^2, FiLM d -> 2d 2 d^2                          = 44 d^2
      => 60 d^2 = 35.4M per block (+ biases/norms), x 8 = 283.3M
    plus embeddings: MLP1 256*768 + 768^2, token table 1024*768, MLP2 2*768^2, W_in, W_out = 2.8M
      => 286.1M, -3.5 % from 296.6M. The minimum block (bi-SRU with h = d/2, output d, no
    projection) would be 16 + 6 + 2 = 24 d^2 -> 116M; the paper's count implies ~62 d^2 per block,
    so its blocks are wider than the minimum. We spend the difference on the fine path's SRU (the
    paper's fine path has no other stated layer; a wider recurrent state is the natural reading of
    "SRU" capacity) rather than on an FFN there (`fine_ffn_mult`, 0 in both presets, adds 2m d^2).
    """

    d_latent: int = 16  # D: VAE latent channels (§5.1)
    d_hid: int = 64  # D_hid: width of the dual-path blocks
    n_blocks: int = 2  # N: dual-path blocks
    n_heads: int = 2  # attention heads (coarse path); d_hid / n_heads must be even (RoPE)
    segment_size: int = 64  # K: frames per segment (even); S = ceil(2L/K) + 1 segments
    angle_dim: int = 256  # size of e_start / e_end (Eq. 11)
    vocab_size: int = 256  # V_ST: semantic token vocabulary (k-means clusters)
    ffn_mult: int = 2  # coarse-path FFN hidden = ffn_mult * d_hid
    fine_ffn_mult: int = 0  # fine-path FFN after FiLM, hidden = fine_ffn_mult * d_hid (0 = none)
    sru_hidden: int = 32  # SRU state per direction; output 2*sru_hidden, projected to d_hid if different
    sru_layers: int = 2  # SRU layers in the fine path (§4.2.3: 2)
    sru_highway_bias: float = 0.0  # initial highway-gate bias of the SRU (package default)
    rope_base: float = 10_000.0  # RoPE base; positions are in latent frames (max ~L)
    dropout: float = 0.0  # dropout in attention, FFNs and between SRU layers (training only)
    cfg_dropout: float = 0.1  # p of dropping the semantic condition in training (the trainer applies it)
    cfg_null_film: bool = True  # unconditional FiLM input: learned null vector (True) or zeros (False)
    # RoPE keys of the segment self-attention at the segment centres s*K/2 like the queries (True,
    # consistent relative positions; both presets) or at index s (False: the first trained tiny
    # bundle was trained that way and records it in its config.json; see the module docstring)
    self_attn_key_centres: bool = False
    train_length: int = 2500  # L: window in latent frames (10 s): training crops and generation windows
    train_chunks: int = 4  # M: chunks of a window (Eq. 7-10; generation's continuation hop is L/M)
    # P: latent frames per network position (1 = the paper, one frame per position). P > 1 (CPU preset,
    # our choice): the network sees L / P positions of P*D features; P must divide the 10 frames of a
    # semantic token so every window and hop of the pipeline (whole tokens) is a multiple of P
    patch: int = 1
    # guidance distillation (our choice, Meng et al. 2023): the CFG scale rho is a FiLM input of every
    # block (Fourier features -> MLP, added to E_delta + pooled E_ST); one forward predicts the guided v
    guidance_embed: bool = False

    @classmethod
    def tiny(cls) -> DPDConfig:
        # sized for speed on a 2-core CPU (see the timing note in the module docstring)
        return cls(
            d_hid=64, n_blocks=2, n_heads=2, ffn_mult=2, sru_hidden=32, vocab_size=256,
            self_attn_key_centres=True,
        )

    @classmethod
    def tiny_v2(cls) -> DPDConfig:
        """CPU preset, second generation *(our choice, beyond the paper)*: P = 10 frames per position
        (one per 25 Hz semantic token, cross-attention aligned 1:1), d_hid 256, 4 blocks, K = 16
        positions per segment (160 frames = 0.64 s), 4 heads, bi-SRU 128 per direction (output d, no
        projection): 5.67M parameters, 26x the 0.21M of `tiny`.

        FLOPs per step on a 10 s window (L = 2500, `melody_core.eval.model_bench.dpd_step_flops`):
        N = 250 positions, S = ceil(2N/K) + 1 = 33 segments, M = S*K = 528 segmented positions, per row
        and block 8Md^2 + 4KS^2d (self-attn) + 4Md^2 + 4M*250*d (cross-attn; a CFG row: self-attn again)
        + 8Md^2 (FFN x2) + 12Md^2 (2 SRU layers d -> d, 3 matrices each) = 1.26 GFLOP cond / 1.28 GFLOP
        uncond; x 4 blocks, CFG twins (input stage and first self-attention once), + W_in/W_out: 9.91 GFLOP
        per guided step, 5.08 GFLOP per step of a guidance-distilled student (one row). `tiny`: 3.87 GFLOP
        per guided step (2.22 per row).
        Per 10 s clip: tiny 10 CFG steps 38.7 GFLOP; v2 guidance-distilled 4 steps 20.3 GFLOP (0.52x),
        v2 4 CFG steps 39.6 GFLOP (1.02x), v2 10 CFG steps 99 GFLOP (2.6x).
        Measured (`melody_core.eval.model_bench.dpd_table`, 2 threads, random weights, on the shared
        2-core machine at load ~12, so wall times are meaningless; median process CPU time of 9 runs):
        tiny 246 ms per CFG step; v2 274 ms per CFG step, 154 ms per distilled (one-row) step. A clip's
        DPD costs 2.46 CPU-s (tiny, 10 CFG steps) vs 0.62 (v2 distilled, 4 steps) or 2.19 (v2, 8 CFG
        steps): wider matmuls and 16-step SRU loops run far more FLOP/s than tiny's d = 64, 64-step loops.
        Quality per second of compute: not measured yet (issue 15).
        """
        return cls(
            d_hid=256, n_blocks=4, n_heads=4, ffn_mult=2, sru_hidden=128, vocab_size=256, segment_size=16,
            patch=10, self_attn_key_centres=True,
        )

    @classmethod
    def paper(cls) -> DPDConfig:
        # §5.1: D_hid 768, N 8, K 64, V_ST 1024; heads (head dim 96) and widths are our choice (see above)
        return cls(
            d_hid=768, n_blocks=8, n_heads=8, segment_size=64, vocab_size=1024, ffn_mult=4, sru_hidden=1152,
            self_attn_key_centres=True,
        )


class AngleEncoder(nn.Module):
    """Eq. 11: delta (B, L) -> E_delta (B, L, d_hid), spherical interpolation of e_start/e_end + MLP1."""

    def __init__(self, angle_dim: int, d_hid: int) -> None:
        super().__init__()
        self.e_start = nn.Parameter(torch.randn(angle_dim))
        self.e_end = nn.Parameter(torch.randn(angle_dim))
        self.mlp = MLP(angle_dim, d_hid)

    def forward(self, delta: torch.Tensor) -> torch.Tensor:
        d = delta.unsqueeze(-1)  # (B, L, 1)
        # Eq. 11 with MLP1's first layer pushed through the interpolation (exact, since it is affine):
        # (sin d e_start + cos d e_end) W1 + b1 = sin d (e_start W1) + cos d (e_end W1) + b1,
        # which never materialises the (B, L, 256) interpolated vectors.
        fc1 = self.mlp.fc1
        p_start, p_end = F.linear(torch.stack([self.e_start, self.e_end]), fc1.weight).unbind(0)  # (d,) each
        hidden = torch.addcmul(torch.addcmul(fc1.bias, torch.sin(d), p_start), torch.cos(d), p_end)
        return self.mlp.norm(self.mlp.fc2(F.gelu(hidden)))  # (B, L, d_hid)


GUIDANCE_FREQS = 16  # Fourier frequencies of the guidance-scale embedding
GUIDANCE_PERIODS = (0.25, 32.0)  # shortest / longest period in units of rho (rho lives in ~[0, 8])


class GuidanceEncoder(nn.Module):
    """Guidance distillation *(our choice, Meng et al. 2023 "On distillation of guided diffusion
    models")*: rho (B,) -> E_rho (B, d_hid), added to the FiLM input of every block.

    Features [rho, sin(2 pi rho / T_i), cos(2 pi rho / T_i)] over geometric periods T_i, then
    Linear -> GELU -> Linear. The last layer starts at zero, so a student initialised from its teacher
    starts exactly as the teacher's conditional model (E_rho = 0) and learns the scale from there.
    """

    def __init__(self, d_hid: int) -> None:
        super().__init__()
        periods = torch.logspace(
            math.log10(GUIDANCE_PERIODS[0]), math.log10(GUIDANCE_PERIODS[1]), GUIDANCE_FREQS
        )
        self.register_buffer("freqs", 2 * math.pi / periods, persistent=False)  # (F,)
        self.fc1 = nn.Linear(2 * GUIDANCE_FREQS + 1, d_hid)
        self.fc2 = nn.Linear(d_hid, d_hid)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, rho: torch.Tensor) -> torch.Tensor:
        r = rho.to(self.fc1.weight.dtype).unsqueeze(-1)  # (B, 1)
        phase = r * self.freqs  # (B, F)
        feats = torch.cat([r, torch.sin(phase), torch.cos(phase)], dim=-1)  # (B, 2F + 1)
        return self.fc2(F.gelu(self.fc1(feats)))  # (B, d_hid)


@dataclass
class _CoarseWeights:
    """Fused weights of one coarse path (norm gains folded in, RoPE pairs interleaved) and its
    cross-attention keys/values of E_ST: part of a `DPDContext`."""

    self_qkv: torch.Tensor  # (3d, d)
    cross_qkv: torch.Tensor  # (3d, d); its first d rows are the cross-attention queries
    token_k: torch.Tensor | None  # rotated keys of E_ST: (Bc, T_st, H, hd)
    token_v: torch.Tensor | None  # values of E_ST: (Bc, T_st, H, hd)
    fc1: torch.Tensor  # (ffn hidden, d)


class CoarsePath(nn.Module):
    """Roformer layer across segments: RoPE self-attention, RoPE cross-attention to E_ST, FFN (pre-norm).

    Runs on the modules' weights directly (see "Speed" in the module docstring); `Attention.forward`
    computes the same maths.
    """

    def __init__(self, cfg: DPDConfig) -> None:
        super().__init__()
        d = cfg.d_hid
        self.norm_self = RMSNorm(d)
        self.self_attn = Attention(d, cfg.n_heads, rope=True, rope_base=cfg.rope_base, dropout=cfg.dropout)
        self.norm_cross = RMSNorm(d)
        self.cross_attn = Attention(d, cfg.n_heads, rope=True, rope_base=cfg.rope_base, dropout=cfg.dropout)
        self.norm_ffn = RMSNorm(d)
        self.ffn = FeedForward(d, cfg.ffn_mult * d, cfg.dropout)

    def forward(
        self, x: torch.Tensor, ctx: DPDContext, w: _CoarseWeights, twins: bool = False
    ) -> torch.Tensor:
        """x: (K, B, S, d) -> (K, B, S, d) (in place without autograd); `twins`: x holds the input rows of
        CFG twins and leaves as (K, 2B, S, d) [x; x] after the self-attention."""
        k, b, s, d = x.shape
        h = (x * _inv_rms(x, self.norm_self)).view(k * b, s, d)  # batch K*B over the S segments
        y = _self_attention(self.self_attn, w.self_qkv, h, ctx.seg_rot)
        x = _add_linear(x, y, self.self_attn.out.weight)
        if twins:  # conditional and unconditional rows are equal up to here
            x = x.repeat(1, 2, 1, 1)  # (K, B, S, d) -> (K, 2B, S, d)
        x = _add_linear(x, self._condition(x, ctx, w), self.cross_attn.out.weight)
        h = _gelu(F.linear(x * _inv_rms(x, self.norm_ffn), w.fc1, self.ffn.fc1.bias))  # (K, B, S, hidden)
        return _add_linear(x, self.ffn.dropout(h), self.ffn.fc2.weight, self.ffn.fc2.bias)

    def weights(self, e_st: torch.Tensor | None, token_rot: torch.Tensor | None) -> _CoarseWeights:
        """Fused weights, and rotated keys / values of E_ST (Bc, T_st, d) when there are conditional rows."""
        attn, token_k, token_v = self.cross_attn, None, None
        if e_st is not None:
            w_k, w_v = attn.kv.weight.chunk(2, dim=0)
            w_kv = torch.cat([interleave_rope_rows(w_k, attn.n_heads), w_v])
            kv = F.linear(e_st, w_kv)  # (Bc, T, 2d)
            token_k, token_v = kv.unflatten(-1, (2, attn.n_heads, attn.head_dim)).unbind(2)  # (Bc, T, H, hd)
            token_k = apply_rope_interleaved(token_k, token_rot)  # keys at the token centres
        return _CoarseWeights(
            self_qkv=_qkv_weight(self.self_attn, self.norm_self.weight),
            cross_qkv=_qkv_weight(attn, self.norm_cross.weight),
            token_k=token_k,
            token_v=token_v,
            fc1=self.ffn.fc1.weight * self.norm_ffn.weight,
        )

    def _condition(self, x: torch.Tensor, ctx: DPDContext, w: _CoarseWeights) -> torch.Tensor:
        """Cross-attention to E_ST for conditional rows, self-attention (CFG) for the others:
        (K, B, S, d) -> (K, B, S, d), before the output projection."""
        k, b, s, d = x.shape
        parts = []
        if ctx.cond_rows is not None:
            parts.append((ctx.cond_rows, self._cross(x[:, ctx.cond_rows], ctx, w)))
        if ctx.uncond_rows is not None:  # CFG: the same layer attends over the segments of its own input
            xu = x[:, ctx.uncond_rows]  # (K, Bu, S, d)
            h = (xu * _inv_rms(xu, self.norm_cross)).view(-1, s, d)  # (K*Bu, S, d)
            parts.append((ctx.uncond_rows, _self_attention(self.cross_attn, w.cross_qkv, h, ctx.seg_rot)))
        if len(parts) == 1:
            return parts[0][1].view(k, b, s, d)
        out = x.new_empty(k, b, s, d)
        for rows, y in parts:
            out[:, rows] = y.view(k, -1, s, d)
        return out

    def _cross(self, x: torch.Tensor, ctx: DPDContext, w: _CoarseWeights) -> torch.Tensor:
        """x: (K, Bc, S, d) conditional rows -> (K, Bc, S, d): attention to their E_ST (ctx.tokens)."""
        k, b, s, d = x.shape
        n_h, hd = self.cross_attn.n_heads, self.cross_attn.head_dim
        q = F.linear(x * _inv_rms(x, self.norm_cross), w.cross_qkv[:d]).view(k, b, s, n_h, hd)
        q = apply_rope_interleaved(q, ctx.frame_rot, _in_place(q))  # every query at its frame time
        q = q.transpose(0, 1).reshape(b, k * s, n_h, hd)  # (Bc, K*S, H, hd): all queries of a row together
        assert w.token_k is not None and w.token_v is not None
        y = _sdpa(self.cross_attn, q, w.token_k, w.token_v)  # (Bc, K*S, d)
        return y.view(b, k, s, d).transpose(0, 1)  # (K, Bc, S, d)


class FinePath(nn.Module):
    """Inside each segment: bi-SRU over the K frames, projection, FiLM (pre-norm residual), [FFN]."""

    def __init__(self, cfg: DPDConfig) -> None:
        super().__init__()
        d = cfg.d_hid
        self.norm = RMSNorm(d)
        self.sru = SRU(
            d, cfg.sru_hidden, cfg.sru_layers, True, dropout=cfg.dropout, highway_bias=cfg.sru_highway_bias
        )
        out = 2 * cfg.sru_hidden
        self.proj = nn.Linear(out, d) if out != d else nn.Identity()
        self.film = FiLM(d, d)
        self.ffn = None
        if cfg.fine_ffn_mult > 0:
            self.norm_ffn = RMSNorm(d)
            self.ffn = FeedForward(d, cfg.fine_ffn_mult * d, cfg.dropout)

    def forward(self, x: torch.Tensor, film: _FiLM) -> torch.Tensor:
        """x: (K, B, S, d), film: (1 + gamma, beta) of this block, each (K, B, S, d) -> (K, B, S, d)."""
        k, b, s, d = x.shape
        h = x * _inv_rms(x, self.norm)
        h = h.mul_(self.norm.weight) if _in_place(x) else h * self.norm.weight  # RMSNorm(x)
        y, _ = self.sru(h.view(k, b * s, d))  # time K, batch B*S: (K, B*S, 2h)
        y = self.proj(y).view(k, b, s, d)
        if _in_place(x):  # FiLM: y (1 + gamma) + beta
            x = x.addcmul_(y, film[0]).add_(film[1])
        else:
            x = x + torch.addcmul(film[1], y, film[0])
        if self.ffn is not None:
            x = x + self.ffn(self.norm_ffn(x))
        return x


class DualPathBlock(nn.Module):
    def __init__(self, cfg: DPDConfig) -> None:
        super().__init__()
        self.coarse = CoarsePath(cfg)
        self.fine = FinePath(cfg)

    def forward(
        self, x: torch.Tensor, ctx: DPDContext, w: _CoarseWeights, film: _FiLM, twins: bool = False
    ) -> torch.Tensor:
        return self.fine(self.coarse(x, ctx, w, twins), film)


@dataclass
class DPDContext:
    """What a forward needs besides z and delta, for given tokens, CFG rows, window length and weights
    (`DualPathDiffusion.prepare`). RoPE phasors: (..., hd/2, 2) cos/sin, see modules.rope. It holds
    tensors derived from the weights when it was made: make a new one after the weights change."""

    rows: int  # B: batch rows of the network (tokens / uncond rows)
    length: int  # L: latent frames of the window
    shared_input: bool  # CFG twins: rows b and B/2 + b get the same z and delta, given once (B/2 rows)
    tokens: torch.Tensor | None  # E_ST of the conditional rows: (Bc, T_st, d)
    cond_rows: slice | torch.Tensor | None  # conditional rows (a slice when consecutive); None when none
    uncond_rows: slice | torch.Tensor | None  # unconditional rows, likewise
    seg_rot: torch.Tensor  # self-attention over segments, [:, 0] queries, [:, 1] keys: (S, 2, H, hd/2, 2)
    frame_rot: torch.Tensor  # cross-attention queries at their frame times: (K, 1, S, H, hd/2, 2)
    coarse: list[_CoarseWeights]  # per block
    film_pooled: torch.Tensor  # FiLM condition besides E_delta: pooled E_ST or the null vector, (B, d)
    film_weight: torch.Tensor  # FiLM projections of all blocks: (n_blocks * 2d, d), [gamma; beta] per block
    film_bias: torch.Tensor  # their biases, + 1 on gamma: (n_blocks * 2d,)


def split_cfg_rows(
    tokens: torch.Tensor | None, uncond: torch.Tensor | None, batch: int, device: torch.device
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Row indices (conditional, unconditional), None where empty. No tokens = all unconditional."""
    if tokens is None or tokens.shape[1] == 0:
        is_uncond = torch.ones(batch, dtype=torch.bool, device=device)
    elif tokens.shape[0] != batch:
        raise ValueError(f"tokens must have {batch} rows, got {tokens.shape[0]}")
    elif uncond is None:
        is_uncond = torch.zeros(batch, dtype=torch.bool, device=device)
    elif uncond.shape != (batch,):
        raise ValueError(f"uncond must be ({batch},), got {tuple(uncond.shape)}")
    else:
        is_uncond = uncond.to(device, torch.bool)
    rows = torch.arange(batch, device=device)
    cond_rows, uncond_rows = rows[~is_uncond], rows[is_uncond]  # data-dependent split (CFG)
    return (cond_rows if len(cond_rows) else None), (uncond_rows if len(uncond_rows) else None)


def token_times(n_tokens: int, device: torch.device) -> torch.Tensor:
    """(T_st,) RoPE positions of semantic tokens in latent frames: token j covers frames [10j, 10j+10),
    so it sits at its centre 10j + 4.5 on the frame-index axis."""
    pos = torch.arange(n_tokens, device=device, dtype=torch.float32) * FRAMES_PER_TOKEN
    return pos + (FRAMES_PER_TOKEN - 1) / 2


def _frame_times(positions: torch.Tensor, patch: int) -> torch.Tensor:
    """RoPE positions (in network positions) -> latent-frame times: position n covers frames
    [nP, nP + P), centred on nP + (P - 1)/2 (P = 10: the centre of semantic token n, 10 n + 4.5)."""
    return positions if patch == 1 else positions * patch + (patch - 1) / 2


def patchify(z: torch.Tensor, delta: torch.Tensor, patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames -> positions: z (B, L, D) -> (B, L/P, P*D) (frame-major inside a position), delta (B, L) ->
    (B, L/P), the largest angle of each position's frames. The pipeline's angles are constant on whole
    tokens (chunks, continuation), so inside a position only inpainting can mix kept (angle 0) and
    generated frames: the position then counts as generated, and the sampler restores the kept frames."""
    if patch == 1:
        return z, delta
    b, length, d = z.shape
    if length % patch:
        raise ValueError(f"window of {length} frames is not a multiple of the patch size {patch}")
    z_pos = z.reshape(b, length // patch, patch * d)  # (B, L, D) -> (B, L/P, P*D)
    return z_pos, delta.reshape(b, length // patch, patch).amax(dim=-1)  # (B, L/P, P) -> (B, L/P)


def unpatchify(v: torch.Tensor, d_latent: int) -> torch.Tensor:
    """Positions -> frames: (B, N, P*D) -> (B, N*P, D), the inverse of `patchify` on z."""
    b, n, pd = v.shape
    return v if pd == d_latent else v.reshape(b, n * (pd // d_latent), d_latent)


_MAX_ANGLE_RUNS = 8  # at most this many runs of equal angles per row (on average): gather path


def _segment_centres(n_segments: int, segment_size: int, device: torch.device) -> torch.Tensor:
    """Segment s is centred on real frame s*K/2 (melody_core.modules.segmentation)."""
    return torch.arange(n_segments, device=device, dtype=torch.float32) * (segment_size // 2)


class DualPathDiffusion(nn.Module):
    """v-prediction network of DPD.

    forward(z: (B, L, D) noisy latents, delta: (B, L) angles in [0, pi/2],
            tokens: (B, T_st) int64 semantic tokens or None (all rows unconditional),
            uncond: (B,) bool or None (True = CFG unconditional row),
            guidance: rho, a number or (B,), only with `guidance_embed`) -> v: (B, L, D).
    Any L >= 1 that is a multiple of `patch`. Token j covers latent frames [10j, 10j+10);
    T_st = ceil(L/10) covers the window (other counts are accepted, see the module docstring).
    Per window: `context = prepare(tokens, uncond, B, L)`, then `forward(z, delta, context=context)`
    for each step (the same result). With `prepare(..., shared_input=True)` (CFG twins), z and delta
    have B/2 rows and v has B: row b and row B/2 + b are computed from z[b], delta[b].
    """

    def __init__(self, config: DPDConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_hid
        if config.segment_size % 2:
            raise ValueError(f"segment_size must be even, got {config.segment_size}")
        if (d // config.n_heads) % 2 or d % config.n_heads:
            raise ValueError(f"d_hid {d} / n_heads {config.n_heads} must be an even integer (RoPE)")
        if config.patch < 1 or FRAMES_PER_TOKEN % config.patch:
            raise ValueError(f"patch must divide {FRAMES_PER_TOKEN} (frames per token), got {config.patch}")
        self.angle = AngleEncoder(config.angle_dim, d)  # Eq. 11
        self.token_embedding = nn.Embedding(config.vocab_size, d)
        self.token_mlp = MLP(d, d)  # E_ST = MLP2(E(u))
        self.null_cond = nn.Parameter(torch.zeros(d), requires_grad=config.cfg_null_film)
        self.guidance = GuidanceEncoder(d) if config.guidance_embed else None
        p = config.patch
        self.w_in = nn.Linear(p * config.d_latent, d, bias=False)  # one position = P frames of D channels
        self.norm_in = RMSNorm(d)
        self.blocks = nn.ModuleList(DualPathBlock(config) for _ in range(config.n_blocks))
        self.norm_out = RMSNorm(d)
        self.w_out = nn.Linear(d, p * config.d_latent)

    def forward(
        self, z: torch.Tensor, delta: torch.Tensor, tokens: torch.Tensor | None = None,
        uncond: torch.Tensor | None = None, context: DPDContext | None = None,
        guidance: float | torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        b, length, d_lat = z.shape
        if delta.shape != (b, length):
            raise ValueError(f"delta must be (B, L) = {(b, length)}, got {tuple(delta.shape)}")
        if context is None:
            context = self.prepare(tokens, uncond, b, length, guidance=guidance)
        elif guidance is not None:
            raise ValueError("the guidance scale is part of the context: pass it to prepare()")
        elif (context.length, context.rows) != (length, b * (2 if context.shared_input else 1)):
            raise ValueError(f"context of {context.rows} rows x {context.length} frames, z {tuple(z.shape)}")
        k = self.config.segment_size
        z_pos, delta_pos = patchify(z, delta, self.config.patch)  # (B, N, P*D), (B, N); N = L / P
        e_delta, angles = self._angle_embedding(delta_pos.to(z.dtype))  # (B, N, d)
        h = self.norm_in(self.w_in(z_pos) + e_delta)  # H = RMSNorm(z W_in + E_delta)
        x = segment_view(pad_for_segments(h, k), k).contiguous()  # (K, B, S, d), time-major
        films = self._film(e_delta, context, angles)
        for i, (block, w, film) in enumerate(zip(self.blocks, context.coarse, films, strict=True)):
            x = block(x, context, w, film, twins=context.shared_input and i == 0)
        v = self.w_out(self.norm_out(overlap_add_time_major(x, h.shape[1])))  # (B, N, d) -> (B, N, P*D)
        return unpatchify(v, d_lat)  # (B, L, D)

    def _angle_embedding(self, delta: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """delta (B, L) -> E_delta (B, L, d) (Eq. 11), and without autograd, when delta is made of few
        runs of equal angles (a sampler step: delta_t, and 0 on kept frames), (E_delta of each run
        (U, d), run index of each frame (B, L)): the MLP then runs on U rows, gathered per frame.
        A value may appear in several runs (inpainting: 0, delta_t, 0): no sort needed."""
        if torch.is_grad_enabled() or torch.compiler.is_compiling() or delta.numel() == 0:
            return self.angle(delta), None
        values, inverse = torch.unique_consecutive(delta.reshape(-1), return_inverse=True)
        if len(values) > _MAX_ANGLE_RUNS * delta.shape[0] or 4 * len(values) > delta.numel():
            return self.angle(delta), None
        e_values = self.angle(values)  # (U, d)
        return e_values.index_select(0, inverse).view(*delta.shape, -1), (e_values, inverse.view(delta.shape))

    def prepare(
        self, tokens: torch.Tensor | None, uncond: torch.Tensor | None, batch: int, length: int,
        shared_input: bool = False, guidance: float | torch.Tensor | None = None,
    ) -> DPDContext:  # fmt: skip
        """The `DPDContext` of `batch` network rows on windows of `length` frames (see the class doc).
        `guidance`: rho, a number or (batch,), for a model with `guidance_embed` (None = 1, no guidance)."""
        cfg = self.config
        k, n_h, d, p = cfg.segment_size, cfg.n_heads, cfg.d_hid, cfg.patch
        if shared_input and batch % 2:
            raise ValueError(f"shared_input needs an even number of rows, got {batch}")
        if length % p:
            raise ValueError(f"window of {length} frames is not a multiple of the patch size {p}")
        dev = self.null_cond.device
        rope = RotaryEmbedding(d // n_h, cfg.rope_base)  # the frequencies of every `Attention` here
        cond_rows, uncond_rows = split_cfg_rows(tokens, uncond, batch, dev)
        e_st, token_rot = None, None
        pooled = self.null_cond.expand(batch, d)  # FiLM input for unconditional rows
        if cond_rows is not None:
            assert tokens is not None
            e_st = self.token_mlp(self.token_embedding(tokens[cond_rows]))  # (Bc, T_st, d)
            token_rot = rope_phasors(rope, token_times(tokens.shape[1], dev))  # (T_st, hd/2, 2)
            token_rot = token_rot.unsqueeze(1).expand(-1, n_h, -1, -1).contiguous()  # (T_st, H, hd/2, 2)
            pooled = pooled.index_put((cond_rows,), e_st.mean(dim=1).to(pooled.dtype))  # mean-pooled E_ST
        pooled = self._guidance_film(pooled, guidance, batch)
        n_seg = num_segments(length // p, k)
        seg_pos = _frame_times(_segment_centres(n_seg, k, dev), p)  # positions -> frame times
        offsets = torch.arange(k, device=dev, dtype=torch.float32).unsqueeze(1) - k // 2  # (K, 1)
        # (K, S, hd/2, 2): position s*K/2 - K/2 + k, at its frame time
        frame_rot = rope_phasors(rope, _frame_times(_segment_centres(n_seg, k, dev) + offsets, p))
        # self-attention: queries at the segment centres; keys there too, or (legacy checkpoints,
        # `self_attn_key_centres=False`) at positions 0..S-1, see the module docstring
        legacy_keys = torch.arange(n_seg, device=dev, dtype=torch.float32)
        key_pos = seg_pos if cfg.self_attn_key_centres else legacy_keys
        seg_rot = rope_phasors(rope, torch.stack([seg_pos, key_pos], dim=1))  # (S, 2, hd/2, 2)
        projs = [block.fine.film.proj for block in self.blocks]
        one = torch.tensor([1.0, 0.0], device=dev).view(2, 1)  # 1 + gamma: +1 in its bias
        # phasors expanded over the heads: contiguous operands let the rotation run as one long loop
        return DPDContext(
            rows=batch,
            length=length,
            shared_input=shared_input,
            tokens=e_st,
            cond_rows=_as_slice(cond_rows),
            uncond_rows=_as_slice(uncond_rows),
            seg_rot=seg_rot.unsqueeze(2).expand(-1, -1, n_h, -1, -1).contiguous(),
            frame_rot=frame_rot.view(k, 1, n_seg, 1, -1, 2).expand(-1, -1, -1, n_h, -1, -1).contiguous(),
            coarse=[block.coarse.weights(e_st, token_rot) for block in self.blocks],
            film_pooled=pooled,
            film_weight=torch.cat([p.weight for p in projs]),
            film_bias=(torch.cat([p.bias for p in projs]).view(-1, 2, d) + one).view(-1),
        )

    def _guidance_film(
        self, pooled: torch.Tensor, guidance: float | torch.Tensor | None, batch: int
    ) -> torch.Tensor:
        """FiLM rows (B, d) + E_rho (B, d) for a guidance-embedded model."""
        if self.guidance is None:
            if guidance is not None:
                raise ValueError("this DPD has no guidance input (guidance_embed is false): use CFG")
            return pooled
        rho = torch.as_tensor(1.0 if guidance is None else guidance, dtype=pooled.dtype, device=pooled.device)
        if rho.ndim == 0:
            rho = rho.expand(batch)
        elif rho.shape != (batch,):
            raise ValueError(f"guidance must be a number or ({batch},), got {tuple(rho.shape)}")
        return pooled + self.guidance(rho)

    def _film(
        self, e_delta: torch.Tensor, ctx: DPDContext, angles: tuple[torch.Tensor, torch.Tensor] | None
    ) -> list[_FiLM]:
        """FiLM (1 + gamma, beta) of every block, each a (K, B, S, d) view: one matmul for all blocks.

        The FiLM input is segmented E_delta + pooled E_ST (learned null vector for unconditional
        rows). It is projected per frame before segmenting: every frame sits in two segments, so this
        halves the work, and zero padding projects to the bias, as segmenting first would give. With
        `angles` (see `_angle_embedding`), only the (row, angle run) inputs are projected, then gathered.
        """
        k, rows = self.config.segment_size, ctx.rows
        b, length, d = e_delta.shape
        if angles is None:
            e_rows = e_delta.repeat(rows // b, 1, 1) if rows != b else e_delta  # CFG twins share E_delta
            cond = pad_for_segments(e_rows + ctx.film_pooled.unsqueeze(1), k)  # (B, (S+1)*P, d)
            proj = F.linear(cond, ctx.film_weight, ctx.film_bias)  # (B, (S+1)*P, n_blocks * 2d)
        else:
            e_values, inverse = angles
            n_u, hop = e_values.shape[0], k // 2
            inputs = (ctx.film_pooled.unsqueeze(1) + e_values).view(rows * n_u, d)  # every (row, angle)
            table = F.linear(inputs, ctx.film_weight, ctx.film_bias)  # (B * U, n_blocks * 2d)
            table = torch.cat([table, ctx.film_bias.to(table.dtype).unsqueeze(0)])  # + the padding row
            index = inverse.new_full((rows, (num_segments(length, k) + 1) * hop), rows * n_u)  # padding: bias
            first_row = torch.arange(rows, device=inverse.device).unsqueeze(1) * n_u  # (B, 1)
            index[:, hop : hop + length] = first_row + inverse.repeat(rows // b, 1)  # after P padding frames
            proj = table.index_select(0, index.view(-1)).view(rows, index.shape[1], -1)
        proj = proj.view(rows, proj.shape[1], -1, 2, d)  # (B, (S+1)*P, n_blocks, 2, d)
        return [(segment_view(p[:, :, 0], k), segment_view(p[:, :, 1], k)) for p in proj.unbind(2)]


def _as_slice(rows: torch.Tensor | None) -> slice | torch.Tensor | None:
    """Row indices -> the equivalent slice when they are consecutive (views instead of gathers)."""
    if rows is None:
        return None
    first = int(rows[0])
    if bool((rows == torch.arange(first, first + len(rows), device=rows.device)).all()):
        return slice(first, first + len(rows))
    return rows
