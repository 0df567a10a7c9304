import math

import pytest
import torch

from melody_core import FRAMES_PER_TOKEN
from melody_core.models.dpd import AngleEncoder, DPDConfig, DualPathDiffusion

PAPER_PARAMS = 296.6e6  # §5.1


def _small() -> DPDConfig:
    return DPDConfig(d_hid=32, n_blocks=2, n_heads=2, segment_size=16, vocab_size=50, sru_hidden=16)


def _inputs(cfg: DPDConfig, b: int, length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    z = torch.randn(b, length, cfg.d_latent)
    delta = torch.rand(b, length) * (math.pi / 2)
    tokens = torch.randint(0, cfg.vocab_size, (b, math.ceil(length / FRAMES_PER_TOKEN)))
    return z, delta, tokens


@pytest.mark.parametrize("length", [1, 37, 250, 2500])
def test_tiny_shapes_any_length(length: int) -> None:
    cfg = DPDConfig.tiny()
    model = DualPathDiffusion(cfg).eval()
    z, delta, tokens = _inputs(cfg, 2, length)
    with torch.no_grad():
        v = model(z, delta, tokens, torch.tensor([False, True]))
    assert v.shape == (2, length, cfg.d_latent)
    assert torch.isfinite(v).all()


def test_forward_backward_finite_grads() -> None:
    cfg = _small()
    model = DualPathDiffusion(cfg)
    for block in model.blocks:  # FiLM starts as the identity (zero init): give it weights to pass grads
        torch.nn.init.normal_(block.fine.film.proj.weight, std=0.02)
    z, delta, tokens = _inputs(cfg, 3, 70)
    v = model(z, delta, tokens, torch.tensor([False, True, False]))
    (v - z).pow(2).mean().backward()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    # every part of the network is reached: embeddings, angle vectors, the CFG null vector, each block
    for name in ("token_embedding.weight", "angle.e_start", "angle.e_end", "null_cond", "w_in.weight"):
        assert model.get_parameter(name).grad.abs().sum() > 0, name
    for i in range(cfg.n_blocks):
        for part in ("coarse.self_attn.q.weight", "coarse.cross_attn.kv.weight", "fine.sru.layers.0.weight"):
            assert model.get_parameter(f"blocks.{i}.{part}").grad.abs().sum() > 0, f"blocks.{i}.{part}"


def test_cfg_rows() -> None:
    """Uncond rows differ from cond rows, ignore the tokens, and match tokens=None."""
    cfg = _small()
    model = DualPathDiffusion(cfg).eval()
    z, delta, tokens = _inputs(cfg, 1, 90)
    other = torch.randint(0, cfg.vocab_size, tokens.shape)
    z2, delta2 = z.expand(2, -1, -1), delta.expand(2, -1)
    with torch.no_grad():
        v = model(z2, delta2, torch.cat([tokens, tokens]), torch.tensor([False, True]))
        v_other = model(z2, delta2, torch.cat([other, other]), torch.tensor([False, True]))
        v_none = model(z, delta, None)
        v_empty = model(z, delta, tokens[:, :0])
    assert (v[0] - v[1]).abs().max() > 1e-3  # conditional != unconditional
    torch.testing.assert_close(v_other[1], v[1])  # unconditional row does not see the tokens
    assert (v_other[0] - v[0]).abs().max() > 1e-3  # conditional row does
    torch.testing.assert_close(v_none[0], v[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(v_empty, v_none)


def test_mixed_batch_equals_rows_alone() -> None:
    cfg = _small()
    model = DualPathDiffusion(cfg).eval()
    z, delta, tokens = _inputs(cfg, 3, 64)
    uncond = torch.tensor([True, False, False])
    with torch.no_grad():
        v = model(z, delta, tokens, uncond)
        rows = [slice(i, i + 1) for i in range(3)]
        alone = [model(z[r], delta[r], tokens[r], uncond[r]) for r in rows]
    torch.testing.assert_close(v, torch.cat(alone), atol=1e-5, rtol=1e-5)


def test_token_count_mismatch() -> None:
    """ceil(L/10) tokens cover the window; fewer or more are accepted (placed by index)."""
    cfg = _small()
    model = DualPathDiffusion(cfg).eval()
    z, delta, tokens = _inputs(cfg, 2, 95)  # 10 tokens
    assert tokens.shape[1] == 10
    with torch.no_grad():
        v = model(z, delta, tokens)
        v_short = model(z, delta, tokens[:, :4])
        v_long = model(z, delta, torch.cat([tokens, tokens], 1))
    for out in (v_short, v_long):
        assert out.shape == v.shape and torch.isfinite(out).all()
        assert (out - v).abs().max() > 1e-4
    with pytest.raises(ValueError):
        model(z, delta, tokens[:1])  # row count mismatch
    with pytest.raises(ValueError):
        model(z, delta[:, :-1], tokens)  # angle vector must be (B, L)


def test_eval_is_deterministic() -> None:
    cfg = _small()
    model = DualPathDiffusion(cfg).eval()
    z, delta, tokens = _inputs(cfg, 2, 123)
    with torch.no_grad():
        a = model(z, delta, tokens, torch.tensor([False, True]))
        b = model(z, delta, tokens, torch.tensor([False, True]))
    assert torch.equal(a, b)


def test_angle_encoding_is_eq11() -> None:
    enc = AngleEncoder(256, 32)
    delta = torch.rand(2, 9) * (math.pi / 2)
    d = delta.unsqueeze(-1)
    ref = enc.mlp(torch.sin(d) * enc.e_start + torch.cos(d) * enc.e_end)
    torch.testing.assert_close(enc(delta), ref, atol=1e-5, rtol=1e-5)


def test_paper_parameter_count_on_meta() -> None:
    with torch.device("meta"):
        model = DualPathDiffusion(DPDConfig.paper())
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - PAPER_PARAMS) / PAPER_PARAMS < 0.10, n
    cfg = DPDConfig.paper()
    assert (cfg.d_hid, cfg.n_blocks, cfg.segment_size, cfg.vocab_size) == (768, 8, 64, 1024)


def test_config_round_trip() -> None:
    for name in ("tiny", "paper"):
        cfg = DPDConfig.preset(name)
        assert DPDConfig.from_dict(cfg.to_dict()) == cfg


def test_rejects_bad_config() -> None:
    with pytest.raises(ValueError):
        DualPathDiffusion(DPDConfig(d_hid=30, n_heads=2))  # head dim 15 is odd (RoPE)
    with pytest.raises(ValueError):
        DualPathDiffusion(DPDConfig(segment_size=15))
