import math

import pytest
import torch

from melody_core import FRAMES_PER_TOKEN
from melody_core.models.dpd import DPDConfig, DualPathDiffusion
from melody_core.models.unet1d import UNet1D, UNet1DConfig, count_parameters


def _small() -> UNet1DConfig:
    return UNet1DConfig(channels=8, channel_mults=(1, 2, 3), d_cond=16, n_heads=2, vocab_size=40)


def _inputs(cfg: UNet1DConfig, b: int, length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    z = torch.randn(b, length, cfg.d_latent)
    delta = torch.rand(b, length) * (math.pi / 2)
    tokens = torch.randint(0, cfg.vocab_size, (b, math.ceil(length / FRAMES_PER_TOKEN)))
    return z, delta, tokens


@pytest.mark.parametrize("preset", ["tiny", "paper"])
def test_matching_parameter_count(preset: str) -> None:
    dpd = DPDConfig.preset(preset)
    cfg = UNet1DConfig.matching(dpd)
    n_unet, n_dpd = count_parameters(UNet1D, cfg), count_parameters(DualPathDiffusion, dpd)
    assert abs(n_unet / n_dpd - 1) < 0.10, (n_unet, n_dpd)
    assert (cfg.d_latent, cfg.vocab_size, cfg.angle_dim) == (dpd.d_latent, dpd.vocab_size, dpd.angle_dim)


@pytest.mark.parametrize("length", [1, 37, 250, 2500])
def test_tiny_shapes_any_length(length: int) -> None:
    cfg = UNet1DConfig.tiny()
    model = UNet1D(cfg).eval()
    z, delta, tokens = _inputs(cfg, 2, length)
    with torch.no_grad():
        v = model(z, delta, tokens, torch.tensor([False, True]))
    assert v.shape == (2, length, cfg.d_latent)
    assert torch.isfinite(v).all()


def test_forward_backward_finite_grads() -> None:
    cfg = _small()
    model = UNet1D(cfg)
    for module in model.modules():  # FiLM starts as the identity (zero init): give it weights
        if module.__class__.__name__ == "FiLM":
            torch.nn.init.normal_(module.proj.weight, std=0.02)
    z, delta, tokens = _inputs(cfg, 3, 45)
    v = model(z, delta, tokens, torch.tensor([False, True, False]))
    (v - z).pow(2).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    for name in ("token_embedding.weight", "angle.e_start", "null_cond", "mid_attn.cross_attn.kv.weight"):
        assert model.get_parameter(name).grad.abs().sum() > 0, name


def test_cfg_rows_and_batch_consistency() -> None:
    cfg = _small()
    model = UNet1D(cfg).eval()
    z, delta, tokens = _inputs(cfg, 1, 60)
    other = torch.randint(0, cfg.vocab_size, tokens.shape)
    z2, delta2 = z.expand(2, -1, -1), delta.expand(2, -1)
    with torch.no_grad():
        v = model(z2, delta2, torch.cat([tokens, tokens]), torch.tensor([False, True]))
        v_other = model(z2, delta2, torch.cat([other, other]), torch.tensor([False, True]))
        v_none = model(z, delta, None)
        v_cond = model(z, delta, tokens)
    assert (v[0] - v[1]).abs().max() > 1e-4
    torch.testing.assert_close(v_other[1], v[1])
    torch.testing.assert_close(v_none[0], v[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(v_cond[0], v[0], atol=1e-5, rtol=1e-5)


def test_eval_is_deterministic_and_validates() -> None:
    cfg = _small()
    model = UNet1D(cfg).eval()
    z, delta, tokens = _inputs(cfg, 2, 33)
    with torch.no_grad():
        assert torch.equal(model(z, delta, tokens), model(z, delta, tokens))
    with pytest.raises(ValueError):
        model(z, delta[:, :-1], tokens)
    with pytest.raises(ValueError):
        model(z, delta, tokens[:1])


def test_config_round_trip() -> None:
    cfg = _small()
    assert UNet1DConfig.from_dict(cfg.to_dict()) == cfg
