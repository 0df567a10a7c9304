"""Architecture ablation (DPD vs UNet-1D): the SI-SNRi metric, training both arms on a synthetic
corpus with a micro upstream bundle, reuse of finished runs, deterministic evaluation, the CLI."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import torch
from micro_bundle import MICRO_OVERRIDES

from melody_core.checkpoint import random_bundle
from melody_core.commands import CLIError
from melody_core.commands.eval_ablation import add_parser
from melody_core.diffusion import velocity_target
from melody_core.eval.ablation_arch import (
    ARMS,
    PAPER,
    ArchAblationOptions,
    evaluate_arms,
    run_arch_ablation,
    si_snri_levels,
)
from melody_core.train.data import write_synthetic_corpus

DPD_MICRO = {k: v for k, v in MICRO_OVERRIDES["dpd"].items() if k != "train_length"}  # the stage sets it
STEPS = 3
OPTS = dict(steps=STEPS, batch_size=2, crop_seconds=0.4, valid_clips=4, dpd_overrides=DPD_MICRO, device="cpu")
ARM_KEYS = {"params", "steps", "wall_s", "v_mse", "si_snri_db", "si_snri_per_level"}


def _quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, dict]:
    root = tmp_path_factory.mktemp("ablation_arch")
    up = {k: MICRO_OVERRIDES[k] for k in ("vae", "ssl", "kmeans")}
    random_bundle(root / "bundle", "tiny", components=list(up), overrides=up)
    corpus = write_synthetic_corpus(root / "corpus", n_train=4, n_valid=2, seconds=1.0)
    result = run_arch_ablation(corpus, root / "bundle", root / "work", ArchAblationOptions(**OPTS), _quiet)
    return corpus, root / "bundle", root / "work", result


# ---------------------------------------------------------------------------------------- the metric
def _clip(length: int = 200) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(length, 16, generator=gen).cumsum(0) / 10  # (L, D) smooth-ish "latents"
    levels = torch.tensor([0.2, 0.7, 1.2, 1.5], dtype=torch.float64)
    eps = torch.randn(len(levels), length, 16, generator=gen)  # (n, L, D)
    tokens = torch.randint(0, 8, (length // 10,), generator=gen)
    return x, levels, eps, tokens


def test_si_snri_of_a_zero_network_is_zero_and_input_snr_follows_the_angle() -> None:
    x, levels, eps, tokens = _clip()
    gain, before = si_snri_levels(lambda z, d, u, un: torch.zeros_like(z), x, tokens, levels, eps)
    # v̂ = 0: x̂ = cos δ z_δ, a rescaled z_δ, and SI-SNR is scale-invariant -> SI-SNRi = 0
    assert torch.allclose(gain, torch.zeros_like(gain), atol=1e-3), gain
    assert bool((before[:-1] > before[1:]).all())  # noisier input at larger angles
    assert before[0] > 5 and before[-1] < -10


def test_si_snri_of_the_true_velocity_is_large() -> None:
    x, levels, eps, tokens = _clip()
    seen = []

    def oracle(z: torch.Tensor, delta: torch.Tensor, u: torch.Tensor | None, uncond) -> torch.Tensor:
        seen.append((u, uncond))
        return velocity_target(x.expand_as(z), eps, delta)  # Eq. 5 with the true x and ε

    gain, before = si_snri_levels(oracle, x, tokens, levels, eps)
    assert bool((gain + before > 50).all()), gain + before  # x̂ = x up to round-off
    assert bool((gain > 40).all())
    u, uncond = seen[0]
    assert uncond is None and torch.equal(u[0], tokens)  # conditional, the clip's tokens
    assert u.shape == (len(levels), len(tokens))


# ------------------------------------------------------------------------------------------ end to end
def test_returns_documented_keys_matched_sizes_and_steps(setup) -> None:
    _, _, work, r = setup
    assert set(r) == {"arms", "paper", "settings"} and r["paper"] == PAPER
    assert set(r["arms"]) == set(ARMS)
    for arm in ARMS:
        a = r["arms"][arm]
        assert ARM_KEYS <= set(a) and a["steps"] == STEPS and a["wall_s"] > 0
        assert len(a["si_snri_per_level"]) == len(r["settings"]["levels_rad"]) == 5
        assert a["si_snri_db"] == pytest.approx(sum(a["si_snri_per_level"]) / 5)
        assert all(math.isfinite(v) for v in (a["v_mse"], a["v_mse_uncond"], a["si_snri_db"]))
        assert 0.3 < a["v_mse_zero"] < 3  # unit-variance data (latent_scale) -> E[v²] ≈ 1
    dpd, unet = r["arms"]["dpd"], r["arms"]["unet1d"]
    assert abs(unet["params"] / dpd["params"] - 1) <= 0.10, (unet["params"], dpd["params"])
    assert dpd["latent_scale"] == pytest.approx(unet["latent_scale"])  # same data scale
    s = r["settings"]
    assert s["crop_frames"] == 100 and s["valid_clips"] == 2 and s["budget"] == "steps"
    assert s["levels_deg"] == [15.0, 30.0, 45.0, 60.0, 75.0]
    assert json.loads((work / "ablation_arch.json").read_text()) == json.loads(json.dumps(r))
    run = json.loads((work / "unet1d" / "run.json").read_text())
    assert run["stage"] == "unet1d" and run["config"]["vocab_size"] == 256  # from the micro k-means


def test_evaluation_is_deterministic(setup) -> None:
    corpus, bundle, work, r = setup
    runs = {arm: work / arm for arm in ARMS}
    again = evaluate_arms(runs, corpus, bundle, ArchAblationOptions(**OPTS), _quiet)
    assert again["clips"] == r["settings"]["clip_ids"]
    for arm in ARMS:
        first = {k: v for k, v in r["arms"][arm].items() if k not in ("eval_s", "invocation_s")}
        assert {k: v for k, v in again["arms"][arm].items() if k != "eval_s"} == first


def test_rerun_reuses_finished_arms_and_more_steps_resume(setup) -> None:
    corpus, bundle, work, r = setup
    stamp = {arm: (work / arm / "checkpoints" / "last.pt").stat().st_mtime_ns for arm in ARMS}
    lines: list[str] = []
    again = run_arch_ablation(corpus, bundle, work, ArchAblationOptions(**OPTS), lines.append)
    assert sum("reusing" in line for line in lines) == 2
    assert {arm: (work / arm / "checkpoints" / "last.pt").stat().st_mtime_ns for arm in ARMS} == stamp
    assert again["arms"]["dpd"]["v_mse"] == r["arms"]["dpd"]["v_mse"]
    lines.clear()
    more_opts = ArchAblationOptions(**{**OPTS, "steps": STEPS + 1})
    more = run_arch_ablation(corpus, bundle, work, more_opts, lines.append)
    assert sum(line.endswith(("dpd", "unet1d")) and "resuming in" in line for line in lines) == 2
    assert all(more["arms"][arm]["steps"] == STEPS + 1 for arm in ARMS)


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="eval_command"))
    return parser.parse_args(["ablation-arch", *argv])


def test_cli_json_and_errors(setup, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    corpus, bundle, work, _ = setup
    sets = [a for k, v in DPD_MICRO.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    common = ["--data", str(corpus), "--bundle", str(bundle), "--work", str(work), "-q"]
    # the fixture's settings (after the rerun test's extra step): the finished runs are reused
    args = _parse(*common, "--steps", str(STEPS + 1), "--batch-size", "2", "--crop-seconds", "0.4",
                  "--device", "cpu", "--valid-clips", "4", *sets, "--json")  # fmt: skip
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert {a["steps"] for a in out["arms"].values()} == {STEPS + 1} and out["settings"]["valid_clips"] == 2
    with pytest.raises(CLIError, match="minutes per arm"):
        args = _parse(*common, "--minutes", "0")
        args.func(args)
    with pytest.raises(CLIError, match="--valid-clips"):
        args = _parse(*common, "--valid-clips", "0")
        args.func(args)
    with pytest.raises(CLIError, match="not a folder"):
        args = _parse("--data", str(tmp_path / "missing"), "--bundle", str(bundle))
        args.func(args)
    with pytest.raises(CLIError, match="needs a trained 'vae'"):
        args = _parse("--data", str(corpus), "--bundle", str(tmp_path), "--work", str(tmp_path / "w"), "-q")
        args.func(args)
