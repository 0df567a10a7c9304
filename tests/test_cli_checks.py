"""Order of checks of the CLI: everything that can fail without the model fails BEFORE the bundle
loads (the load is replaced by a tripwire), and cheap checks that used to be missing: NaN/Inf
samples in `melody info --audio`, hostile/truncated training checkpoints as a one-line reason."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from micro_bundle import MICRO_OVERRIDES

from melody_core import SAMPLE_RATE
from melody_core.cli import main
from melody_core.commands import generate as gen_cmd
from melody_core.train.state import StateFileError, load_state

BIG_PROMPT = "soft piano " * 9310  # ~100 kB


class _Loaded(Exception):
    """Raised by the tripwire instead of loading a model."""


@pytest.fixture
def tripwire(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def load(args: object) -> None:
        calls.append("load")
        raise _Loaded

    monkeypatch.setattr(gen_cmd, "_load", load)
    return calls


def _run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "p", "-o", "/proc/melody-test-out.wav"], "cannot write in /proc"),
        (["generate", "p", "-o", "{tmp}/a_file/x.wav"], "is not a folder"),
        (["generate", "p", "-o", "{tmp}/x.ogg"], ".wav or .flac"),
        (["generate", BIG_PROMPT, "-o", "{tmp}/x.wav"], "do not fit in WAV tags"),
        (["continue", "{tmp}/short.wav", "-o", "{tmp}/x.flac"], "too short (0.050 s"),
        (["continue", "{tmp}/short.wav", "-o", "{tmp}/x.wav", "--prompt", BIG_PROMPT], "WAV tags"),
        (["inpaint", "{tmp}/ok.wav", "--start", "0.5", "--end", "0.51", "-o", "{tmp}/x.wav"], "shorter than"),
        (["inpaint", "{tmp}/short.wav", "--start", "0", "--end", "0.04", "-o", "{tmp}/x.wav"], "too short"),
    ],
)
def test_cheap_checks_fail_before_the_model_loads(argv: list[str], message: str, tripwire: list[str],
                                                  tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "a_file").write_text("not a folder")
    sf.write(tmp_path / "short.wav", np.zeros(SAMPLE_RATE // 20, np.float32), SAMPLE_RATE)  # 50 ms
    sf.write(tmp_path / "ok.wav", np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE)
    code, err = _run(capsys, *[a.format(tmp=tmp_path) for a in argv])
    assert tripwire == [], "the model was loaded before the input was refused"
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert not (tmp_path / "x.wav").exists() and not (tmp_path / "x.flac").exists()
    assert not list(tmp_path.glob(".melody-probe-*"))  # the writability probe cleans up


def test_valid_requests_reach_the_model(tripwire: list[str], tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    """The checks do not over-block: a 100 kB prompt to FLAC, a missing output folder, a long enough
    input all get as far as loading the model."""
    sf.write(tmp_path / "ok.wav", np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE)
    for argv in (["generate", BIG_PROMPT, "-o", str(tmp_path / "x.flac")],
                 ["generate", "a short prompt", "-o", str(tmp_path / "new" / "deeper" / "x.wav")],
                 ["continue", str(tmp_path / "ok.wav"), "-o", str(tmp_path / "c.wav")]):
        tripwire.clear()
        code, err = _run(capsys, *argv)
        assert tripwire == ["load"], err
        assert code == 1  # the tripwire's exception, reported as an internal error
    assert not (tmp_path / "new").exists()  # folders are created only when the file is written


def test_output_that_fails_after_generating_is_kept_in_the_temp_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    from melody_core import audio
    from melody_core.checkpoint import random_bundle

    bundle = tmp_path / "bundle"
    random_bundle(bundle, "tiny", overrides=MICRO_OVERRIDES)
    out, spare = tmp_path / "out.wav", tmp_path / "spare"
    spare.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(spare))
    real_save = audio.save_audio

    def full_disk(path, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        if Path(path) == out:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(path, *a, **k)

    monkeypatch.setattr(audio, "save_audio", full_disk)
    code, err = _run(capsys, "generate", "drums", "-o", str(out), "--bundle", str(bundle), "--seconds", "1",
                     "--seed", "4", "--steps", "2", "-q")
    assert code == 2 and err.count("\n") == 1 and "No space left on device" in err, err
    kept = list(spare.glob("out-*.flac"))
    assert len(kept) == 1 and f"saved to {kept[0]}" in err
    data, rate = sf.read(kept[0])
    assert rate == SAMPLE_RATE and len(data) == SAMPLE_RATE


def test_info_audio_checks_the_samples(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    x = np.full(SAMPLE_RATE, 0.25, np.float32)
    ok = tmp_path / "ok.wav"
    sf.write(ok, x, SAMPLE_RATE, subtype="FLOAT")
    assert main(["info", "--audio", str(ok)]) == 0
    assert "peak 0.2500 (all samples finite)" in capsys.readouterr().out
    for value in (np.nan, np.inf):
        y = x.copy()
        y[1000:1010] = value
        bad = tmp_path / "bad.wav"
        sf.write(bad, y, SAMPLE_RATE, subtype="FLOAT")
        code, err = _run(capsys, "info", "--audio", str(bad))
        assert code == 2 and err.count("\n") == 1
        assert "10 of 24000 frames hold NaN or infinite samples (the first: frame 1000)" in err


class _Hostile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


def test_hostile_and_truncated_checkpoints_give_a_one_line_reason(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hostile = tmp_path / "hostile.pt"
    torch.save({"step": 1, "payload": _Hostile(marker)}, hostile)
    good = tmp_path / "good.pt"
    torch.save({"step": 3, "w": torch.ones(1000)}, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:1500])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00garbage" * 100)
    assert load_state(good)["step"] == 3
    for path, reason in ((hostile, "refused to load (it would run code"), (truncated, "truncated or damaged"),
                         (garbage, "truncated or damaged"), (tmp_path / "none.pt", "not found")):
        with pytest.raises(StateFileError) as info:
            load_state(path)
        msg = str(info.value)
        assert msg.startswith(str(path)) and reason in msg and "\n" not in msg, msg
    assert not marker.exists()  # nothing ran


def test_train_resume_from_a_hostile_checkpoint_is_a_cli_error(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    from melody_core.commands.train import main as train_main
    from melody_core.commands.train_smoke import stage_argv
    from melody_core.train.data import write_synthetic_corpus

    data = write_synthetic_corpus(tmp_path / "corpus", n_train=2, n_valid=1, seconds=0.5)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    marker = tmp_path / "pwned"
    torch.save({"step": 1, "payload": _Hostile(marker)}, run / "checkpoints" / "last.pt")
    code = train_main(stage_argv("vae", data, tmp_path / "runs", out=run))
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "refused to load (it would run code" in err and "--no-resume" in err
    assert not marker.exists()
