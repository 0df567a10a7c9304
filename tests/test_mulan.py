"""MuLan: contrastive training step, embeddings, blend, RVQ tokens, state_dict contents, counts.

All tests but the `_minilm_` ones use the hashed bag-of-words text backbone (no weights to load).
"""

import math
import socket
from dataclasses import replace

import pytest
import torch

from melody_core import SAMPLE_RATE
from melody_core.models import text_encoder
from melody_core.models.mulan import MuLan, MuLanConfig, contrastive_loss, mulan_parameter_count

SR = SAMPLE_RATE
CLIP_SECONDS = 2.0
CAPTIONS = ["calm solo piano", "fast drum and bass", "string quartet, slow", "distorted guitar riff"]


def _cfg(**kw: object) -> MuLanConfig:
    small = dict(text_backbone="hash", d_model=64, n_layers=2, n_heads=2, ffn_hidden=128, stem_channels=8)
    small.update(clip_seconds=CLIP_SECONDS, hash_buckets=512, hash_dim=32, text_head_hidden=64)
    small.update(kw)
    return replace(MuLanConfig.tiny(), **small)


def _audio(n: int = 4, seconds: float = CLIP_SECONDS) -> torch.Tensor:
    t = torch.arange(round(seconds * SR)) / SR
    freqs = torch.tensor([110.0, 440.0, 1760.0, 5000.0])[:n, None]  # one distinct tone per clip
    return 0.3 * torch.sin(2 * math.pi * freqs * t) + 0.01 * torch.randn(n, t.numel())


def _unit(x: torch.Tensor) -> bool:
    return bool(torch.allclose(x.norm(dim=-1), torch.ones(x.shape[0]), atol=1e-5))


def test_forward_backward_finite_and_loss_decreases() -> None:
    model = MuLan(_cfg()).train()
    wav = _audio(4, 1.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for step in range(10):
        out = model(CAPTIONS, wav)
        assert out.text_emb.shape == out.audio_emb.shape == (4, 128)
        opt.zero_grad()
        out.loss.backward()
        if step == 0:
            grads = {n: p.grad for n, p in model.named_parameters()}
            assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), [
                n for n, g in grads.items() if g is None
            ]
            assert grads["logit_scale"].abs() > 0 and grads["audio.out.weight"].abs().sum() > 0
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_embeddings_are_unit_and_audio_length_policy() -> None:
    model = MuLan(_cfg()).eval()
    with torch.no_grad():
        assert _unit(model.embed_text(CAPTIONS[:3]))
        assert model.embed_text([]).shape == (0, 128)
        short = model.embed_audio(_audio(2, 0.3))  # padded to min_seconds
        whole = model.embed_audio(_audio(2, CLIP_SECONDS))
        long = _audio(2, 2.5 * CLIP_SECONDS)  # 3 windows of CLIP_SECONDS, averaged
        assert short.shape == whole.shape == (2, 128) and _unit(short) and _unit(whole)
        n = round(CLIP_SECONDS * SR)
        starts = [0, (long.shape[1] - n) // 2, long.shape[1] - n]
        windows = torch.stack([model.embed_audio(long[:, s : s + n]) for s in starts], 1)  # (B, 3, E)
        expected = torch.nn.functional.normalize(windows.mean(1), dim=-1)
        torch.testing.assert_close(model.embed_audio(long), expected, atol=1e-4, rtol=0)
    with pytest.raises(ValueError):
        model.embed_audio(torch.zeros(SR))


def test_audio_embedding_ignores_gain() -> None:
    model = MuLan(_cfg()).eval()
    wav = _audio(2)
    with torch.no_grad():
        torch.testing.assert_close(model.embed_audio(wav), model.embed_audio(4.0 * wav), atol=1e-4, rtol=0)


def test_blend_weights() -> None:
    model = MuLan(_cfg()).eval()
    with torch.no_grad():
        t, a = model.embed_text(CAPTIONS[:2]), model.embed_audio(_audio(2))
    torch.testing.assert_close(model.blend(t, a, 0.0), t)
    torch.testing.assert_close(model.blend(t, a, 1.0), a)
    torch.testing.assert_close(model.blend(t, None, 0.7), t)
    torch.testing.assert_close(model.blend(None, a, 0.2), a)
    mid = model.blend(t, a, 0.5)
    assert _unit(mid)
    torch.testing.assert_close(mid, torch.nn.functional.normalize(t + a, dim=-1))
    with pytest.raises(ValueError):
        model.blend(t, a, 1.5)
    with pytest.raises(ValueError):
        model.blend(None, None, 0.5)


def test_conditioning_tokens() -> None:
    cfg = _cfg()
    model = MuLan(cfg).eval()
    with torch.no_grad():
        tokens = model.conditioning_tokens(model.embed_text(CAPTIONS))
    assert tokens.shape == (4, 12) and tokens.dtype == torch.int64
    assert int(tokens.min()) >= 0 and int(tokens.max()) < cfg.rvq_codebook_size == 256


def test_contrastive_loss_properties() -> None:
    e = torch.nn.functional.normalize(torch.randn(6, 16), dim=-1)
    perfect = contrastive_loss(e, e, torch.tensor(math.log(100.0)))
    shuffled = contrastive_loss(e, e.roll(1, 0), torch.tensor(math.log(100.0)))
    assert perfect < 0.1 < shuffled
    # 1 / temperature is clamped to 100
    torch.testing.assert_close(contrastive_loss(e, e, torch.tensor(10.0)), perfect)
    # with the identity as positives, the soft-target loss equals the plain one
    plain = contrastive_loss(e, e.roll(1, 0), torch.tensor(2.0))
    soft = contrastive_loss(e, e.roll(1, 0), torch.tensor(2.0), positives=torch.eye(6, dtype=torch.bool))
    torch.testing.assert_close(plain, soft)


def test_equal_captions_are_co_positives() -> None:
    model = MuLan(_cfg()).eval()
    wav = _audio(4)
    texts = ["piano", "piano", "drums", "strings"]
    with torch.no_grad():
        out = model(texts, wav)
    pos = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    expected = contrastive_loss(out.text_emb, out.audio_emb, model.logit_scale, positives=pos)
    torch.testing.assert_close(out.loss, expected)


def test_state_dict_excludes_frozen_backbone() -> None:
    frozen = MuLan(replace(MuLanConfig.tiny(), text_cache_size=4))  # builds without loading MiniLM
    keys = set(frozen.state_dict())
    assert not any("word_embeddings" in k or "encoder.layer" in k for k in keys)
    assert not any(k.startswith("text_backbone") for k in keys)
    assert {"text_head.fc1.weight", "logit_scale", "rvq.codebooks", "rvq.cluster_size"} <= keys
    assert sum(v.numel() for v in frozen.state_dict().values()) < 5_000_000
    with torch.device("meta"):
        tuned = MuLan(replace(MuLanConfig.tiny(), train_text_tower=True))
    assert "text_backbone.embeddings.word_embeddings.weight" in tuned.state_dict()
    hashed = MuLan(_cfg())
    assert "text_backbone.bag.weight" in hashed.state_dict()  # the hash encoder is trainable


def test_meta_construction_hash_backbone() -> None:
    with torch.device("meta"):
        model = MuLan(_cfg())
    assert all(p.is_meta for p in model.parameters())
    assert model.rvq.codebooks.is_meta


def test_parameter_counts_without_loading_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("parameter counting must not load weights")

    monkeypatch.setattr(text_encoder, "load_minilm_weights", refuse)
    monkeypatch.setattr("safetensors.torch.load_file", refuse)
    paper = mulan_parameter_count(MuLanConfig.paper())
    assert abs(paper["total"] - 195.3e6) / 195.3e6 < 0.10, paper
    assert paper["total"] == paper["text_tower"] + paper["audio_tower"] + paper["heads_rvq"]
    assert 22.5e6 < paper["text_tower"] < 22.8e6  # MiniLM-L6-H384
    tiny = mulan_parameter_count(MuLanConfig.tiny())
    assert 1e6 < tiny["audio_tower"] < 3e6, tiny
    cfg = _cfg()
    with torch.device("meta"):
        model = MuLan(cfg)
    counted = mulan_parameter_count(cfg)
    params = sum(p.numel() for p in model.parameters())
    assert counted["total"] == params + model.rvq.codebooks.numel()  # + the RVQ's learned buffers


def test_config_round_trip_and_validation() -> None:
    cfg = MuLanConfig.paper()
    assert MuLanConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.rvq_codebooks == 12 and cfg.rvq_codebook_size == 1024 and cfg.embed_dim == 128
    with pytest.raises(ValueError):
        replace(cfg, text_backbone="bert")
    with pytest.raises(ValueError):
        replace(cfg, text_backbone="hash", train_text_tower=True)


# all-MiniLM-L6-v2 (sentence-transformers 6.2, the package's folder) on these two captions,
# first 6 dimensions of the 384-d unit sentence embeddings.
MINILM_TEXTS = ["A calm solo piano piece.", "energetic drum and bass, heavy sub-bass, 174 bpm"]
MINILM_REF = torch.tensor(
    [
        [-0.017498, -0.005041, -0.004847, -0.006109, -0.057029, 0.063046],
        [0.011643, 0.006464, -0.020066, 0.029808, -0.081587, 0.032426],
    ]
)


def test_minilm_text_tower_offline_cached_and_not_in_state_dict(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the text tower must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    model = MuLan(replace(MuLanConfig.tiny(), text_cache_size=2)).eval()
    keys_before = set(model.state_dict())
    with torch.no_grad():
        feats = model.text_features(MINILM_TEXTS)
        emb = model.embed_text(MINILM_TEXTS)
    assert model.text_tower_load_seconds is not None
    torch.testing.assert_close(feats[:, :6], MINILM_REF, atol=2e-5, rtol=0)
    assert emb.shape == (2, 128) and torch.isfinite(emb).all() and _unit(emb)
    assert set(model.state_dict()) == keys_before  # loading MiniLM added nothing to the state_dict
    assert not any("encoder.layer" in k for k in keys_before)
    # LRU cache: a third caption evicts the least recently used one
    with torch.no_grad():
        model.embed_text(["lo-fi hip hop"])
    cache = model._frozen.cache
    assert list(cache) == [MINILM_TEXTS[1], "lo-fi hip hop"]


def test_minilm_trainable_tower_loads_into_state_dict() -> None:
    model = MuLan(replace(MuLanConfig.tiny(), train_text_tower=True))
    model.load_pretrained_text_tower()
    assert "text_backbone.encoder.layer.5.output.dense.weight" in model.state_dict()
    feats = model.text_features(MINILM_TEXTS)
    torch.testing.assert_close(feats[:, :6].detach(), MINILM_REF, atol=2e-5, rtol=0)
    model.embed_text(MINILM_TEXTS).sum().backward()
    grad = model.text_backbone.encoder.layer[0].attention.self.query.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
