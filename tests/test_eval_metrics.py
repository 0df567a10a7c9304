"""Evaluation metrics (`melody_core.eval.metrics`, `melody_core.eval.tempo`) on synthetic signals
and embeddings with known answers."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from micro_bundle import MICRO_OVERRIDES

from melody_core import SAMPLE_RATE
from melody_core.audio import resample
from melody_core.eval.metrics import (
    cosine_rows,
    fad,
    frechet_distance,
    gaussian_stats,
    mcc,
    seam_ratio,
    si_snr_improvement,
    spectral_flux,
)
from melody_core.eval.tempo import estimate_bpm, onset_strength, tempo_error
from melody_core.models.mulan import MuLan, MuLanConfig

SR = SAMPLE_RATE


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------- FAD
def _exact_samples(mu: torch.Tensor, cov: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """(n, D) samples whose sample mean and unbiased covariance are exactly mu and cov."""
    x = torch.randn(n, len(mu), generator=_gen(seed), dtype=torch.float64)
    x = x - x.mean(0)
    evals, evecs = torch.linalg.eigh(x.T @ x / (n - 1))
    white = x @ evecs @ torch.diag(evals.rsqrt()) @ evecs.T  # sample covariance = I
    return white @ torch.linalg.cholesky(cov).T + mu


def _random_spd(d: int, seed: int) -> torch.Tensor:
    a = torch.randn(d, d, generator=_gen(seed), dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def test_gaussian_stats_match_torch() -> None:
    x = torch.randn(50, 6, generator=_gen(0))
    mu, cov = gaussian_stats(x)
    assert mu.dtype == cov.dtype == torch.float64
    torch.testing.assert_close(mu, x.double().mean(0))
    torch.testing.assert_close(cov, torch.cov(x.double().T))  # unbiased


def test_fad_of_a_set_with_itself_is_zero() -> None:
    a = torch.randn(200, 16, generator=_gen(1))
    assert fad(a, a) <= 1e-6
    few = torch.randn(5, 16, generator=_gen(2))  # rank-deficient covariance (N < D)
    assert fad(few, few) <= 1e-5


def test_fad_closed_form_diagonal_and_general() -> None:
    d = 4
    mu1, mu2 = torch.zeros(d, dtype=torch.float64), torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64)
    v1, v2 = torch.tensor([1.0, 4.0, 0.25, 2.0]), torch.tensor([4.0, 1.0, 1.0, 2.0])
    a = _exact_samples(mu1, torch.diag(v1).double(), 300, seed=3)
    b = _exact_samples(mu2, torch.diag(v2).double(), 200, seed=4)
    # N(mu1, diag v1) vs N(mu2, diag v2): |dmu|^2 + sum (sqrt v1 - sqrt v2)^2 = 5.25 + 1 + 1 + 0.25 + 0
    expected = 5.25 + float((v1.sqrt() - v2.sqrt()).pow(2).sum())
    assert expected == pytest.approx(7.5)
    assert fad(a, b) == pytest.approx(expected, abs=1e-9)
    # non-commuting covariances: tr (C1 C2)^(1/2) = sum of sqrt of the (real, >= 0) eigenvalues of C1 C2
    c1, c2 = _random_spd(6, 5), _random_spd(6, 6)
    m1, m2 = torch.randn(6, generator=_gen(7), dtype=torch.float64), torch.zeros(6, dtype=torch.float64)
    tr_sqrt = torch.linalg.eigvals(c1 @ c2).real.clamp(min=0).sqrt().sum()
    ref = float((m1 - m2).pow(2).sum() + c1.trace() + c2.trace() - 2 * tr_sqrt)
    assert frechet_distance(m1, c1, m2, c2) == pytest.approx(ref, rel=1e-9)
    assert fad(_exact_samples(m1, c1, 100, 8), _exact_samples(m2, c2, 60, 9)) == pytest.approx(ref, rel=1e-9)


def test_fad_symmetric_and_positive_for_shifted_sets() -> None:
    a = torch.randn(100, 8, generator=_gen(10))
    b = torch.randn(80, 8, generator=_gen(11)) * 1.5 + 0.3
    assert fad(a, b) == pytest.approx(fad(b, a), rel=1e-9) and fad(a, b) > 0.5
    # same covariance, every coordinate shifted by 1: FAD = |shift|^2 = D exactly
    assert fad(a, a + 1.0) == pytest.approx(8.0, abs=1e-6)


def test_fad_errors() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        fad(torch.randn(1, 4), torch.randn(5, 4))
    with pytest.raises(ValueError, match="embeddings"):
        fad(torch.randn(5, 4), torch.randn(5, 3))
    with pytest.raises(ValueError, match="NaN"):
        fad(torch.full((3, 2), math.nan), torch.randn(3, 2))


# ---------------------------------------------------------------------------------------------- MCC
def test_cosine_rows() -> None:
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0], [3.0, 4.0]])
    b = torch.tensor([[2.0, 0.0], [-1.0, -1.0], [5.0, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(cosine_rows(a, b), torch.tensor([1.0, -1.0, 0.0, 0.0], dtype=torch.float64))
    with pytest.raises(ValueError):
        cosine_rows(a, b[:2])


class _StubMuLan:
    """embed_text: caption "k" -> unit vector e_k; embed_audio: unit vector at angle given by the
    waveform's first sample (radians) from e_0 toward e_1."""

    config = SimpleNamespace(sample_rate=SR)

    def embed_text(self, texts: list[str]) -> torch.Tensor:
        return torch.eye(4)[[int(t) for t in texts]]

    def embed_audio(self, wav: torch.Tensor) -> torch.Tensor:
        angle = wav[:, 0]
        return torch.stack([angle.cos(), angle.sin(), 0 * angle, 0 * angle], dim=1)


def test_mcc_known_answers_with_a_stub() -> None:
    wavs = [torch.full((100,), math.pi / 3), torch.zeros(50), torch.full((10,), math.pi / 2)]
    r = mcc(_StubMuLan(), ["0", "0", "1"], wavs)  # cosines 0.5, 1, 1
    assert r["n"] == 3 and r["per_item"] == pytest.approx([0.5, 1.0, 1.0])
    assert r["mean"] == pytest.approx(2.5 / 3)
    assert r["std"] == pytest.approx(torch.tensor([0.5, 1, 1]).std().item())
    assert mcc(_StubMuLan(), ["1"], [torch.zeros(10)])["std"] == 0.0
    with pytest.raises(ValueError, match="captions"):
        mcc(_StubMuLan(), ["0"], wavs)
    with pytest.raises(ValueError):
        mcc(_StubMuLan(), [], [])


@pytest.fixture(scope="module")
def micro_mulan() -> MuLan:
    cfg = MuLanConfig.from_dict({**MuLanConfig.tiny().to_dict(), **MICRO_OVERRIDES["mulan"]})
    torch.manual_seed(0)
    return MuLan(cfg).eval()


def test_mcc_with_a_random_mulan(micro_mulan: MuLan) -> None:
    t = torch.arange(int(12.5 * SR)) / SR
    wavs = [0.3 * torch.sin(2 * math.pi * 220 * t), 0.1 * torch.randn(SR, generator=_gen(0)),
            0.2 * torch.sin(2 * math.pi * 440 * t[: SR // 2])]  # 12.5 s (windowed), 1 s, 0.5 s (padded)
    caps = ["low drone", "white noise", "beep"]
    r = mcc(micro_mulan, caps, wavs)
    with torch.no_grad():
        manual = [float(F.cosine_similarity(micro_mulan.embed_text([c]), micro_mulan.embed_audio(w[None]))[0])
                  for c, w in zip(caps, wavs)]
    assert r["n"] == 3 and r["per_item"] == pytest.approx(manual, abs=1e-5)
    assert all(-1 <= v <= 1 for v in r["per_item"]) and r["mean"] == pytest.approx(sum(manual) / 3, abs=1e-5)
    # another input rate is resampled to the MuLan's 24 kHz first
    at_16k = resample(wavs[1], SR, 16000)
    r16 = mcc(micro_mulan, caps[1:2], [at_16k], sample_rate=16000)
    direct = mcc(micro_mulan, caps[1:2], [resample(at_16k, 16000, SR)])
    assert r16["per_item"] == pytest.approx(direct["per_item"])


# ------------------------------------------------------------------------------ flux and seam ratio
def _noise(seconds: float, seed: int) -> torch.Tensor:
    return 0.1 * torch.randn(int(seconds * SR), generator=_gen(seed))


def test_spectral_flux_shape_gain_invariance_and_onsets() -> None:
    x = _noise(1.0, 0)
    flux, rate = spectral_flux(x, SR, n_fft=1024, hop=256)
    assert rate == SR / 256 and flux.shape == (SR // 256 + 1,) and flux[0] == 0 and (flux >= 0).all()
    torch.testing.assert_close(spectral_flux(0.01 * x, SR)[0], flux)  # floor is relative to the peak
    step = torch.cat([torch.zeros(SR // 2), torch.sin(2 * math.pi * 440 * torch.arange(SR // 2) / SR)])
    f, rate = spectral_flux(step, SR)
    assert abs(int(f[: int(0.9 * rate)].argmax()) / rate - 0.5) < 0.03  # the onset at 0.5 s is the peak
    assert f[: int(0.4 * rate)].abs().max() == 0  # silence contributes nothing


def _chunked(seconds: float, joins: list[float], seed: int) -> torch.Tensor:
    """Tone + noise whose tone frequency, phase and level jump at each join (chunks made apart)."""
    g = _gen(seed)
    bounds = [0.0, *joins, seconds]
    parts = []
    for k in range(len(bounds) - 1):
        n = round(bounds[k + 1] * SR) - round(bounds[k] * SR)
        t = torch.arange(n) / SR
        f0 = 200 + 600 * torch.rand(1, generator=g)
        phase = 2 * math.pi * torch.rand(1, generator=g)
        tone = (0.2 + 0.3 * (k % 2)) * torch.sin(2 * math.pi * f0 * t + phase)
        parts.append(tone + 0.002 * torch.randn(n, generator=g))
    return torch.cat(parts)


def test_seam_ratio_near_one_without_seams_and_large_with_them() -> None:
    joins = [1.0, 2.0, 3.0]
    stationary = seam_ratio(_noise(4.0, 1), SR, joins)
    assert len(stationary["per_join"]) == 3 and 0.8 < stationary["ratio"] < 1.5
    t = torch.arange(4 * SR) / SR
    tone = torch.sin(2 * math.pi * 330 * t) + 0.01 * torch.randn(4 * SR, generator=_gen(2))
    assert 0.8 < seam_ratio(tone, SR, joins)["ratio"] < 1.5
    seams = _chunked(4.0, joins, seed=3)
    r = seam_ratio(seams, SR, joins)
    assert r["ratio"] > 5 and min(r["per_join"]) > 3 and r["median_inside"] > 0
    assert seam_ratio(seams, SR, [0.5, 1.5, 2.5])["ratio"] < 1.5  # joins where nothing happens: ~1


def test_seam_ratio_errors() -> None:
    x = _noise(2.0, 4)
    with pytest.raises(ValueError, match="inside the clip"):
        seam_ratio(x, SR, [2.5])
    with pytest.raises(ValueError, match="at least one"):
        seam_ratio(x, SR, [])
    with pytest.raises(ValueError, match="no frames inside"):
        seam_ratio(x, SR, [0.05 * k for k in range(1, 40)])


# ------------------------------------------------------------------------------------------- SI-SNR
def test_si_snr_improvement_sign_and_zero() -> None:
    clean = torch.randn(3, 2, 4000, generator=_gen(5))
    noisy = clean + 0.5 * torch.randn(3, 2, 4000, generator=_gen(6))
    zero = si_snr_improvement(noisy, noisy, clean)
    assert zero.shape == (3,) and zero.abs().max() < 1e-9
    better = si_snr_improvement(clean + 0.05 * (noisy - clean), noisy, clean)
    assert (better > 15).all()  # 1/10 of the noise: +20 dB
    assert (si_snr_improvement(clean + 2 * (noisy - clean), noisy, clean) < -5).all()
    torch.testing.assert_close(si_snr_improvement(3 * noisy[0, 0], noisy[0, 0], clean[0, 0]),
                               torch.zeros(1, dtype=torch.float64), atol=1e-6, rtol=0)  # scale-invariant
    with pytest.raises(ValueError, match="shape"):
        si_snr_improvement(noisy, noisy[:2], clean)


# -------------------------------------------------------------------------------------------- tempo
def _clicks(bpm: float, seconds: float = 10.0, offset: float = 0.1) -> torch.Tensor:
    x = torch.zeros(int(seconds * SR))
    click = torch.hann_window(24)  # 1 ms
    for k in range(int((seconds - offset) * bpm / 60)):
        i = round((offset + k * 60 / bpm) * SR)
        x[i : i + len(click)] = click
    return x


def _drums(bpm: float, seconds: float = 10.0) -> torch.Tensor:
    """Kick (pitch-dropping sine) on the beats, a noise hi-hat on every 8th, some noise."""
    x = 0.003 * torch.randn(int(seconds * SR), generator=_gen(7))
    t = torch.arange(int(0.15 * SR)) / SR
    kick = torch.sin(2 * math.pi * (50 * t + 100 * (1 - torch.exp(-30 * t)) / 30)) * torch.exp(-20 * t)
    hat_noise = torch.randn(int(0.04 * SR), generator=_gen(8))
    hat = 0.5 * (hat_noise - hat_noise.roll(1)) * torch.exp(-80 * torch.arange(len(hat_noise)) / SR)
    for k in range(int((seconds - 0.3) * bpm / 30)):
        i = round((0.05 + k * 30 / bpm) * SR)
        x[i : i + len(hat)] += hat
        if k % 2 == 0:
            x[i : i + len(kick)] += kick
    return x


@pytest.mark.parametrize("bpm", [60, 90, 120, 150])
def test_click_train_tempo(bpm: int) -> None:
    assert estimate_bpm(_clicks(bpm), SR) == pytest.approx(bpm, abs=2.0)


@pytest.mark.parametrize("bpm", [100, 120, 128])
def test_drum_pattern_tempo_is_the_beat_not_the_hats(bpm: int) -> None:
    assert estimate_bpm(_drums(bpm), SR) == pytest.approx(bpm, abs=2.0)


def test_tempo_other_rates_and_edge_cases() -> None:
    x = resample(_clicks(120), SR, 44100)
    assert estimate_bpm(x, 44100) == pytest.approx(120, abs=2.0)
    env, rate = onset_strength(x, 44100)
    assert 150 < rate < 250 and env.dim() == 1
    assert math.isnan(estimate_bpm(torch.zeros(5 * SR), SR))  # no onsets
    with pytest.raises(ValueError, match="too short"):
        estimate_bpm(_clicks(120, seconds=2.0), SR)
    with pytest.raises(ValueError):
        estimate_bpm(_clicks(120), SR, min_bpm=200, max_bpm=100)


def test_tempo_error() -> None:
    e = tempo_error(122.0, 120.0)
    assert e["abs_error"] == pytest.approx(2.0) and e["rel_error"] == pytest.approx(2 / 120)
    assert e["accuracy1"] and e["accuracy2"]
    half = tempo_error(60.5, 120.0)
    assert not half["accuracy1"] and half["accuracy2"]
    assert tempo_error(245.0, 120.0)["accuracy2"]
    assert not any(tempo_error(90.0, 120.0)[k] for k in ("accuracy1", "accuracy2"))
    assert not tempo_error(math.nan, 120.0)["accuracy2"]
    with pytest.raises(ValueError):
        tempo_error(120.0, 0.0)
