"""musicnn (MSD_musicnn, Pons & Serra 2019) in PyTorch: an offline audio embedding for FAD.

A port of the `musicnn` PyPI package's MSD_musicnn tagger (ISC licence; weights converted once by
packaging/tools/convert_musicnn.py into resources/eval/musicnn/msd_musicnn.safetensors, provenance in
that folder's README). Runtime needs torch + numpy + soxr only: no TensorFlow, no librosa.
tests/test_musicnn.py checks the port against TensorFlow's outputs for the original graph.

Front end (musicnn's extractor.batch_data, reproduced exactly):
  16 kHz mono (soxr HQ resampling, as librosa >= 0.10's default `soxr_hq`) -> STFT n_fft 512, hop 256,
  periodic Hann, centred with reflect padding (librosa < 0.10's default, which musicnn used) ->
  power -> 96 Slaney mel bands (librosa's `filters.mel(htk=False, norm="slaney")`, rebuilt here) ->
  rounded to float16 (musicnn stored and fed float16 mel power) -> log10(10000 x + 1) in float32
  -> patches of 187 frames (3 s) every `hop_seconds`, converted to frames like musicnn's
  `input_overlap`: floor((hop_seconds * 16000 - 256) / 256), i.e. 61 frames (0.976 s) for 1.0 s.
  Trailing frames that do not fill a patch are dropped (as musicnn does).
  *(our choice)* mel power above float16's largest finite value is clamped to it instead of becoming
  inf (never reached by audio in [-1, 1]); clips shorter than one patch are zero-padded to 3 s
  (musicnn raises on them).

Network (musicnn models.py build_musicnn, num_filt_midend=64, num_units_backend=200):
  input BN -> front end: timbral convs 7x38 and 7x67 (204 filters each, time padded by 3) and
  temporal convs 128x1, 64x1, 32x1 ('same', 51 filters each), each conv -> ReLU -> BN -> max over
  frequency; concat = 561 channels -> mid end: three Conv1d(k=7) + ReLU + BN with residuals on the 2nd
  and 3rd (64 channels each); dense concat (561 + 3 x 64 = 753) -> back end: max and mean over time
  (`max_pool`, `mean_pool`, 753-d each), interleaved to 1506 -> BN -> Dense(200) + ReLU -> BN
  (`penultimate`, 200-d) -> Dense(50) -> sigmoid (`taggram`). All BNs: TF1 inference form, eps 1e-3.

Embedding used for FAD *(our choice)*: `penultimate` (200-d), not `max_pool` (753-d).
FAD fits a Gaussian (mean, covariance) to each set and needs sqrtm(S_a S_b); with d dimensions the
covariance needs n > d samples to be full rank, and the bias of the trace term grows like d^2 / n. Our
FAD sets are ~30-60 clips x ~8 patches = n ~ 240-480 (and patches of one clip are correlated, so the
effective n is smaller): with d = 753 every covariance is singular (rank <= n - 1 < 753) and the score
is dominated by estimation noise; with d = 200 it is full rank (n / d ~ 1.2-2.4). The penultimate layer
is also the one trained to predict the 50 MSD tags linearly (genre, mood, instrumentation, era), and
its batch norm makes it roughly zero-mean and unit-scale, closer to the Gaussian FAD assumes than
max-pooled activations. Compare FAD only between sets of equal size. `features()` still returns
`max_pool` / `mean_pool` for anyone with larger sets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "resources" / "eval" / "musicnn"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "msd_musicnn.safetensors"  # converted by packaging/tools/convert_musicnn.py

SR = 16_000  # Hz, musicnn's sample rate
N_FFT = 512  # STFT size
HOP = 256  # STFT hop (16 ms)
N_MELS = 96  # Slaney mel bands, 0 .. 8 kHz
PATCH_FRAMES = 187  # 3 s patches: librosa.time_to_frames(3, sr=16000, n_fft=512, hop_length=256) + 1
PATCH_SAMPLES = 3 * SR  # short clips are zero-padded to this many samples (one patch)
LOG_GAIN = 10_000.0  # musicnn's "logC" compression: log10(LOG_GAIN * mel + 1)
F16_MAX = float(torch.finfo(torch.float16).max)  # mel power is rounded through float16, as musicnn did
BN_EPS = 1e-3  # tf.compat.v1.layers.batch_normalization default
Audio = np.ndarray | torch.Tensor  # a mono waveform (T,)

# The 50 MSD tags, in taggram column order (musicnn configuration.MSD_LABELS).
TAGS: tuple[str, ...] = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s",
    "alternative rock", "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock", "soul",
    "indie rock", "Mellow", "electronica", "80s", "folk", "90s", "chill", "instrumental", "punk",
    "oldies", "blues", "hard rock", "ambient", "acoustic", "experimental", "female vocalist", "guitar",
    "Hip-Hop", "70s", "party", "country", "easy listening", "sexy", "catchy", "funk", "electro",
    "heavy metal", "Progressive rock", "60s", "rnb", "indie pop", "sad", "House", "happy",
)  # fmt: skip


@dataclass(frozen=True)
class MusicnnConfig:
    """Sizes of MSD_musicnn (models.py build_musicnn with num_filt_midend=64, num_units_backend=200)."""

    n_mels: int = N_MELS  # input mel bands
    timbral_widths: tuple[int, ...] = (38, 67)  # int(0.4 * 96), int(0.7 * 96) mel bands per kernel
    timbral_time: int = 7  # timbral kernel length in frames
    timbral_filters: int = 204  # int(1.6 * 128)
    temporal_lengths: tuple[int, ...] = (128, 64, 32)  # temporal kernel lengths in frames (x 1 band)
    temporal_filters: int = 51  # int(1.6 * 32)
    midend_filters: int = 64  # mid-end Conv1d channels
    midend_layers: int = 3  # mid-end convs (2nd and 3rd residual)
    midend_kernel: int = 7  # mid-end kernel length in frames
    backend_units: int = 200  # penultimate dense width
    n_tags: int = len(TAGS)  # output tags

    @property
    def frontend_dim(self) -> int:  # 2 x 204 + 3 x 51 = 561
        timbral = len(self.timbral_widths) * self.timbral_filters
        return timbral + len(self.temporal_lengths) * self.temporal_filters

    @property
    def pooled_dim(self) -> int:  # 561 + 3 x 64 = 753 (max_pool / mean_pool width)
        return self.frontend_dim + self.midend_layers * self.midend_filters


class FrozenBatchNorm(nn.Module):
    """Inference-only batch norm over dim 1, TF1 form: (x - mean) / sqrt(var + eps) * gamma + beta."""

    def __init__(self, channels: int, eps: float = BN_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        view = (1, -1) + (1,) * (x.dim() - 2)  # broadcast over dim 1
        return x * scale.view(view) + shift.view(view)


class FreqPooledConv(nn.Module):
    """Conv2d on (B, 1, T, F) -> ReLU -> BN -> max over frequency: (B, filters, T).

    The max is taken before ReLU and BN (4x less elementwise work on the large conv output): BN is a
    per-channel affine map, increasing where its scale is >= 0 and decreasing elsewhere, and ReLU is
    increasing, so max_f BN(ReLU(z)) = BN(ReLU(max_f z)) or BN(ReLU(min_f z)). The min is taken as
    -max_f of the conv with negated weights, which is bit-exact (negation commutes with rounding)."""

    def __init__(self, filters: int, kernel: tuple[int, int]) -> None:
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv2d(1, filters, kernel)
        self.bn = FrozenBatchNorm(filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k_t = self.kernel[0]
        # timbral: pad 3 | 3 (models.py); temporal: TF 'same' ((k-1)//2 before, the rest after);
        # both equal (k-1)//2 | k//2 for the kernels used here (7 -> 3|3, 128 -> 63|64)
        x = F.pad(x, (0, 0, (k_t - 1) // 2, k_t // 2))
        sign = torch.where(self.bn.weight >= 0, 1.0, -1.0)  # sign of the BN scale per channel
        z = F.conv2d(x, self.conv.weight * sign.view(-1, 1, 1, 1), self.conv.bias * sign)  # (B, C, T, F)
        pooled = z.amax(dim=3) * sign.view(1, -1, 1)  # (B, C, T): max_f z where sign > 0, else min_f z
        return self.bn(F.relu(pooled))


class MidendConv(nn.Module):
    """Conv1d over time ('same', k = 7) -> ReLU -> BN: (B, C_in, T) -> (B, C_out, T)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_ch, out_ch, kernel, padding=kernel // 2)
        self.bn = FrozenBatchNorm(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(x)))


@dataclass
class MusicnnFeatures:
    """Per-patch outputs, each (n_patches, width), float32."""

    penultimate: torch.Tensor  # (n, 200) the FAD embedding
    max_pool: torch.Tensor  # (n, 753)
    mean_pool: torch.Tensor  # (n, 753)
    taggram: torch.Tensor  # (n, 50) sigmoid tag probabilities, columns = TAGS


class MusicnnNet(nn.Module):
    """MSD_musicnn network. forward(x: (B, 187, 96) log-mel patches) -> MusicnnFeatures with B rows.

    Weights only (no data-dependent init): constructs under torch.device("meta")."""

    def __init__(self, config: MusicnnConfig | None = None) -> None:
        super().__init__()
        c = config or MusicnnConfig()
        self.config = c
        self.input_bn = FrozenBatchNorm(1)
        self.timbral = nn.ModuleList(
            FreqPooledConv(c.timbral_filters, (c.timbral_time, w)) for w in c.timbral_widths
        )
        self.temporal = nn.ModuleList(FreqPooledConv(c.temporal_filters, (k, 1)) for k in c.temporal_lengths)
        widths = [c.frontend_dim] + [c.midend_filters] * c.midend_layers
        self.midend = nn.ModuleList(
            MidendConv(widths[i], widths[i + 1], c.midend_kernel) for i in range(c.midend_layers)
        )
        self.pool_bn = FrozenBatchNorm(2 * c.pooled_dim)
        self.dense = nn.Linear(2 * c.pooled_dim, c.backend_units)
        self.dense_bn = FrozenBatchNorm(c.backend_units)
        self.out = nn.Linear(c.backend_units, c.n_tags)

    def forward(self, x: torch.Tensor) -> MusicnnFeatures:
        b = x.shape[0]
        h = self.input_bn(x.unsqueeze(1))  # (B, 1, T, F)
        front = torch.cat([m(h) for m in (*self.timbral, *self.temporal)], dim=1)  # (B, 561, T)
        y = self.midend[0](front)  # (B, 64, T)
        feats = [front, y]
        for layer in self.midend[1:]:
            y = layer(y) + y  # residual on the 2nd and 3rd mid-end convs
            feats.append(y)
        dense = torch.cat(feats, dim=1)  # (B, 753, T)
        max_pool, mean_pool = dense.amax(dim=2), dense.mean(dim=2)  # (B, 753) each
        pooled = torch.stack([max_pool, mean_pool], dim=2).reshape(b, -1)  # (B, 1506), TF's interleaved order
        penultimate = self.dense_bn(F.relu(self.dense(self.pool_bn(pooled))))  # (B, 200)
        taggram = torch.sigmoid(self.out(penultimate))  # (B, 50)
        return MusicnnFeatures(penultimate, max_pool, mean_pool, taggram)


def _hz_to_mel_slaney(f: np.ndarray) -> np.ndarray:
    f_sp, min_log_hz = 200.0 / 3, 1000.0  # linear below 1 kHz, logarithmic above
    logstep = math.log(6.4) / 27.0
    mel = f / f_sp
    log_region = f >= min_log_hz
    mel[log_region] = min_log_hz / f_sp + np.log(f[log_region] / min_log_hz) / logstep
    return mel


def _mel_to_hz_slaney(m: np.ndarray) -> np.ndarray:
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    logstep = math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    f = f_sp * m
    log_region = m >= min_log_mel
    f[log_region] = min_log_hz * np.exp(logstep * (m[log_region] - min_log_mel))
    return f


def slaney_mel_filterbank(sr: int = SR, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) float32, equal to librosa.filters.mel(sr, n_fft, n_mels) (htk=False,
    norm="slaney", 0 .. sr/2), including its float32 rounding order."""
    fft_freqs = np.linspace(0.0, sr / 2, n_fft // 2 + 1)
    mel_pts = np.linspace(_hz_to_mel_slaney(np.array([0.0]))[0], _hz_to_mel_slaney(np.array([sr / 2]))[0],
                          n_mels + 2)
    hz_pts = _mel_to_hz_slaney(mel_pts)  # (n_mels + 2,) band edges
    fdiff = np.diff(hz_pts)
    ramps = hz_pts[:, None] - fft_freqs[None, :]  # (n_mels + 2, n_bins)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    tri = np.maximum(0.0, np.minimum(lower, upper)).astype(np.float32)  # librosa stores float32 first
    enorm = 2.0 / (hz_pts[2:] - hz_pts[:-2])  # Slaney area normalisation
    return (tri * enorm[:, None]).astype(np.float32)


def hop_frames(hop_seconds: float) -> int:
    """Patch hop in frames, as musicnn converts `input_overlap` (librosa.time_to_frames)."""
    return (int(hop_seconds * SR) - N_FFT // 2) // HOP


class MusicnnEmbedder:
    """Mono waveform (T,) at any sample rate -> per-patch musicnn outputs, one row per 3 s patch:
    `embed` (n, 200), `taggram` (n, 50), `features` (all of them). Build with `MusicnnEmbedder.load()`."""

    dim = MusicnnConfig().backend_units  # 200: width of `embed`

    def __init__(self, net: MusicnnNet, device: str | torch.device = "cpu", batch_size: int = 8) -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.batch_size = batch_size  # patches per forward pass (~10 MB of activations each)
        self.mel_basis = torch.from_numpy(slaney_mel_filterbank()).to(self.device)  # (96, 257)
        self.window = torch.hann_window(N_FFT, periodic=True, device=self.device)

    @classmethod
    def load(cls, path: str | Path | None = None, device: str | torch.device = "cpu") -> MusicnnEmbedder:
        """Load converted weights (None: resources/eval/musicnn/msd_musicnn.safetensors)."""
        from safetensors.torch import load_file

        path = Path(path) if path is not None else DEFAULT_WEIGHTS
        if not path.is_file():
            raise FileNotFoundError(f"musicnn weights not found at {path}")
        net = MusicnnNet()
        net.load_state_dict(load_file(str(path)), strict=True)
        return cls(net, device)

    def log_mel(self, wav16k: torch.Tensor) -> torch.Tensor:
        """(T,) float32 at 16 kHz -> (1 + T // 256, 96) musicnn log-mel (float16-rounded power)."""
        spec = torch.stft(wav16k, N_FFT, HOP, N_FFT, window=self.window, center=True, pad_mode="reflect",
                          return_complex=True)  # (257, frames)
        mel = self.mel_basis @ spec.abs().square()  # (96, frames)
        mel = mel.clamp(max=F16_MAX).to(torch.float16).to(torch.float32)
        return torch.log10(LOG_GAIN * mel + 1.0).T  # (frames, 96)

    def patches(self, wav: Audio, sample_rate: int, hop_seconds: float = 1.0) -> torch.Tensor:
        """(T,) waveform -> (n_patches, 187, 96) log-mel patches at 16 kHz (see `features`)."""
        step = hop_frames(hop_seconds)
        if step < 1:
            raise ValueError(f"hop_seconds must be >= {(N_FFT // 2 + HOP) / SR} s, got {hop_seconds}")
        x = wav.detach().cpu().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav)
        if x.ndim != 1 or x.size == 0:
            raise ValueError(f"expected a non-empty mono waveform (T,), got shape {x.shape}")
        x = x.astype(np.float32, copy=False)
        if not np.isfinite(x).all():
            raise ValueError("waveform has non-finite samples")
        if sample_rate != SR:
            import soxr

            x = soxr.resample(x, sample_rate, SR, quality="HQ").astype(np.float32, copy=False)
        if x.size < PATCH_SAMPLES:
            x = np.pad(x, (0, PATCH_SAMPLES - x.size))
        logmel = self.log_mel(torch.from_numpy(np.ascontiguousarray(x)).to(self.device))  # (frames, 96)
        return logmel.unfold(0, PATCH_FRAMES, step).transpose(1, 2)  # (n, 187, 96)

    def features(self, wav: Audio, sample_rate: int, hop_seconds: float = 1.0) -> MusicnnFeatures:
        """All per-patch outputs for a mono clip (T,) at `sample_rate` (resampled to 16 kHz with soxr).

        One row per 3 s patch, patches starting every `hop_seconds` (rounded down to whole 16 ms
        frames as musicnn does; frames after the last full patch are dropped). Clips shorter than 3 s
        are zero-padded to one 3 s patch. Float32, on CPU."""
        with torch.inference_mode():
            x = self.patches(wav, sample_rate, hop_seconds)
            outs = [self.net(chunk) for chunk in x.split(self.batch_size)]
            return MusicnnFeatures(*(torch.cat([getattr(o, f) for o in outs]).cpu()
                                     for f in ("penultimate", "max_pool", "mean_pool", "taggram")))

    def embed(self, wav: Audio, sample_rate: int, hop_seconds: float = 1.0) -> torch.Tensor:
        """(T,) mono waveform -> (n_patches, 200) `penultimate` embeddings for FAD (see `features`)."""
        return self.features(wav, sample_rate, hop_seconds).penultimate

    def taggram(self, wav: Audio, sample_rate: int, hop_seconds: float = 1.0) -> torch.Tensor:
        """(T,) mono waveform -> (n_patches, 50) tag probabilities, columns in `TAGS` order."""
        return self.features(wav, sample_rate, hop_seconds).taggram
