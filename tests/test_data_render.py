"""FluidSynth rendering under its guards, and cutting renders into clips."""

import os
import sys
from pathlib import Path

import pytest
import torch

from melody_core import SAMPLE_RATE
from melody_core.audio import audio_info
from melody_core.data import render
from melody_core.data.catalog import WorkRef
from melody_core.data.clips import ClipSpec, cut_clips
from melody_core.data.jobs import SymbolicJob, run_symbolic
from melody_core.data.midi import Note, Track, end_seconds, write_midi
from melody_core.data.render import Renderer, RenderError, render_midi, run_guarded

SHORT_WORK = WorkRef("bach/bwv66.6", "bach", "bach/bwv66.6.mxl", None, "")


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "fake_renderer"
    path.write_text(f"#!{sys.executable}\nimport os, sys, time\n"
                    f"open(sys.argv[0] + '.pid', 'w').write(str(os.getpid()))\n{body}\n", encoding="utf-8")
    path.chmod(0o755)
    return str(path)


def _killed(script: str) -> bool:
    """The fake renderer started and is no longer running (stopped, not waited out)."""
    pid = int(Path(script + ".pid").read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_timeout_kills_a_hanging_renderer(tmp_path):
    fake = _script(tmp_path, "time.sleep(60)")
    with pytest.raises(RenderError, match="timed out"):
        run_guarded([fake], tmp_path / "out.wav", timeout_s=1.0)
    assert _killed(fake)  # its 60 s sleep was cut short


def test_size_watchdog_stops_an_endless_render(tmp_path):
    fake = _script(
        tmp_path,
        "f = open(sys.argv[sys.argv.index('-F') + 1], 'wb')\n"
        "while True:\n    f.write(bytes(96000)); f.flush(); time.sleep(0.005)",
    )  # writes forever, like a render with a stuck voice
    midi = write_midi(tmp_path / "a.mid", [Track(0, 0, [Note(0, 1, 60, 80)])], 120.0)
    with pytest.raises(RenderError, match="past the expected length"):
        render_midi(Renderer(binary=fake), midi, tmp_path / "a.wav", expected_s=0.5)
    assert _killed(fake)


def test_a_failing_renderer_is_skipped_with_a_log_line(tmp_path, monkeypatch):
    monkeypatch.setattr(render, "TIMEOUT_BASE_S", 1.0)
    monkeypatch.setattr(render, "TIMEOUT_PER_AUDIO_S", 0.0)
    fake = _script(tmp_path, "time.sleep(60)")
    job = SymbolicJob(SHORT_WORK, 1, str(tmp_path), 0, 12.0, ClipSpec(5.0, 4.0), Renderer(binary=fake), 2)
    result = run_symbolic(job)
    assert _killed(fake)
    assert result.records == [] and len(result.skipped) == 1
    assert "bach/bwv66.6 v0" in result.skipped[0] and "timed out" in result.skipped[0]


def test_fluidsynth_renders_the_expected_length(tmp_path):
    tracks = [Track(0, 40, [Note(i * 0.5, 0.5, 67 + i % 3, 90) for i in range(8)]),
              Track(1, 40, [Note(0.0, 4.0, 55, 70)])]  # fmt: skip
    expected = end_seconds(tracks, 120.0)
    assert expected == pytest.approx(2.0)
    midi = write_midi(tmp_path / "t.mid", tracks, 120.0)
    audio = render_midi(Renderer(soundfont=render.find_soundfont() or ""), midi, tmp_path / "t.wav", expected)
    assert audio.dtype == torch.float32 and audio.dim() == 1
    assert audio.numel() == int((expected + render.KEEP_TAIL_S) * SAMPLE_RATE)
    assert audio[:SAMPLE_RATE].abs().max() > 1e-3  # sound in the first second
    assert os.path.exists(tmp_path / "t.wav")


def test_cut_clips_lengths_and_silence():
    sr = 1000  # a low rate keeps the test fast; the logic is rate-independent
    tone = torch.sin(torch.arange(70 * sr) / sr * 2 * torch.pi * 50) * 0.5
    tone[30 * sr : 50 * sr] = 0.0  # a silent stretch
    clips = cut_clips(tone, ClipSpec(target_s=20.0, min_s=10.0), sample_rate=sr)
    lengths = [c.numel() / sr for _, c in clips]
    assert [i for i, _ in clips] == [0, 1, 3]  # clip 2 (35-52.5 s) is mostly silent
    assert all(10.0 <= s <= 30.0 for s in lengths)
    assert cut_clips(tone[: 9 * sr], ClipSpec(), sample_rate=sr) == []


def test_all_sound_off_ends_long_releases(tmp_path):
    tracks = [Track(0, 25, [Note(0.0, 1.0, 40, 120)])]  # a low steel-guitar note rings for many seconds
    renderer = Renderer(soundfont=render.find_soundfont() or "")
    lengths = []
    for name, stop in (("ring", None), ("stop", 1.0)):
        midi = write_midi(tmp_path / f"{name}.mid", tracks, 120.0, stop_after_s=stop)
        wav = tmp_path / f"{name}.wav"
        run_guarded(renderer.command(midi, wav), wav, timeout_s=60.0)
        lengths.append(audio_info(wav).duration_s)
    assert lengths[1] < 0.5 + 1.0 + 2.5 < lengths[0]  # note (0.5 s) + stop delay + reverb/buffer slack
