"""Semantic LM (§3.1 Eq. 1, §5.1): a LLaMA-style decoder over MuLan prefix + semantic tokens.

Eq. 1: p(u_1..T | c_1..12) = prod_j p(u_j | c_1..12, u_<j). The 12 MuLan RVQ tokens c are a
prefix; the model predicts the 25 Hz semantic tokens u (k-means ids) after it.

Architecture (LLaMA [71]): token embeddings -> N x [x + Attn(RMSNorm(x)); x + SwiGLU(RMSNorm(x))]
-> RMSNorm -> linear head over the semantic vocabulary. RoPE self-attention, causal, no biases,
output head untied from the input embedding.

Choices where the paper is silent *(our choice)*:
- Prefix embedding: one table of n_prefix * prefix_codebook_size rows; codebook c's token i is
  row c * prefix_codebook_size + i, so equal ids in different codebooks are different tokens
  (the RVQ levels mean different things). Semantic tokens have their own table. No BOS token:
  the output at the last prefix position predicts u_1.
- Positions: prefix at RoPE positions 0..n_prefix-1, token u_j (0-based) at n_prefix + j.
- Context: training targets are `max_len` tokens (250 = 10 s at 25 Hz), so the network sees at
  most n_prefix + max_len - 1 positions (the last target is never an input). Decoding keeps the
  same bound: the "window" of consumed semantic tokens holds at most `max_len - 1` tokens.
- Sliding window for generation of any length: when feeding a token would overflow the window,
  the oldest tokens are dropped so that the most recent `window_keep` tokens remain (or all of
  the newly fed tokens, if more, capped at the window size), and the KV caches are rebuilt by one
  causal forward over prefix + kept tokens. The kept tokens move back to positions
  n_prefix, n_prefix + 1, ..., so every RoPE position stays inside the trained range and the
  MuLan prefix is always in context. With window_keep = max_len // 2 a rebuild costs one
  ~max_len/2-token forward every ~max_len/2 tokens (amortised about one extra step per token).
- Null prefix and LM guidance (the paper has no guidance on the LM; MusicGen-style CFG on the
  token logits): a prefix id of `NULL_PREFIX` (-1) embeds as a zero vector. A zero input stays
  exactly zero through every pre-norm block (RMSNorm(0) = 0, zero keys score 0 and carry zero
  values, SwiGLU(0) = 0), so the null prefix needs no parameters and old bundles keep their
  weights. The trainer replaces the prefix by it with probability `prefix_dropout`; decoding with
  `guidance` g != 1 runs a conditional and a null-prefix row per sequence and samples from
  log p_null + g (log p_cond - log p_null). `prefix_dropout` stays in the config: the pipeline reads
  it to know whether the LM can be guided. `text_prefix_prob` (a trainer option,
  `train.lm.LMTraining`) makes that share of
  training prefixes the RVQ codes of one of the clip's captions through MuLan's *text* tower (our
  choice: the tiny MuLan's text and audio embeddings are far apart, so an LM trained only on
  audio codes barely reacts to text codes at inference, train/lm.py).
- Explicit controls *(beyond the paper, issue 16; our choice, as producers expect from ACE-Step and
  Stable Audio's timing input)*: optional BPM and key condition tokens right after the MuLan
  prefix. Layout of the condition ("prefix" tensor, (B, n_cond), n_cond = n_prefix + n_controls):
      columns / RoPE positions 0 .. n_prefix-1   MuLan RVQ tokens (prefix_embed)
      next, if bpm_buckets > 0                   BPM bucket (bpm_embed, bpm_buckets rows)
      next, if key_tokens > 0                    key: tonic pitch class + 12 * minor (key_embed, 24 rows)
      n_cond + j                                 semantic token u_j (0-based)
  so every formula above holds with n_prefix replaced by n_cond: the output at position n_cond - 1
  predicts u_1, the decoding cache holds n_cond + window positions, a rebuild re-embeds the whole
  condition and moves the kept tokens back to n_cond, n_cond + 1, ...; `window` and `window_keep`
  count semantic tokens only, so they do not change. A (B, n_prefix) prefix given to an LM with
  controls means "no control given" (null columns appended). BPM buckets are log-spaced over
  [bpm_min, bpm_max] = 40..200 BPM (the corpus' range: `data.variations` MIN_BPM / MAX_BPM for
  rendered scores, 40..178 among arranger genres; corpus v2 spans 40..180 with 5 % of its clips
  below 59, so not 55..190), tempos outside clamp to the end buckets; with DEFAULT_BPM_BUCKETS = 40
  each bucket is (200/40)^(1/40) = 1.041x wide (4.1 %), so its geometric centre is within 2.0 % of
  every tempo in it (the issue's tempo target is +-4 %). Null control: `NULL_CONTROL` (-1) embeds as
  a zero vector, as the null prefix does, not a learned row: the guidance row is then the all-zero
  condition, the same rule for every part of it, and "not given" needs no parameters. Off
  (bpm_buckets = key_tokens = 0, the default): no tables, no extra positions, so existing bundles
  load and run bit for bit as before. The tables are registered after every other parameter, so a
  fresh model with controls draws the old parameters' init exactly as one without. The trainer sets
  a clip's labels from its corpus attributes and drops each to null with its option
  `LMTraining.control_dropout` (train/lm.py); `--init-from` an LM without controls loads every
  old weight and keeps the fresh N(0, 0.02) init of the new tables (`LMStage.init_weights`).
- Beat echo *(beyond the paper, issue 16; our choice, CPU preset)*: `beat_echo` = K > 0 adds to
  the input at the slot that predicts u_j the projected embeddings of the tokens one, two, four ...
  (2^k, k < K) beats earlier, u_{j - L_k}, with L_k = round(2^k * 60 * 25 / bpm) tokens at the BPM
  control's bucket centre (nothing where the BPM is null or j - L_k < 0):
      x_slot = E[u_{j-1}] + sum_k W_k E[u_{j - L_k}]      (W_k: (D, D), `echo_proj`, zero at init)
  so an LM told the tempo can copy what happened one beat or one bar ago instead of learning to
  count 8..38 tokens per beat in its attention. Measured before it (session 13, cand3): with the
  BPM only as a condition token the generated tempo was within 4 % of the asked one in 4 % of 24
  clips and the estimate was independent of the ask, while the DPD rendering the clips' true
  tokens kept the tempo in 66 %: the LM was where tempo was lost. Zero-init W_k: an LM without it
  loads (`--init-from`) and starts as it was. The window after a slide has no tokens before its
  start, so early slots of a rebuilt window echo nothing (as at the start of a training crop).
  Off (0, the default and both presets): no parameter, bit for bit as before.
- Init: N(0, 0.02) for embeddings and linears, output projections of each residual branch
  scaled by 1/sqrt(2 * n_layers) (GPT-2), so the residual stream does not grow with depth.

Decoding: `start` and every sliding-window rebuild run the training path (shared `Attention`
with causal=True filling a `KVCache` per layer); single-token steps run `DecoderLayer.decode_one`,
the same math on a re-laid-out copy of the weights (`DecodeCache`), because at batch 1 on a CPU
the per-token time is set by the number of kernel launches, not by FLOPs (measured ~1.6x faster;
the norm column of `DecodeCache`, two kernels per RMSNorm instead of five, another ~1.2x: 250
tokens of the tiny bundle in 200 ms best / 340 ms median vs 246 / 417 ms, 1 thread, loaded 2-core
machine). One thread is fastest for batch-1 decoding (2 threads: ~1.4x slower there). Tests check
that both paths give the same logits (<= 1e-5), across rebuilds too, and the same sampled tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from melody_core import SEMANTIC_RATE
from melody_core.config import BaseConfig
from melody_core.models.sampling import sample_next
from melody_core.modules import Attention, KVCache, RMSNorm, SwiGLU

INIT_STD = 0.02  # N(0, 0.02) init of embeddings and linears (GPT-2 / LLaMA practice)
NULL_PREFIX = -1  # prefix id of the null (unconditional) prefix: embeds as a zero vector
NULL_CONTROL = -1  # control id of "not given" (BPM / key): embeds as a zero vector too
KEY_VOCAB = 24  # key control: tonic pitch class (C = 0) + 12 for minor
DEFAULT_BPM_BUCKETS = 40  # BPM buckets when the control is on: 4.1 % wide over 40..200 BPM


@dataclass
class LMConfig(BaseConfig):
    """Semantic LM hyper-parameters.

    Paper preset (§5.1 says "a 429.5M LLaMA with 24 layers, 8 heads, and 2048 hidden dimensions").
    Reading "2048" as the residual width cannot give 429.5M: one LLaMA layer at d = 2048 holds
    4d^2 (attention) + 3 d h (SwiGLU, h = 5632 by LLaMA's 8d/3 rule) = 16.8M + 34.6M = 51.4M,
    x 24 = 1.23B. Reading it as the SwiGLU hidden of a d = 1024 model gives
    24 x (4.19M + 3 x 1024 x 2048 = 6.29M) = 251.7M, + 14.7M embeddings = 266M (-38 %).
    The only reading that lands near 429.5M is d = 1024 (8 heads x 128, LLaMA's head size) with a
    SwiGLU hidden of about 4k; we take h = 4096 (= 4d = 2 x 2048; our choice):
      per layer: attention q, kv, out  4 x 1024^2          =  4,194,304
                 SwiGLU w1, w3, w2     3 x 1024 x 4096      = 12,582,912
                 2 RMSNorm             2 x 1024             =      2,048
                                                             16,779,264  x 24 = 402,702,336
      prefix embedding  12 x 1024 x 1024 = 12,582,912;  token embedding 1024 x 1024 = 1,048,576
      head 1024 x 1024 = 1,048,576;  final RMSNorm 1024
      total 417,383,424 = 417.4M, -2.8 % of 429.5M (tests check +-10 % under torch.device("meta")).
    """

    # now options of `train.lm.LMTraining` (BaseConfig.MOVED_TO_TRAINER)
    MOVED_TO_TRAINER = ("text_prefix_prob", "control_dropout")

    vocab_size: int = 256  # semantic vocabulary = k-means centres (tiny 256, paper 1024)
    n_prefix: int = 12  # MuLan RVQ codebooks = prefix tokens (§5.1)
    prefix_codebook_size: int = 256  # entries per MuLan RVQ codebook (tiny 256, paper 1024)
    d_model: int = 128  # residual width
    n_layers: int = 3  # decoder layers
    n_heads: int = 4  # attention heads (head dim = d_model / n_heads, must be even for RoPE)
    ffn_hidden: int = 384  # SwiGLU hidden width
    max_len: int = 250  # target tokens per training example (250 = 10 s at 25 Hz); context bound
    window_keep: int = 125  # tokens kept when the decoding window overflows (sliding window)
    rope_base: float = 10_000.0  # RoPE frequency base
    dropout: float = 0.0  # dropout on attention weights and residual branches (training only)
    norm_eps: float = 1e-6  # RMSNorm epsilon
    prefix_dropout: float = 0.0  # share of training crops with the null prefix: > 0 = the LM can be guided
    bpm_buckets: int = 0  # BPM control: log-spaced tempo buckets over [bpm_min, bpm_max] (0 = off)
    bpm_min: float = 40.0  # lowest BPM bucket's lower edge (slower tempos clamp to bucket 0)
    bpm_max: float = 200.0  # highest bucket's upper edge (faster tempos clamp to the last bucket)
    key_tokens: int = 0  # key control: KEY_VOCAB (24 = 12 tonics x major/minor) or 0 = off
    beat_echo: int = 0  # echo inputs 1, 2, 4 ... beats back at the BPM control's tempo (0 = off)

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(f"d_model {self.d_model} must split into {self.n_heads} even-sized heads")
        if self.max_len < 2:
            raise ValueError(f"max_len must be >= 2, got {self.max_len}")
        if not 1 <= self.window_keep <= self.max_len - 1:
            raise ValueError(f"window_keep must be in [1, max_len - 1], got {self.window_keep}")
        if not 0.0 <= self.prefix_dropout <= 1.0:
            raise ValueError(f"prefix_dropout must be in [0, 1], got {self.prefix_dropout}")
        if self.bpm_buckets < 0:
            raise ValueError(f"bpm_buckets must be >= 0 (0 = no BPM control), got {self.bpm_buckets}")
        if not 0 < self.bpm_min < self.bpm_max:
            raise ValueError(f"need 0 < bpm_min < bpm_max, got {self.bpm_min}, {self.bpm_max}")
        if self.key_tokens not in (0, KEY_VOCAB):
            raise ValueError(f"key_tokens must be 0 (off) or {KEY_VOCAB}, got {self.key_tokens}")
        if not 0 <= self.beat_echo <= 4:
            raise ValueError(f"beat_echo must be in [0, 4] (0 = off), got {self.beat_echo}")
        if self.beat_echo and not self.bpm_buckets:
            raise ValueError("beat_echo needs the BPM control (bpm_buckets > 0)")

    @property
    def controls(self) -> tuple[str, ...]:
        """Names of the control columns after the MuLan prefix, in order ("bpm", "key")."""
        return tuple(n for n, on in (("bpm", self.bpm_buckets > 0), ("key", self.key_tokens > 0)) if on)

    @property
    def n_controls(self) -> int:
        return len(self.controls)

    @property
    def n_cond(self) -> int:
        """Condition positions before the first semantic token: MuLan prefix + controls."""
        return self.n_prefix + self.n_controls

    def bpm_token(self, bpm: float) -> int:
        """Tempo -> its log-spaced bucket in [0, bpm_buckets) (module docstring), clamped at the ends."""
        if self.bpm_buckets <= 0:
            raise ValueError("this LM has no BPM control")
        x = math.log(bpm / self.bpm_min) / math.log(self.bpm_max / self.bpm_min)  # [0, 1) inside the range
        return min(self.bpm_buckets - 1, max(0, math.floor(x * self.bpm_buckets)))

    def bpm_of_token(self, token: int) -> float:
        """Geometric centre of a BPM bucket."""
        ratio = self.bpm_max / self.bpm_min
        return self.bpm_min * ratio ** ((token + 0.5) / self.bpm_buckets)

    def control_tokens(self, bpm: float | None, key: int | None) -> list[int]:
        """The control columns for a tempo and a key index (tonic + 12 * minor; None = null)."""
        out = []
        if self.bpm_buckets > 0:
            out.append(NULL_CONTROL if bpm is None else self.bpm_token(bpm))
        if self.key_tokens > 0:
            if key is not None and not 0 <= key < KEY_VOCAB:
                raise ValueError(f"key index must be in [0, {KEY_VOCAB}), got {key}")
            out.append(NULL_CONTROL if key is None else int(key))
        return out

    @property
    def window(self) -> int:
        """Most semantic tokens held in context while decoding (= longest input in training)."""
        return self.max_len - 1

    @classmethod
    def tiny(cls) -> LMConfig:
        return cls(prefix_dropout=0.1)

    @classmethod
    def paper(cls) -> LMConfig:
        return cls(
            vocab_size=1024,
            prefix_codebook_size=1024,
            d_model=1024,
            n_layers=24,
            n_heads=8,
            ffn_hidden=4096,
            max_len=250,
            window_keep=125,
        )


class DecoderLayer(nn.Module):
    """Pre-norm LLaMA block: x + Attn(RMSNorm(x)), then x + SwiGLU(RMSNorm(x)). x: (B, T, D)."""

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = Attention(
            cfg.d_model, cfg.n_heads, rope=True, rope_base=cfg.rope_base, dropout=cfg.dropout
        )
        self.ffn_norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.ffn = SwiGLU(cfg.d_model, cfg.ffn_hidden)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Full causal pass over x (B, T, D); an empty `cache` collects the rotated keys/values."""
        x = x + self.drop(self.attn(self.attn_norm(x), cache=cache, causal=True))
        return x + self.drop(self.ffn(self.ffn_norm(x)))

    def pack(self) -> PackedLayer:
        """This layer's weights re-laid out for `decode_one` (copies; see `PackedLayer`)."""
        attn, ffn = self.attn, self.ffn
        d = self.attn_norm.weight.shape[0]
        # RMSNorm gains and sqrt(D) (see `DecodeCache`) folded into the next matmul
        g_attn = self.attn_norm.weight.unsqueeze(1) * math.sqrt(d)  # (D, 1)
        g_ffn = self.ffn_norm.weight.unsqueeze(1) * math.sqrt(d)  # (D, 1)
        q_scale = attn.head_dim**-0.5  # SDPA's 1/sqrt(hd), folded into the query weights
        qkv = torch.cat([attn.q.weight * q_scale, attn.kv.weight])  # (3D, D) rows: q | k | v
        return PackedLayer(
            qkv=_norm_rows(qkv.t() * g_attn),  # (D + 1, 3D)
            out=_norm_cols(attn.out.weight.t()),  # (D, D + 1)
            w13=_norm_rows(torch.cat([ffn.w1.weight, ffn.w3.weight]).t() * g_ffn),  # (D + 1, 2F)
            w2=_norm_cols(ffn.w2.weight.t()),  # (F, D + 1)
        )

    @staticmethod
    def decode_one(
        x: torch.Tensor,
        w: PackedLayer,
        keys_t: torch.Tensor,
        values: torch.Tensor,
        rope: torch.Tensor,
        pos: int,
    ) -> torch.Tensor:
        """`forward` for one new position `pos` after `pos` cached ones. x: (B, D + 1) -> (B, D + 1),
        the residual stream with its norm column (see `DecodeCache`).

        Same math as the Attention + KVCache path, in fewer kernel launches (per-token cost on a
        CPU is dominated by per-op overhead): RMSNorm folded into the next matmul,
        (x / rms(x) * g) @ W = (x @ sqrt(D) diag(g) W) / ||x ⊕ c|| (two kernels), fused q|k|v and
        w1|w3 matmuls, RoPE of q and k as one matmul with `rope` (n_pos, hd, hd), keys written
        transposed into preallocated buffers keys_t (B*H, hd, n_pos) / values (B*H, n_pos, hd),
        attention as two bmm (1/sqrt(hd) is folded into the packed query weights).
        """
        b, d = x.shape[0], w.out.shape[0]
        bh = keys_t.shape[0]
        qkv = (x @ w.qkv).div_(_norm(x))  # (B, 3D): q | k | v of the normalised x
        qk = qkv[:, : 2 * d].reshape(b, 2, bh // b, -1) @ rope[pos]  # (B, 2, H, hd) rotated
        keys_t[:, :, pos] = qk[:, 1].reshape(bh, -1)  # (BH, hd)
        values[:, pos] = qkv[:, 2 * d :].reshape(bh, -1)  # (BH, hd)
        q = qk[:, 0].reshape(bh, 1, -1)  # (BH, 1, hd)
        probs = torch.bmm(q, keys_t[:, :, : pos + 1]).softmax(dim=-1)  # (BH, 1, pos+1)
        y = torch.bmm(probs, values[:, : pos + 1]).view(b, d)  # (BH, 1, hd) -> (B, D)
        x = torch.addmm(x, y, w.out)  # x + Attn (the norm column gains exactly 0)
        gate, up = (x @ w.w13).div_(_norm(x)).chunk(2, dim=-1)  # (B, F) each
        return torch.addmm(x, F.silu(gate).mul_(up), w.w2)  # x + SwiGLU


def _norm(x: torch.Tensor) -> torch.Tensor:
    """x ⊕ c (B, D + 1) -> (B, 1) ||x ⊕ c|| = sqrt(sum x^2 + D eps) = sqrt(D) rms(x) (`DecodeCache`)."""
    return torch.linalg.vector_norm(x, dim=-1, keepdim=True)


def _norm_rows(w: torch.Tensor) -> torch.Tensor:
    """(D, n) -> (D + 1, n): a zero row, so the norm column of x adds nothing to x @ w."""
    return torch.cat([w, w.new_zeros(1, w.shape[1])]).contiguous()


def _norm_cols(w: torch.Tensor) -> torch.Tensor:
    """(n, D) -> (n, D + 1): a zero column, so residual updates leave the norm column unchanged."""
    return torch.cat([w, w.new_zeros(w.shape[0], 1)], dim=1).contiguous()


@dataclass
class PackedLayer:
    """Decode-time copy of one layer's weights, (in, out) layout, s = sqrt(D), with the zero row /
    column of the norm column (`_norm_rows` / `_norm_cols`): qkv = s diag(g_attn) [Wq / sqrt(hd); Wkv]^T,
    out = Wo^T, w13 = s diag(g_ffn) [W1; W3]^T, w2 = W2^T."""

    qkv: torch.Tensor  # (D + 1, 3D)
    out: torch.Tensor  # (D, D + 1)
    w13: torch.Tensor  # (D + 1, 2F)
    w2: torch.Tensor  # (F, D + 1)


class DecodeCache:
    """Preallocated keys/values of prefix + window and packed weights for batch-synchronous decoding.

    keys_t[l]: (B*H, hd, n_cond + window) RoPE-rotated keys, transposed for q @ K;
    values[l]: (B*H, n_cond + window, hd). rope: (positions, hd, hd) matrices M_p with
    x @ M_p = x * cos_p + rotate_half(x) * sin_p (= apply_rope at position p).
    layers: `PackedLayer` per layer; head: sqrt(D) diag(g_final) W_head^T with a zero row (D + 1, V).
    Packed weights are copies taken at `start`: a state does not see later weight updates.

    Norm column: the residual stream of a decoded token is kept as x ⊕ c, (B, D + 1), c = sqrt(D eps)
    (eps: RMSNorm's, the same for every norm). Then ||x ⊕ c|| = sqrt(sum x^2 + D eps) = sqrt(D) rms(x)
    is one reduction, and RMSNorm(x) W = (x ⊕ c)(sqrt(D) diag(g) W ⊕ 0) / ||x ⊕ c||: two kernels
    instead of five. The embedding table carries c (`embedding`: (V, D + 1)); the packed weights
    have a zero row where they read x and a zero column where they update it, so c never changes.
    """

    def __init__(self, model: SemanticLM, batch: int, device: torch.device, dtype: torch.dtype) -> None:
        cfg = model.config
        heads, hd = cfg.n_heads, cfg.d_model // cfg.n_heads
        n_pos = cfg.n_cond + cfg.window
        kw = {"device": device, "dtype": dtype}
        self.keys_t = [torch.zeros(batch * heads, hd, n_pos, **kw) for _ in range(cfg.n_layers)]
        self.values = [torch.zeros(batch * heads, n_pos, hd, **kw) for _ in range(cfg.n_layers)]
        cos, sin = model.layers[0].attn.rope(torch.arange(n_pos, device=device))  # (n_pos, hd) each
        half = hd // 2
        rot = torch.zeros(hd, hd, device=device)  # x @ rot = rotate_half(x) = cat(-x2, x1)
        idx = torch.arange(half, device=device)
        rot[idx + half, idx] = -1.0
        rot[idx, idx + half] = 1.0
        mats = torch.diag_embed(cos) + rot * sin.unsqueeze(1)  # (n_pos, hd, hd): diag(cos) + rot diag(sin)
        self.rope = mats.to(dtype)
        self.layers = [layer.pack() for layer in model.layers]
        g_final = model.norm.weight.unsqueeze(1) * math.sqrt(cfg.d_model)  # (D, 1)
        self.head = _norm_rows(model.head.weight.t() * g_final)  # (D + 1, V)
        table = model.token_embed.weight
        norm_col = table.new_full((table.shape[0], 1), math.sqrt(cfg.d_model * model.norm.eps))
        self.embedding = torch.cat([table, norm_col], dim=1).to(dtype)  # (V, D + 1): x ⊕ c per token
        # beat echo: E W_k per lag, with a zero last row for "no echo" (id -1)
        self.echo = None
        if model.echo_proj is not None:
            ew = torch.einsum("vd,kde->kve", table, model.echo_proj)  # (K, V, D)
            zero = ew.new_zeros(ew.shape[0], 1, ew.shape[2])
            self.echo = torch.cat([ew, zero], dim=1).to(dtype)  # (K, V + 1, D)

    def load(self, caches: list[KVCache]) -> None:
        """Copy the keys/values of a full forward, (B, H, T, hd) per layer, into the buffers."""
        for layer, c in enumerate(caches):
            b, h, t, hd = c.k.shape
            self.keys_t[layer][:, :, :t] = c.k.reshape(b * h, t, hd).transpose(1, 2)  # (BH, hd, T)
            self.values[layer][:, :t] = c.v.reshape(b * h, t, hd)  # (BH, T, hd)

    def decode(self, token: torch.Tensor, pos: int, echo: torch.Tensor | None = None) -> torch.Tensor:
        """Token ids (B,) at position `pos` -> (B, V) next-token logits; `echo` (B, K): the beat-echo
        token ids of this slot (-1 = none), for an LM with a beat echo."""
        x = F.embedding(token, self.embedding)  # (B, D + 1)
        if self.echo is not None and echo is not None:
            k = torch.arange(self.echo.shape[0], device=echo.device)  # (K,)
            x[:, :-1] += self.echo[k, echo].sum(dim=1)  # (B, K, D) -> (B, D); -1 = the zero row
        for i, w in enumerate(self.layers):
            x = DecoderLayer.decode_one(x, w, self.keys_t[i], self.values[i], self.rope, pos)
        return (x @ self.head).div_(_norm(x))  # (B, V)


@dataclass
class LMState:
    """Incremental decoding state of a batch (all rows advance together).

    prefix: (B', n_cond) MuLan tokens + controls (B' = B, or 2B with guidance: the null rows -- null
    prefix and null controls -- after the conditional ones, fed the same tokens); tokens: (B',
    config.window) buffer whose first n_window columns are the semantic tokens in context (`window`);
    cache: keys/values of prefix + window; logits: (B, V) distribution of the next token;
    n_consumed: tokens fed since `start`; n_rebuilds: sliding-window rebuilds.
    """

    prefix: torch.Tensor
    tokens: torch.Tensor
    cache: DecodeCache
    logits: torch.Tensor
    n_window: int = 0
    n_consumed: int = 0
    n_rebuilds: int = 0
    guidance: float = 1.0  # LM guidance scale g; != 1: rows [B:] are the null-prefix copies
    rows: int = 0  # sequences B (the batch is 2B when guided)
    lags: torch.Tensor | None = None  # (B', K) beat-echo lags in tokens (0 = none), None = no echo
    _guided_of: torch.Tensor | None = None  # the logits `_guided_scores` were computed from
    _guided_scores: torch.Tensor | None = None

    @property
    def guided(self) -> bool:
        return self.guidance != 1.0

    def next_logits(self) -> torch.Tensor:
        """(B, V) next-token scores: the logits, or with guidance the guided log-probabilities
        (computed once per new `logits`)."""
        if not self.guided:
            return self.logits
        if self._guided_of is not self.logits:
            logp = F.log_softmax(self.logits.float(), dim=-1)  # (2B, V)
            cond, null = logp[: self.rows], logp[self.rows :]
            self._guided_scores = null + self.guidance * (cond - null)  # (B, V)
            self._guided_of = self.logits
        return self._guided_scores

    @property
    def window(self) -> torch.Tensor:
        """(B, n_window) semantic tokens in context, oldest first (a view)."""
        return self.tokens[:, : self.n_window]


def _uninit_embedding(n: int, d: int) -> nn.Embedding:
    """An (n, d) table that draws no random numbers when built (`_init_weights` fills it)."""
    return nn.Embedding(n, d, _weight=torch.empty(n, d))


class SemanticLM(nn.Module):
    """LLaMA-style semantic LM, Eq. 1.

    forward(prefix (B, n_prefix) or (B, n_cond) int64: MuLan tokens [+ controls], tokens (B, T) int64,
    1 <= T <= max_len) -> logits (B, T, V):
    logits[:, j] is the distribution of tokens[:, j] given the prefix and tokens[:, :j]
    (teacher forcing: the network consumes prefix + tokens[:, :-1]).
    loss(prefix, tokens) -> scalar mean cross-entropy.
    Decoding (eval mode, no dropout): start(prefix, prompt_tokens (B, n) | None) -> LMState whose
    .next_logits() (B, V) predicts the next token; step(state, token (B,)) / feed(state, tokens (B, n))
    consume tokens and return the next (B, V) logits; stream(state, ...) yields sampled (B, chunk)
    tokens for as long as it is pulled; generate(prefix, n_tokens, ...) -> (B, n_tokens).
    Any length: sliding window (module docstring).
    """

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.config = config
        cfg = config
        self.prefix_embed = nn.Embedding(cfg.n_prefix * cfg.prefix_codebook_size, cfg.d_model)
        self.token_embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        # control tables last and without nn.Embedding's own init draw (`_weight`), so the old
        # parameters' draws in `_init_weights` are the same as without controls (module docstring)
        self.bpm_embed = _uninit_embedding(cfg.bpm_buckets, cfg.d_model) if cfg.bpm_buckets else None
        self.key_embed = _uninit_embedding(cfg.key_tokens, cfg.d_model) if cfg.key_tokens else None
        # beat echo projections W_k (module docstring), zero at init: no random draw
        d = cfg.d_model
        self.echo_proj = nn.Parameter(torch.zeros(cfg.beat_echo, d, d)) if cfg.beat_echo else None
        self._init_weights()

    def _init_weights(self) -> None:
        residual_std = INIT_STD / math.sqrt(2 * self.config.n_layers)
        for name, p in self.named_parameters():
            if p.dim() < 2 or name == "echo_proj":  # RMSNorm gains stay at 1, echo projections at 0
                continue
            is_residual_out = name.endswith("attn.out.weight") or name.endswith("ffn.w2.weight")
            nn.init.normal_(p, mean=0.0, std=residual_std if is_residual_out else INIT_STD)

    # ---- full-sequence (training) path -------------------------------------------------------

    def _control_tables(self) -> list[nn.Embedding]:
        return [t for t in (self.bpm_embed, self.key_embed) if t is not None]

    def echo_lags(self, cond: torch.Tensor) -> torch.Tensor | None:
        """(B, n_cond) condition -> (B, K) beat-echo lags in tokens (0 = none: null BPM), or None
        when the LM has no beat echo."""
        cfg = self.config
        if not cfg.beat_echo:
            return None
        ids = cond[:, cfg.n_prefix]  # (B,) BPM column (the first control)
        centres = torch.tensor([cfg.bpm_of_token(i) for i in range(cfg.bpm_buckets)], dtype=torch.float64)
        period = 60.0 * SEMANTIC_RATE / centres[ids.clamp(min=0).cpu()]  # (B,) tokens per beat
        mult = 2.0 ** torch.arange(cfg.beat_echo, dtype=torch.float64)  # (K,)
        lags = torch.round(period.unsqueeze(1) * mult).long()  # (B, K)
        return lags.masked_fill((ids < 0).cpu().unsqueeze(1), 0).to(cond.device)

    def _echo(self, lags: torch.Tensor, seq: torch.Tensor, n: int) -> torch.Tensor:
        """Echo input of slots 0..n-1 (slot i holds seq[:, i] and predicts seq[:, i + 1]):
        sum_k W_k E[seq[:, i + 1 - L_k]] -> (B, n, D); lags (B, K), seq (B, >= n)."""
        b, k = lags.shape
        src = torch.arange(1, n + 1, device=seq.device).view(1, 1, n) - lags.unsqueeze(-1)  # (B, K, n)
        ok = (lags.unsqueeze(-1) > 0) & (src >= 0)  # (B, K, n)
        tok = seq.gather(1, src.clamp(0, seq.shape[1] - 1).view(b, k * n)).view(b, k, n)  # (B, K, n)
        e = self.token_embed(tok) * ok.unsqueeze(-1)  # (B, K, n, D)
        return torch.einsum("bknd,kde->bne", e, self.echo_proj)  # (B, n, D)

    def _embed_tokens(self, cond: torch.Tensor, seq: torch.Tensor, n: int) -> torch.Tensor:
        """Input embeddings of the first n tokens of seq (B, >= n) after condition `cond`, with the
        beat echo when the LM has one -> (B, n, D)."""
        x = self.token_embed(seq[:, :n])  # (B, n, D)
        lags = self.echo_lags(cond)
        return x if lags is None or n == 0 else x + self._echo(lags, seq, n)

    def condition(self, prefix: torch.Tensor) -> torch.Tensor:
        """Check a (B, n_prefix) or (B, n_cond) condition and return it as (B, n_cond): missing
        control columns are null (module docstring: explicit controls)."""
        cfg = self.config
        if prefix.dim() != 2 or prefix.shape[1] not in (cfg.n_prefix, cfg.n_cond):
            want = f"{cfg.n_prefix}" + (f" or {cfg.n_cond}" if cfg.n_controls else "")
            raise ValueError(f"prefix must be (B, {want}), got {tuple(prefix.shape)}")
        codes = prefix[:, : cfg.n_prefix]
        if codes.numel() and (codes.min() < NULL_PREFIX or codes.max() >= cfg.prefix_codebook_size):
            raise ValueError(f"prefix tokens must lie in [0, {cfg.prefix_codebook_size}) or be {NULL_PREFIX}")
        for i, (name, table) in enumerate(zip(cfg.controls, self._control_tables())):
            col = prefix[:, cfg.n_prefix + i :][:, :1]  # (B, 0 or 1)
            if col.numel() and (col.min() < NULL_CONTROL or col.max() >= table.num_embeddings):
                n = table.num_embeddings
                raise ValueError(f"{name} control tokens must lie in [0, {n}) or be {NULL_CONTROL}")
        if prefix.shape[1] < cfg.n_cond:
            prefix = torch.cat([prefix, prefix.new_full((prefix.shape[0], cfg.n_controls), NULL_CONTROL)], 1)
        return prefix

    def _check_prefix(self, prefix: torch.Tensor) -> None:
        self.condition(prefix)

    def embed_prefix(self, prefix: torch.Tensor) -> torch.Tensor:
        """(B, n_cond) condition (`condition`) -> (B, n_cond, D): MuLan codebook c uses rows
        c*size + id of `prefix_embed`, each control its own table.

        `NULL_PREFIX` / `NULL_CONTROL` ids embed as zero vectors (module docstring)."""
        cfg = self.config
        codes = prefix[:, : cfg.n_prefix]  # (B, n_prefix)
        offsets = torch.arange(cfg.n_prefix, device=prefix.device) * cfg.prefix_codebook_size
        null = codes < 0  # (B, n_prefix)
        x = self.prefix_embed(codes.clamp(min=0) + offsets)  # (B, n_prefix, D)
        x = x.masked_fill(null.unsqueeze(-1), 0.0) if bool(null.any()) else x
        if not cfg.n_controls:
            return x
        parts = [x]
        for i, table in enumerate(self._control_tables()):
            ids = prefix[:, cfg.n_prefix + i]  # (B,)
            e = table(ids.clamp(min=0)).masked_fill((ids < 0).unsqueeze(-1), 0.0)  # (B, D)
            parts.append(e.unsqueeze(1))  # (B, 1, D)
        return torch.cat(parts, dim=1)  # (B, n_cond, D)

    def _run(self, x: torch.Tensor, caches: list[KVCache] | None = None) -> torch.Tensor:
        """x: (B, T, D) embeddings from position 0 -> (B, T, V) logits; fills empty `caches`."""
        for i, layer in enumerate(self.layers):
            x = layer(x, cache=None if caches is None else caches[i])
        return self.head(self.norm(x))

    def forward(self, prefix: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        prefix = self.condition(prefix)
        if tokens.dim() != 2 or not 1 <= tokens.shape[1] <= self.config.max_len:
            shape = tuple(tokens.shape)
            raise ValueError(f"tokens must be (B, T), 1 <= T <= {self.config.max_len}; got {shape}")
        emb = self._embed_tokens(prefix, tokens, tokens.shape[1] - 1)  # (B, T-1, D)
        x = torch.cat([self.embed_prefix(prefix), emb], dim=1)  # (B, P+T-1, D)
        logits = self._run(x)  # (B, P+T-1, V), P = n_cond
        return logits[:, self.config.n_cond - 1 :]  # (B, T, V): position P-1+j predicts u_j

    def loss(self, prefix: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood of Eq. 1 over all B x T target tokens."""
        logits = self(prefix, tokens)  # (B, T, V)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1))  # (B*T, V)

    # ---- incremental decoding ------------------------------------------------------------------

    @torch.inference_mode()
    def start(
        self, prefix: torch.Tensor, prompt_tokens: torch.Tensor | None = None, guidance: float = 1.0
    ) -> LMState:
        """Consume the prefix and optional prompt tokens (B, n); state.next_logits() predicts the
        next token (`guidance` != 1: classifier-free guidance against the null prefix).

        A prompt longer than the window keeps only its most recent `config.window` tokens.
        """
        prefix = self.condition(prefix)  # (B, n_cond)
        if not math.isfinite(guidance) or guidance < 0:
            raise ValueError(f"LM guidance must be a finite number >= 0, got {guidance}")
        rows = prefix.shape[0]
        if guidance != 1.0:  # (2B, n_cond): conditional rows, then null prefix + null controls
            prefix = torch.cat([prefix, torch.full_like(prefix, NULL_PREFIX)])
            if prompt_tokens is not None and prompt_tokens.dim() == 2 and prompt_tokens.shape[0] == rows:
                prompt_tokens = prompt_tokens.repeat(2, 1)  # (2B, n)
        b = prefix.shape[0]
        cache = DecodeCache(self, b, prefix.device, self.head.weight.dtype)
        window = prefix.new_zeros(b, 0)
        if prompt_tokens is not None:
            if prompt_tokens.dim() != 2 or prompt_tokens.shape[0] != b:
                raise ValueError(f"prompt_tokens must be ({b}, n), got {tuple(prompt_tokens.shape)}")
            window = prompt_tokens[:, -self.config.window :].to(prefix)
        buffer = prefix.new_zeros(b, self.config.window)
        state = LMState(prefix, buffer, cache, prefix.new_zeros(0), guidance=float(guidance), rows=rows,
                        lags=self.echo_lags(prefix))
        self._rebuild(state, window)
        state.n_consumed, state.n_rebuilds = window.shape[1], 0
        return state

    def _rebuild(self, state: LMState, window: torch.Tensor) -> None:
        """Refill the cache from prefix + window (B, n) in one causal forward (Attention + KVCache)."""
        caches = [KVCache() for _ in self.layers]
        emb = self._embed_tokens(state.prefix, window, window.shape[1])  # (B, n, D)
        x = torch.cat([self.embed_prefix(state.prefix), emb], dim=1)  # (B, P+n, D)
        state.logits = self._run(x, caches)[:, -1]  # (B, V)
        state.cache.load(caches)
        state.tokens[:, : window.shape[1]] = window
        state.n_window = window.shape[1]
        state.n_rebuilds += 1

    @torch.inference_mode()
    def feed(self, state: LMState, tokens: torch.Tensor) -> torch.Tensor:
        """Consume tokens (B, n) after the window; returns `state.next_logits()`, (B, V).

        One token with room in the window: one cached step. Otherwise (several tokens, or a full
        window) the window slides (module docstring) and the cache is rebuilt in one forward.
        """
        cfg = self.config
        if state.guided and tokens.shape[0] == state.rows:
            tokens = tokens.repeat(2, 1)  # (2B, n): the null-prefix rows read the same tokens
        n_window, n = state.n_window, tokens.shape[1]
        if n == 0:
            return state.next_logits()
        state.n_consumed += n
        if n > 1 or n_window + n > cfg.window:
            window = torch.cat([state.window, tokens], dim=1)  # (B, n_window + n)
            if window.shape[1] > cfg.window:  # sliding window: keep the most recent tokens
                window = window[:, -min(cfg.window, max(cfg.window_keep, n)) :]
            self._rebuild(state, window)
            return state.next_logits()
        state.tokens[:, n_window] = tokens[:, 0]
        echo = None
        if state.lags is not None:  # the tokens L_k before the one this slot predicts (n_window + 1)
            src = n_window + 1 - state.lags  # (B', K)
            none = (state.lags <= 0) | (src < 0)
            echo = state.tokens.gather(1, src.clamp(0, n_window)).masked_fill(none, -1)  # (B', K)
        state.logits = state.cache.decode(tokens[:, 0], pos=cfg.n_cond + n_window, echo=echo)  # (B', V)
        state.n_window += 1
        return state.next_logits()

    def step(self, state: LMState, token: torch.Tensor) -> torch.Tensor:
        """Consume one token per row (B,); returns the (B, V) logits of the next one."""
        return self.feed(state, token.view(-1, 1))  # (B, 1)

    def stream(
        self,
        state: LMState,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
        chunk_size: int = 1,
    ) -> Iterator[torch.Tensor]:
        """Endless sampler over `state`: yields (B, chunk_size) tokens until the caller stops.

        Every sampled token is fed to `state` before it is yielded, so between chunks `state` has
        consumed all yielded tokens and `state.next_logits()` predicts the next one: a later `stream`
        (or `feed` of other tokens) on the same state continues seamlessly.
        """
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        while True:
            chunk = []
            for _ in range(chunk_size):
                token = sample_next(state.next_logits(), temperature, top_k, top_p, generator)  # (B,)
                self.step(state, token)
                chunk.append(token.unsqueeze(1))  # (B, 1)
            yield chunk[0] if chunk_size == 1 else torch.cat(chunk, dim=1)  # (B, chunk_size)

    def generate(
        self,
        prefix: torch.Tensor,
        n_tokens: int,
        prompt_tokens: torch.Tensor | None = None,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
        callback: Callable[[int, int], None] | None = None,
        guidance: float = 1.0,
    ) -> torch.Tensor:
        """Sample n_tokens new tokens (B, n_tokens) after the prefix and the optional prompt (B, n).

        The prompt is not part of the output. `callback(n_done, n_tokens)` runs after each token.
        """
        state = self.start(prefix, prompt_tokens, guidance)
        stream = self.stream(state, temperature, top_k, top_p, generator)
        out = []
        for i in range(n_tokens):
            out.append(next(stream))  # (B, 1)
            if callback is not None:
                callback(i + 1, n_tokens)
        stream.close()
        return torch.cat(out, dim=1) if out else prefix.new_zeros(prefix.shape[0], 0)  # (B, n_tokens)
