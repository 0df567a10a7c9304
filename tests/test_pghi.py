"""Phase-gradient heap integration (melody_core.audio.pghi) on a chirp and chords, in the iSTFT
decoder's frames. Figures measured when written (2 s at 24 kHz, n_fft 384, hop 96):
chirp 200 -> 1000 Hz: SI-SDR +15.0 dB, spectral convergence -35.3 dB (random phase: -21 dB, -3.9 dB);
C6 triad (partials > 4 bins apart): spectral convergence -35.1 dB, SI-SDR -18.5 dB — the partials'
phases drift apart by ~1 Hz frequency-estimate errors over 2 s, which SI-SDR punishes and the ear
does not; random phase: -3.9 dB, SI-SDR -84 dB.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from melody_core.audio.features import si_sdr
from melody_core.audio.pghi import pghi_phase
from melody_core.models._vae_blocks import ISTFTDecoder, frame_spectrum, overlap_add
from melody_core.models.vae_gan import VAEConfig

SR, N_FFT, HOP = 24_000, 384, 96
T = 2 * SR // HOP * HOP
C0 = HOP / 2 / SR  # the first frame's centre: PGHI's phase origin


def _time() -> torch.Tensor:
    return torch.arange(T) / SR - C0


def chirp() -> torch.Tensor:
    t = _time()
    return (0.3 * torch.cos(2 * math.pi * (200 * t + 200 * t**2))).unsqueeze(0)  # 200 -> 1000 Hz


def chord(freqs=(1046.5, 1318.5, 1568.0)) -> torch.Tensor:
    t = _time()
    return sum(0.2 * torch.cos(2 * math.pi * f * t) for f in freqs).unsqueeze(0)


def _rebuild(x: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    mag = frame_spectrum(x, N_FFT, HOP).abs()
    return overlap_add(torch.fft.irfft(torch.polar(mag, phase), n=N_FFT, dim=-1), HOP)


def _scores(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(SI-SDR dB away from the ends, spectral convergence dB)."""
    inner = slice(N_FFT, -N_FFT)
    a, b = frame_spectrum(y, N_FFT, HOP).abs(), frame_spectrum(x, N_FFT, HOP).abs()
    sc = 20 * math.log10(float((a - b).norm() / b.norm()))
    return float(si_sdr(y[:, inner], x[:, inner])), sc


@pytest.mark.parametrize(("signal", "min_sdr", "max_sc"), [(chirp, 12.0, -30.0), (chord, -22.0, -30.0)])
def test_pghi_recovers_phase(signal, min_sdr: float, max_sc: float) -> None:
    x = signal()
    mag = frame_spectrum(x, N_FFT, HOP).abs()
    sdr, sc = _scores(x, _rebuild(x, pghi_phase(mag, N_FFT, HOP)))
    assert sdr >= min_sdr and sc <= max_sc
    g = torch.Generator().manual_seed(0)
    random_sdr, random_sc = _scores(x, _rebuild(x, torch.rand(mag.shape, generator=g) * 2 * math.pi))
    assert random_sc > -6.0 and random_sdr < sdr - 10  # the baseline the measure tells apart


def test_pghi_is_batched_and_checks_shapes() -> None:
    x = torch.cat([chirp(), chord()])  # (2, T)
    mag = frame_spectrum(x, N_FFT, HOP).abs()
    both = pghi_phase(mag, N_FFT, HOP)
    torch.testing.assert_close(both[1:], pghi_phase(mag[1:], N_FFT, HOP), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="magnitudes"):
        pghi_phase(mag[..., :-1], N_FFT, HOP)


def test_decoder_uses_pghi_at_inference_only() -> None:
    cfg = dataclasses.replace(VAEConfig.tiny(), istft_phase="pghi", istft_phase_iters=0)
    dec = ISTFTDecoder(cfg).eval()
    x = chirp()
    spec = frame_spectrum(x, N_FFT, HOP)
    wrong = torch.zeros_like(spec.real)  # the head's phases are ignored at inference
    sdr, _ = _scores(x, dec.synthesize(spec.abs().log(), wrong))
    assert sdr >= 12.0
    dec.train()  # training sees the head's phases (PGHI has no gradient)
    sdr_train, _ = _scores(x, dec.synthesize(spec.abs().log(), wrong))
    assert sdr_train < 0.0
