"""`melody eval card`: metric helpers, and the command on a random tiny bundle + synthetic corpus."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from melody_core import SAMPLE_RATE
from melody_core.audio import load_audio, save_audio
from melody_core.checkpoint import random_bundle
from melody_core.commands import CLIError
from melody_core.commands import eval as eval_cmd
from melody_core.data.corpus import ClipRecord, write_records
from melody_core.eval.card.evaluate import CardOptions, evaluate_card
from melody_core.eval.card.metrics import (
    centre_crop,
    chance_hit,
    lm_nll,
    reconstruction_scores,
    retrieval_scores,
    select_evenly,
    unigram_perplexity,
    velocity_mse,
)
from melody_core.generation.pipeline import MelodyPipeline

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SECONDS = 2.0


# ------------------------------------------------------------------------------------- helpers
def test_reconstruction_of_identity_is_perfect() -> None:
    x = torch.randn(SAMPLE_RATE)
    mel, sdr = reconstruction_scores(x, x.clone())
    assert mel == 0.0 and sdr > 60
    mel_noisy, sdr_noisy = reconstruction_scores(x + 0.3 * torch.randn(SAMPLE_RATE), x)
    assert mel_noisy > 0.01 and 5 < sdr_noisy < 15  # ~10 dB for noise at 0.3 x the signal


def test_crop_and_selection() -> None:
    start, length = centre_crop(10 * SAMPLE_RATE + 123, 4.0, SAMPLE_RATE, 960)
    assert length == 4 * SAMPLE_RATE and start % 960 == 0 and length % 960 == 0
    assert abs(start + length / 2 - (10 * SAMPLE_RATE + 123) / 2) <= 960
    assert centre_crop(5000, 4.0, SAMPLE_RATE, 960) == (0, 4800)  # short clip: whole tokens of it
    assert select_evenly(10, 20) == list(range(10))
    picked = select_evenly(55, 48)
    assert len(set(picked)) == 48 and picked[0] == 0 and max(picked) >= 53


def test_retrieval_scores_perfect_random_and_duplicates() -> None:
    n = 8
    emb = torch.eye(n, 16)
    caps = [f"caption {i}" for i in range(n)]
    r = retrieval_scores(emb, emb, caps)
    assert r["top1"] == 1.0 and r["top5"] == 1.0 and r["median_rank"] == 1.0
    assert r["chance_top1"] == pytest.approx(1 / n) and r["chance_top5"] == pytest.approx(5 / n)
    r = retrieval_scores(emb, emb.roll(1, dims=0), caps)  # every text matches the wrong clip
    assert r["top1"] == 0.0
    same = torch.ones(n, 16)  # all audio identical: ties go against the query
    assert retrieval_scores(emb, same, caps)["top5"] == 0.0
    dup = ["a", "a", "b", "c", "d", "e", "f", "g"]  # clips 0 and 1 share a caption: co-positives
    swapped = emb[[1, 0, 2, 3, 4, 5, 6, 7]]
    assert retrieval_scores(emb, swapped, dup)["top1"] == 1.0
    assert retrieval_scores(emb, swapped, caps)["top1"] == pytest.approx(6 / 8)
    assert chance_hit(8, 2, 1) == pytest.approx(2 / 8) and chance_hit(4, 1, 5) == 1.0


def test_unigram_perplexity() -> None:
    assert unigram_perplexity(torch.ones(256, dtype=torch.long)) == pytest.approx(256)
    assert unigram_perplexity(torch.tensor([5, 0, 0])) == pytest.approx(1.0)


class _UniformLM(torch.nn.Module):
    """Uniform next-token logits; records the prefixes it sees."""

    def __init__(self, vocab: int, max_len: int) -> None:
        super().__init__()
        self.config = argparse.Namespace(max_len=max_len, vocab_size=vocab)
        self.prefixes: list[torch.Tensor] = []

    def forward(self, prefix: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        self.prefixes.append(prefix)
        return torch.zeros(*tokens.shape, self.config.vocab_size)


def test_lm_nll_pieces_and_prefix_windows() -> None:
    lm = _UniformLM(vocab=64, max_len=100)
    tokens = torch.randint(0, 64, (250,))  # 10 s at 25 Hz -> pieces of 100, 100, 50 tokens
    codes = torch.arange(2).unsqueeze(1).expand(2, 12)  # two 5 s MuLan windows, codes 0 and 1
    nll, n, _ = lm_nll(lm, tokens, codes, window_seconds=5.0)
    assert n == 250 and math.exp(nll / n) == pytest.approx(64, rel=1e-5)
    # piece centres 2 s, 6 s, 9 s -> windows 0, 1, 1
    assert [int(p[0, 0]) for p in lm.prefixes] == [0, 1, 1]


def test_velocity_mse_zero_predictor_and_determinism() -> None:
    z0 = torch.randn(200, 16)
    tokens = torch.randint(0, 8, (20,))

    def zero(z, delta, u, uncond):
        return torch.zeros_like(z)

    def gen():
        return torch.Generator().manual_seed(3)

    cond, uncond, ref = velocity_mse(zero, z0, tokens, 4, 10, 2, gen())
    assert cond == pytest.approx(ref) and uncond == pytest.approx(ref) and 0.5 < ref < 1.5
    assert velocity_mse(zero, z0, tokens, 4, 10, 2, gen()) == (cond, uncond, ref)
    assert velocity_mse(zero, z0, None, 4, 10, 2, gen())[0] is None


# ---------------------------------------------------------------------------------- end to end
def _write_corpus(root: Path) -> None:
    t = np.arange(int(2.5 * SAMPLE_RATE)) / SAMPLE_RATE
    rng = np.random.default_rng(0)
    clips = {
        "sine-a": ("valid", 0.4 * np.sin(2 * np.pi * 220 * t), ["low sine drone", "a low hum"]),
        "sine-b": ("valid", 0.3 * np.sin(2 * np.pi * 880 * t) * (t % 0.5 < 0.25), ["beeping high tone"]),
        "noise": ("valid", 0.1 * rng.standard_normal(len(t)), ["white noise"]),
        "chirp": ("valid", 0.3 * np.sin(2 * np.pi * (200 + 400 * t) * t), ["rising sweep"]),
        "short": ("valid", 0.3 * np.sin(2 * np.pi * 330 * t[: SAMPLE_RATE // 2]), ["too short"]),
        "train": ("train", 0.3 * np.sin(2 * np.pi * 440 * t), ["training clip"]),
    }
    records = []
    for name, (split, wav, caps) in clips.items():
        save_audio(root / "clips" / f"{name}.wav", torch.tensor(wav, dtype=torch.float32))
        records.append(ClipRecord(id=name, path=f"clips/{name}.wav", seconds=len(wav) / SAMPLE_RATE,
                                  captions=caps, split=split))
    write_records(root / "captions.jsonl", records)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("card")
    random_bundle(root / "bundle", preset="tiny")
    _write_corpus(root / "corpus")
    return root / "bundle", root / "corpus"


def _args(bundle: Path, corpus: Path, out: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    eval_cmd.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["eval", "card", "--bundle", str(bundle), "--data", str(corpus),
                              "--out", str(out), "--seconds", str(SECONDS), "-q", *extra])


def test_card_command_writes_metrics_samples_and_images(setup, tmp_path, capsys) -> None:
    bundle, corpus = setup
    out = tmp_path / "card"
    args = _args(bundle, corpus, out)
    assert args.func(args) == 0
    assert "LM validation perplexity" in capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    assert m["data"]["valid_clips"] == 5 and m["data"]["evaluated_clips"] == 4
    assert set(m["data"]["skipped"]) == {"short"} and "train" not in m["data"]["clip_ids"]
    for value in (m["vae"]["mel_distance"], m["vae"]["si_sdr_db"], m["dpd"]["velocity_mse"],
                  m["dpd"]["velocity_mse_uncond"], m["lm"]["perplexity"]):
        assert math.isfinite(value)
    assert m["vae"]["mel_distance"] > 0 and m["dpd"]["clips"] == 4 and m["dpd"]["chunks"] == 4
    vocab = m["lm"]["vocab_size"]
    assert m["lm"]["tokens"] == 4 * SECONDS * 25
    assert vocab / 4 < m["lm"]["perplexity"] < vocab * 4  # a random LM is near a uniform guess
    ret = m["mulan_retrieval"]
    assert ret["n"] == 4 and all(0 <= ret[k] <= 1 for k in ("top1", "top5", "chance_top1", "chance_top5"))
    assert ret["top5"] == 1.0 and ret["chance_top1"] == pytest.approx(0.25)  # 4 clips: top-5 is all
    assert len(m["samples"]) == 3 and len({s["prompt"] for s in m["samples"]}) == 3
    for s in m["samples"]:
        assert (out / s["spectrogram"]).read_bytes()[:8] == PNG_MAGIC
        assert load_audio(out / s["wav"]).shape == (int(SECONDS * SAMPLE_RATE),)
        assert s["generation_s"] > 0 and -1 <= s["mulan_text_audio_cosine"] <= 1
    assert "| MuLan text→audio top-1 |" in (out / "metrics.md").read_text()


def test_card_metrics_are_deterministic(setup, tmp_path) -> None:
    bundle, corpus = setup
    pipe = MelodyPipeline.load(bundle, device="cpu")
    opts = CardOptions(seconds=SECONDS, max_clips=3, samples=False)  # chirp, noise, sine-a (id order)
    runs = [evaluate_card(pipe, corpus, tmp_path / f"r{i}", opts, log=lambda _: None) for i in range(2)]
    for m in runs:
        m.pop("timings_s")
    assert runs[0] == runs[1] and runs[0]["data"]["evaluated_clips"] == 3 and runs[0]["samples"] == []


def test_card_command_errors(setup, tmp_path) -> None:
    bundle, corpus = setup
    with pytest.raises(CLIError, match="--seconds"):
        eval_cmd.run_card(_args(bundle, corpus, tmp_path / "o", "--seconds", "0.2"))
    with pytest.raises(CLIError, match="--max-clips"):
        eval_cmd.run_card(_args(bundle, corpus, tmp_path / "o", "--max-clips", "0"))
    train_only = tmp_path / "train-only"
    write_records(_mkdir(train_only) / "captions.jsonl",
                  [ClipRecord(id="x", path="x.wav", seconds=1.0, split="train")])
    with pytest.raises(CLIError, match="held-out"):
        eval_cmd.run_card(_args(bundle, train_only, tmp_path / "o"))
    with pytest.raises(CLIError, match="not a folder"):
        eval_cmd.run_card(_args(bundle, tmp_path / "missing", tmp_path / "o"))


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path
