"""`melody eval listen`: the hiss measure on synthetic tones and the listening sheet on a micro bundle."""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from melody_core import SAMPLE_RATE
from melody_core.audio import save_audio
from melody_core.checkpoint import random_bundle
from melody_core.commands import CLIError
from melody_core.commands import eval as eval_cmd
from melody_core.data.corpus import ClipRecord, write_records
from melody_core.eval.hiss import hiss_db
from melody_core.eval.listen import LISTEN_PROMPTS, MAX_FLAC_BYTES, clip_name, flac_bound, max_seconds
from melody_core.models.controls import find_controls
from tests.micro_bundle import MICRO_OVERRIDES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SECONDS = 4.0  # long enough for the tempo estimator (two beats at 40 BPM)


def _tone(seconds: float = 3.0) -> np.ndarray:
    """A clean 220 Hz harmonic tone (8 partials, 1/k amplitudes)."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return 0.2 * sum(np.sin(2 * np.pi * 220 * k * t) / k for k in range(1, 9))


def _with_noise(x: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    rms = np.sqrt(np.mean(x**2))
    return x + np.random.default_rng(seed).standard_normal(len(x)) * rms * 10 ** (-snr_db / 20)


# ------------------------------------------------------------------------------------ hiss measure
def test_hiss_is_low_on_a_clean_tone_and_rises_with_noise() -> None:
    clean = hiss_db(_tone(), SAMPLE_RATE)
    at40 = hiss_db(_with_noise(_tone(), 40), SAMPLE_RATE)
    at20 = hiss_db(_with_noise(_tone(), 20), SAMPLE_RATE)
    assert clean.db < -70 and clean.frames > 0
    assert at40.db > clean.db + 30  # noise 40 dB down fills the gaps between the partials
    assert -50 < at40.db < -35  # ~ the noise-to-signal ratio per bin
    assert at20.db - at40.db == pytest.approx(20, abs=3)  # 20 dB more noise reads ~20 dB higher
    noise = hiss_db(np.random.default_rng(1).standard_normal(3 * SAMPLE_RATE), SAMPLE_RATE)
    assert noise.db == pytest.approx(-2.5, abs=1.0)  # e^-gamma: geometric / arithmetic mean of noise


def test_hiss_is_level_independent_and_ignores_sparse_clicks() -> None:
    x = _with_noise(_tone(), 30)
    assert hiss_db(0.1 * x, SAMPLE_RATE).db == pytest.approx(hiss_db(x, SAMPLE_RATE).db, abs=1e-6)
    clicks = np.zeros(len(_tone()))
    clicks[:: SAMPLE_RATE // 2] = 1.0  # a broadband click every 0.5 s: onsets, not hiss
    assert hiss_db(_tone() + clicks, SAMPLE_RATE).db < -70


def test_hiss_of_silence_and_bad_input() -> None:
    silent = hiss_db(np.zeros(SAMPLE_RATE), SAMPLE_RATE)
    assert math.isnan(silent.db) and silent.frames == 0
    with pytest.raises(ValueError, match="too short"):
        hiss_db(np.zeros(100), SAMPLE_RATE)
    with pytest.raises(ValueError, match=r"\(T,\)"):
        hiss_db(np.zeros((2, SAMPLE_RATE)), SAMPLE_RATE)


# ----------------------------------------------------------------------------------------- prompts
def test_prompts_span_genres_and_name_tempo_and_key() -> None:
    assert len(LISTEN_PROMPTS) == 16 and len(set(LISTEN_PROMPTS)) == 16
    controls = [find_controls(p) for p in LISTEN_PROMPTS]
    assert sum(c.bpm is not None for c in controls) >= 8
    assert sum(c.key is not None for c in controls) >= 4
    names = [clip_name(i, p) for i, p in enumerate(LISTEN_PROMPTS)]
    assert len(set(names)) == 16 and all(re.fullmatch(r"\d\d-[a-z0-9-]+\.flac", n) for n in names)
    assert flac_bound(16, 10.0) <= MAX_FLAC_BYTES < flac_bound(16, max_seconds(16) + 0.1)


# ------------------------------------------------------------------------------------------ command
def _write_corpus(root: Path) -> None:
    t = np.arange(int(SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    clips = {
        "clean": _tone(SECONDS),
        "hissy": _with_noise(_tone(SECONDS), 20),
        "beeps": 0.3 * np.sin(2 * np.pi * 880 * t) * (t % 0.5 < 0.25),
    }
    records = []
    for name, wav in clips.items():
        save_audio(root / "clips" / f"{name}.wav", torch.tensor(wav, dtype=torch.float32))
        records.append(ClipRecord(id=name, path=f"clips/{name}.wav", seconds=SECONDS, captions=[name],
                                  split="valid", attributes={"genre": name}))
    write_records(root / "captions.jsonl", records)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("listen")
    random_bundle(root / "bundle", "tiny", overrides=MICRO_OVERRIDES)
    _write_corpus(root / "corpus")
    return root / "bundle", root / "corpus"


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    eval_cmd.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["eval", "listen", *argv])


def test_listen_writes_flacs_sheet_and_readme(setup, tmp_path, capsys) -> None:
    bundle, corpus = setup
    out = tmp_path / "listen"
    args = _args("--bundle", str(bundle), "--out", str(out), "--count", "2", "--seconds", str(SECONDS),
                 "--steps", "2", "--seed", "5", "--data", str(corpus), "--threads", "1", "-q")
    assert args.func(args) == 0
    assert "wrote 2 clips" in capsys.readouterr().out
    r = json.loads((out / "listen.json").read_text())
    assert [c["prompt"] for c in r["clips"]] == list(LISTEN_PROMPTS[:2])
    assert [c["seed"] for c in r["clips"]] == [5, 6]
    for c in r["clips"]:
        info = sf.info(out / c["file"])
        assert (info.format, info.subtype, info.samplerate) == ("FLAC", "PCM_16", SAMPLE_RATE)
        assert info.frames == int(SECONDS * SAMPLE_RATE) and c["bytes"] == (out / c["file"]).stat().st_size
        assert c["asked_bpm"] == find_controls(c["prompt"]).bpm
        assert c["hiss_db"] is None or -130 < c["hiss_db"] < 5
    assert r["flac_bytes"] == sum(c["bytes"] for c in r["clips"]) and r["prompts"] == 2
    assert sorted(p.name for p in out.glob("*.flac")) == sorted(c["file"] for c in r["clips"])
    assert (out / "sheet.png").read_bytes()[:8] == PNG_MAGIC
    ref = {c["id"]: c["hiss_db"] for c in r["reference"]["clips"]}
    assert set(ref) == {"clean", "hissy", "beeps"} and ref["hissy"] > ref["clean"] + 30
    readme = (out / "README.md").read_text()
    assert "--count 2" in readme and "--data" in readme and "Hiss measure" in readme
    assert f"[{r['clips'][0]['file']}]({r['clips'][0]['file']})" in readme and "(sheet.png)" in readme
    assert f"median {r['reference']['median_hiss_db']:.1f} dB" in readme


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seconds", "30"], r"^16 clips of 30 s can take up to .* MB .* use --seconds 12\.\d or less$"),
        (["--count", "0"], r"^--count must be 1\.\.16"),
        (["--seconds", "0.5"], r"^--seconds must be at least 1"),
        (["--seconds", "nan"], r"^--seconds must be at least 1"),
        (["--steps", "0"], r"^--steps must be"),
        (["--data", "/no/such/corpus"], r"no such folder$"),
        (["--bundle", "/no/such/bundle"], r"/no/such/bundle"),
    ],
)
def test_listen_bad_input_is_one_line(setup, tmp_path, argv, message) -> None:
    bundle, _ = setup
    base = ["--bundle", str(bundle), "--out", str(tmp_path / "o"), "-q"]
    args = _args(*base, *argv)
    with pytest.raises(CLIError, match=message) as info:
        args.func(args)
    assert "\n" not in str(info.value)
    assert not list((tmp_path / "o").glob("*.flac"))  # nothing generated before the check


def test_listen_cli_exit_status(setup, tmp_path, capsys) -> None:
    from melody_core.cli import main

    assert main(["eval", "listen", "--bundle", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
