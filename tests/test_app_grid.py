"""The musical grid in the studio: BPM typed or tapped, the bar/beat grid on the arrangement, selections
snapping to bars, seamless loop playback of a selection, and "Export loop…" (bars kept exactly,
crossfaded loop point, `smpl` loop + ACID tempo read by a separate process with mutagen)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import numpy as np
from app_fake_audio import FakeBackend
from app_fixtures import WAIT_MS, generate, make_studio  # noqa: F401

from app.audio.player import State
from melody_core.audio.daw_tags import read_acid_tempo, read_smpl_loops, riff_chunks
from melody_core.audio.levels import LIVE_MARGIN_DB, LevelSettings, true_peak_dbtp
from melody_core.audio.loops import fade_samples, seamless_loop

SR = 24000


def test_bpm_typed_or_tapped_draws_the_bar_grid_and_selections_snap(qtbot, make_studio):  # noqa: F811
    studio = make_studio()
    generate(qtbot, studio, "grid", 4.0)
    w = studio.window
    view = w.arrangement
    assert len(view.grid.bar_times) == 0  # no tempo: no grid
    for t in (10.0, 10.5, 11.0, 11.5):  # tapped at 120 BPM
        w.panel.tap_tempo(now=t)
    assert w.panel.bpm.value() == 120.0
    view.plot.setXRange(0, 4, padding=0)
    qtbot.wait(20)
    np.testing.assert_allclose(view.grid.bar_times, [0.0, 2.0, 4.0])
    np.testing.assert_allclose(view.grid.beat_times, [0.5, 1.0, 1.5, 2.5, 3.0, 3.5])
    assert view.grid.labels() == ["1", "2", "3"]
    assert w.grid_controls.bar_beat.text() == "bar 1.1" and w.grid_controls.snap.isEnabled()
    view._relay.dragged.emit(0.3, 3.3, True)  # noqa: SLF001 - what the view box emits for a left drag
    assert view.selection() == (0.3, 3.3)  # snapping is off
    w.grid_controls.snap.setChecked(True)
    assert view.selection() == (0.0, 4.0)  # the selection snapped when snapping was switched on
    view._relay.dragged.emit(2.2, 2.9, True)  # noqa: SLF001
    assert view.selection() == (2.0, 4.0)  # at least one bar
    view.set_selection((0.9, 2.2))
    assert view.selection() == (0.0, 2.0)
    w.panel.bpm.setValue(97.0)  # typed: the grid follows, the selection re-snaps to the new bars
    bar = 4 * 60 / 97
    assert np.allclose(np.diff(view.grid.bar_times), bar)
    a, b = view.selection()
    assert a == 0.0 and abs(b / bar - round(b / bar)) < 1e-9
    w.panel.bpm.setValue(0.0)
    assert len(view.grid.bar_times) == 0 and w.grid_controls.bar_beat.text() == ""
    assert not w.grid_controls.snap.isEnabled()
    w.panel.bpm.setValue(97.0)
    w.panel.key.setCurrentIndex(w.panel.key.findData("F# minor"))
    data = studio.store.folder
    studio.close()
    again = make_studio(data_dir=data)  # tempo, key and snapping survive a restart
    w2 = again.window
    assert w2.panel.musical() == (97.0, "F# minor") and w2.grid_controls.snap.isChecked()
    assert len(w2.arrangement.grid.bar_times) > 0 and w2.arrangement.snap


def _find(haystack: np.ndarray, needle: np.ndarray) -> int:
    n = len(needle)
    for i in np.flatnonzero(haystack == needle[0]):
        if i + n <= len(haystack) and np.array_equal(haystack[i:i + n], needle):
            return int(i)
    return -1


def test_loop_playback_of_a_selection_is_the_seamless_loop_repeated(qtbot, make_studio):  # noqa: F811
    backend = FakeBackend(speed=4.0)
    studio = make_studio(backend=backend)
    generate(qtbot, studio, "loop", 3.0)
    w, pb = studio.window, studio.playback
    qtbot.waitUntil(lambda: studio.player.state is State.STOPPED, timeout=WAIT_MS)
    w.levels_action.setChecked(False)  # compare raw samples
    w.arrangement.set_selection((1.0, 2.0))
    w.transport.loop.setChecked(True)
    backend.played.clear()
    positions: list[int] = []
    pb.toggle()  # Space: plays the loop
    qtbot.waitUntil(lambda: (positions.append(pb.position()) or len(backend.captured()) > 4 * SR),
                    timeout=WAIT_MS)
    pb.stop()
    loop = seamless_loop(studio.session.arrangement_audio(), SR, 2 * SR, fade_samples(SR))
    assert len(loop) == SR and pb.loop_audio is not None and np.array_equal(pb.loop_audio, loop)
    played = backend.captured()
    at = _find(played, loop[:64])
    assert at >= 0
    np.testing.assert_array_equal(played[at:at + 3 * SR], np.tile(loop, 3))  # wraps exactly, no gap
    assert all(p == -1 or SR <= p < 2 * SR for p in positions)  # the playhead stays inside the loop
    step = float(np.abs(np.diff(loop)).max())
    assert abs(float(loop[0] - loop[-1])) <= step  # the wrap is no bigger a step than the music has
    w.levels_action.setChecked(True)  # levelled loop playback stays under the ceiling too
    backend.played.clear()
    pb.toggle()
    qtbot.waitUntil(lambda: len(backend.captured()) > 2 * SR, timeout=WAIT_MS)
    pb.stop()
    ceiling = LevelSettings().ceiling_dbtp
    assert np.abs(backend.captured()).max() <= 10 ** ((ceiling - LIVE_MARGIN_DB) / 20) + 1e-6


READ = r"""
import sys, json, mutagen
tags = mutagen.File(sys.argv[1]).tags
print(json.dumps({"bpm": str(tags["TBPM"]), "key": str(tags["TKEY"]), "title": str(tags["TIT2"])}))
"""


def test_export_loop_keeps_whole_bars_with_smpl_and_acid(qtbot, make_studio, tmp_path, monkeypatch):  # noqa: F811
    from PySide6.QtWidgets import QFileDialog

    studio = make_studio()
    generate(qtbot, studio, "export loop", 6.0)
    w = studio.window
    w.panel.bpm.setValue(120.0)
    w.panel.key.setCurrentIndex(w.panel.key.findData("A minor"))
    w.grid_controls.snap.setChecked(True)
    w.arrangement._relay.dragged.emit(0.4, 3.6, True)  # noqa: SLF001 - a left drag
    assert w.arrangement.selection() == (0.0, 4.0)  # two bars
    w._set_format("rate", 48_000)  # noqa: SLF001
    target = tmp_path / "two-bars"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), "WAV (*.wav)"))
    w.export_loop_action.trigger()
    out = tmp_path / "two-bars.wav"
    assert out.exists(), w.messages.text()
    import soundfile as sf

    audio, rate = sf.read(str(out), dtype="float32")
    assert rate == 48_000 and audio.shape == (4 * 48_000, 2)  # exactly two bars at 120 BPM
    assert read_smpl_loops(out) == [(0, 4 * 48_000)] and read_acid_tempo(out) == 120.0
    acid = dict(riff_chunks(out))[b"acid"]
    flags, root, _, _, beats = struct.unpack("<IHHfI", acid[:16])
    assert beats == 8 and root == 69 and flags & 0x02  # 8 beats, root A
    assert true_peak_dbtp(audio.T, rate) <= LevelSettings().ceiling_dbtp + 0.01
    mono = audio[:, 0]
    step = float(np.abs(np.diff(mono)).max())
    assert abs(float(mono[0] - mono[-1])) <= step  # seamless: the wrap is an ordinary step
    got = json.loads(subprocess.run([sys.executable, "-c", READ, str(out)], capture_output=True, text=True,
                                    check=True, timeout=60).stdout)
    assert got == {"bpm": "120", "key": "A minor", "title": got["title"]} and "export loop" in got["title"]
