"""Studio v2: bounded keep-playing lead, Stop keeps exactly the heard samples, prompt markers, drag-out
from the segment cards into the project folder, theme menu, layout at 1366x768, quit mid-generation."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from app_fake_audio import FakeBackend
from app_fixtures import (  # noqa: F401
    WAIT_MS,
    HalfSecond,
    generate,
    keep_playing_studio,
    make_studio,
    run_job,
    start_keep_playing,
    steer,
)
from PySide6.QtCore import QPoint, QRect, Qt
from PySide6.QtWidgets import QMessageBox, QWidget

from melody_core import SAMPLE_RATE

SR = SAMPLE_RATE


def test_keep_playing_lead_bounded_stop_keeps_exactly_the_heard_samples(qtbot, make_studio):  # noqa: F811
    backend = FakeBackend(speed=1.0)
    studio, chunks = keep_playing_studio(make_studio, backend, HalfSecond)
    w = studio.window
    w.levels_action.setChecked(False)  # compare raw samples with the device capture
    gate = start_keep_playing(studio, "ambient pad")
    qtbot.waitUntil(lambda: len(gate.leads) >= 4 and gate.waits > 0, timeout=WAIT_MS)
    heard_at_edit = gate.heard
    steer(studio, "ambient pad with bells")
    qtbot.waitUntil(lambda: len(w.arrangement.live_markers) == 1, timeout=WAIT_MS)
    marker_sample = gate.markers[0].sample
    qtbot.waitUntil(lambda: gate.heard > marker_sample + SR // 4, timeout=WAIT_MS)  # the new prompt is heard
    take_id = run_job(qtbot, studio, w.cancel)  # Stop
    # the lead never exceeded its bound, and the bound really held the generator back
    assert all(lead <= bound for lead, bound in gate.leads), gate.leads
    assert gate.waits > 0 and gate.bound < 2 * SR
    # the new prompt starts at most one bound after the playhead at the edit (in samples, not wall time)
    assert marker_sample - heard_at_edit <= gate.bound
    generated = np.concatenate(chunks)
    take = studio.session.take(take_id)
    heard = len(studio.session.audio(take_id))
    assert 0 < heard < len(generated)
    np.testing.assert_allclose(studio.session.audio(take_id), generated[:heard], atol=2e-7)  # 24-bit FLAC
    played = backend.captured()
    src = generated[:heard]
    np.testing.assert_array_equal(played[played != 0], src[src != 0])  # exactly what the device got
    tail = [t for t in studio.session.history() if t.kind == "unheard"]
    assert len(tail) == 1 and take_id not in [t.id for t in tail]
    np.testing.assert_allclose(studio.session.audio(tail[0].id), generated[heard:len(generated)][
        : len(studio.session.audio(tail[0].id))], atol=2e-7)
    assert heard + len(studio.session.audio(tail[0].id)) >= len(generated)
    assert take.metadata["prompt_markers"] == [[marker_sample, "ambient pad with bells"]]
    assert w.arrangement.markers == [(marker_sample, "ambient pad with bells")]


READ = r"""
import sys, json, struct, soundfile as sf, mutagen
p = sys.argv[1]
data = open(p, "rb").read()
pos, acid = 12, None
while pos + 8 <= len(data):
    cid, size = data[pos:pos+4], struct.unpack("<I", data[pos+4:pos+8])[0]
    if cid == b"acid":
        acid = struct.unpack("<f", data[pos+8+20:pos+8+24])[0]
    pos += 8 + size + (size & 1)
tags = mutagen.File(p).tags
print(json.dumps({"frames": sf.info(p).frames, "rate": sf.info(p).samplerate, "acid": acid,
                  "title": str(tags["TIT2"]), "seed": str(tags["TXXX:seed"]), "bpm": str(tags["TBPM"])}))
"""


def test_segment_card_drag_out_file_is_tagged_and_kept(qtbot, make_studio, tmp_path):  # noqa: F811
    from PySide6.QtTest import QTest

    data = tmp_path / "data"
    studio = make_studio(data_dir=data)
    generate(qtbot, studio, "drag me", 1.0)
    generate(qtbot, studio, "second", 1.0)
    w = studio.window
    w.panel.bpm.setValue(120)
    cards = list(w.strip.cards)
    handle = cards[0].drag
    QTest.mousePress(handle, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(5, 5))
    qtbot.wait(50)
    assert w.strip.cards == cards and not cards[0].isHidden()  # pressing did not rebuild the cards
    assert w.selected == 0
    path = handle.build_mime().urls()[0].toLocalFile()
    assert path.startswith(str(data / "drag"))
    got = json.loads(subprocess.run([sys.executable, "-c", READ, path], capture_output=True, text=True,
                                    check=True, timeout=60).stdout)
    take = studio.session.take(studio.session.take_ids[0])
    assert got["title"] == "drag me" and got["seed"] == str(take.seed)
    assert got["acid"] == 120.0 and got["bpm"] == "120" and got["frames"] == got["rate"]
    assert handle.build_mime().urls()[0].toLocalFile() == path  # the same audio: the same file
    arr = w.drag_all.build_mime().urls()[0].toLocalFile()
    studio.close()
    again = make_studio(data_dir=data)  # next launch: the files a DAW project uses are still there
    assert again.window.strip.cards
    from pathlib import Path

    assert Path(path).exists() and Path(arr).exists()


def test_theme_menu_switches_and_saves_the_mode(qtbot, make_studio):  # noqa: F811
    from PySide6.QtGui import QPalette
    from PySide6.QtWidgets import QApplication

    studio = make_studio()
    w = studio.window
    w.theme_actions["dark"].trigger()
    assert studio.store.pref("theme") == "dark"
    assert QApplication.palette().color(QPalette.ColorRole.Window).lightness() < 128
    w.theme_actions["light"].trigger()
    assert studio.store.pref("theme") == "light"
    assert QApplication.palette().color(QPalette.ColorRole.Window).lightness() > 128
    assert w.theme_actions["light"].isChecked() and not w.theme_actions["dark"].isChecked()


def _leaves(root: QWidget) -> list[QWidget]:
    kinds = ("QLabel", "QToolButton", "QPushButton", "QComboBox", "QSlider", "QCheckBox", "QSpinBox",
             "QDoubleSpinBox", "QLineEdit", "DragHandle")
    return [c for c in root.findChildren(QWidget) if c.isVisible() and type(c).__name__ in kinds
            and c.parentWidget() is not None]


def _overlaps(widgets: list[QWidget], top: QWidget) -> list[tuple[str, str]]:
    rects = [(wd, QRect(wd.mapTo(top, QPoint(0, 0)), wd.size())) for wd in widgets]
    bad = []
    for i, (a, ra) in enumerate(rects):
        for b, rb in rects[i + 1:]:
            if a.isAncestorOf(b) or b.isAncestorOf(a):
                continue
            if ra.intersects(rb):
                bad.append((f"{type(a).__name__}:{getattr(a, 'text', lambda: '')()}",
                            f"{type(b).__name__}:{getattr(b, 'text', lambda: '')()}"))
    return bad


def test_layout_at_1366x768_fits_and_nothing_overlaps(qtbot, make_studio):  # noqa: F811
    studio = make_studio()
    generate(qtbot, studio, "layout", 1.0)
    w = studio.window
    w.resize(1600, 1000)
    w.fit_to_screen(QRect(0, 0, 1366, 768))
    qtbot.wait(100)
    assert w.frameGeometry().width() <= 1366 and w.frameGeometry().height() <= 768
    for area in (w.transport, w.strip.cards[0], w.history, w.centralWidget()):
        leaves = [x for x in _leaves(area) if not isinstance(x.parentWidget(), QMessageBox)]
        assert not _overlaps(leaves, w), (type(area).__name__, _overlaps(leaves, w))
    assert w.minimumSizeHint().width() <= 1366 and w.minimumSizeHint().height() <= 768
    # every transport and history control is fully inside the window (not clipped)
    for x in _leaves(w.transport) + [x for x in _leaves(w.history) if x.parentWidget() is w.history]:
        r = QRect(x.mapTo(w, QPoint(0, 0)), x.size())
        assert w.rect().contains(r), type(x).__name__
    # the docks and the timeline share the width without overlapping
    docks = [d for d in w.findChildren(QWidget) if type(d).__name__ == "QDockWidget" and d.isVisible()]
    assert not _overlaps([*docks, w.centralWidget()], w)


def test_geometry_is_remembered(qtbot, make_studio, tmp_path):  # noqa: F811
    data = tmp_path / "data"
    studio = make_studio(data_dir=data)
    studio.window.resize(1300, 700)
    assert studio.window.width() == 1300
    studio.close()
    again = make_studio(data_dir=data)
    again.window.restore_geometry(QRect(0, 0, 1600, 1000))  # as on a 1600x1000 screen
    assert (again.window.width(), again.window.height()) == (1300, 700)
    again.window.restore_geometry(QRect(0, 0, 1366, 768))  # a smaller screen: shrunk onto it
    assert again.window.frameGeometry().width() <= 1366 and again.window.frameGeometry().height() <= 768


def test_quit_during_generation_keeps_the_partial_take(qtbot, make_studio, tmp_path):  # noqa: F811
    data = tmp_path / "data"
    studio = make_studio(data_dir=data)
    w = studio.window
    w.panel.prompt.setPlainText("endless")
    w.panel.steps.setValue(2)
    w.keep_playing()
    qtbot.waitUntil(lambda: studio.controller.live_samples >= SR, timeout=WAIT_MS)
    asked = []
    w.ask_keep_partial = lambda seconds: asked.append(seconds) or QMessageBox.StandardButton.Yes
    n = studio.controller.live_samples
    studio.close()
    assert asked and asked[0] >= 1.0
    again = make_studio(data_dir=data)
    ids = again.session.take_ids
    assert len(ids) == 1 and len(again.session.audio(ids[0])) >= n
    assert again.session.take(ids[0]).kind == "stream"


def test_model_info_reads_name_size_and_card_line(tmp_path):
    from app.model_info import model_info

    bundle = tmp_path / "my-model"
    bundle.mkdir()
    (bundle / "lm.safetensors").write_bytes(b"\0" * 2_000_000)
    card = "# My model\n\nA test model. **It makes noise, not music.** More.\n"
    (bundle / "MODEL_CARD.md").write_text(card)
    info = model_info(bundle)
    assert (info.name, round(info.size_mb, 1)) == ("my-model", 2.0)
    assert info.card_line == "It makes noise, not music."
    (bundle / "MODEL_CARD.md").write_text("# My model\n\nFirst sentence here. Second one.\n")
    assert model_info(bundle).card_line == "First sentence here."


def test_export_loop_without_extension_is_a_crossfaded_smpl_loop(qtbot, make_studio, tmp_path):  # noqa: F811
    from melody_core.audio.daw_tags import read_acid_tempo, read_smpl_loops
    from melody_core.audio.levels import true_peak_dbtp

    studio = make_studio()
    generate(qtbot, studio, "loop me", 2.0)
    w = studio.window
    w.panel.bpm.setValue(90)
    w._set_format("rate", 48_000)  # noqa: SLF001
    out = w.export_to(str(tmp_path / "myloop"), sample_range=(0, 2 * SR), loop=True)
    assert out is not None and out.name == "myloop.wav"  # the chosen format's extension was added
    import soundfile as sf

    audio, rate = sf.read(str(out), dtype="float32")
    assert rate == 48_000 and audio.shape == (int((2 - 0.02) * 48_000), 2)  # 20 ms crossfaded away
    assert read_smpl_loops(out) == [(0, len(audio))] and read_acid_tempo(out) == 90.0
    assert true_peak_dbtp(audio.T, rate) <= -1.0 + 0.01
