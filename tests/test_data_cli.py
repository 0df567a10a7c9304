"""`melody data build|info` handlers: user errors are one-line CLIErrors; info prints a summary."""

import argparse
import json

import pytest
import torch

from melody_core import SAMPLE_RATE
from melody_core.audio import save_audio
from melody_core.commands import CLIError
from melody_core.commands import data as data_cmd


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="melody")
    sub = parser.add_subparsers(dest="command", required=True)
    data_cmd.register(sub)
    return parser.parse_args(argv)


def _error(argv: list[str]) -> str:
    args = _parse(argv)
    with pytest.raises(CLIError) as info:
        args.func(args)
    msg = str(info.value)
    assert msg and "\n" not in msg and "Traceback" not in msg
    return msg


def test_build_argument_errors_are_one_line(tmp_path):
    assert "--license" in _error(["data", "build", "--recorded", str(tmp_path)])
    assert "--hours" in _error(["data", "build", "--hours", "0"])
    assert "--workers" in _error(["data", "build", "--workers", "3"])
    assert "--variations" in _error(["data", "build", "--variations", "0"])
    assert "nothing to build" in _error(["data", "build", "--no-symbolic"])
    assert "--debian-music" in _error(["data", "build", "--debian-package", "wesnoth-1.16-music"])
    missing = tmp_path / "nope"
    msg = _error(["data", "build", "--no-symbolic", "--recorded", str(missing), "--license", "CC0", "--out",
                  str(tmp_path / "o")])  # fmt: skip
    assert "not a folder" in msg


def test_build_refuses_a_foreign_output_folder(tmp_path):
    (tmp_path / "src").mkdir()
    save_audio(tmp_path / "src" / "a.wav", torch.zeros(SAMPLE_RATE))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis.txt").write_text("keep me", encoding="utf-8")
    msg = _error(["data", "build", "--no-symbolic", "--recorded", str(tmp_path / "src"), "--license", "CC0",
                  "--out", str(tmp_path / "out")])  # fmt: skip
    assert "not a corpus built by melody" in msg
    assert (tmp_path / "out" / "thesis.txt").read_text(encoding="utf-8") == "keep me"


def test_build_with_only_short_files_reports_no_clips(tmp_path):
    (tmp_path / "src").mkdir()
    save_audio(tmp_path / "src" / "a.wav", 0.1 * torch.ones(SAMPLE_RATE))  # 1 s: too short for a clip
    msg = _error(["data", "build", "--no-symbolic", "--recorded", str(tmp_path / "src"), "--license", "CC0",
                  "--out", str(tmp_path / "out"), "--workers", "1"])  # fmt: skip
    assert "no clips" in msg


def test_info_errors_and_output(tmp_path, capsys):
    assert "not a folder" in _error(["data", "info", str(tmp_path / "missing")])
    assert "no audio clips" in _error(["data", "info", str(tmp_path)])
    save_audio(tmp_path / "x.flac", torch.zeros(2 * SAMPLE_RATE))
    (tmp_path / "x.txt").write_text("quiet\n", encoding="utf-8")
    args = _parse(["data", "info", str(tmp_path)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "1 clips, 0.00 h, 1 with captions" in out and "user: 1 clips" in out and "unknown" in out
    args = _parse(["data", "info", str(tmp_path), "--json"])
    assert args.func(args) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["clips"] == 1 and s["sources"]["user"]["licenses"] == ["unknown"]


def test_build_with_a_corrupt_soundfont_is_one_line(tmp_path):
    (tmp_path / "x.sf2").write_bytes(b"garbage")
    msg = _error(["data", "build", "--hours", "0.01", "--soundfont", str(tmp_path / "x.sf2"), "--out",
                  str(tmp_path / "o"), "--workers", "1"])  # fmt: skip
    assert "x.sf2" in msg and "SoundFont" in msg
    assert "--arrangement-share" in _error(["data", "build", "--arrangement-share", "1.5"])


def test_info_checks_the_bpm_of_arranged_clips(tmp_path, capsys):
    from melody_core.data.build import BuildSettings, build_corpus
    from melody_core.data.render import DEFAULT_SOUNDFONT

    settings = BuildSettings(
        out=str(tmp_path / "c"), symbolic=False, arrangements=2, arrangement_seconds=10.0, clip_seconds=10.0,
        min_clip_seconds=4.0, workers=1, soundfont=DEFAULT_SOUNDFONT,
    )  # fmt: skip
    build_corpus(settings, log=lambda _: None)
    args = _parse(["data", "info", str(tmp_path / "c"), "--no-plots", "--check-bpm", "5"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "BPM onset check: 2/2 arranged clips within 2 %" in out
