"""Main window behaviour with the stand-in pipeline (offscreen, no audio device)."""

from __future__ import annotations

import numpy as np
import soundfile as sf
from app_fixtures import WAIT_MS, fake_factory, generate, make_studio, run_job  # noqa: F401
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from melody_core import SAMPLE_RATE
from melody_core.audio import read_metadata

SR = SAMPLE_RATE


def test_generate_adds_segment_with_waveform(qtbot, make_studio):  # noqa: F811
    studio = make_studio()
    take_id = generate(qtbot, studio, "calm piano", 2.0)
    assert take_id is not None
    segs = studio.session.segments()
    assert len(segs) == 1 and segs[0].take.id == take_id and segs[0].length == 2 * SR
    curve = studio.window.arrangement._curves[0]
    x, y = curve.getData()
    assert len(y) > 0 and np.abs(y).max() > 0.2  # the waveform shows the audio
    assert len(studio.window.strip.cards) == 1
    assert studio.window.history.table.rowCount() == 1
    take = studio.session.take(take_id)
    assert take.prompt == "calm piano" and take.model_hash == "fake0123abcd" and take.settings["steps"] == 4
    assert (studio.store.audio_dir / take.audio_file).exists()
    assert studio.window.panel.seed.value() == take.seed  # the seed shows (copyable)


def test_rating_persists_across_restart(qtbot, make_studio, tmp_path):  # noqa: F811
    data = tmp_path / "session"
    studio = make_studio(data)
    generate(qtbot, studio, "first")
    generate(qtbot, studio, "second")
    studio.window.strip.cards[1].stars._buttons[3].click()  # 4 stars on the second segment
    studio.window.select_segment(0)
    qtbot.keyClick(studio.window, Qt.Key.Key_2)  # keyboard rating of the selected segment
    ids = studio.session.take_ids
    studio.close()
    again = make_studio(data)
    assert again.session.take_ids == ids
    assert [s.take.rating for s in again.session.segments()] == [2, 4]
    assert again.window.strip.cards[1].stars.rating == 4
    assert len(again.window.arrangement._curves) == 2


def test_extend_and_regenerate(qtbot, make_studio):  # noqa: F811
    studio = make_studio()
    first = generate(qtbot, studio, "groove", 2.0)
    original = studio.session.audio(first).copy()
    studio.window.panel.length.setValue(1.0)
    ext = run_job(qtbot, studio, lambda: studio.window.extend(0))
    assert studio.session.take_ids == [first, ext]
    assert len(studio.session.audio(ext)) == SR  # only the continuation is the new segment
    assert studio.session.take(ext).parent_id == first and studio.session.take(ext).kind == "extend"
    new = run_job(qtbot, studio, lambda: studio.window.regenerate(0, False))
    assert studio.session.take_ids == [new, ext]  # replaced in place
    regen = studio.session.take(new)
    assert regen.seed != studio.session.take(first).seed and regen.prompt == "groove"
    assert not np.array_equal(studio.session.audio(new), original)
    same = run_job(qtbot, studio, lambda: studio.window.regenerate(0, True))
    assert studio.session.take(same).seed == regen.seed
    assert len(studio.store.takes()) == 4  # history keeps every take
    labels = [e.label for e in studio.session.edits.entries("undo")]
    assert labels == ["Generate", "Extend", "Regenerate", "Regenerate"]  # each job is one undoable edit
    studio.session.undo()
    assert studio.session.take_ids == [new, ext]
    studio.session.redo()
    assert studio.session.take_ids == [same, ext]


def test_inpaint_changes_only_the_range(qtbot, make_studio):  # noqa: F811
    studio = make_studio()
    tid = generate(qtbot, studio, "strings", 3.0)
    before = studio.session.audio(tid).copy()
    studio.window.arrangement.set_selection((1.0, 2.0))
    new = run_job(qtbot, studio, lambda: studio.window.inpaint(0))
    after = studio.session.audio(new)
    assert len(after) == len(before)
    # the engine's result as is (to the store's FLAC rounding; the fake's crossfade change is 1e-3)
    np.testing.assert_allclose(after, studio.controller.engine.last_inpaint, rtol=0, atol=1e-4)
    a, b, fade = SR, 2 * SR, round(0.05 * SR)
    np.testing.assert_array_equal(after[: a - fade], before[: a - fade])
    np.testing.assert_array_equal(after[b + fade :], before[b + fade :])
    assert np.abs(after[a:b] - before[a:b]).max() > 0.05
    assert studio.session.take_ids == [new]
    assert studio.window.undo_action.text() == "Undo Inpaint"
    studio.window.undo_action.trigger()
    assert studio.session.take_ids == [tid]


def test_bad_drops_show_errors(qtbot, make_studio, tmp_path):  # noqa: F811
    studio = make_studio()
    generate(qtbot, studio, "keep me")
    ids = studio.session.take_ids
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio")
    corrupt = tmp_path / "cut.wav"
    sf.write(corrupt, np.zeros(SR, np.float32), SR)
    corrupt.write_bytes(corrupt.read_bytes()[:2000])  # truncated data chunk
    zone = studio.window.panel.drop
    for bad in (text, corrupt, tmp_path / "missing.flac"):
        with qtbot.waitSignal(studio.controller.style_loaded, timeout=WAIT_MS):
            mime = QMimeData()
            mime.setUrls([QUrl.fromLocalFile(str(bad))])
            event = QDropEvent(QPointF(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                               Qt.KeyboardModifier.NoModifier)
            zone.dropEvent(event)
        msg = studio.window.messages.text()
        assert msg.startswith("Cannot use this file as a style prompt") and bad.name in msg
        assert "⚠" in zone.label.text() and zone.path is None
    good = tmp_path / "style.wav"
    sf.write(good, 0.1 * np.sin(np.arange(SR) / 10).astype(np.float32), 16000)
    with qtbot.waitSignal(studio.controller.style_loaded, timeout=WAIT_MS):
        zone.drop_path(str(good))
    assert zone.path == str(good) and zone.preview.isVisibleTo(zone)  # shown (hidden before a style)
    assert studio.window.panel.settings().style_audio_path == str(good)
    assert studio.session.take_ids == ids  # the session is unharmed


def test_missing_and_broken_bundle_messages(qtbot, make_studio, tmp_path):  # noqa: F811
    studio = make_studio(bundle=str(tmp_path / "nowhere"), wait=False)
    qtbot.waitUntil(lambda: not studio.controller.loading, timeout=WAIT_MS)
    assert studio.controller.engine is None
    assert "nowhere" in studio.window.messages.text() and "not found" in studio.window.messages.text()
    studio.window.panel.prompt.setPlainText("anything")
    studio.window.generate()  # no engine: a message, not a crash
    assert "cannot load" in studio.window.messages.text()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")

    def real_load_would_fail(bundle, device, threads):  # noqa: ANN001
        from melody_core.checkpoint import inspect_bundle

        inspect_bundle(bundle)  # raises BundleError (a ValueError) with a one-line reason
        raise AssertionError("unreachable")

    other = make_studio(tmp_path / "d2", factory=real_load_would_fail, bundle=str(broken), wait=False)
    qtbot.waitUntil(lambda: not other.controller.loading, timeout=WAIT_MS)
    assert other.controller.engine is None and "broken" in other.window.messages.text()


def test_generation_error_and_empty_prompt(qtbot, make_studio):  # noqa: F811
    studio = make_studio()
    generate(qtbot, studio, "fine")
    assert run_job(qtbot, studio, lambda: (studio.window.panel.prompt.setPlainText("FAIL now"),
                                           studio.window.generate())) is None
    assert "fake model exploded" in studio.window.messages.text()
    assert run_job(qtbot, studio, lambda: (studio.window.panel.prompt.setPlainText(""),
                                           studio.window.generate())) is None
    assert "prompt" in studio.window.messages.text()
    assert len(studio.session.take_ids) == 1


def test_cancel(qtbot, make_studio):  # noqa: F811
    studio = make_studio()
    studio.window.panel.prompt.setPlainText("long one")
    studio.window.panel.length.setValue(30.0)
    with qtbot.waitSignal(studio.controller.job_finished, timeout=WAIT_MS) as blocker:
        studio.window.panel.prompt.setFocus()
        qtbot.keyClick(studio.window.panel.prompt, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
        assert studio.controller.busy and studio.window.panel.prompt_text() == "long one"  # no newline typed
        qtbot.waitUntil(lambda: len(studio.controller.live_audio()) > 0, timeout=WAIT_MS)
        qtbot.keyClick(studio.window, Qt.Key.Key_Escape)
    assert blocker.args == ["generate", None]
    qtbot.waitUntil(lambda: not studio.controller.busy, timeout=WAIT_MS)
    assert studio.session.take_ids == [] and studio.store.takes() == []
    assert studio.window.panel.generate_button.isEnabled()


def test_keep_playing_steers_and_stops(qtbot, make_studio):  # noqa: F811
    studio = make_studio()
    w = studio.window
    w.panel.prompt.setPlainText("ambient pad")
    w.panel.steps.setValue(2)
    w.keep_playing()
    qtbot.waitUntil(lambda: len(studio.controller.live_audio()) >= 2 * SR, timeout=WAIT_MS)
    w.panel.prompt.setPlainText("ambient pad with bells")
    w.panel._steer_timer.timeout.emit()  # skip the debounce delay
    n_before = len(studio.controller.live_audio())
    qtbot.waitUntil(lambda: len(studio.controller.live_audio()) >= n_before + 2 * SR, timeout=WAIT_MS)
    take_id = run_job(qtbot, studio, w.cancel)  # Esc/Stop during keep playing: keep what was generated
    audio = studio.session.audio(take_id)
    assert len(audio) >= n_before + 2 * SR
    first, last = audio[:SR], audio[-SR:]
    f0 = np.argmax(np.abs(np.fft.rfft(first)))
    f1 = np.argmax(np.abs(np.fft.rfft(last)))
    assert f0 != f1  # the prompt edit steered the later chunks


def test_export_metadata_and_drag_mime(qtbot, make_studio, tmp_path):  # noqa: F811
    studio = make_studio()
    a = generate(qtbot, studio, "export me", 1.0)
    generate(qtbot, studio, "second", 1.0)
    out = studio.window.export_to(str(tmp_path / "seg.flac"), [0])
    meta = read_metadata(out)
    take = studio.session.take(a)
    assert meta["prompt"] == "export me" and meta["seed"] == str(take.seed)
    assert meta["model_hash"] == "fake0123abcd" and '"steps": 4' in meta["settings"]
    wav = studio.window.export_to(str(tmp_path / "all.wav"))
    assert sf.info(str(wav)).duration == 2.0 and "fake0123abcd" in read_metadata(wav)["model_hash"]
    card = studio.window.strip.cards[1]
    mime = card.drag.build_mime()
    path = mime.urls()[0].toLocalFile()
    assert path.endswith(".wav") and sf.info(path).duration == 1.0
    studio.window.arrangement.set_selection((0.5, 1.5))
    sel = studio.window.drag_sel.build_mime().urls()[0].toLocalFile()
    assert sf.info(sel).duration == 1.0
    assert studio.window.export_to(str(tmp_path / "x.mp3")) is None  # unsupported: a message
    assert "Export failed" in studio.window.messages.text()


def test_history_filter_restore_and_ab(qtbot, make_studio):  # noqa: F811
    studio = make_studio()
    a = generate(qtbot, studio, "alpha", 1.0)
    studio.window.panel.steps.setValue(7)
    b = generate(qtbot, studio, "beta", 1.0, steps=7)
    studio.session.rate(a, 5)
    h = studio.window.history
    h.filter.setCurrentIndex(5)
    assert h.table.rowCount() == 1
    h.filter.setCurrentIndex(0)
    assert h.table.rowCount() == 2
    h.restore.emit(a)
    panel = studio.window.panel
    assert panel.prompt_text() == "alpha" and panel.seed_lock.isChecked()
    assert panel.seed.value() == studio.session.take(a).seed and panel.steps.value() == 4
    assert panel.settings().seed == studio.session.take(a).seed
    studio.window.playback.set_ab(a, b)  # no device: A/B bookkeeping still works
    assert studio.window.playback.switch_ab() == b and studio.window.playback.switch_ab() == a


def test_spectrogram_theme_help_and_shortcuts(qtbot, make_studio):  # noqa: F811
    from PySide6.QtGui import QPalette
    from PySide6.QtWidgets import QApplication, QLabel

    from app.views import theme

    studio = make_studio()
    w = studio.window
    generate(qtbot, studio, "a", 1.0)
    generate(qtbot, studio, "b", 1.0)
    w.spec_action.setChecked(True)
    assert w.arrangement._spec.isVisible() and not w.arrangement._curves[0].isVisible()
    assert w.arrangement._spec.image.shape[1] == theme_bins()
    w.spec_action.setChecked(False)
    assert w.arrangement._curves[0].isVisible()
    w.apply_theme("dark")
    assert QApplication.instance().palette().color(QPalette.ColorRole.Window).lightness() < 100
    w.apply_theme("light")
    assert QApplication.instance().palette().color(QPalette.ColorRole.Window).lightness() > 150
    dialog = theme.show_shortcuts(w)
    text = dialog.findChild(QLabel).text()
    assert "Ctrl+Enter" in text and "Space" in text and "Ctrl+Z" in text
    dialog.close()
    ids = w.session.take_ids
    w.select_segment(0)
    qtbot.keyClick(w, Qt.Key.Key_Delete)
    assert w.session.take_ids == ids[1:]
    qtbot.keyClick(w, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert w.session.take_ids == ids
    qtbot.keyClick(w, Qt.Key.Key_Right)
    assert w.selected == 1
    qtbot.keyClick(w, Qt.Key.Key_5)
    assert w.session.take(ids[1]).rating == 5
    w.panel.prompt.setFocus()
    qtbot.keyClick(w.panel.prompt, Qt.Key.Key_3)  # typing in the prompt does not rate
    assert w.session.take(ids[1]).rating == 5 and "3" in w.panel.prompt_text()


def theme_bins() -> int:
    from app.views.waveform import SPEC_NFFT

    return SPEC_NFFT // 2 + 1


def test_prompt_adherence_box_maps_to_lm_guidance(qtbot, make_studio):  # noqa: F811
    panel = make_studio().window.panel
    assert panel.settings().lm_guidance is None  # "model default"
    panel.adherence.setValue(2.0)
    assert panel.settings().lm_guidance == 2.0
    panel.apply_settings({"prompt": "x", "lm_guidance": 4.5})
    assert panel.settings().lm_guidance == 4.5
    panel.apply_settings({"prompt": "x", "lm_guidance": None})
    assert panel.settings().lm_guidance is None and panel.adherence.text() == "model default"
