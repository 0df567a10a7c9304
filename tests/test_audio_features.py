"""Light property tests of the spectral features (mel filterbank, log-mel, distances, SI-SDR)."""

from __future__ import annotations

import math

import pytest
import torch

from melody_core.audio.features import (
    MelSpectrogram,
    hz_to_mel,
    mel_distance,
    mel_filterbank,
    mel_to_hz,
    multi_resolution_stft_loss,
    si_sdr,
    stft_magnitude,
)

SR = 24_000


def sine(freq: float = 440.0, seconds: float = 1.0, amp: float = 0.5, sr: int = SR) -> torch.Tensor:
    t = torch.arange(int(sr * seconds), dtype=torch.float64) / sr
    return (amp * torch.sin(2 * math.pi * freq * t)).to(torch.float32)


def test_mel_scale_is_slaney_and_invertible() -> None:
    assert float(hz_to_mel(torch.tensor(0.0))) == 0.0
    assert float(hz_to_mel(torch.tensor(1000.0))) == pytest.approx(15.0)  # linear part: 3 mels / 200 Hz
    f = torch.tensor([0.0, 100.0, 999.0, 1000.0, 4000.0, 12_000.0], dtype=torch.float64)
    torch.testing.assert_close(mel_to_hz(hz_to_mel(f)), f)
    m = hz_to_mel(torch.linspace(0, SR / 2, 200, dtype=torch.float64))
    assert bool((m[1:] > m[:-1]).all())


@pytest.mark.parametrize(("n_fft", "n_mels"), [(512, 40), (1024, 64), (2048, 80)])
def test_mel_filterbank_shape_and_support(n_fft: int, n_mels: int) -> None:
    fb = mel_filterbank(SR, n_fft, n_mels)
    assert fb.shape == (n_fft // 2 + 1, n_mels) and fb.dtype == torch.float32
    assert bool((fb >= 0).all())
    assert bool((fb.sum(0) > 0).all())  # no empty band
    peaks = fb.argmax(0)
    assert bool((peaks[1:] >= peaks[:-1]).all())  # centres rise with the band index


def test_mel_filterbank_slaney_area_is_one() -> None:
    # Slaney normalisation: each triangle has unit area in Hz, so sum(weights) * bin_width ~= 1
    n_fft = 16_384  # fine bins so the sampled triangles integrate accurately
    fb = mel_filterbank(SR, n_fft, 64)
    area = fb.sum(0) * (SR / n_fft)
    torch.testing.assert_close(area, torch.ones(64), atol=0.03, rtol=0.0)


def test_mel_filterbank_respects_band_limits_and_cache() -> None:
    n_fft = 1024
    fb = mel_filterbank(SR, n_fft, 40, f_min=100.0, f_max=8000.0)
    freqs = torch.linspace(0, SR / 2, n_fft // 2 + 1)
    assert float(fb[freqs > 8000.0].abs().sum()) == 0.0
    assert float(fb[freqs < 100.0].abs().sum()) == 0.0
    fb.zero_()  # callers get a copy: the cached bank is untouched
    assert float(mel_filterbank(SR, n_fft, 40, f_min=100.0, f_max=8000.0).sum()) > 0


def test_stft_magnitude_shape() -> None:
    x = torch.randn(3, SR)
    mag = stft_magnitude(x, 1024, 256)
    assert mag.shape == (3, 513, SR // 256 + 1)
    assert stft_magnitude(x[0], 512, 128).shape == (1, 257, SR // 128 + 1)  # (T,) accepted


def test_mel_spectrogram_shape_and_content() -> None:
    mel = MelSpectrogram(SR, n_fft=1024, hop=240, n_mels=64)
    x = torch.stack([sine(1000.0), torch.zeros(SR)])  # (2, T)
    out = mel(x)
    assert out.shape == (2, 64, SR // 240 + 1) and out.dtype == torch.float32
    assert torch.allclose(out[1], torch.full_like(out[1], math.log(mel.log_floor)))  # silence -> floor
    band = int(out[0, :, 10:-10].mean(-1).argmax())
    centre_of_band = int(mel.fb[:, band].argmax()) * SR / 1024
    assert abs(centre_of_band - 1000.0) < 150.0  # the loudest band sits on the tone
    assert "fb" not in mel.state_dict()  # deterministic buffer, not a checkpoint entry


def test_mel_distance() -> None:
    x = 0.1 * torch.randn(2, SR // 2)
    assert float(mel_distance(x, x)) == 0.0
    # magnitudes scale linearly, so a 2x louder copy is log10(2) away in every (unclamped) bin
    assert float(mel_distance(2 * x, x)) == pytest.approx(math.log10(2.0), abs=1e-3)
    assert float(mel_distance(x, torch.randn(2, SR // 2))) > 0.1


def test_multi_resolution_stft_loss() -> None:
    x = sine().unsqueeze(0)
    assert float(multi_resolution_stft_loss(x, x)) == pytest.approx(0.0, abs=1e-6)
    noisy = x + 0.05 * torch.randn_like(x)
    assert float(multi_resolution_stft_loss(noisy, x)) > 0.1


def test_si_sdr() -> None:
    ref = torch.stack([sine(440.0), sine(880.0, amp=0.2)])  # (2, T)
    out = si_sdr(ref, ref)
    assert out.shape == (2,) and bool((out > 60).all())
    assert bool((si_sdr(0.3 * ref, ref) > 60).all())  # scale invariant
    noise = torch.randn_like(ref)
    assert bool((si_sdr(noise, ref) < -10).all())
    # reference power 0.125, noise power 0.01 -> ~ 10 log10(12.5) = 11 dB
    snr = float(si_sdr(ref[0] + 0.1 * noise[0], ref[0]))
    assert snr == pytest.approx(10 * math.log10(12.5), abs=0.5)
