"""Audio VAE-GAN (§4.1, §5.1): shapes, gradients, chunked decoding, receptive field, losses, sizes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from melody_core.config import ConfigError
from melody_core.models import gan_losses as gl
from melody_core.models._vae_blocks import ISTFTDecoder, conv1d_last, frame_spectrum
from melody_core.models.discriminators import VAEGANDiscriminator
from melody_core.models.vae_gan import AudioVAE, VAEConfig, vae_gan_parameter_count

HOP = 96
PAPER_TOTAL = 100.1e6  # §5.1


def tiny_config(decoder_type: str) -> VAEConfig:
    """The tiny preset with the requested decoder (HiFi-GAN narrowed so the test stays fast)."""
    cfg = VAEConfig.tiny()
    if decoder_type == "hifigan":
        return dataclasses.replace(cfg, decoder_type="hifigan", decoder_channels=32)
    return dataclasses.replace(cfg, decoder_type="istft")


def _grad_norm(module: torch.nn.Module) -> float:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    assert grads, "no gradients reached the module"
    assert all(torch.isfinite(g).all() for g in grads)
    return float(sum(g.abs().sum() for g in grads))


@pytest.mark.parametrize("decoder_type", ["hifigan", "istft"])
def test_forward_backward_with_discriminators_and_losses(decoder_type: str) -> None:
    cfg = tiny_config(decoder_type)
    vae, disc = AudioVAE(cfg).train(), VAEGANDiscriminator(cfg)
    wav = 0.1 * torch.randn(2, 40 * HOP)
    out = vae(wav)
    assert out.recon.shape == wav.shape
    assert out.mean.shape == out.logvar.shape == out.z.shape == (2, 40, cfg.latent_dim)

    # discriminator step on detached reconstructions
    d_loss = gl.discriminator_loss(disc(wav), disc(out.recon.detach()), cfg)
    assert torch.isfinite(d_loss)
    d_loss.backward()
    assert _grad_norm(disc) > 0
    disc.zero_grad()

    # generator step: every term finite, gradients reach encoder and decoder, not the discriminator
    terms = gl.generator_loss_terms(out, wav, cfg, disc(wav), disc(out.recon))
    spec = {"spec"} if decoder_type == "istft" else set()  # the HiFi-GAN decoder has no head spectrum
    assert set(terms) == {"stft", "mel", "kl", "adv", "fm", "total"} | spec
    assert all(torch.isfinite(v) for v in terms.values())
    terms["total"].backward()
    assert _grad_norm(vae.encoder) > 0 and _grad_norm(vae.decoder) > 0


@pytest.mark.parametrize("groups", [1, 24])
def test_conv1d_last_matches_conv1d(groups: int) -> None:
    conv = torch.nn.Conv1d(24, 24, 7, padding=3, groups=groups)
    x = torch.randn(2, 50, 24)
    expected = conv(x.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(conv1d_last(x, conv), expected, rtol=1e-5, atol=1e-5)


def test_discriminator_outputs() -> None:
    cfg = VAEConfig.tiny()
    logits, fmaps = VAEGANDiscriminator(cfg)(torch.randn(3, 4001))  # length not a multiple of any period
    assert len(logits) == len(fmaps) == len(cfg.mpd_periods) + len(cfg.mrsd_resolutions)
    assert all(lg.dim() == 2 and lg.shape[0] == 3 for lg in logits)
    assert [len(f) for f in fmaps[: len(cfg.mpd_periods)]] == [len(cfg.mpd_channels) + 1] * len(
        cfg.mpd_periods
    )


def test_losses_values() -> None:
    x = torch.randn(2, 4800)
    assert gl.reconstruction_loss(x, x).abs() < 1e-6
    assert gl.reconstruction_loss(x + 0.1 * torch.randn_like(x), x) > 0
    zeros = torch.zeros(2, 5, 16)
    assert gl.kl_loss(zeros, zeros) == 0
    assert gl.kl_loss(zeros + 1, zeros) == pytest.approx(0.5)
    real, fake = [torch.full((2, 3), 2.0)], [torch.full((2, 3), -2.0)]
    assert gl.discriminator_adversarial_loss(real, fake, "hinge") == 0  # both beyond the margin
    assert gl.discriminator_adversarial_loss(real, fake, "lsgan") == pytest.approx(1.0 + 4.0)
    assert gl.generator_adversarial_loss(fake, "hinge") == pytest.approx(2.0)
    assert gl.generator_adversarial_loss(fake, "lsgan") == pytest.approx(9.0)
    maps = [[torch.ones(2, 4), torch.zeros(2, 4)]]
    assert gl.feature_matching_loss(maps, maps) == 0
    assert gl.feature_matching_loss(maps, [[torch.zeros(2, 4), torch.zeros(2, 4)]]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        gl.generator_adversarial_loss(fake, "wgan")


def test_encode_rejects_bad_length_and_eval_is_deterministic() -> None:
    vae = AudioVAE(tiny_config("istft")).eval()
    with pytest.raises(ValueError, match="multiple"):
        vae.encode(torch.randn(1, 1000))
    with pytest.raises(ValueError):
        vae.encode(torch.randn(960))
    mean, logvar = vae.encode(torch.randn(1, 960))
    assert mean.shape == (1, 10, 16)
    assert (logvar >= vae.config.logvar_min).all() and (logvar <= vae.config.logvar_max).all()
    out = vae(torch.randn(1, 960))
    torch.testing.assert_close(out.z, out.mean, rtol=0, atol=0)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    torch.testing.assert_close(vae.sample(mean, logvar, g1), vae.sample(mean, logvar, g2), rtol=0, atol=0)


def _chunk_model(decoder_type: str) -> AudioVAE:
    """"istft-gla": the iSTFT decoder with Griffin-Lim projections at inference."""
    cfg = tiny_config(decoder_type.removesuffix("-gla"))
    if decoder_type.startswith("istft"):  # full layer scale so far context matters at random init
        cfg = dataclasses.replace(cfg, layer_scale_init=1.0, decoder_channels=64)
    if decoder_type.endswith("-gla"):
        cfg = dataclasses.replace(cfg, istft_phase_iters=3)
    return AudioVAE(cfg).eval()


@pytest.mark.parametrize("decoder_type", ["hifigan", "istft", "istft-gla"])
def test_decode_chunk_matches_full_decode(decoder_type: str) -> None:
    vae = _chunk_model(decoder_type)
    c = vae.context_frames
    z = torch.randn(1, 500, 16)  # 2 s of latents
    with torch.no_grad():
        full = vae.decode(z)
        for bounds in ([0, 100, 230, 250, 500], [0, 3, 497, 500], [0, 125, 250, 375, 500]):
            pieces = []
            for a, b in zip(bounds[:-1], bounds[1:]):
                left = z[:, max(0, a - c) : a] if a > 0 else None  # short only at the true start
                right = z[:, b : b + c] if b < z.shape[1] else None
                pieces.append(vae.decode_chunk(z[:, a:b], left, right))
                assert pieces[-1].shape == (1, (b - a) * HOP)
            assert (torch.cat(pieces, 1) - full).abs().max() <= 1e-4
        # too little context is not exact: the test can fail
        a, b = 200, 260
        short = vae.decode_chunk(z[:, a:b], z[:, a - 1 : a], z[:, b : b + 1])
        assert (short - full[:, a * HOP : b * HOP]).abs().max() > 1e-4


@pytest.mark.parametrize("decoder_type", ["hifigan", "istft", "istft-gla"])
def test_context_frames_is_the_receptive_field(decoder_type: str) -> None:
    vae = _chunk_model(decoder_type)
    c = vae.context_frames
    z = torch.randn(1, 2 * c + 21, 16, requires_grad=True)
    j = c + 10  # an output frame with more than c frames on both sides
    vae.decode(z)[:, j * HOP : (j + 1) * HOP].pow(2).sum().backward()
    depends = (z.grad.abs().sum(-1)[0] > 0).nonzero().squeeze(1) - j  # latent offsets it depends on
    assert int(depends.abs().max()) == c
    assert int(depends.min()) >= -c and int(depends.max()) <= c


def test_paper_parameter_count_and_meta_construction() -> None:
    counts = vae_gan_parameter_count(VAEConfig.paper())
    assert set(counts) == {"encoder", "decoder", "discriminators", "total"}
    assert counts["total"] == counts["encoder"] + counts["decoder"] + counts["discriminators"]
    assert abs(counts["total"] - PAPER_TOTAL) <= 0.1 * PAPER_TOTAL
    with torch.device("meta"):
        vae = AudioVAE(VAEConfig.paper())
        disc = VAEGANDiscriminator(VAEConfig.paper())
    assert all(p.is_meta for p in vae.parameters()) and all(p.is_meta for p in disc.parameters())
    assert vae.num_parameters() == counts["encoder"] + counts["decoder"]
    assert vae.context_frames > 0
    with torch.device("meta"):
        assert AudioVAE(VAEConfig.tiny()).num_parameters() > 0


def test_config_round_trip_and_validation() -> None:
    for cfg in (VAEConfig.tiny(), VAEConfig.paper()):
        assert VAEConfig.from_dict(cfg.to_dict()) == cfg
    assert (
        VAEConfig.tiny().decoder_type in ("hifigan", "istft") and VAEConfig.paper().decoder_type == "hifigan"
    )
    with pytest.raises(ConfigError):
        VAEConfig(decoder_type="wavenet")
    with pytest.raises(ConfigError):
        VAEConfig(upsample_rates=(8, 8, 2))  # product != hop
    with pytest.raises(ConfigError):
        VAEConfig(encoder_channels=(32, 64))
    with pytest.raises(ConfigError, match="encoder_type"):
        VAEConfig(encoder_type="mel")
    with pytest.raises(ConfigError, match=">= 0"):
        VAEConfig(decoder_type="istft", istft_phase_iters=-1)
    assert VAEConfig.paper().hop == HOP and VAEConfig.paper().sample_rate == 24_000


def test_frame_spectrum_inverts_the_istft_overlap_add() -> None:
    dec = ISTFTDecoder(tiny_config("istft"))
    wav = torch.randn(2, 60 * HOP)
    spec = frame_spectrum(wav, dec.n_fft, HOP)  # (B, L, F)
    assert spec.shape == (2, 60, dec.n_freq)
    back = dec.overlap_add(torch.fft.irfft(spec, n=dec.n_fft, dim=-1))
    edge = dec.n_fft  # near the ends frames are missing, as in any decode
    torch.testing.assert_close(back[:, edge:-edge], wav[:, edge:-edge], rtol=0, atol=1e-5)
    # a frame centred on sample f*hop + hop/2: an impulse there peaks frame f only at full window weight
    impulse = torch.zeros(1, 60 * HOP)
    impulse[0, 20 * HOP + HOP // 2] = 1.0
    torch.testing.assert_close(frame_spectrum(impulse, dec.n_fft, HOP)[0, 20].abs(), torch.ones(dec.n_freq))


def test_head_spectrum_loss_and_phase_projections() -> None:
    cfg = dataclasses.replace(tiny_config("istft"), spectral_weight=2.0)
    vae = AudioVAE(cfg).train()
    wav = 0.1 * torch.randn(2, 40 * HOP)
    out = vae(wav)
    assert out.log_mag is not None and out.log_mag.shape == (2, 40, cfg.istft_n_fft // 2 + 1)
    terms = gl.generator_loss_terms(out, wav, cfg)
    assert set(terms) == {"stft", "mel", "spec", "kl", "total"}
    terms["spec"].backward()
    assert _grad_norm(vae.decoder.head) > 0
    no_spec = dataclasses.replace(cfg, spectral_weight=0.0)
    assert "spec" not in gl.generator_loss_terms(out, wav, no_spec)  # weight 0: absent
    # zero exactly at the target's own spectrum, positive elsewhere
    ref = frame_spectrum(wav, cfg.istft_n_fft, HOP).abs().log()
    assert float(gl.head_spectrum_loss(ref, wav, cfg.istft_n_fft, HOP)) == pytest.approx(0.0, abs=1e-5)
    assert float(gl.head_spectrum_loss(ref + 0.5, wav, cfg.istft_n_fft, HOP)) == pytest.approx(0.5, abs=1e-3)
    # Griffin-Lim projections keep the magnitudes and bring the waveform's own spectrum closer to them
    dec = vae.decoder.eval()
    log_mag, phase = ref, torch.rand_like(ref) * 6.28
    outs, errs = {}, []
    for iters in (0, 8):
        dec.phase_iters = iters
        outs[iters] = dec.synthesize(log_mag, phase)
        got = frame_spectrum(outs[iters], cfg.istft_n_fft, HOP).abs()
        errs.append(float((got - ref.exp()).abs().mean()))
    assert errs[1] < 0.7 * errs[0]
    dec.train()  # training never runs them: the losses see the network's own phases
    torch.testing.assert_close(dec.synthesize(log_mag, phase), outs[0], rtol=0, atol=0)


@pytest.mark.parametrize("encoder_type", ["conv", "stft"])
def test_encoders_shapes_gradients_and_locality(encoder_type: str) -> None:
    cfg = dataclasses.replace(tiny_config("istft"), encoder_type=encoder_type)
    vae = AudioVAE(cfg).train()
    wav = (0.1 * torch.randn(2, 40 * HOP)).requires_grad_(True)
    mean, logvar = vae.encode(wav)
    assert mean.shape == logvar.shape == (2, 40, cfg.latent_dim)
    mean[0, 20].sum().backward()  # one latent frame depends on nearby samples only, through every layer
    touched = (wav.grad[0].abs() > 0).nonzero().squeeze(1)
    assert int(touched.min()) > 0 and int(touched.max()) < 40 * HOP - 1
    assert wav.grad[1].abs().sum() == 0  # no mixing across the batch
    assert all(p.grad is not None for p in vae.encoder.parameters())


def test_config_written_before_the_trainer_options_moved_loads() -> None:
    """Bundles and runs made before the trainer options left VAEConfig still hold them: such a dict
    loads to the same config (they are dropped and reported by `moved_to_trainer`); other unknown
    keys are still refused."""

    data = VAEConfig.tiny().to_dict()
    old = {**data, "adversarial_start_step": 1_000_000_000, "freeze_encoder": True, "calibrate_gain": False}
    assert VAEConfig.from_dict(old) == VAEConfig.from_dict(data) == VAEConfig.tiny()
    assert VAEConfig.moved_to_trainer(old) == {
        "adversarial_start_step": 1_000_000_000, "freeze_encoder": True, "calibrate_gain": False}
    assert "freeze_encoder" not in VAEConfig.tiny().to_dict()
    with pytest.raises(ConfigError, match="unknown field"):
        VAEConfig.from_dict({**data, "freeze_encoders": True})
