"""musicnn PyTorch port vs TensorFlow: committed weights, regenerated signals, stored TF outputs.

The reference (tests/fixtures/musicnn_reference.npz) was written by packaging/tools/convert_musicnn.py
running musicnn's own TensorFlow graph and front end. Tolerances are ~5-10x the errors measured on this
machine (penultimate: max abs 1.8e-5 / 3.1e-6 of its range; taggram: 1.0e-6; pooled layers:
2.3e-5 of their range; mel power: 2.3e-5 absolute on a maximum of 80.6).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from musicnn_signals import SR, chord, make_signals

from melody_core.eval.musicnn import (
    DEFAULT_WEIGHTS,
    PATCH_FRAMES,
    TAGS,
    MusicnnEmbedder,
    MusicnnNet,
    hop_frames,
    slaney_mel_filterbank,
)

FIXTURE = Path(__file__).parent / "fixtures" / "musicnn_reference.npz"
OUTPUTS = ("penultimate", "max_pool", "mean_pool", "taggram")
PENULTIMATE_ABS, PENULTIMATE_REL = 1e-4, 2e-5  # max abs error; max abs error / max |reference|
POOLED_REL = 1e-4  # max_pool / mean_pool: max abs error / max |reference|
TAGGRAM_ABS = 1e-5
MIN_COSINE = 1 - 1e-6  # per patch, penultimate


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def embedder() -> MusicnnEmbedder:
    return MusicnnEmbedder.load()


@pytest.fixture(scope="module")
def signals() -> dict[str, np.ndarray]:
    return make_signals()


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_weights_are_complete_and_small() -> None:
    assert DEFAULT_WEIGHTS.stat().st_size < 4_000_000  # 792,079 float32 values + header
    with torch.device("meta"):
        net = MusicnnNet()
    assert sum(t.numel() for t in net.state_dict().values()) == 792_079
    assert len(TAGS) == 50 and MusicnnEmbedder.dim == 200


def test_signals_regenerate(ref: dict[str, np.ndarray], signals: dict[str, np.ndarray]) -> None:
    for name, y in signals.items():
        stats = np.array([y.mean(), y.std(), np.abs(y).max()])
        np.testing.assert_allclose(stats, ref[f"{name}__stats"], rtol=0, atol=1e-6, err_msg=name)


def test_mel_filterbank_matches_librosa(ref: dict[str, np.ndarray]) -> None:
    np.testing.assert_allclose(slaney_mel_filterbank(), ref["mel_basis"], rtol=0, atol=1e-8)


def test_front_end_matches_librosa(ref: dict[str, np.ndarray], embedder: MusicnnEmbedder,
                                   signals: dict[str, np.ndarray]) -> None:
    meta = json.loads(str(ref["meta"]))
    mel_ref = ref["mel_power"]  # (96, 64) librosa melspectrogram (reflect padding), first frames
    wav = torch.from_numpy(signals[meta["mel_check_signal"]])
    logmel = embedder.log_mel(wav)  # (frames, 96)
    assert logmel.shape == (1 + wav.numel() // 256, 96)
    spec = torch.stft(wav, 512, 256, 512, window=embedder.window, center=True, pad_mode="reflect",
                      return_complex=True)
    mel = (embedder.mel_basis @ spec.abs().square())[:, : mel_ref.shape[1]].numpy()
    np.testing.assert_allclose(mel, mel_ref, rtol=1e-4, atol=2e-6 * mel_ref.max())
    # log compression after float16 rounding, as musicnn: tolerance = one float16 step of the mel
    log_ref = np.log10(10000 * mel_ref.T.astype(np.float16).astype(np.float32) + 1)
    np.testing.assert_allclose(logmel[: mel_ref.shape[1]].numpy(), log_ref, rtol=0, atol=5e-4)


def test_network_matches_tensorflow(ref: dict[str, np.ndarray], embedder: MusicnnEmbedder) -> None:
    """The exact float16 mel TF saw for one patch: isolates the network from the front end."""
    name = json.loads(str(ref["meta"]))["net_check_signal"]
    x = torch.log10(10000 * torch.from_numpy(ref["net_patch_mel_f16"]).float() + 1)[None]  # (1, 187, 96)
    with torch.inference_mode():
        out = embedder.net(x)
    for key in OUTPUTS:
        r = ref[f"{name}__{key}"][:1]
        err = np.abs(getattr(out, key).numpy() - r).max()
        assert err <= 1e-5 * max(1.0, np.abs(r).max()), (key, err)


def test_embeddings_match_tensorflow(ref: dict[str, np.ndarray], embedder: MusicnnEmbedder,
                                     signals: dict[str, np.ndarray]) -> None:
    hop = json.loads(str(ref["meta"]))["hop_seconds"]
    for name, y in signals.items():
        feats = embedder.features(y, SR, hop_seconds=hop)
        for key in OUTPUTS:
            got, r = getattr(feats, key).numpy(), ref[f"{name}__{key}"]
            assert got.shape == r.shape and got.dtype == np.float32, (name, key, got.shape, r.shape)
            err = np.abs(got - r).max()
            if key == "penultimate":
                assert err <= PENULTIMATE_ABS and err <= PENULTIMATE_REL * np.abs(r).max(), (name, err)
                assert _cosine(got, r).min() >= MIN_COSINE, name
            elif key == "taggram":
                assert err <= TAGGRAM_ABS, (name, err)
            else:
                assert err <= POOLED_REL * np.abs(r).max(), (name, key, err)


def test_shapes_and_hop(embedder: MusicnnEmbedder) -> None:
    y = chord(6.0)  # 6 s -> 376 frames
    assert hop_frames(1.0) == 61 and hop_frames(3.0) == 186
    assert embedder.patches(y, SR).shape == ((376 - PATCH_FRAMES) // 61 + 1, PATCH_FRAMES, 96) == (4, 187, 96)
    assert embedder.patches(y, SR, hop_seconds=3.0).shape[0] == (376 - PATCH_FRAMES) // 186 + 1 == 2
    assert embedder.patches(chord(10.0), SR).shape[0] == 8  # 10 s at the default hop
    y = chord(4.5)  # 282 frames -> 2 patches
    emb = embedder.embed(torch.from_numpy(y.astype(np.float32)), SR)  # torch input
    assert emb.shape == (2, embedder.dim) and emb.dtype == torch.float32 and torch.isfinite(emb).all()
    feats = MusicnnEmbedder(embedder.net, batch_size=1).features(y, SR)  # numpy input, 2 batches
    torch.testing.assert_close(feats.penultimate, emb, rtol=1e-5, atol=1e-5)
    assert feats.taggram.shape == (2, len(TAGS)) and feats.max_pool.shape == feats.mean_pool.shape == (2, 753)


def test_short_clip_is_zero_padded_to_one_patch(embedder: MusicnnEmbedder) -> None:
    y = chord(0.7).astype(np.float32)
    padded = np.pad(y, (0, 3 * SR - y.size))
    feats = embedder.features(y, SR)
    assert feats.penultimate.shape == (1, 200) and feats.taggram.shape == (1, 50)
    torch.testing.assert_close(embedder.embed(padded, SR), feats.penultimate, rtol=0, atol=0)


def test_resampling(embedder: MusicnnEmbedder) -> None:
    base = embedder.embed(chord(3.2, sr=SR), SR).numpy()  # one patch
    for sr in (24_000, 44_100):
        got = embedder.embed(chord(3.2, sr=sr), sr).numpy()
        assert got.shape == base.shape
        assert _cosine(got, base).min() > 0.9999 and np.abs(got - base).max() < 0.05, sr


def test_rejects_bad_input(embedder: MusicnnEmbedder) -> None:
    with pytest.raises(ValueError):
        embedder.embed(np.zeros((2, SR), np.float32), SR)
    with pytest.raises(ValueError):
        embedder.embed(np.zeros(0, np.float32), SR)
    with pytest.raises(ValueError):
        embedder.embed(np.full(SR, np.nan, np.float32), SR)
    with pytest.raises(ValueError):
        embedder.embed(np.zeros(SR, np.float32), SR, hop_seconds=0.01)
    with pytest.raises(FileNotFoundError):
        MusicnnEmbedder.load("/nonexistent/msd_musicnn.safetensors")
