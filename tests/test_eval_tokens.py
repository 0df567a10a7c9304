"""Token probe: the classifier finds a planted signal and not noise; labels; folds; CLI errors."""

from __future__ import annotations

import argparse

import pytest
import torch

from melody_core.commands import CLIError
from melody_core.commands.eval_tokens import register
from melody_core.eval.token_probe import (
    ProbeOptions,
    clip_labels,
    evaluate_target,
    grouped_folds,
    token_histogram,
    tonic_pitch_class,
)

VOCAB, N_CLASSES, N_GROUPS, PER_GROUP = 64, 4, 40, 5


def _synthetic(planted: bool, seed: int = 0) -> tuple[torch.Tensor, list[str], list[str], list[str]]:
    """Histograms of 200 clips in 40 works; with `planted`, each class boosts its own 8 tokens."""
    gen = torch.Generator().manual_seed(seed)
    rows, labels, groups, splits = [], [], [], []
    for g in range(N_GROUPS):
        cls = int(torch.randint(N_CLASSES, (1,), generator=gen))
        for _ in range(PER_GROUP):
            probs = torch.ones(VOCAB)
            if planted:
                probs[cls * 8 : cls * 8 + 8] += 1.0  # class-specific tokens twice as likely
            tokens = torch.multinomial(probs, 250, replacement=True, generator=gen)  # (250,) one clip
            rows.append(token_histogram(tokens, VOCAB))
            labels.append(str(cls))
            groups.append(f"work{g}")
            splits.append("valid" if g % 5 == 0 else "train")
    return torch.stack(rows), labels, splits, groups


def test_probe_finds_planted_signal():
    x, labels, splits, groups = _synthetic(planted=True)
    r = evaluate_target(x, labels, splits, groups, None, ProbeOptions(steps=50))
    assert r["classes"] == N_CLASSES
    assert r["cv"]["n_test"] == len(labels)
    assert r["cv"]["accuracy"] > 0.9 > r["cv"]["majority"] + 0.4
    assert r["valid"]["accuracy"] > 0.9


def test_probe_on_noise_stays_at_chance():
    x, labels, splits, groups = _synthetic(planted=False)
    r = evaluate_target(x, labels, splits, groups, None, ProbeOptions(steps=50))
    assert r["cv"]["accuracy"] < max(r["cv"]["majority"], r["cv"]["uniform"]) + 0.15


def test_grouped_folds_keep_works_together():
    groups = [f"w{i % 13}" for i in range(100)]
    folds = grouped_folds(groups, 5)
    assert sorted(i for f in folds for i in f) == list(range(100))
    fold_of = {}
    for k, f in enumerate(folds):
        for i in f:
            assert fold_of.setdefault(groups[i], k) == k
    assert max(map(len, folds)) - min(map(len, folds)) <= 8 + 1  # one group of 8 at most off


def test_labels_and_histogram():
    assert tonic_pitch_class("F#") == 6 and tonic_pitch_class("Eb") == 3 and tonic_pitch_class("E-") == 3
    assert tonic_pitch_class("Cb") == 11
    assert tonic_pitch_class("x") is None and tonic_pitch_class(None) is None
    lab = clip_labels({"instrument_family": "harp", "key": "G minor", "mode": "minor"})
    assert lab == {"instrument": "harp", "tonic": "7", "mode": "minor", "key": "7 minor", "tempo_class": None,
                   "bpm_4pct": None}  # fmt: skip
    lab = clip_labels({"bpm": 120, "key": "C major", "mode": "major"})
    assert lab["key"] == "0 major" and lab["tempo_class"] == "5"  # 120 BPM: 5th of 8 log classes 60-180
    assert lab["bpm_4pct"] == "9"  # 60 * 1.08^9 = 119.9 <= 120 < 129.5
    assert clip_labels({"bpm": 60})["bpm_4pct"] == "0" and clip_labels({"bpm": 200})["tempo_class"] == "7"
    assert clip_labels({})["tonic"] is None
    h = token_histogram(torch.tensor([0, 0, 3]), 4)
    assert torch.allclose(h, torch.tensor([2 / 3, 0, 0, 1 / 3]))
    assert token_histogram(torch.zeros(0, dtype=torch.long), 4).sum() == 0


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="melody")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--max-clips", "1"], "--max-clips must be >= 4"),
        (["--folds", "1"], "--folds must be 2..20"),
        ([], "neither a bundle nor a run folder"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, extra, message):
    args = _parse(["eval-tokens", "--ssl", str(tmp_path), "--kmeans", str(tmp_path),
                   "--data", str(tmp_path), "-q", *extra])
    with pytest.raises(CLIError) as info:
        args.func(args)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_cli_wrong_component(tmp_path):
    (tmp_path / "run.json").write_text('{"component": "vae", "format": "melody-train-run"}')
    args = _parse(["eval-tokens", "--ssl", str(tmp_path), "--kmeans", str(tmp_path), "--data", str(tmp_path)])
    with pytest.raises(CLIError, match="not 'ssl'"):
        args.func(args)


def test_rhythm_pitch_token_features_see_tempo_and_pitch_class():
    """-2 features: the tempogram of a click track peaks at its tempo, chroma of a tone at its class."""
    from melody_core import SAMPLE_RATE
    from melody_core.models.ssl_conformer import (
        MEL_CHROMA_TOKEN_LAYER,
        MEL_FEATURE_DIM,
        frame_token_features,
        token_feature_dim,
    )
    from melody_core.models.token_features import CHROMA_WEIGHT, TEMPO_WEIGHT, tempo_lags

    t = torch.arange(8 * SAMPLE_RATE) / SAMPLE_RATE
    clicks = torch.zeros_like(t)
    period = SAMPLE_RATE * 60 // 100  # 100 BPM
    for k in range(0, t.numel(), period):
        clicks[k : k + 200] = torch.randn(200, generator=torch.Generator().manual_seed(k)) * 0.5
    tone = 0.3 * torch.sin(2 * torch.pi * 392.0 * t)  # G4: pitch class 7
    f = frame_token_features((clicks + tone).unsqueeze(0), MEL_CHROMA_TOKEN_LAYER)[0]
    assert f.shape == (200, token_feature_dim(MEL_CHROMA_TOKEN_LAYER, 0))
    assert torch.isfinite(f).all()
    chroma = f[:, MEL_FEATURE_DIM : MEL_FEATURE_DIM + 12] / CHROMA_WEIGHT
    assert int(chroma.mean(0).argmax()) == 7
    tempogram = f[50:150, MEL_FEATURE_DIM + 12 : -1] / TEMPO_WEIGHT  # frames away from the edges
    bpm = 60.0 / (tempo_lags() / 100.0)
    best = float(bpm[tempogram.mean(0).argmax()])
    assert abs(best / 100.0 - 1) < 0.05
