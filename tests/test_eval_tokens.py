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
    assert lab == {"instrument": "harp", "tonic": "7", "mode": "minor"}
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
