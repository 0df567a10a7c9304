"""Wav2Vec2-Conformer: the self-supervised model whose 25 Hz embeddings give the semantic tokens.

§4 / §5.1: "a Wav2Vec2-Conformer model, which follows the same architecture as Wav2Vec2 [47] but
employs the Conformer blocks [48] in place of the Transformer blocks"; "25Hz embeddings from a
199.5M Wav2Vec2-Conformer with 1024-center k-means".

Pipeline (wav2vec 2.0, Baevski et al. 2020, with Conformer blocks, Gulati et al. 2020):
  wav (B, T) 24 kHz -> conv feature encoder (strides multiply to 960 -> 25 Hz) -> LayerNorm
  -> [quantizer targets q_t] and [projection -> span masking -> conv positional embedding
  -> N Conformer blocks -> c_t] -> contrastive loss + alpha * diversity loss.
MeLoDy gives no equations for this model; "wav2vec 2.0 Eq. n" comments cite Baevski et al.

Frame alignment: the waveform is zero-padded by (R - 960) // 2 samples on the left and the rest of
R - 960 on the right, R being the encoder's receptive field, so frame j's receptive field is
centred on the hop [960 j, 960 (j + 1)) and T_frames = T // 960 (`num_frames`); a trailing partial
hop is dropped.

*(our choice)* where the paper (and its Appendix B, not in our copy) is silent:
- Hop 960 at 24 kHz replaces wav2vec 2.0's 320 at 16 kHz (50 Hz); the mask span is 5 frames
  (200 ms, as wav2vec 2.0's 10 frames at 50 Hz), mask_prob 0.65, K = 100 distractors, kappa = 0.1,
  alpha = 0.1, G = 2 groups x V = 320 entries, Gumbel temperature 2 -> 0.5: wav2vec 2.0's values.
- Relative positions by RoPE inside self-attention (the fairseq Conformer's "rope" option) plus
  wav2vec 2.0's convolutional positional embedding (plain conv, no weight norm).
- Masked frames per utterance are equalised across the batch (random un-masking of the excess,
  as fairseq's `require_same_masks`) so distractors are gathered without padding. Batches are
  fixed-length crops: there is no padding mask.
- Quantizer logits are initialised with unit variance (fairseq: std 1 weights -> very peaked
  initial code usage); the feature encoder's gradient is scaled by 0.1 as in wav2vec 2.0.
- Paper preset: Conformer conv module with BatchNorm (Gulati); tiny preset: LayerNorm there,
  because batch statistics over batch-8 CPU crops are noisy and differ between train and eval.
- `forward_hubert`: a HuBERT-style first iteration (masked prediction of k-means ids of
  `hubert_frame_features`) for small compute budgets; wav2vec 2.0's objective stays the default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from melody_core import SAMPLE_RATE, SEMANTIC_RATE
from melody_core.audio.features import MelSpectrogram
from melody_core.config import BaseConfig
from melody_core.models.token_features import EXTRA_DIM
from melody_core.modules import Attention

HOP = SAMPLE_RATE // SEMANTIC_RATE  # 960 samples per semantic frame (25 Hz)
MEL_SUBFRAMES = 4  # hubert_frame_features: log-mel frames (hop 240) per 25 Hz frame
MEL_TOKEN_LAYER = -1  # `extract(layer=-1)`: the first-iteration log-mel features, not a network layer
MEL_BANDS = 64  # hubert_frame_features' default mel bands
MEL_FEATURE_DIM = 2 * MEL_BANDS  # its width: log-mel + delta
MEL_CHROMA_TOKEN_LAYER = -2  # `extract(layer=-2)`: log-mel + delta + chroma + tempogram (token_features)
NORM_EPS = 1e-5


@dataclass
class SSLConfig(BaseConfig):
    """Wav2Vec2-Conformer config.

    Parameter count of `paper()` (d = 768, 14 layers, FFN 4d, 512-ch encoder) — 199.5M in §5.1:
    - Conformer layer: two macaron FFNs 2 x 2 x 4d^2 = 16d^2, attention 4d^2, conv module
      (pointwise d->2d, depthwise 31, pointwise d->d) 3d^2 + 31d  =>  ~23d^2 = 13.6M; x 14 = 190.6M.
    - Feature encoder 512^2 x (8+5+3+3+2+2) + 10 x 512 = 6.0M; projection 512 x 768 = 0.4M;
      conv positional embedding 768 x 48 x 128 = 4.7M.
    - Quantizer 512 x 640 + 640 x 384 = 0.6M; target/context projections 2 x 768^2 = 1.2M;
      HuBERT head 768 x 100 = 0.08M.
    - Total 203.6M counted under torch.device("meta") (+2.0 % vs 199.5M). 13 layers would give
      190.0M (-4.8 %); we keep 14 (the paper may not count the pre-training-only heads).
    `tiny()` is 1.9M parameters: d = 128, 4 layers, and a cheaper 6-conv encoder (strides 8-5-3-2-2-2,
    channels 16 -> 128, GroupNorm on the first conv only as wav2vec 2.0 BASE) — the 7 x 512-channel
    LayerNorm encoder at 24 kHz would cost more CPU time than the whole Conformer. Tiny has no
    dropout: a 1.9M model on a small corpus underfits, and CPU dropout masks cost ~25 % of a step.
    """

    # feature encoder (wav2vec 2.0 conv stack, adapted to 24 kHz -> 25 Hz)
    conv_channels: tuple[int, ...] = (512, 512, 512, 512, 512, 512, 512)  # output channels per conv
    conv_kernels: tuple[int, ...] = (10, 8, 5, 3, 3, 2, 2)  # kernel sizes (receptive field 1205)
    conv_strides: tuple[int, ...] = (5, 4, 3, 2, 2, 2, 2)  # strides; product must be 960
    conv_bias: bool = True  # bias in the encoder convs (wav2vec 2.0 LARGE)
    conv_norm: str = "layer"  # "layer": LayerNorm after each conv; "group": GroupNorm after the first
    feature_grad_mult: float = 0.1  # gradient scale into the feature encoder (wav2vec 2.0)
    normalize_wav: bool = True  # zero-mean unit-variance waveform per utterance
    # Conformer context network
    d_model: int = 768  # model width d
    n_layers: int = 14  # Conformer blocks
    n_heads: int = 12  # attention heads
    ffn_mult: int = 4  # FFN hidden = ffn_mult * d (macaron FFNs)
    conv_kernel: int = 31  # depthwise conv kernel in the Conformer conv module (Gulati: 31/32)
    conv_module_norm: str = "batch"  # norm after the depthwise conv: "batch" or "layer"
    pos_conv_kernel: int = 128  # conv positional embedding kernel (0 disables it)
    pos_conv_groups: int = 16  # conv positional embedding groups
    dropout: float = 0.1  # dropout in FFN / attention / conv module / features
    # masking (span masking of the projected features)
    mask_prob: float = 0.65  # probability of a frame starting a masked span (wav2vec 2.0)
    mask_length: int = 5  # span length in frames (200 ms at 25 Hz)
    # Gumbel-softmax product quantizer (targets)
    codebook_groups: int = 2  # G
    codebook_entries: int = 320  # V per group
    final_dim: int = 768  # dim of quantized targets and of the projected context vectors
    gumbel_temp_start: float = 2.0  # Gumbel temperature at step 0
    gumbel_temp_end: float = 0.5  # floor of the temperature
    gumbel_temp_decay: float = 0.999995  # multiplicative decay per update
    # losses
    num_negatives: int = 100  # K distractors from other masked frames of the same utterance
    logit_temp: float = 0.1  # kappa, cosine-similarity temperature
    diversity_weight: float = 0.1  # alpha
    feature_penalty: float = 10.0  # weight of the L2 penalty on encoder features (wav2vec 2.0)
    # tokens
    token_layer: int = 7  # Conformer layer (1-based; 0 = its input) read by `extract` for k-means
    hubert_classes: int = 100  # classes of the HuBERT-style head (first-iteration k-means ids)

    @classmethod
    def tiny(cls) -> SSLConfig:
        return cls(
            conv_channels=(16, 64, 128, 128, 128, 128),
            conv_kernels=(16, 10, 3, 3, 3, 2),
            conv_strides=(8, 5, 3, 2, 2, 2),
            conv_norm="group",
            d_model=128,
            n_layers=4,
            n_heads=4,
            conv_kernel=15,
            conv_module_norm="layer",
            pos_conv_kernel=32,
            pos_conv_groups=8,
            dropout=0.0,
            codebook_entries=128,
            final_dim=128,
            num_negatives=20,
            token_layer=2,
        )

    @classmethod
    def paper(cls) -> SSLConfig:
        return cls()

    def token_features(self, layer: int) -> tuple[str, int]:
        """(name, width) of the features `extract(layer=...)` gives: the first-iteration log-mel
        features for `MEL_TOKEN_LAYER`, those + chroma + tempogram for `MEL_CHROMA_TOKEN_LAYER`,
        else a Conformer layer of width d_model."""
        if layer == MEL_TOKEN_LAYER:
            return "the log-mel width", MEL_FEATURE_DIM
        if layer == MEL_CHROMA_TOKEN_LAYER:
            return "the log-mel + chroma + tempogram width", MEL_FEATURE_DIM + EXTRA_DIM
        return "ssl.d_model", self.d_model

    def gumbel_temperature(self, step: int) -> float:
        """Gumbel-softmax temperature after `step` updates: max(end, start * decay^step)."""
        return max(self.gumbel_temp_end, self.gumbel_temp_start * self.gumbel_temp_decay**step)


@dataclass
class SSLOutput:
    """wav2vec 2.0 training outputs. Losses are scalars; mask is (B, T_frames) bool."""

    loss: torch.Tensor  # contrastive + alpha * diversity + feature_penalty * penalty
    contrastive_loss: torch.Tensor  # L_m, cross-entropy of the true target among K + 1
    diversity_loss: torch.Tensor  # L_d = (GV - perplexity) / GV
    feature_penalty: torch.Tensor  # mean squared encoder output (before its LayerNorm)
    prob_perplexity: torch.Tensor  # perplexity of the averaged softmax code distribution
    code_perplexity: torch.Tensor  # perplexity of the hard (argmax) code usage
    accuracy: torch.Tensor  # fraction of masked frames whose true target scores highest
    mask: torch.Tensor  # (B, T_frames) masked frames


@dataclass
class HubertOutput:
    """HuBERT-style training outputs."""

    loss: torch.Tensor  # prediction loss + feature_penalty * penalty
    prediction_loss: torch.Tensor  # cross-entropy over cluster ids on masked frames
    feature_penalty: torch.Tensor  # mean squared encoder output (before its LayerNorm)
    accuracy: torch.Tensor  # top-1 accuracy on masked frames
    mask: torch.Tensor  # (B, T_frames) masked frames


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, N) tensor, computed in place of layout (no transposes:
    GELU and its backward on transposed views were the encoder's bottleneck on CPU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(1, keepdim=True)  # (B, 1, N)
        var = (x - mu).pow(2).mean(1, keepdim=True)  # (B, 1, N)
        return (x - mu) * torch.rsqrt(var + self.eps) * self.weight.unsqueeze(-1) + self.bias.unsqueeze(-1)


def _encoder_norm(mode: str, index: int, channels: int) -> nn.Module:
    """Encoder norm for conv `index`. mode "layer": LayerNorm after every conv (wav2vec 2.0 LARGE);
    "group": per-channel GroupNorm after the first conv only (wav2vec 2.0 BASE, cheaper)."""
    if mode == "layer":
        return ChannelLayerNorm(channels)
    if mode == "group":
        return nn.GroupNorm(channels, channels) if index == 0 else nn.Identity()
    raise ValueError(f"conv_norm must be 'layer' or 'group', got {mode!r}")


class FeatureEncoder(nn.Module):
    """wav (B, T) -> features (B, C_last, N): Conv1d -> norm -> GELU per layer."""

    def __init__(self, config: SSLConfig) -> None:
        super().__init__()
        if not len(config.conv_channels) == len(config.conv_kernels) == len(config.conv_strides):
            raise ValueError("conv_channels, conv_kernels and conv_strides must have equal lengths")
        layers: list[nn.Module] = []
        c_in = 1
        specs = zip(config.conv_channels, config.conv_kernels, config.conv_strides)
        for i, (c_out, k, s) in enumerate(specs):
            conv = nn.Conv1d(c_in, c_out, k, stride=s, bias=config.conv_bias)
            layers.append(nn.Sequential(conv, _encoder_norm(config.conv_norm, i, c_out), nn.GELU()))
            c_in = c_out
        self.layers = nn.Sequential(*layers)
        # receptive field R = 1 + sum_i (k_i - 1) * prod_{j<i} s_j
        jump, rf = 1, 1
        for k, s in zip(config.conv_kernels, config.conv_strides):
            rf += (k - 1) * jump
            jump *= s
        self.receptive_field = rf
        self.pad_left = max(rf - HOP, 0) // 2
        self.pad_right = max(rf - HOP, 0) - self.pad_left

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = F.pad(wav, (self.pad_left, self.pad_right)).unsqueeze(1)  # (B, 1, T + R - 960)
        return self.layers(x)  # (B, C, T // 960)


def conformer_ffn(d: int, hidden: int, dropout: float) -> nn.Sequential:
    """Conformer feed-forward module: LN -> Linear(d, hidden) -> Swish -> dropout -> Linear -> dropout."""
    layers = [nn.LayerNorm(d), nn.Linear(d, hidden), nn.SiLU(), nn.Dropout(dropout), nn.Linear(hidden, d)]
    return nn.Sequential(*layers, nn.Dropout(dropout))


class ConvModule(nn.Module):
    """Conformer convolution module: LN -> pointwise (d -> 2d) -> GLU -> depthwise conv -> norm ->
    Swish -> pointwise -> dropout. x: (B, N, d) -> (B, N, d)."""

    def __init__(self, d: int, kernel: int, norm: str, dropout: float) -> None:
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError(f"depthwise conv kernel must be odd, got {kernel}")
        self.norm_in = nn.LayerNorm(d)
        self.pointwise_in = nn.Linear(d, 2 * d)
        self.depthwise = nn.Conv1d(d, d, kernel, padding=kernel // 2, groups=d)
        if norm == "batch":
            self.norm_mid: nn.Module = nn.BatchNorm1d(d)
        elif norm == "layer":
            self.norm_mid = ChannelLayerNorm(d)
        else:
            raise ValueError(f"conv_module_norm must be 'batch' or 'layer', got {norm!r}")
        self.pointwise_out = nn.Linear(d, d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.glu(self.pointwise_in(self.norm_in(x)), dim=-1)  # (B, N, d)
        y = self.depthwise(y.transpose(1, 2))  # (B, d, N)
        y = F.silu(self.norm_mid(y)).transpose(1, 2)  # (B, N, d)
        return self.dropout(self.pointwise_out(y))


class ConformerBlock(nn.Module):
    """Gulati et al. Eq. 1: x + FFN/2 -> + MHSA -> + Conv -> + FFN/2 -> LayerNorm. (B, N, d)."""

    def __init__(self, config: SSLConfig) -> None:
        super().__init__()
        d = config.d_model
        self.ffn1 = conformer_ffn(d, config.ffn_mult * d, config.dropout)
        self.attn_norm = nn.LayerNorm(d)
        self.attn = Attention(d, config.n_heads, bias=True, rope=True, dropout=config.dropout)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.conv = ConvModule(d, config.conv_kernel, config.conv_module_norm, config.dropout)
        self.ffn2 = conformer_ffn(d, config.ffn_mult * d, config.dropout)
        self.norm_out = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.ffn1(x)  # macaron half-step FFN
        x = x + self.attn_dropout(self.attn(self.attn_norm(x)))  # RoPE relative positions
        x = x + self.conv(x)
        x = x + 0.5 * self.ffn2(x)
        return self.norm_out(x)


class GumbelQuantizer(nn.Module):
    """Product quantizer with G codebooks of V entries (wav2vec 2.0 §2.2).

    x (n, C) -> q (n, final_dim) via straight-through hard Gumbel-softmax in training and argmax in
    eval; also returns the soft (n, G, V) probabilities and hard ids (n, G) for the perplexities.
    """

    def __init__(self, d_in: int, groups: int, entries: int, dim: int, temperature: float = 2.0) -> None:
        super().__init__()
        if dim % groups:
            raise ValueError(f"final_dim {dim} not divisible by codebook_groups {groups}")
        self.groups, self.entries = groups, entries
        self.logits = nn.Linear(d_in, groups * entries)
        nn.init.normal_(self.logits.weight, std=d_in**-0.5)  # unit-variance logits (our choice)
        nn.init.zeros_(self.logits.bias)
        self.codebook = nn.Parameter(torch.empty(groups, entries, dim // groups).uniform_())
        self.temperature = temperature  # set by the trainer from SSLConfig.gumbel_temperature(step)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        logits = self.logits(x).float().view(n, self.groups, self.entries)  # (n, G, V)
        probs = logits.softmax(-1)  # (n, G, V)
        ids = logits.argmax(-1)  # (n, G)
        if self.training:
            # wav2vec 2.0 Eq. 1, straight-through: hard one-hot forward, soft gradient
            onehot = F.gumbel_softmax(logits, tau=self.temperature, hard=True, dim=-1)  # (n, G, V)
        else:
            onehot = F.one_hot(ids, self.entries).to(logits.dtype)  # (n, G, V)
        q = torch.einsum("ngv,gvd->ngd", onehot.to(self.codebook.dtype), self.codebook)  # (n, G, D/G)
        return q.reshape(n, -1), probs, ids  # (n, final_dim)

    @staticmethod
    def perplexity(avg_probs: torch.Tensor) -> torch.Tensor:
        """sum_g exp(H(p_g)) for averaged probabilities (G, V)."""
        return torch.exp(-(avg_probs * torch.log(avg_probs + 1e-7)).sum(-1)).sum()


def span_mask(
    batch: int, frames: int, mask_prob: float, mask_length: int, device: torch.device | None = None
) -> torch.Tensor:
    """wav2vec 2.0 span mask (B, N) bool with the same number (>= 2) of masked frames per row.

    Spans of `mask_length` start at round(mask_prob * N / mask_length) distinct random frames
    (probabilistic rounding, overlaps allowed); rows with more masked frames than the smallest
    count are randomly un-masked down to it.
    """
    if frames < 2:
        raise ValueError(f"masking needs at least 2 frames, got {frames}")
    length = min(mask_length, frames)
    n_starts = frames - length + 1
    n_spans = int(mask_prob * frames / length + float(torch.rand(())))
    n_spans = min(max(n_spans, math.ceil(2 / length)), n_starts)
    starts = torch.rand(batch, n_starts, device=device).topk(n_spans, dim=1).indices  # (B, n_spans)
    idx = (starts.unsqueeze(-1) + torch.arange(length, device=device)).reshape(batch, -1)  # (B, n_spans*len)
    mask = torch.zeros(batch, frames, dtype=torch.bool, device=device).scatter_(1, idx, True)
    keep = int(mask.sum(1).min())
    order = torch.where(mask, torch.rand(batch, frames, device=device), 2.0).argsort(1)[:, :keep]  # (B, keep)
    return torch.zeros_like(mask).scatter_(1, order, True)


def sample_negatives(y: torch.Tensor, k: int) -> torch.Tensor:
    """y (B, M, F) targets of the masked frames -> (B, M, K, F) distractors, each drawn uniformly
    from the other M - 1 masked frames of the same utterance."""
    b, m, f = y.shape
    idx = torch.randint(0, m - 1, (b, m, k), device=y.device)  # (B, M, K) in [0, M-2]
    idx = idx + (idx >= torch.arange(m, device=y.device).view(1, m, 1)).long()  # skip the frame itself
    return torch.gather(y, 1, idx.view(b, m * k, 1).expand(-1, -1, f)).view(b, m, k, f)  # (B, M, K, F)


class Wav2Vec2Conformer(nn.Module):
    """wav2vec 2.0 with Conformer blocks (§4, §5.1).

    forward(wav (B, T), mask=True) -> SSLOutput (contrastive + diversity loss over masked frames).
    forward_hubert(wav (B, T), targets (B, T // 960) int64) -> HubertOutput.
    extract(wav (B, T), layer=None) -> (B, T // 960, d_model) features of Conformer layer `layer`
    (default config.token_layer); frame j covers samples [960 j, 960 (j + 1)).
    T must be >= 960 (>= 1920 for the training losses); all rows of a batch share one length.
    """

    sample_rate = SAMPLE_RATE  # Hz of the input waveform
    frame_rate = SEMANTIC_RATE  # Hz of the output frames
    hop_length = HOP  # samples per frame

    def __init__(self, config: SSLConfig) -> None:
        super().__init__()
        if math.prod(config.conv_strides) != HOP:
            raise ValueError(f"conv strides multiply to {math.prod(config.conv_strides)}, need {HOP}")
        if not 0 <= config.token_layer <= config.n_layers:
            raise ValueError(f"token_layer {config.token_layer} outside 0..{config.n_layers}")
        self.config = config
        d, c = config.d_model, config.conv_channels[-1]
        self.encoder = FeatureEncoder(config)
        self.feature_norm = nn.LayerNorm(c)
        self.projection = nn.Linear(c, d)
        self.dropout = nn.Dropout(config.dropout)
        self.mask_embedding = nn.Parameter(torch.empty(d).uniform_())
        self.pos_conv: nn.Conv1d | None = None
        if config.pos_conv_kernel > 0:
            k = config.pos_conv_kernel
            self.pos_conv = nn.Conv1d(d, d, k, padding=k // 2, groups=config.pos_conv_groups)
        self.pos_norm = nn.LayerNorm(d)
        self.layers = nn.ModuleList(ConformerBlock(config) for _ in range(config.n_layers))
        self.quantizer = GumbelQuantizer(
            c, config.codebook_groups, config.codebook_entries, config.final_dim, config.gumbel_temp_start
        )
        self.project_q = nn.Linear(config.final_dim, config.final_dim)
        self.final_proj = nn.Linear(d, config.final_dim)
        self.hubert_head = nn.Linear(d, config.hubert_classes)

    @staticmethod
    def num_frames(num_samples: int) -> int:
        """T_frames = T // 960 (a trailing partial hop is dropped)."""
        return num_samples // HOP

    # ------------------------------------------------------------------ shared trunk
    def _features(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) -> LayerNorm'd encoder features (B, N, C) and the L2 penalty on the raw ones."""
        if wav.dim() != 2 or wav.shape[1] < HOP:
            raise ValueError(f"expected a (B, T >= {HOP}) waveform, got {tuple(wav.shape)}")
        if self.config.normalize_wav:
            wav = (wav - wav.mean(-1, keepdim=True)) / (wav.std(-1, keepdim=True) + NORM_EPS)
        feats = self.encoder(wav)  # (B, C, N)
        m = self.config.feature_grad_mult
        if self.training and m != 1.0:  # same value, gradient scaled by m
            feats = feats * m + feats.detach() * (1.0 - m)
        penalty = feats.float().pow(2).mean()
        return self.feature_norm(feats.transpose(1, 2)), penalty  # (B, N, C)

    def _context_input(self, feats: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Projection, masking (learned mask embedding), conv positional embedding. -> (B, N, d)."""
        x = self.dropout(self.projection(feats))  # (B, N, d)
        if mask is not None:
            x = torch.where(mask.unsqueeze(-1), self.mask_embedding.to(x.dtype), x)
        if self.pos_conv is not None:
            pos = self.pos_conv(x.transpose(1, 2))[..., : x.shape[1]]  # (B, d, N) (even kernel: drop 1)
            x = x + F.gelu(pos).transpose(1, 2)
        return self.dropout(self.pos_norm(x))

    def _context(self, x: torch.Tensor, n_layers: int | None = None) -> torch.Tensor:
        for block in self.layers[: self.config.n_layers if n_layers is None else n_layers]:
            x = block(x)
        return x  # (B, N, d)

    def _mask(self, feats: torch.Tensor, mask: bool | torch.Tensor) -> torch.Tensor:
        b, n, _ = feats.shape
        if isinstance(mask, torch.Tensor):
            if mask.shape != (b, n):
                raise ValueError(f"mask must be {(b, n)}, got {tuple(mask.shape)}")
            return mask.to(feats.device, torch.bool)
        if mask:
            return span_mask(b, n, self.config.mask_prob, self.config.mask_length, feats.device)
        return torch.ones(b, n, dtype=torch.bool, device=feats.device)

    # ------------------------------------------------------------------ objectives
    def forward(self, wav: torch.Tensor, mask: bool | torch.Tensor = True) -> SSLOutput:
        """wav2vec 2.0 loss L = L_m + alpha L_d (+ feature penalty) on wav (B, T).

        mask: True = random span masking; a (B, N) bool tensor = that mask (same count per row);
        False = no masking, every frame is a target (an easy diagnostic task).
        """
        cfg = self.config
        feats, penalty = self._features(wav)  # (B, N, C)
        b, n, _ = feats.shape
        mask_t = self._mask(feats, mask)  # (B, N)
        m = int(mask_t[0].sum())
        if m < 2:
            raise ValueError("the contrastive loss needs at least 2 target frames per utterance")
        c = self._context(self._context_input(feats, mask_t if mask is not False else None))  # (B, N, d)
        c = self.final_proj(c[mask_t]).view(b, m, -1)  # (B, M, F)
        q, probs, ids = self.quantizer(feats[mask_t])  # (B*M, F), (B*M, G, V), (B*M, G)
        y = self.project_q(q).view(b, m, -1)  # (B, M, F)
        negs = sample_negatives(y, cfg.num_negatives)  # (B, M, K, F)
        cands = torch.cat([y.unsqueeze(2), negs], dim=2)  # (B, M, 1 + K, F)
        logits = F.cosine_similarity(c.unsqueeze(2).float(), cands.float(), dim=-1) / cfg.logit_temp
        neg_is_pos = (negs == y.unsqueeze(2)).all(-1)  # (B, M, K) identical codes are not distractors
        logits = logits.masked_fill(F.pad(neg_is_pos, (1, 0)), float("-inf"))  # (B, M, 1 + K)
        flat = logits.view(b * m, -1)  # (B*M, 1 + K)
        target = torch.zeros(b * m, dtype=torch.long, device=wav.device)
        contrastive = F.cross_entropy(flat, target)  # L_m, wav2vec 2.0 Eq. 3
        gv = cfg.codebook_groups * cfg.codebook_entries
        prob_ppl = GumbelQuantizer.perplexity(probs.mean(0))  # (G, V) averaged over frames
        hard = F.one_hot(ids, cfg.codebook_entries).float().mean(0)  # (G, V)
        diversity = (gv - prob_ppl) / gv  # L_d, wav2vec 2.0 Eq. 4
        # wav2vec 2.0 Eq. 2, plus its L2 penalty on the encoder features
        loss = contrastive + cfg.diversity_weight * diversity + cfg.feature_penalty * penalty
        return SSLOutput(
            loss=loss,
            contrastive_loss=contrastive,
            diversity_loss=diversity,
            feature_penalty=penalty,
            prob_perplexity=prob_ppl.detach(),
            code_perplexity=GumbelQuantizer.perplexity(hard),
            accuracy=(flat.argmax(-1) == 0).float().mean(),
            mask=mask_t,
        )

    def forward_hubert(
        self, wav: torch.Tensor, targets: torch.Tensor, mask: bool | torch.Tensor = True
    ) -> HubertOutput:
        """HuBERT-style masked prediction: cross-entropy of targets (B, N) int64 in
        [0, hubert_classes) on the masked frames (all frames when mask=False)."""
        feats, penalty = self._features(wav)  # (B, N, C)
        if targets.shape != feats.shape[:2]:
            raise ValueError(f"targets must be {tuple(feats.shape[:2])}, got {tuple(targets.shape)}")
        mask_t = self._mask(feats, mask)  # (B, N)
        c = self._context(self._context_input(feats, mask_t if mask is not False else None))  # (B, N, d)
        logits = self.hubert_head(c[mask_t]).float()  # (n_masked, classes)
        tgt = targets.to(wav.device)[mask_t]  # (n_masked,)
        pred_loss = F.cross_entropy(logits, tgt)
        return HubertOutput(
            loss=pred_loss + self.config.feature_penalty * penalty,
            prediction_loss=pred_loss,
            feature_penalty=penalty,
            accuracy=(logits.argmax(-1) == tgt).float().mean(),
            mask=mask_t,
        )

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def extract(self, wav: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """(B, T) -> (B, T // 960, d_model) output of Conformer block `layer` (1-based; 0 = the
        blocks' input; default config.token_layer). Unmasked, eval mode (restored afterwards).

        `layer = MEL_TOKEN_LAYER` (-1) returns `hubert_frame_features(wav)` (B, T // 960, 128) instead:
        the HuBERT first-iteration targets, which the tiny preset tokenizes *(our choice: at the tiny
        budget the trained network's layers carry less than these features; see token_probe)*.
        """
        layer = self.config.token_layer if layer is None else layer
        if layer in (MEL_TOKEN_LAYER, MEL_CHROMA_TOKEN_LAYER):
            return frame_token_features(wav, layer)
        if not 0 <= layer <= self.config.n_layers:
            raise ValueError(f"layer {layer} outside 0..{self.config.n_layers}")
        was_training = self.training
        self.eval()
        try:
            return self._context(self._context_input(self._features(wav)[0], None), layer)
        finally:
            self.train(was_training)


def hubert_frame_features(wav: torch.Tensor, n_mels: int = MEL_BANDS, n_fft: int = 1024) -> torch.Tensor:
    """Features for the HuBERT first-iteration k-means: (B, T) -> (B, T // 960, 2 n_mels).

    Log-mel at hop 240 with frames centred at 960 j + 120 + 240 i (i < 4, inside token j's hop),
    averaged over the 4 sub-frames, then concatenated with its first difference over tokens
    *(our choice: HuBERT used MFCC + deltas at 100 Hz; this is the 25 Hz analogue)*.
    """
    sub_hop = HOP // MEL_SUBFRAMES  # 240
    n = wav.shape[-1] // HOP
    if wav.dim() != 2 or n == 0:
        raise ValueError(f"expected a (B, T >= {HOP}) waveform, got {tuple(wav.shape)}")
    mel = MelSpectrogram(SAMPLE_RATE, n_fft=n_fft, hop=sub_hop, n_mels=n_mels).to(wav.device)
    spec = mel(wav[..., sub_hop // 2 : n * HOP])  # (B, n_mels, >= 4n), frame i centred at 120 + 240 i
    spec = spec[..., : n * MEL_SUBFRAMES].reshape(wav.shape[0], n_mels, n, MEL_SUBFRAMES)  # (B, mels, n, 4)
    spec = spec.mean(-1).transpose(1, 2)  # (B, n, n_mels)
    delta = torch.diff(spec, dim=1, prepend=spec[:, :1])  # (B, n, n_mels)
    return torch.cat([spec, delta], dim=-1)  # (B, n, 2 n_mels)


def token_feature_dim(layer: int, d_model: int) -> int:
    """Width of the features `extract(layer=...)` returns (the rule is `SSLConfig.token_features`)."""
    return SSLConfig(d_model=d_model).token_features(layer)[1]


def frame_token_features(wav: torch.Tensor, layer: int) -> torch.Tensor:
    """The network-free token features: (B, T) -> (B, T // 960, token_feature_dim(layer)).
    MEL_TOKEN_LAYER: `hubert_frame_features`; MEL_CHROMA_TOKEN_LAYER: those + chroma + tempogram."""
    mel = hubert_frame_features(wav)
    if layer == MEL_TOKEN_LAYER:
        return mel
    from melody_core.models.token_features import rhythm_pitch_features

    return torch.cat([mel, rhythm_pitch_features(wav, mel.shape[1])], dim=-1)
