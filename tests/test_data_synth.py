"""In-process FluidSynth renders (libfluidsynth through pyfluidsynth): same audio as the command
line, independent of what the process rendered before, guarded against stuck notes and bad fonts."""

import numpy as np
import pytest
import torch

from melody_core import SAMPLE_RATE
from melody_core.data import render, synth
from melody_core.data.midi import Note, Track, end_seconds, midi_bytes, write_midi
from melody_core.data.render import Renderer, RenderError, render_in_process, render_midi, render_tracks

FONT = render.find_soundfont() or ""
ROOM = ("synth.reverb.room-size=0.80", "synth.reverb.level=0.90", "synth.chorus.level=1.5")


def _tracks(pitch: int = 60, program: int = 0) -> list[Track]:
    return [
        Track(0, program, [Note(i * 0.5, 0.45, pitch + i % 4 * 2, 100) for i in range(8)], "lead", reverb=90),
        Track(9, 0, [Note(i * 1.0, 0.1, 36 + 2 * (i % 2), 110) for i in range(4)], name="drums"),
    ]  # fmt: skip


def test_the_library_is_used_for_the_default_renderer():
    assert synth.available() and synth.library_version().startswith("2.")
    assert Renderer(soundfont=FONT).in_process()
    assert not Renderer(binary="/bin/false", soundfont=FONT).in_process()  # another program: run it
    assert not Renderer(soundfont=FONT, library=False).in_process()


def test_in_process_render_matches_the_command_line(tmp_path):
    tracks = _tracks()
    expected = end_seconds(tracks, 120.0)
    cli = Renderer(soundfont=FONT, options=ROOM, library=False)
    a = render_tracks(cli, tracks, 120.0, tmp_path / "cli", expected)
    b = render_tracks(Renderer(soundfont=FONT, options=ROOM), tracks, 120.0, tmp_path / "lib", expected)
    assert not list(tmp_path.iterdir())  # the command line's .mid / .wav are removed
    assert a.numel() == b.numel() == int((expected + render.KEEP_TAIL_S) * SAMPLE_RATE)
    corr = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    assert corr > 0.999 and float((a - b).abs().max()) < 0.02 * float(a.abs().max())
    dry = render_tracks(Renderer(soundfont=FONT, options=("synth.reverb.active=0",)), tracks, 120.0,
                        tmp_path / "dry", expected)  # fmt: skip
    assert float((dry - b).abs().max()) > 0.01  # the options reach the synthesizer


def test_a_render_does_not_depend_on_the_renders_before_it():
    first = _tracks(60, 0)
    other = _tracks(48, 81)  # a saw lead with long release, lots of reverb
    r = Renderer(soundfont=FONT, options=ROOM)
    exp = end_seconds(first, 120.0)
    a = render_in_process(r, midi_bytes(first, 120.0, stop_after_s=2.5), exp)
    render_in_process(r, midi_bytes(other, 140.0), end_seconds(other, 140.0))
    again = render_in_process(r, midi_bytes(first, 120.0, stop_after_s=2.5), exp)
    assert torch.equal(a, again)


def test_a_stuck_note_stops_at_the_limit():
    tracks = [Track(0, 48, [Note(0.0, 200.0, 60, 100)])]  # 100 s of strings where 1 s is expected
    with pytest.raises(RenderError, match="ran past the expected length"):
        render_in_process(Renderer(soundfont=FONT), midi_bytes(tracks, 120.0), expected_s=1.0)


def test_a_short_render_is_refused(tmp_path):
    tracks = _tracks()
    with pytest.raises(RenderError, match="expected"):
        render_in_process(Renderer(soundfont=FONT), midi_bytes(tracks, 120.0), expected_s=30.0)


@pytest.mark.parametrize("content", [b"RIFF\x04\x00\x00\x00sfbk", b"not a soundfont"])
def test_a_bad_soundfont_or_setting_is_a_one_line_error(tmp_path, content):
    bad = tmp_path / "bad.sf2"
    bad.write_bytes(content)
    data = midi_bytes(_tracks(), 120.0)
    with pytest.raises(RenderError) as info:
        render_in_process(Renderer(soundfont=str(bad)), data, 4.0)
    assert "bad.sf2" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(RenderError, match="no.such.setting"):
        render_in_process(Renderer(soundfont=FONT, options=("no.such.setting=1",)), data, 4.0)
    with pytest.raises(RenderError, match="rendered 0.0 s"):  # FluidSynth plays nothing of it
        render_in_process(Renderer(soundfont=FONT), b"MThd garbage", 4.0)


def test_render_midi_file_path_still_runs_the_binary(tmp_path):
    tracks = _tracks()
    midi = write_midi(tmp_path / "t.mid", tracks, 120.0, stop_after_s=2.5)
    audio = render_midi(Renderer(soundfont=FONT), midi, tmp_path / "t.wav", end_seconds(tracks, 120.0))
    assert (tmp_path / "t.wav").is_file() and np.isfinite(audio.numpy()).all()
