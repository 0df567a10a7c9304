"""Wav2Vec2-Conformer (semantic SSL model): shapes, frame alignment, masking, quantizer, losses."""

import math

import pytest
import torch

from melody_core import SAMPLE_RATE, SEMANTIC_RATE
from melody_core.models.ssl_conformer import (
    HOP,
    FeatureEncoder,
    GumbelQuantizer,
    SSLConfig,
    Wav2Vec2Conformer,
    hubert_frame_features,
    sample_negatives,
    span_mask,
)

PAPER_PARAMS = 199.5e6  # §5.1


def _tiny(**overrides) -> Wav2Vec2Conformer:
    cfg = SSLConfig.tiny()
    for k, v in {"dropout": 0.0, **overrides}.items():
        setattr(cfg, k, v)
    return Wav2Vec2Conformer(cfg)


def test_hop_is_25hz() -> None:
    assert HOP == SAMPLE_RATE // SEMANTIC_RATE == 960
    for cfg in (SSLConfig.tiny(), SSLConfig.paper()):
        assert math.prod(cfg.conv_strides) == HOP


def test_paper_param_count_meta() -> None:
    with torch.device("meta"):
        model = Wav2Vec2Conformer(SSLConfig.paper())
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - PAPER_PARAMS) / PAPER_PARAMS < 0.10, n
    assert all(p.is_meta for p in model.parameters())


def test_tiny_size_and_plain_state_dict() -> None:
    model = Wav2Vec2Conformer(SSLConfig.tiny())
    n = sum(p.numel() for p in model.parameters())
    assert 1e6 <= n <= 3e6, n
    keys = model.state_dict().keys()
    assert not any("parametrizations" in k for k in keys)
    clone = Wav2Vec2Conformer(SSLConfig.from_dict(SSLConfig.tiny().to_dict()))
    clone.load_state_dict(model.state_dict())  # strict, stable keys


def test_forward_backward_finite() -> None:
    model = _tiny()
    wav = torch.randn(2, 2 * SAMPLE_RATE)
    out = model(wav)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    for t in (out.contrastive_loss, out.diversity_loss, out.feature_penalty, out.accuracy):
        assert torch.isfinite(t)
    assert out.mask.shape == (2, 50)
    out.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if not n.startswith("hubert_head")}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert model.encoder.layers[0][0].weight.grad.abs().sum() > 0  # gradient reaches the encoder
    assert model.quantizer.codebook.grad.abs().sum() > 0  # straight-through to the codebook
    # at init the true target is one of K + 1 candidates: loss near log(K + 1)
    assert abs(out.contrastive_loss.item() - math.log(model.config.num_negatives + 1)) < 1.5


def test_loss_decreases_on_repeated_batch() -> None:
    model = _tiny()
    wav = torch.randn(2, 2 * SAMPLE_RATE)
    mask = span_mask(2, 50, 0.65, 5)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(20):
        torch.manual_seed(1)  # same distractors every step
        out = model(wav, mask=mask)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses


@pytest.mark.parametrize("num_samples", [960, 961, 1919, 1920, 960 * 7 + 5, SAMPLE_RATE])
def test_extract_shapes(num_samples: int) -> None:
    model = _tiny()
    model.train()
    feats = model.extract(torch.randn(3, num_samples))
    assert feats.shape == (3, num_samples // HOP, model.config.d_model)
    assert Wav2Vec2Conformer.num_frames(num_samples) == num_samples // HOP
    assert model.training  # mode restored
    assert not feats.requires_grad


def test_extract_layers_and_determinism() -> None:
    model = _tiny()
    wav = torch.randn(1, 4 * HOP)
    outs = [model.extract(wav, layer=i) for i in range(model.config.n_layers + 1)]
    assert all(o.shape == (1, 4, model.config.d_model) for o in outs)
    torch.testing.assert_close(model.extract(wav), outs[model.config.token_layer])
    assert not torch.allclose(outs[1], outs[2])
    with pytest.raises(ValueError):
        model.extract(wav, layer=model.config.n_layers + 1)
    with pytest.raises(ValueError):
        model.extract(torch.randn(1, HOP - 1))


@pytest.mark.parametrize("preset", ["tiny", "paper"])
def test_frames_align_to_hops(preset: str) -> None:
    """Frame j's receptive field is centred on hop j = [960 j, 960 (j + 1)): an impulse mid-hop
    changes frame j only; one at the hop's start (end) also reaches frame j - 1 (j + 1)."""
    cfg = SSLConfig.preset(preset)
    cfg.conv_channels = tuple(8 for _ in cfg.conv_channels)  # same geometry, narrow: fast
    cfg.conv_norm = "layer"  # "group" normalises each channel over time, i.e. globally
    encoder = FeatureEncoder(cfg).eval()
    n = 6
    base = torch.zeros(1, n * HOP)
    ref = encoder(base)  # (1, C, n)
    assert ref.shape[-1] == n
    assert HOP + 10 < encoder.receptive_field < 2 * HOP  # so the expected sets below hold
    expected = {3 * HOP + 5: {2, 3}, 3 * HOP + HOP // 2: {3}, 4 * HOP - 5: {3, 4}}
    for pos, want in expected.items():
        wav = base.clone()
        wav[0, pos] = 1.0
        changed = (encoder(wav) - ref).abs().amax(1)[0] > 1e-6  # (n,)
        assert set(torch.nonzero(changed).flatten().tolist()) == want, pos
    rf = encoder.receptive_field  # centred: equal padding (to one sample) on both sides
    assert abs(encoder.pad_left - encoder.pad_right) <= 1 and encoder.pad_left + encoder.pad_right == rf - HOP


def test_span_mask_shape_and_ratio() -> None:
    mask = span_mask(16, 250, 0.65, 5)
    assert mask.shape == (16, 250) and mask.dtype == torch.bool
    counts = mask.sum(1)
    assert (counts == counts[0]).all()  # same number per utterance
    ratio = counts[0].item() / 250
    assert 0.3 < ratio < 0.6, ratio  # ~1 - exp(-0.65) = 0.48 before equalising
    runs = mask[:, 1:] & ~mask[:, :-1]  # span starts after the first frame
    assert runs.sum(1).float().mean() < 250 * 0.65 / 5 + 5  # spans, not scattered frames
    assert span_mask(1, 2, 0.65, 5).sum() == 2  # minimum of 2 masked frames


def test_forward_mask_argument() -> None:
    model = _tiny()
    wav = torch.randn(2, 20 * HOP)
    mask = torch.zeros(2, 20, dtype=torch.bool)
    mask[:, 3:9] = True
    out = model(wav, mask=mask)
    assert torch.equal(out.mask, mask)
    assert model(wav, mask=False).mask.all()
    with pytest.raises(ValueError):
        model(wav, mask=torch.zeros(2, 19, dtype=torch.bool))


def test_negatives_exclude_own_frame() -> None:
    b, m, k = 3, 6, 50
    y = torch.arange(b * m, dtype=torch.float32).view(b, m, 1).expand(b, m, 4)  # frame id as value
    negs = sample_negatives(y, k)  # (B, M, K, F)
    assert negs.shape == (b, m, k, 4)
    own = y[:, :, None, :]
    assert not (negs == own).all(-1).any()
    utt = torch.arange(b).view(b, 1, 1) * m
    assert ((negs[..., 0] >= utt) & (negs[..., 0] < utt + m)).all()  # same utterance only


def test_quantizer_perplexity_and_codes() -> None:
    g, v = 2, 16
    uniform = torch.full((g, v), 1.0 / v)
    assert torch.isclose(GumbelQuantizer.perplexity(uniform), torch.tensor(float(g * v)), rtol=1e-4)
    onehot = torch.zeros(g, v)
    onehot[:, 3] = 1.0
    assert torch.isclose(GumbelQuantizer.perplexity(onehot), torch.tensor(float(g)), rtol=1e-4)
    quant = GumbelQuantizer(d_in=8, groups=g, entries=v, dim=12).eval()
    q, probs, ids = quant(torch.randn(10, 8))
    assert q.shape == (10, 12) and probs.shape == (10, g, v) and ids.shape == (10, g)
    expected = torch.cat([quant.codebook[i, ids[:, i]] for i in range(g)], dim=-1)  # (10, 12)
    torch.testing.assert_close(q, expected)
    model = _tiny()
    out = model(torch.randn(2, 40 * HOP))
    gv = model.config.codebook_groups * model.config.codebook_entries
    assert model.config.codebook_groups <= out.prob_perplexity <= gv
    assert 1 <= out.code_perplexity <= gv
    torch.testing.assert_close(out.diversity_loss, (gv - out.prob_perplexity) / gv)


def test_gumbel_temperature_schedule() -> None:
    cfg = SSLConfig.paper()
    assert cfg.gumbel_temperature(0) == cfg.gumbel_temp_start
    assert cfg.gumbel_temperature(10**8) == cfg.gumbel_temp_end
    assert cfg.gumbel_temperature(1000) < cfg.gumbel_temperature(10)


def test_hubert_loss() -> None:
    model = _tiny()
    wav = torch.randn(2, 2 * SAMPLE_RATE)
    feats = hubert_frame_features(wav)
    assert feats.shape == (2, 50, 128) and torch.isfinite(feats).all()
    targets = torch.randint(0, model.config.hubert_classes, (2, 50))
    out = model.forward_hubert(wav, targets)
    assert torch.isfinite(out.loss)
    assert abs(out.prediction_loss.item() - math.log(model.config.hubert_classes)) < 1.5
    mask = out.mask
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    first = None
    for _ in range(10):
        out = model.forward_hubert(wav, targets, mask=mask)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        first = out.prediction_loss.item() if first is None else first
    assert out.prediction_loss.item() < 0.8 * first
    with pytest.raises(ValueError):
        model.forward_hubert(wav, targets[:, :-1])


def test_presets_round_trip() -> None:
    for name in ("tiny", "paper"):
        cfg = SSLConfig.preset(name)
        assert SSLConfig.from_dict(cfg.to_dict()) == cfg
        assert 0 < cfg.token_layer < cfg.n_layers  # an intermediate layer
