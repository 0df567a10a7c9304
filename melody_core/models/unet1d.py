"""UNet-1D baseline for the network ablation (poster: DPD vs UNet-1D, velocity MSE / SI-SNRi).

Same contract and conditioning inputs as `DualPathDiffusion`, so the trainer and sampler can swap
them: forward(z (B, L, D), delta (B, L), tokens (B, T_st) | None, uncond (B,) | None) -> v (B, L, D).

Architecture *(our choice; the poster gives no details)*: a 1-D convolutional UNet in the style of
the LDM/DDPM UNets the paper compares against [23, 31], channels-first inside:
- conditioning per frame: E_delta (Eq. 11, the DPD's `AngleEncoder`) plus the mean-pooled semantic
  embedding E_ST (or a learned null vector for unconditional rows), average-pooled to each level's
  rate, modulates every residual block through FiLM;
- encoder: per level `res_blocks` residual blocks (GroupNorm, SiLU, conv k=3, FiLM, conv k=3),
  then a stride-2 convolution; decoder mirrors it with nearest upsampling + conv and skip concats;
- bottleneck: residual block, RoPE self-attention, RoPE cross-attention to E_ST (for unconditional
  rows the cross-attention layer attends to its own input, as in the DPD), residual block. RoPE
  positions are latent-frame times, tokens at 10 j + 4.5, as in the DPD.
- any L >= 1: the input is zero-padded (angles edge-padded) to a multiple of 2^levels and the
  output cropped.
`UNet1DConfig.matching(dpd_config)` picks the base width whose parameter count is closest to the
given DPD's (within 10 %), for a fair same-size ablation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from melody_core.config import BaseConfig
from melody_core.models.dpd import AngleEncoder, DPDConfig, DualPathDiffusion, split_cfg_rows, token_times
from melody_core.modules import MLP, Attention, FiLM, RMSNorm

_Tensor = torch.Tensor | None
_MATCH_CACHE: dict[tuple, UNet1DConfig] = {}  # DPD config items -> matching UNet config


@dataclass
class UNet1DConfig(BaseConfig):
    """1-D UNet velocity network (ablation baseline)."""

    d_latent: int = 16  # D: VAE latent channels
    channels: int = 16  # base width; level i has channels * channel_mults[i]
    channel_mults: tuple[int, ...] = (1, 2, 4, 4)  # one entry per level; len - 1 stride-2 downsamplings
    res_blocks: int = 2  # residual blocks per level (encoder and decoder)
    kernel_size: int = 3  # odd convolution width
    groups: int = 8  # GroupNorm groups at most (each norm uses gcd(groups, its width))
    n_heads: int = 4  # bottleneck attention heads (head dim must be even, RoPE)
    d_cond: int = 64  # width of E_delta / E_ST (the conditioning embeddings)
    angle_dim: int = 256  # size of e_start / e_end (Eq. 11)
    vocab_size: int = 256  # V_ST: semantic token vocabulary
    rope_base: float = 10_000.0  # RoPE base; positions in latent frames
    dropout: float = 0.0  # dropout inside residual blocks and attention (training only)
    cfg_dropout: float = 0.1  # p of dropping the semantic condition in training (the trainer applies it)
    cfg_null_film: bool = True  # unconditional FiLM input: learned null vector (True) or zeros
    train_chunks: int = 4  # M: chunks of a training window, as `DPDConfig.train_chunks` (Eq. 7-10)

    @classmethod
    def tiny(cls) -> UNet1DConfig:
        return cls.matching(DPDConfig.tiny())

    @classmethod
    def paper(cls) -> UNet1DConfig:
        return cls.matching(DPDConfig.paper())

    @classmethod
    def matching(cls, dpd_config: DPDConfig) -> UNet1DConfig:
        """The config whose parameter count is closest to `DualPathDiffusion(dpd_config)`'s."""
        key = tuple(sorted(dpd_config.to_dict().items()))
        if key not in _MATCH_CACHE:  # the search builds ~20 models on the meta device (~1 s)
            _MATCH_CACHE[key] = cls._search_matching(dpd_config)
        return replace(_MATCH_CACHE[key])

    @classmethod
    def _search_matching(cls, dpd_config: DPDConfig) -> UNet1DConfig:
        base = cls(
            d_latent=dpd_config.d_latent,
            d_cond=dpd_config.d_hid,
            angle_dim=dpd_config.angle_dim,
            vocab_size=dpd_config.vocab_size,
            n_heads=dpd_config.n_heads,
            rope_base=dpd_config.rope_base,
            cfg_dropout=dpd_config.cfg_dropout,
            train_chunks=dpd_config.train_chunks,
        )
        target = count_parameters(DualPathDiffusion, dpd_config)
        # widths whose bottleneck splits into n_heads even head dims (RoPE) are multiples of `unit`
        heads2 = 2 * base.n_heads
        unit = heads2 // math.gcd(heads2, base.channel_mults[-1])

        def size(m: int) -> int:
            return count_parameters(UNet1D, replace(base, channels=m * unit))

        lo, hi = 0, 1  # invariant: size(lo) < target <= size(hi), size(0) := 0
        while size(hi) < target:
            lo, hi = hi, hi * 2
        while hi - lo > 1:  # parameters grow with width: bisect the crossing
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if size(mid) < target else (lo, mid)
        best = min((m for m in (lo, hi) if m > 0), key=lambda m: abs(size(m) / target - 1))
        return replace(base, channels=best * unit)


def count_parameters(model_cls: type[nn.Module], config: BaseConfig) -> int:
    """Parameter count without allocating (built on the meta device)."""
    with torch.device("meta"):
        model = model_cls(config)
    return sum(p.numel() for p in model.parameters())


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv -> FiLM(cond) -> GroupNorm -> SiLU -> dropout -> conv, plus skip."""

    def __init__(self, c_in: int, c_out: int, cfg: UNet1DConfig) -> None:
        super().__init__()
        pad = cfg.kernel_size // 2
        self.norm1 = nn.GroupNorm(math.gcd(cfg.groups, c_in), c_in)
        self.conv1 = nn.Conv1d(c_in, c_out, cfg.kernel_size, padding=pad)
        self.film = FiLM(c_out, cfg.d_cond)
        self.norm2 = nn.GroupNorm(math.gcd(cfg.groups, c_out), c_out)
        self.dropout = nn.Dropout(cfg.dropout)
        self.conv2 = nn.Conv1d(c_out, c_out, cfg.kernel_size, padding=pad)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, L); cond: (B, L, d_cond) -> (B, C_out, L)."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.film(h.transpose(1, 2), cond).transpose(1, 2)  # FiLM works channel-last
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class BottleneckAttention(nn.Module):
    """Pre-norm RoPE self-attention, then cross-attention to E_ST (self-attention for uncond rows)."""

    def __init__(self, dim: int, cfg: UNet1DConfig) -> None:
        super().__init__()
        self.norm_self = RMSNorm(dim)
        self.self_attn = Attention(dim, cfg.n_heads, rope=True, rope_base=cfg.rope_base, dropout=cfg.dropout)
        self.norm_cross = RMSNorm(dim)
        # E_ST is projected to the bottleneck width so that the same layer can also attend to its own
        # input (the unconditional CFG branch)
        self.context_proj = nn.Linear(cfg.d_cond, dim)
        self.cross_attn = Attention(dim, cfg.n_heads, rope=True, rope_base=cfg.rope_base, dropout=cfg.dropout)

    def forward(
        self, x: torch.Tensor, pos: torch.Tensor, e_st: torch.Tensor | None, token_pos: torch.Tensor | None,
        cond_rows: torch.Tensor | None, uncond_rows: torch.Tensor | None,
    ) -> torch.Tensor:  # fmt: skip
        """x: (B, C, L') -> (B, C, L'); pos: (L',) frame times; e_st: (Bc, T_st, d_cond) of cond rows."""
        h = x.transpose(1, 2)  # (B, L', C)
        h = h + self.self_attn(self.norm_self(h), q_pos=pos)
        q = self.norm_cross(h)
        e_st = self.context_proj(e_st) if e_st is not None else None  # (Bc, T_st, C)
        if cond_rows is None:
            y = self.cross_attn(q, q_pos=pos)
        elif uncond_rows is None:
            y = self.cross_attn(q, context=e_st, q_pos=pos, k_pos=token_pos)
        else:
            y = torch.empty_like(q)
            y_cond = self.cross_attn(q[cond_rows], context=e_st, q_pos=pos, k_pos=token_pos)
            y.index_copy_(0, cond_rows, y_cond)
            y.index_copy_(0, uncond_rows, self.cross_attn(q[uncond_rows], q_pos=pos))
        return (h + y).transpose(1, 2)  # (B, C, L')


class UNet1D(nn.Module):
    """1-D UNet v-prediction network with the DPD's contract.

    forward(z: (B, L, D), delta: (B, L) angles in [0, pi/2], tokens: (B, T_st) int64 | None,
            uncond: (B,) bool | None) -> v: (B, L, D). Any L >= 1; tokens None = all unconditional.
    """

    def __init__(self, config: UNet1DConfig) -> None:
        super().__init__()
        self.config = config
        widths = [config.channels * m for m in config.channel_mults]
        if (widths[-1] // config.n_heads) % 2 or widths[-1] % config.n_heads:
            raise ValueError(f"bottleneck width {widths[-1]} / n_heads {config.n_heads} must be even (RoPE)")
        if config.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {config.kernel_size}")
        self.levels = len(widths) - 1  # stride-2 downsamplings
        d = config.d_cond
        self.angle = AngleEncoder(config.angle_dim, d)  # Eq. 11
        self.token_embedding = nn.Embedding(config.vocab_size, d)
        self.token_mlp = MLP(d, d)
        self.null_cond = nn.Parameter(torch.zeros(d), requires_grad=config.cfg_null_film)
        pad = config.kernel_size // 2
        self.conv_in = nn.Conv1d(config.d_latent, widths[0], config.kernel_size, padding=pad)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips = [widths[0]]
        ch = widths[0]
        for i, w in enumerate(widths):
            blocks = nn.ModuleList()
            for _ in range(config.res_blocks):
                blocks.append(ResBlock(ch, w, config))
                ch = w
                skips.append(ch)
            self.down.append(blocks)
            if i < self.levels:
                self.downsample.append(nn.Conv1d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.mid1 = ResBlock(ch, ch, config)
        self.mid_attn = BottleneckAttention(ch, config)
        self.mid2 = ResBlock(ch, ch, config)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            blocks = nn.ModuleList()
            for _ in range(config.res_blocks + 1):
                blocks.append(ResBlock(ch + skips.pop(), w, config))
                ch = w
            self.up.append(blocks)
            if i > 0:
                self.upsample.append(nn.Conv1d(ch, ch, 3, padding=1))
        self.norm_out = nn.GroupNorm(math.gcd(config.groups, ch), ch)
        self.conv_out = nn.Conv1d(ch, config.d_latent, config.kernel_size, padding=pad)

    def forward(
        self,
        z: torch.Tensor,
        delta: torch.Tensor,
        tokens: torch.Tensor | None = None,
        uncond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, length, _ = z.shape
        if delta.shape != (b, length):
            raise ValueError(f"delta must be (B, L) = {(b, length)}, got {tuple(delta.shape)}")
        unit = 2**self.levels
        padded = math.ceil(length / unit) * unit
        x = F.pad(z, (0, 0, 0, padded - length)).transpose(1, 2)  # (B, D, L_pad)
        delta = F.pad(delta.unsqueeze(1), (0, padded - length), mode="replicate").squeeze(1)  # (B, L_pad)
        e_st, token_pos, cond_rows, uncond_rows, pooled = self._tokens(tokens, uncond, b, z.device)
        cond = self.angle(delta.to(z.dtype)) + pooled.unsqueeze(1)  # (B, L_pad, d_cond)
        conds = [cond]
        for _ in range(self.levels):  # average-pool the conditioning to every level's rate
            conds.append(F.avg_pool1d(conds[-1].transpose(1, 2), 2).transpose(1, 2))
        h = self.conv_in(x)
        skips = [h]
        for i, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, conds[i])
                skips.append(h)
            if i < self.levels:
                h = self.downsample[i](h)
                skips.append(h)
        h = self.mid1(h, conds[-1])
        stride = 2**self.levels
        pos = torch.arange(h.shape[-1], device=h.device, dtype=torch.float32) * stride + (stride - 1) / 2
        h = self.mid_attn(h, pos, e_st, token_pos, cond_rows, uncond_rows)
        h = self.mid2(h, conds[-1])
        for j, blocks in enumerate(self.up):
            level = self.levels - j
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), conds[level])
            if level > 0:
                h = self.upsample[j](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        v = self.conv_out(F.silu(self.norm_out(h)))  # (B, D, L_pad)
        return v[:, :, :length].transpose(1, 2)  # (B, L, D)

    def _tokens(
        self, tokens: torch.Tensor | None, uncond: torch.Tensor | None, b: int, dev: torch.device
    ) -> tuple[_Tensor, _Tensor, _Tensor, _Tensor, torch.Tensor]:
        """E_ST of the conditional rows, token times, row split, pooled E_ST / null vector (B, d_cond)."""
        cond_rows, uncond_rows = split_cfg_rows(tokens, uncond, b, dev)
        pooled = self.null_cond.expand(b, -1)
        e_st, token_pos = None, None
        if cond_rows is not None:
            assert tokens is not None
            e_st = self.token_mlp(self.token_embedding(tokens[cond_rows]))  # (Bc, T_st, d_cond)
            pooled = pooled.index_copy(0, cond_rows, e_st.mean(dim=1))
            token_pos = token_times(tokens.shape[1], dev)
        return e_st, token_pos, cond_rows, uncond_rows, pooled
