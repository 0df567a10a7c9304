"""Building blocks of the audio VAE-GAN (§4.1): HiFi-GAN MRF blocks, the mirrored encoder, the two
decoders ("hifigan" and "istft") and the receptive-field arithmetic behind `AudioVAE.context_frames`.

Waveform-rate stacks are channel-first (B, C, T) as torch convolutions want; the 250 Hz stacks
(ConvNeXt blocks, iSTFT decoder) stay channel-last (B, L, C), the project-wide latent layout, and
apply their convs with `conv1d_last` (no layout copies). Encoder output and decoder input are (B, L, ·).

Receptive field: every layer that mixes time is described by a small "time op" (`ConvOp`, `UpOp`,
`OlaOp`, `ResidualOp`, `ParallelOp`) read from the layer's own hyper-parameters (kernel, dilation,
padding, stride), so the chunked-decoding context cannot drift from the architecture.
`context_frames(ops, hop)` propagates the index interval that one output latent frame depends on
backwards through the ops and returns how many latent frames of context each side needs so that
no value in that dependency cone, at any layer, falls outside the chunk (i.e. into zero padding).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# --------------------------------------------------------------------------- receptive field


@dataclass(frozen=True)
class ConvOp:
    """Conv1d at input step `step` (samples per index): out[i] <- in[i - pad_left + dilation * j]."""

    kernel: int
    dilation: int
    pad_left: int
    step: int


@dataclass(frozen=True)
class UpOp:
    """ConvTranspose1d(stride) at input step `step`: out[t] <- in[i] for 0 <= t + pad - i*stride < kernel."""

    kernel: int
    stride: int
    pad: int
    step: int


@dataclass(frozen=True)
class OlaOp:
    """Overlap-add of `n_fft`-sample frames, frame f centred on sample f*hop + hop/2 (input step hop)."""

    n_fft: int
    hop: int


@dataclass(frozen=True)
class FrameOp:
    """STFT analysis into `n_fft`-sample frames, frame f centred on sample f*hop + hop/2 (input step 1)."""

    n_fft: int
    hop: int


@dataclass(frozen=True)
class ResidualOp:
    """x + f(x): the union of the identity path and `ops`."""

    ops: tuple


@dataclass(frozen=True)
class ParallelOp:
    """mean_k f_k(x) (HiFi-GAN MRF): the union of the branches."""

    branches: tuple


def _op_input(op: object, lo: int, hi: int) -> tuple[int, int, int]:
    """Index interval [lo, hi] at an op's output -> (lo, hi, step) at its input."""
    if isinstance(op, ConvOp):
        return lo - op.pad_left, hi - op.pad_left + op.dilation * (op.kernel - 1), op.step
    if isinstance(op, UpOp):
        return -((op.kernel - 1 - lo - op.pad) // op.stride), (hi + op.pad) // op.stride, op.step
    if isinstance(op, OlaOp):
        first = lo - op.hop // 2 - op.n_fft // 2 + 1  # frame f covers [f*hop + hop/2 - n/2, ... + n/2)
        return -((-first) // op.hop), (hi + op.n_fft // 2 - op.hop // 2) // op.hop, op.hop
    if isinstance(op, FrameOp):
        start = op.hop // 2 - op.n_fft // 2
        return lo * op.hop + start, hi * op.hop + start + op.n_fft - 1, 1
    raise TypeError(f"not a leaf time op: {op!r}")


def _backprop(ops: Sequence, lo: int, hi: int, step: int, hop: int, need: list[int]) -> tuple[int, int, int]:
    """Walk `ops` backwards from interval [lo, hi] at `step`; record frames needed at every layer."""
    for op in reversed(ops):
        if isinstance(op, ResidualOp):
            ilo, ihi, istep = _backprop(op.ops, lo, hi, step, hop, need)
            lo, hi, step = min(lo, ilo), max(hi, ihi), istep
            continue
        if isinstance(op, ParallelOp):
            outs = [_backprop(b, lo, hi, step, hop, need) for b in op.branches]
            lo, hi, step = min(o[0] for o in outs), max(o[1] for o in outs), outs[0][2]
            continue
        lo, hi, step = _op_input(op, lo, hi)
        # a chunk's activations at this step cover indices [-left*hop/step, (1 + right)*hop/step - 1]
        # relative to the first output frame's start; the cone [lo, hi] must lie inside.
        need.append(math.ceil(-lo * step / hop))
        need.append(math.ceil((hi + 1) * step / hop) - 1)
    return lo, hi, step


def context_frames(ops: Sequence, hop: int) -> int:
    """Latent frames of context needed on each side for chunked decoding to equal a full decode.

    `ops` runs from the latent (step `hop`) to the waveform (step 1). Computed for the samples of one
    latent frame; the network is shift-invariant by one frame, so it holds for every frame.
    """
    need: list[int] = [0]
    _backprop(ops, 0, hop - 1, 1, hop, need)
    return max(need)


def conv_op(conv: nn.Conv1d, step: int) -> ConvOp:
    pad = conv.padding[0] if isinstance(conv.padding, tuple) else 0
    return ConvOp(conv.kernel_size[0], conv.dilation[0], int(pad), step)


# --------------------------------------------------------------------------- blocks


def same_padding(kernel: int, dilation: int = 1) -> int:
    return dilation * (kernel - 1) // 2


class ResBlock(nn.Module):
    """HiFi-GAN ResBlock1: for each dilation d, x += conv_1(lrelu(conv_d(lrelu(x)))). (B, C, T) -> same."""

    def __init__(self, channels: int, kernel: int, dilations: Sequence[int], slope: float) -> None:
        super().__init__()
        self.slope = slope
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, dilation=d, padding=same_padding(kernel, d))
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, padding=same_padding(kernel)) for _ in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, self.slope)), self.slope))
        return x

    def time_ops(self, step: int) -> list:
        return [
            ResidualOp((conv_op(c1, step), conv_op(c2, step))) for c1, c2 in zip(self.convs1, self.convs2)
        ]


class MRF(nn.Module):
    """HiFi-GAN multi-receptive-field fusion: mean of ResBlocks with different kernels. (B, C, T) -> same."""

    def __init__(
        self, channels: int, kernels: Sequence[int], dilations: Sequence[Sequence[int]], slope: float
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(channels, k, d, slope) for k, d in zip(kernels, dilations))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.blocks) == 0:
            return x
        return torch.stack([b(x) for b in self.blocks]).mean(0)

    def time_ops(self, step: int) -> list:
        if len(self.blocks) == 0:
            return []
        return [ParallelOp(tuple(tuple(b.time_ops(step)) for b in self.blocks))]


def conv1d_last(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """Apply a stride-1, dilation-1 `conv` to channel-last input: (B, L, C_in) -> (B, L, C_out).

    Same result as `conv(x.transpose(1, 2)).transpose(1, 2)` without the layout copies (the 250 Hz
    stacks are matmul-bound on CPU): depthwise convs as k shifted multiply-adds, dense ones as one
    matmul over unfolded windows.
    """
    k, pad, length = conv.kernel_size[0], int(conv.padding[0]), x.shape[1]
    if conv.stride[0] != 1 or conv.dilation[0] != 1:
        raise ValueError("conv1d_last supports stride 1 and dilation 1 only")
    xp = F.pad(x, (0, 0, pad, k - 1 - pad))  # (B, L + k - 1, C_in)
    if conv.groups == conv.in_channels == conv.out_channels:  # depthwise
        w = conv.weight[:, 0].t()  # (C, 1, k) -> (k, C)
        out = xp[:, :length] * w[0]
        for j in range(1, k):
            out = torch.addcmul(out, xp[:, j : j + length], w[j])
        return out if conv.bias is None else out + conv.bias
    cols = xp.unfold(1, k, 1).reshape(x.shape[0], length, -1)  # (B, L, C_in, k) -> (B, L, C_in * k)
    return F.linear(cols, conv.weight.reshape(conv.out_channels, -1), conv.bias)  # (C_out, C_in * k)


class ConvNeXtBlock(nn.Module):
    """1-D ConvNeXt block (Vocos): depthwise conv, LayerNorm, MLP, layer scale; channel-last (B, T, C)."""

    def __init__(self, channels: int, kernel: int, mult: int, layer_scale: float) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(channels, channels, kernel, padding=same_padding(kernel), groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.fc1 = nn.Linear(channels, mult * channels)
        self.fc2 = nn.Linear(mult * channels, channels)
        self.gamma = nn.Parameter(torch.full((channels,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(conv1d_last(x, self.dwconv))
        return x + self.fc2(F.gelu(self.fc1(h))) * self.gamma

    def time_ops(self, step: int) -> list:
        return [ResidualOp((conv_op(self.dwconv, step),))]


class DownConv(nn.Module):
    """Strided Conv1d mapping T -> T // stride exactly (asymmetric zero padding if kernel - stride is odd)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int) -> None:
        super().__init__()
        total = kernel - stride  # out = (T + total - kernel) / stride + 1 = T / stride
        self.pad = (total // 2, total - total // 2)
        self.conv = nn.Conv1d(c_in, c_out, kernel, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad))


def up_conv(c_in: int, c_out: int, kernel: int, stride: int) -> nn.ConvTranspose1d:
    """ConvTranspose1d mapping L -> L * stride exactly: (L-1)s - 2p + k + op = Ls."""
    pad = (kernel - stride + 1) // 2
    return nn.ConvTranspose1d(
        c_in, c_out, kernel, stride, padding=pad, output_padding=2 * pad - (kernel - stride)
    )


# --------------------------------------------------------------------------- encoder / decoders


class MirrorEncoder(nn.Module):
    """§4.1 encoder: the HiFi-GAN generator mirrored (strided convs in place of transposed convs).

    wav (B, 1, T) -> (B, T // prod(rates), 2D) channel-last: stem conv, per stage MRF then strided
    conv, optional ConvNeXt blocks at the latent rate *(our choice, tiny preset)*, lrelu, output conv.
    """

    def __init__(self, cfg) -> None:  # cfg: VAEConfig (import cycle avoided)
        super().__init__()
        ch = cfg.encoder_channels
        self.slope = cfg.leaky_slope
        self.stem = nn.Conv1d(1, ch[0], cfg.conv_kernel, padding=same_padding(cfg.conv_kernel))
        self.mrfs = nn.ModuleList(
            MRF(ch[i], cfg.encoder_resblock_kernels, cfg.encoder_resblock_dilations, self.slope)
            for i in range(len(cfg.encoder_rates))
        )
        self.downs = nn.ModuleList(
            DownConv(ch[i], ch[i + 1], k, u)
            for i, (u, k) in enumerate(zip(cfg.encoder_rates, cfg.encoder_kernels))
        )
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(ch[-1], cfg.convnext_kernel, cfg.convnext_mult, cfg.layer_scale_init)
            for _ in range(cfg.encoder_latent_blocks)
        )
        self.out = nn.Conv1d(
            ch[-1], 2 * cfg.latent_dim, cfg.conv_kernel, padding=same_padding(cfg.conv_kernel)
        )

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = self.stem(wav)
        for mrf, down in zip(self.mrfs, self.downs):
            x = down(F.leaky_relu(mrf(x), self.slope))
        x = x.transpose(1, 2)  # (B, C, L) -> (B, L, C)
        for block in self.blocks:
            x = block(x)
        return conv1d_last(F.leaky_relu(x, self.slope), self.out)  # (B, L, 2D)


class STFTEncoder(nn.Module):
    """Frame-spectrum encoder *(our choice, tiny preset)*: the STFT in the iSTFT decoder's own frames
    (`frame_spectrum`), per bin log-magnitude and unit phasor (cos, sin), a linear projection, ConvNeXt
    blocks at the 250 Hz latent rate, lrelu, output conv. wav (B, 1, T) -> (B, T // hop, 2D).

    Why: the strided-conv mirror of HiFi-GAN must learn a filterbank first; at the tiny width and a CPU
    budget its latents carried little of the spectrum (linear R² 0.18 of the log-spectrum from 5 latent
    frames) and an 8-crop overfit reached a mel distance of 0.64 in 150 steps against 0.35 here.
    """

    def __init__(self, cfg) -> None:
        super().__init__()
        width = cfg.encoder_channels[-1]
        self.n_fft, self.hop = cfg.istft_n_fft, cfg.hop
        self.slope = cfg.leaky_slope
        self.proj = nn.Linear(3 * (self.n_fft // 2 + 1), width)
        self.norm = nn.LayerNorm(width)
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(width, cfg.convnext_kernel, cfg.convnext_mult, cfg.layer_scale_init)
            for _ in range(cfg.encoder_latent_blocks)
        )
        k = cfg.conv_kernel
        self.out = nn.Conv1d(width, 2 * cfg.latent_dim, k, padding=same_padding(k))

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        spec = frame_spectrum(wav[:, 0], self.n_fft, self.hop)  # (B, L, F)
        mag = spec.abs() + SPECTRUM_FLOOR
        feats = torch.cat([mag.log(), spec.real / mag, spec.imag / mag], dim=-1)  # (B, L, 3F)
        x = self.norm(self.proj(feats))  # (B, L, C)
        for block in self.blocks:
            x = block(x)
        return conv1d_last(F.leaky_relu(x, self.slope), self.out)  # (B, L, 2D)


class HiFiGANDecoder(nn.Module):
    """HiFi-GAN generator (Kong et al. 2020) on latents: (B, L, D) -> (B, L * prod(rates)) in [-1, 1]."""

    def __init__(self, cfg) -> None:
        super().__init__()
        self.slope = cfg.leaky_slope
        c0 = cfg.decoder_channels
        self.pre = nn.Conv1d(cfg.latent_dim, c0, cfg.conv_kernel, padding=same_padding(cfg.conv_kernel))
        chans = [c0 // 2**i for i in range(len(cfg.upsample_rates) + 1)]  # HiFi-GAN halves per stage
        self.ups = nn.ModuleList(
            up_conv(chans[i], chans[i + 1], k, u)
            for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernels))
        )
        self.mrfs = nn.ModuleList(
            MRF(chans[i + 1], cfg.resblock_kernels, cfg.resblock_dilations, self.slope)
            for i in range(len(cfg.upsample_rates))
        )
        self.post = nn.Conv1d(chans[-1], 1, cfg.conv_kernel, padding=same_padding(cfg.conv_kernel))
        self.hop = cfg.hop

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.pre(z.transpose(1, 2))  # (B, L, D) -> (B, D, L) -> (B, C, L)
        for up, mrf in zip(self.ups, self.mrfs):
            x = mrf(up(F.leaky_relu(x, self.slope)))
        return torch.tanh(self.post(F.leaky_relu(x))).squeeze(1)  # default slope before conv_post (HiFi-GAN)

    def time_ops(self) -> list:
        step = self.hop
        ops: list = [conv_op(self.pre, step)]
        for up, mrf in zip(self.ups, self.mrfs):
            ops.append(UpOp(up.kernel_size[0], up.stride[0], up.padding[0], step))
            step //= up.stride[0]
            ops.extend(mrf.time_ops(step))
        ops.append(conv_op(self.post, step))
        return ops


SPECTRUM_FLOOR = 1e-3  # linear magnitude (decoder frames) treated as silence: offset of the STFT
# encoder's log-magnitude and phasor features, floor of the head spectrum loss (~ -90 dB below loud bins)


def frame_spectrum(wav: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """(B, L * hop) waveform -> (B, L, n_fft // 2 + 1) complex STFT in the iSTFT decoder's frames:
    frame f centred on sample f*hop + hop/2, periodic Hann, zeros outside the signal. The analysis
    that `ISTFTDecoder.overlap_add` inverts: frames of a consistent spectrum come back unchanged."""
    n_frames = wav.shape[-1] // hop
    left = n_fft // 2 - hop // 2
    padded = F.pad(wav, (left, n_fft - left))  # (B, T + n_fft)
    frames = padded.unfold(-1, n_fft, hop)[:, :n_frames]  # (B, L, n_fft)
    window = torch.hann_window(n_fft, periodic=True, device=wav.device, dtype=wav.dtype)
    return torch.fft.rfft(frames * window, dim=-1)


def overlap_add(frames: torch.Tensor, hop: int) -> torch.Tensor:
    """(B, L, n_fft) frames -> (B, L * hop) samples by windowed overlap-add, frame f centred on sample
    f*hop + hop/2 (periodic Hann), divided by the squared-window envelope of an infinite frame train;
    inverts `frame_spectrum` away from the ends (`ISTFTDecoder`)."""
    b, n_frames, n = frames.shape
    reps = n // hop
    window = torch.hann_window(n, periodic=True, device=frames.device, dtype=frames.dtype)
    parts = (frames * window).view(b, n_frames, reps, hop)  # (B, L, R, hop)
    buf = sum(F.pad(parts[:, :, r], (0, 0, r, reps - 1 - r)) for r in range(reps))  # (B, L+R-1, hop)
    buf = buf.reshape(b, (n_frames + reps - 1) * hop)  # buffer sample 0 = absolute hop/2 - n/2
    offset = n // 2 - hop // 2
    env = window.pow(2).view(reps, hop).sum(0)  # squared-window envelope per buffer phase
    env = torch.roll(env, -offset).repeat(n_frames)  # aligned with the trimmed output
    return buf[:, offset : offset + n_frames * hop] / env


class ISTFTDecoder(nn.Module):
    """Vocos-style decoder *(our choice, tiny preset)*: ConvNeXt blocks at the 250 Hz frame rate, a linear
    head predicting log-magnitude and phase, and an inverse STFT by explicit windowed overlap-add.

    (B, L, D) -> (B, L * hop), channel-last throughout. Frame f (n_fft samples, periodic Hann) is
    centred on sample f*hop + hop/2, i.e. on latent frame f; the result is divided by the (periodic)
    squared-window envelope of an infinite frame train, so missing frames at the edges act exactly like
    zero padding.

    Phase (`phase_head`): "linear" reads it raw from the head (v1 bundles); "apnet" *(our choice of
    APNet's design, Ai & Ling 2023)* runs a parallel phase branch on the backbone's features
    (`phase_blocks` ConvNeXt blocks, LayerNorm, two linear maps to a pseudo real / imaginary pair)
    and takes the phase as their angle (atan2), while the head predicts the log-magnitude only; its
    time ops are the branch's in parallel with the magnitude path, so `context_frames` stays exact.
    `istft_phase="pghi"` replaces the phases at inference by PGHI from the magnitudes: PGHI integrates
    along the whole frame train, so chunked decoding is then close to, not equal to, a full decode.
    """

    def __init__(self, cfg) -> None:
        super().__init__()
        c = cfg.decoder_channels
        self.hop, self.n_fft = cfg.hop, cfg.istft_n_fft
        self.n_freq = self.n_fft // 2 + 1
        self.log_mag_max = math.log(cfg.istft_max_magnitude)
        self.phase_iters = cfg.istft_phase_iters
        self.pre = nn.Conv1d(
            cfg.latent_dim, c, cfg.convnext_kernel, padding=same_padding(cfg.convnext_kernel)
        )
        self.pre_norm = nn.LayerNorm(c)
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(c, cfg.convnext_kernel, cfg.convnext_mult, cfg.layer_scale_init)
            for _ in range(cfg.istft_blocks)
        )
        self.final_norm = nn.LayerNorm(c)
        self.apnet = cfg.phase_head == "apnet"
        self.phase_source = cfg.istft_phase  # "head" | "pghi" (inference only)
        # "linear": one head -> (log-magnitude, raw phase); "apnet": the head -> log-magnitude only, and
        # a parallel phase branch (ConvNeXt blocks, norm, two linear maps) -> angle(real, imag)
        self.head = nn.Linear(c, (1 if self.apnet else 2) * self.n_freq)
        n_phase_blocks = cfg.phase_blocks if self.apnet else 0
        self.phase_blocks = nn.ModuleList(
            ConvNeXtBlock(c, cfg.convnext_kernel, cfg.convnext_mult, cfg.layer_scale_init)
            for _ in range(n_phase_blocks)
        )
        self.phase_norm = nn.LayerNorm(c) if self.apnet else None
        self.phase_real = nn.Linear(c, self.n_freq) if self.apnet else None
        self.phase_imag = nn.Linear(c, self.n_freq) if self.apnet else None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.synthesize(*self.spectrum(z))

    def spectrum(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, D) latents -> (log-magnitude clamped at the maximum, phase), (B, L, F) each."""
        x = self.pre_norm(conv1d_last(z, self.pre))  # (B, L, C)
        for block in self.blocks:
            x = block(x)
        if not self.apnet:
            log_mag, phase = self.head(self.final_norm(x)).split(self.n_freq, dim=-1)  # (B, L, F) each
            return log_mag.clamp(max=self.log_mag_max), phase
        log_mag = self.head(self.final_norm(x))  # (B, L, F)
        h = x
        for block in self.phase_blocks:
            h = block(h)
        h = self.phase_norm(h)
        phase = torch.atan2(self.phase_imag(h), self.phase_real(h))  # APNet: angle of (real, imag)
        return log_mag.clamp(max=self.log_mag_max), phase

    def synthesize(self, log_mag: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        """(B, L, F) log-magnitude and phase -> (B, L * hop) waveform; then, outside training,
        `phase_iters` Griffin-Lim projections that keep the magnitudes and re-read the phases from the
        waveform's own frames, starting from the predicted phases *(our choice)*. With
        `istft_phase="pghi"` the phases come from the magnitudes instead (outside training), by
        phase-gradient heap integration (`melody_core.audio.pghi`)."""
        mag = torch.exp(log_mag)
        if self.phase_source == "pghi" and not self.training:
            from melody_core.audio.pghi import pghi_phase  # audio -> models import order

            phase = pghi_phase(mag, self.n_fft, self.hop)
        wav = self._istft(mag, phase)
        for _ in range(0 if self.training else self.phase_iters):
            wav = self._istft(mag, frame_spectrum(wav, self.n_fft, self.hop).angle())
        return wav

    def _istft(self, mag: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        """(B, L, F) magnitude and phase -> (B, L * hop) waveform."""
        return self.overlap_add(torch.fft.irfft(torch.polar(mag, phase), n=self.n_fft, dim=-1))

    @torch.no_grad()
    def scale_output(self, gain: float) -> None:
        """Multiply the decoded waveform by `gain` > 0 (log-magnitude head bias + log gain; exact
        wherever the magnitude clamp is not reached)."""
        self.head.bias[: self.n_freq] += math.log(gain)

    def overlap_add(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, L, n_fft) frames -> (B, L * hop) samples, frame f centred on f*hop + hop/2."""
        return overlap_add(frames, self.hop)

    def time_ops(self) -> list:
        ops: list = [conv_op(self.pre, self.hop)]
        for block in self.blocks:
            ops.extend(block.time_ops(self.hop))
        if len(self.phase_blocks):  # magnitude head (no time mixing) in parallel with the phase branch
            phase_ops = tuple(op for b in self.phase_blocks for op in b.time_ops(self.hop))
            ops.append(ParallelOp(((), phase_ops)))
        ops.append(OlaOp(self.n_fft, self.hop))
        for _ in range(self.phase_iters):
            ops.extend([FrameOp(self.n_fft, self.hop), OlaOp(self.n_fft, self.hop)])
        return ops
