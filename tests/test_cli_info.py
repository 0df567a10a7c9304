"""`melody info` contracts (issue: core §6) and a bundle round-trip over the real tiny components."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from melody_core.cli import main
from melody_core.eval.params import PAPER_COUNTS


def _write_wav(path: Path, seconds: float = 0.5, rate: int = 44_100, channels: int = 2) -> None:
    from melody_core.audio import save_audio

    t = torch.arange(int(seconds * rate)) / rate
    save_audio(path, 0.3 * torch.sin(2 * math.pi * 440 * t), sample_rate=rate)


def test_params_paper_json_within_ten_percent(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--params", "paper", "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert set(counts) == {"vae", "dpd", "ssl", "lm", "mulan"}
    for name, n in counts.items():
        assert abs(n - PAPER_COUNTS[name]) / PAPER_COUNTS[name] <= 0.10, (name, n)


def test_info_audio_ok_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wav = tmp_path / "a.wav"
    _write_wav(wav)
    assert main(["info", "--audio", str(wav)]) == 0
    out = capsys.readouterr().out
    assert "0.500 s" in out and "44100 Hz" in out and "1 channel" in out

    bad = tmp_path / "notes.wav"
    bad.write_text("this is not audio\n")
    for path in (bad, tmp_path / "missing.wav", tmp_path):
        assert main(["info", "--audio", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err


def test_info_bundle_ok_and_corrupt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from melody_core.checkpoint import random_bundle

    info = random_bundle(tmp_path / "b", preset="tiny", components=["kmeans", "lm"])
    assert main(["info", "--bundle", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert info.hash in out and "lm" in out and "kmeans" in out

    data = (tmp_path / "b" / "lm.safetensors").read_bytes()
    (tmp_path / "b" / "lm.safetensors").write_bytes(data[: len(data) // 2])
    assert main(["info", "--bundle", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert main(["info", "--bundle", str(tmp_path / "nothing")]) == 2


def test_info_without_arguments_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_cli_subprocess_prints_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "melody_core.cli", "info", "--audio", str(tmp_path / "nope.flac")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


def test_full_tiny_bundle_round_trip_is_bit_exact(tmp_path: Path) -> None:
    from melody_core.checkpoint import load_bundle, save_bundle
    from melody_core.config import PIPELINE_COMPONENTS, MelodyConfig, component_classes

    configs = MelodyConfig.preset("tiny").components
    models = {name: component_classes(name)[1](configs[name]) for name in PIPELINE_COMPONENTS}
    for model in models.values():  # make buffers (EMA stats, centroids) non-trivial too
        for buf in model.buffers():
            if buf.is_floating_point():
                buf.copy_(torch.randn_like(buf))
    info = save_bundle(tmp_path / "tiny", models, configs, meta={"note": "test"})
    bundle = load_bundle(tmp_path / "tiny")
    assert bundle.model_hash == info.model_hash
    for name in PIPELINE_COMPONENTS:
        want, got = models[name].state_dict(), bundle.models[name].state_dict()
        assert want.keys() == got.keys(), name
        for key in want:
            assert want[key].dtype == got[key].dtype and torch.equal(want[key], got[key]), (name, key)
