"""Learned phase of the iSTFT decoder (APNet head, anti-wrapping losses, STFT consistency) and the
committed tiny bundle's VAE decoding exactly as before these options existed."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from melody_core.models import gan_losses as gl
from melody_core.models import phase_losses as pl
from melody_core.models._vae_blocks import frame_spectrum
from melody_core.models.vae_gan import AudioVAE, VAEConfig

HOP, N_FFT = 96, 384
BUNDLE = Path(__file__).resolve().parents[1] / "resources" / "models" / "melody-tiny"


def _target(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    wav = 0.1 * torch.randn(2, 40 * HOP, generator=g)
    return wav, frame_spectrum(wav, N_FFT, HOP)  # (B, T), (B, L, F)


@pytest.mark.parametrize(
    "loss",
    [pl.instantaneous_phase_loss, pl.group_delay_loss, pl.instantaneous_frequency_loss, pl.phase_loss],
)
def test_phase_losses_zero_at_true_phase_and_wrap_invariant(loss) -> None:
    _, spec = _target()
    phase = spec.angle()
    assert float(loss(phase, phase)) == pytest.approx(0.0, abs=1e-6)
    g = torch.Generator().manual_seed(1)
    wraps = torch.randint(-3, 4, phase.shape, generator=g).float() * 2 * math.pi  # any 2π multiple per bin
    assert float(loss(phase + wraps, phase)) == pytest.approx(0.0, abs=1e-4)
    off = phase + 0.5 * torch.randn(phase.shape, generator=g)
    assert float(loss(off, phase)) > 0.1  # the loss can fail
    assert float(loss(off + wraps, phase)) == pytest.approx(float(loss(off, phase)), abs=1e-4)
    assert float(pl.anti_wrap(torch.tensor(3 * math.pi / 2))) == pytest.approx(math.pi / 2, abs=1e-6)


def test_real_imag_and_consistency_zero_for_a_true_spectrum() -> None:
    _, spec = _target()
    log_mag, phase = spec.abs().log(), spec.angle()
    assert float(pl.real_imag_loss(log_mag, phase, spec)) == pytest.approx(0.0, abs=1e-5)
    assert float(pl.consistency_loss(log_mag, phase, N_FFT, HOP)) == pytest.approx(0.0, abs=1e-5)
    g = torch.Generator().manual_seed(2)
    random_phase = torch.rand(phase.shape, generator=g) * 2 * math.pi
    assert float(pl.real_imag_loss(log_mag, random_phase, spec)) > 0.1
    # an arbitrary phase on the same magnitudes is no STFT of any signal
    assert float(pl.consistency_loss(log_mag, random_phase, N_FFT, HOP)) > 0.1
    wrapped = phase + 2 * math.pi
    assert float(pl.consistency_loss(log_mag, wrapped, N_FFT, HOP)) == pytest.approx(0.0, abs=1e-4)


def _apnet(**kw) -> VAEConfig:
    return dataclasses.replace(VAEConfig.tiny(), phase_head="apnet", phase_blocks=2, **kw)


def test_apnet_head_forward_losses_and_gradients() -> None:
    cfg = _apnet(phase_weight=1.0, ri_weight=1.0, consistency_weight=1.0)
    vae = AudioVAE(cfg).train()
    wav, _ = _target()
    out = vae(wav, latent_noise=0.1)
    assert out.phase is not None and out.phase.shape == out.log_mag.shape == (2, 40, N_FFT // 2 + 1)
    assert float(out.phase.detach().abs().max()) <= math.pi + 1e-6  # an angle
    terms = gl.generator_loss_terms(out, wav, cfg)
    assert {"phase", "ri", "cons", "spec", "mel", "stft", "kl", "total"} == set(terms)
    assert all(torch.isfinite(v) for v in terms.values())
    terms["phase"].backward()
    dec = vae.decoder
    assert dec.phase_real.weight.grad.abs().sum() > 0 and dec.phase_imag.weight.grad.abs().sum() > 0
    assert dec.head.weight.grad is None  # the phase losses do not reach the magnitude head
    no_phase = dataclasses.replace(cfg, phase_weight=0.0, ri_weight=0.0, consistency_weight=0.0)
    assert not {"phase", "ri", "cons"} & set(gl.generator_loss_terms(out, wav, no_phase))
    # latent noise only in training mode: eval decodes the posterior mean deterministically
    vae.eval()
    torch.testing.assert_close(vae(wav, latent_noise=0.1).recon, vae(wav).recon, rtol=0, atol=0)


def _chunk_apnet() -> AudioVAE:
    cfg = _apnet(layer_scale_init=1.0, decoder_channels=64, istft_phase_iters=0)
    return AudioVAE(cfg).eval()


def test_apnet_context_frames_is_the_receptive_field() -> None:
    vae = _chunk_apnet()
    base = AudioVAE(dataclasses.replace(vae.config, phase_head="linear")).eval()
    c = vae.context_frames
    assert c == base.context_frames + 2 * (vae.config.convnext_kernel // 2)  # 2 more ConvNeXt blocks
    z = torch.randn(1, 2 * c + 21, 16, requires_grad=True)
    j = c + 10
    vae.decode(z)[:, j * HOP : (j + 1) * HOP].pow(2).sum().backward()
    depends = (z.grad.abs().sum(-1)[0] > 0).nonzero().squeeze(1) - j
    assert int(depends.abs().max()) == c


def test_apnet_decode_chunk_matches_full_decode() -> None:
    vae = _chunk_apnet()
    c = vae.context_frames
    z = torch.randn(1, 400, 16)
    with torch.no_grad():
        full = vae.decode(z)
        bounds = [0, 3, 150, 220, 397, 400]
        pieces = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            left = z[:, max(0, a - c) : a] if a > 0 else None
            right = z[:, b : b + c] if b < z.shape[1] else None
            pieces.append(vae.decode_chunk(z[:, a:b], left, right))
        assert (torch.cat(pieces, 1) - full).abs().max() <= 1e-4
        a, b = 200, 260  # too little context is not exact: the test can fail
        short = vae.decode_chunk(z[:, a:b], z[:, a - 1 : a], z[:, b : b + 1])
        assert (short - full[:, a * HOP : b * HOP]).abs().max() > 1e-4


@pytest.mark.skipif(not (BUNDLE / "config.json").is_file(), reason="committed bundle not present")
def test_committed_bundle_decodes_as_when_it_was_committed() -> None:
    """Golden values of the committed bundle's decoder (v2 bundle a90a818bb0b2: APNet phase head, no
    Griffin-Lim projections), written when it was committed; the first bundle's values (linear head,
    commit a922acd) were checked here until it was replaced."""
    from melody_core.checkpoint import load_bundle

    vae = load_bundle(BUNDLE, components=["vae"]).models["vae"]
    assert vae.config.phase_head == "apnet" and vae.config.istft_phase == "head"
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 120, 16, generator=g)
    with torch.no_grad():
        out = vae.decode(z)[0]
    assert float(out.pow(2).mean().sqrt()) == pytest.approx(0.163871631026268, rel=1e-4)
    expected = [0.017885467037558556, 0.04866275563836098, 0.020194394513964653, 0.03958078846335411,
                0.007802668958902359, -0.09986592084169388, -0.005649238359183073, -0.02988218516111374]
    torch.testing.assert_close(out[::1500], torch.tensor(expected), rtol=1e-4, atol=1e-5)


def test_trainer_inits_an_apnet_decoder_from_a_linear_head_vae() -> None:
    from types import SimpleNamespace

    from melody_core.train.stage import TrainError
    from melody_core.train.vae import VAEStage

    small = dict(decoder_channels=32, encoder_channels=(16, 16, 16, 32))
    old = AudioVAE(dataclasses.replace(VAEConfig.tiny(), **small))
    new = AudioVAE(dataclasses.replace(_apnet(), **small))
    fresh_phase = new.decoder.phase_real.weight.detach().clone()
    stage = VAEStage()
    stage.ctx = SimpleNamespace(init=SimpleNamespace(model=old, source="test"), dist=SimpleNamespace(rank=0))
    stage.init_weights(new)
    n_freq = N_FFT // 2 + 1
    torch.testing.assert_close(new.decoder.head.weight, old.decoder.head.weight[:n_freq], rtol=0, atol=0)
    block, old_block = new.decoder.blocks[0].fc1.weight, old.decoder.blocks[0].fc1.weight
    torch.testing.assert_close(block, old_block, rtol=0, atol=0)
    torch.testing.assert_close(new.encoder.proj.weight, old.encoder.proj.weight, rtol=0, atol=0)
    torch.testing.assert_close(new.decoder.phase_real.weight, fresh_phase, rtol=0, atol=0)  # left as built
    other = AudioVAE(dataclasses.replace(_apnet(), decoder_channels=48, encoder_channels=(16, 16, 16, 32)))
    with pytest.raises(TrainError, match="do not fit"):
        stage.init_weights(other)  # other widths do not fit
