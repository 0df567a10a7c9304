"""`melody eval reconstruct`: VAE round trip of a folder of audio (`melody_core.eval.reconstruct`)
with an identity stand-in VAE (known answer) and a shrunken random tiny VAE, and the command."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
from micro_bundle import MICRO_OVERRIDES

from melody_core import SAMPLE_RATE
from melody_core.audio import load_audio, save_audio
from melody_core.checkpoint import load_bundle, random_bundle
from melody_core.cli import main
from melody_core.eval.card.metrics import reconstruction_scores
from melody_core.eval.reconstruct import (
    ReconstructError,
    audio_files,
    reconstruct_files,
    set_phase,
    spectral_convergence_db,
)

SR = SAMPLE_RATE


class _IdentityVAE(torch.nn.Module):
    """encode: (B, T) -> hop-sized frames as the 'mean' (B, T / hop, hop); decode: the inverse."""

    def __init__(self, hop: int = 96) -> None:
        super().__init__()
        self.config = SimpleNamespace(sample_rate=SR, hop=hop)
        self.hop = hop
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the module a device

    def encode(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = wav.reshape(wav.shape[0], -1, self.hop)  # (B, L, hop)
        return frames, torch.zeros_like(frames)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z.reshape(z.shape[0], -1)  # (B, L * hop)


def _tone(seconds: float, freq: float, rate: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("recon") / "music"
    save_audio(root / "a.wav", torch.from_numpy(_tone(1.5, 220)))
    stereo = np.stack([_tone(1.0, 330, 44100), _tone(1.0, 440, 44100)], axis=1)  # (T, 2) at 44.1 kHz
    (root / "sub").mkdir()
    sf.write(root / "sub" / "b.flac", stereo, 44100)
    (root / "broken.wav").write_bytes(b"RIFF not really a wave file")
    save_audio(root / "tiny.wav", torch.from_numpy(_tone(0.01, 440)))  # shorter than MIN_SECONDS
    (root / "notes.txt").write_text("not audio")
    return root


@pytest.fixture(scope="module")
def vae_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("recon") / "bundle"
    random_bundle(path, "tiny", components=["vae"], overrides={"vae": MICRO_OVERRIDES["vae"]})
    return path


def test_audio_files_recursive_sorted(audio_dir: Path) -> None:
    names = [p.relative_to(audio_dir).as_posix() for p in audio_files(audio_dir)]
    assert names == ["a.wav", "broken.wav", "sub/b.flac", "tiny.wav"]


def test_identity_vae_reconstructs_perfectly(audio_dir: Path) -> None:
    warnings: list[str] = []
    r = reconstruct_files(_IdentityVAE(), audio_files(audio_dir), max_seconds=1.0, warn=warnings.append)
    assert r["files"] == 2 and r["skipped"] == 2 and len(warnings) == 2
    assert {Path(s["path"]).name for s in r["skipped_files"]} == {"broken.wav", "tiny.wav"}
    assert r["mel_distance"] == 0.0 and r["si_sdr"] > 60 and r["spectral_convergence_db"] < -100
    assert [f["seconds"] for f in r["per_file"]] == [1.0, 1.0]  # a.wav: central 1 s crop of 1.5 s


def test_random_vae_scores_match_a_manual_round_trip(audio_dir: Path, vae_bundle: Path) -> None:
    vae = load_bundle(vae_bundle, components=["vae"])["vae"]
    paths = [audio_dir / "a.wav", audio_dir / "sub" / "b.flac"]
    r = reconstruct_files(vae, paths, max_seconds=0.5)
    assert r["files"] == 2 and r["skipped"] == 0 and r["audio_seconds"] == pytest.approx(1.0)
    mels = [f["mel_distance"] for f in r["per_file"]]
    assert r["mel_distance"] == pytest.approx(sum(mels) / 2) and min(mels) > 0.01
    assert all(math.isfinite(f["si_sdr"]) for f in r["per_file"])
    # a.wav by hand: central 0.5 s of 1.5 s -> samples [12000, 24000), encode mean, decode
    crop = load_audio(audio_dir / "a.wav")[SR // 2 : SR]
    with torch.no_grad():
        recon = vae.decode(vae.encode(crop[None])[0])[0]
    mel, sdr = reconstruction_scores(recon, crop)
    assert r["per_file"][0]["mel_distance"] == pytest.approx(mel, abs=1e-4)
    assert r["per_file"][0]["si_sdr"] == pytest.approx(sdr, abs=1e-2)


def test_spectral_convergence_and_phase_overrides(audio_dir: Path, vae_bundle: Path) -> None:
    x = torch.from_numpy(_tone(1.0, 440))
    assert spectral_convergence_db(0.5 * x, x) == pytest.approx(20 * math.log10(0.5), abs=1e-3)
    vae = load_bundle(vae_bundle, components=["vae"])["vae"]
    dec = vae.decoder
    set_phase(vae, "pghi", 0)
    assert (dec.phase_source, dec.phase_iters) == ("pghi", 0) and vae.config.istft_phase == "pghi"
    set_phase(vae, None, 3)  # None keeps the other setting
    assert (dec.phase_source, dec.phase_iters) == ("pghi", 3)
    r = reconstruct_files(vae, [audio_dir / "a.wav"], max_seconds=0.5)
    assert math.isfinite(r["si_sdr"]) and math.isfinite(r["spectral_convergence_db"])
    with pytest.raises(ReconstructError, match="phase must be"):
        set_phase(vae, "magic")
    with pytest.raises(ReconstructError, match="iSTFT"):
        set_phase(_IdentityVAE(), "pghi")


def test_reconstruct_files_errors(audio_dir: Path) -> None:
    with pytest.raises(ReconstructError, match="no audio files"):
        reconstruct_files(_IdentityVAE(), [])
    with pytest.raises(ReconstructError, match="none of the 2"):
        reconstruct_files(_IdentityVAE(), [audio_dir / "broken.wav", audio_dir / "tiny.wav"])


# -------------------------------------------------------------------------------------- the command
def _run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_command_json_and_table(audio_dir: Path, vae_bundle: Path, capsys) -> None:
    base = ("eval", "reconstruct", str(audio_dir), "--bundle", str(vae_bundle), "--max-seconds", "0.5",
            "--threads", "2")
    code, out, err = _run(capsys, *base, "--json", "-q")
    assert code == 0
    r = json.loads(out)  # stdout is exactly one JSON object
    assert {"mel_distance", "si_sdr", "files", "skipped", "per_file"} <= set(r)
    assert r["files"] == 2 and r["skipped"] == 2 and math.isfinite(r["mel_distance"])
    assert err.count("warning: skipped") == 2 and "Traceback" not in err  # warnings even with -q
    code, out, err = _run(capsys, *base)
    assert code == 0 and "mean of 2 file(s)" in out and "sub/b.flac" in out and "[3/4]" in err
    code, out, _ = _run(capsys, *base, "--json", "-q", "--phase", "pghi", "--phase-iters", "0")
    assert code == 0 and json.loads(out)["files"] == 2


def test_command_errors(audio_dir: Path, vae_bundle: Path, tmp_path: Path, capsys) -> None:
    def error(*argv: str) -> str:
        code, out, err = _run(capsys, "eval", "reconstruct", "--bundle", str(vae_bundle), "-q", *argv)
        assert code == 2 and out == "" and "Traceback" not in err
        lines = err.strip().splitlines()
        assert lines[-1].startswith("error: ")
        return lines[-1]

    assert "no such folder" in error(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    assert "no audio files" in error(str(tmp_path / "empty"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.wav").write_bytes(b"garbage")
    assert "none of the 1" in error(str(bad))
    assert "--max-seconds" in error(str(audio_dir), "--max-seconds", "0")
    assert "--phase-iters" in error(str(audio_dir), "--phase-iters", "-1")
    assert "no such bundle" in error(str(audio_dir), "--bundle", str(tmp_path / "nobundle"))


def test_command_in_a_subprocess_prints_one_error_line(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "melody_core.cli", "eval", "reconstruct", str(tmp_path / "nope")]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope'}: no such folder"]
