"""Issue 17, producer basics: projects (new / open / save as / recent, per-project lock, migration of
the old data folder), undo/redo that survives a restart, variations (N distinct-seed takes into an
A/B list), presets (round trip). Real widgets, offscreen, the fake pipeline (and the real one once)."""

from __future__ import annotations

import sqlite3

import numpy as np
from app_fake_pipeline import FakePipeline
from app_fixtures import WAIT_MS, fake_factory, generate, make_studio, tiny_bundle  # noqa: F401
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QTableWidgetSelectionRange

from app.engine import real_pipeline
from app.presets import PresetStore, builtin_presets
from app.projects import RecentProjects
from app.store import DB_NAME, SCHEMA_VERSION, SessionStore
from app.variations import batch_seeds

SR = 24000


def _prompts(studio) -> list[str]:  # noqa: ANN001
    return [s.take.prompt for s in studio.session.segments()]


def test_projects_new_open_save_as_switch_without_losing_a_take(qtbot, make_studio, tmp_path):  # noqa: F811
    a, b, c = tmp_path / "A", tmp_path / "B", tmp_path / "C"
    studio = make_studio(data_dir=a, config_dir=tmp_path / "cfg")
    generate(qtbot, studio, "first", 1.0, steps=2)
    audio_a = studio.session.arrangement_audio().copy()
    drag = studio.window._drag_file(indices=[0])  # noqa: SLF001 - a file a DAW project uses
    assert studio.window.windowTitle().startswith("A — ")
    tools = studio.window.producer
    engine = studio.controller.engine
    assert tools.switch("save_as", b)
    assert studio.project == b and studio.window.windowTitle().startswith("B — ")
    assert studio.controller.engine is engine  # the model is kept across the switch
    assert _prompts(studio) == ["first"]
    np.testing.assert_array_equal(studio.session.arrangement_audio(), audio_a)
    assert (b / "drag" / drag.name).read_bytes() == drag.read_bytes()  # drag-outs travel with the copy
    assert drag.exists()  # and the original project keeps its own
    generate(qtbot, studio, "second", 1.0, steps=2)  # the copy moves on; the original does not
    tools = studio.window.producer
    assert tools.switch("new", c)
    assert studio.project == c and studio.session.take_ids == []
    assert studio.window.windowTitle().startswith("C — ")
    recent = studio.recent_projects()
    assert recent[:2] == [b, a]  # most recent first, the open one left out
    studio.window.producer._fill_recent()  # noqa: SLF001 - what File > Open Recent shows
    assert [x.text() for x in studio.window.producer.recent_menu.actions()][:2] == [str(b), str(a)]
    assert studio.window.producer.switch("open", a)
    assert _prompts(studio) == ["first"]
    np.testing.assert_array_equal(studio.session.arrangement_audio(), audio_a)
    # a project open elsewhere is refused with the reason, and this window stays where it is
    other = SessionStore(b)
    try:
        assert not studio.window.producer.switch("open", b)
        assert "open in another MeLoDy Studio window" in studio.window.messages.text()
        assert studio.project == a and _prompts(studio) == ["first"]
    finally:
        other.close()
    assert not studio.window.producer.switch("open", tmp_path / "cfg")  # no project there
    assert "not a MeLoDy Studio project" in studio.window.messages.text()
    assert not studio.window.producer.switch("save_as", c)  # Save As never overwrites a project
    assert studio.window.producer.switch("open", b)
    assert _prompts(studio) == ["first", "second"]
    studio.close()
    assert RecentProjects(tmp_path / "cfg").last() == b  # the next start opens it


def test_old_data_folder_is_migrated_in_place(tmp_path):
    data = tmp_path / "data"
    store = SessionStore(data)
    sid = store.current_session()
    store.set_arrangement(sid, [])
    store.close()
    db = sqlite3.connect(data / DB_NAME)  # make it look like a schema-1 folder of an earlier release
    db.execute("DROP TABLE undo_log")
    db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    store = SessionStore(data)
    version = store._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]  # noqa: SLF001
    assert int(version) == SCHEMA_VERSION == 2 and store.undo_rows(sid) == []
    assert store.current_session() == sid
    store.close()


def test_undo_redo_survive_a_restart(qtbot, make_studio, tmp_path):  # noqa: F811
    data = tmp_path / "data"
    studio = make_studio(data_dir=data)
    one = generate(qtbot, studio, "one", 1.0, steps=2)
    two = generate(qtbot, studio, "two", 1.0, steps=2)
    w = studio.window
    w.rate(0, 4)
    w.delete_segment(1)
    assert studio.session.take_ids == [one]
    studio.close()

    again = make_studio(data_dir=data)  # a new process would see the same: everything is in the database
    w, s = again.window, again.session
    redo = w.producer.redo_action
    assert w.undo_action.isEnabled() and w.undo_action.text() == "Undo Delete segment"
    assert not redo.isEnabled()
    assert QKeySequence(QKeySequence.StandardKey.Undo) in w.undo_action.shortcuts() or \
        w.undo_action.shortcut() == QKeySequence(QKeySequence.StandardKey.Undo)
    assert QKeySequence("Ctrl+Shift+Z") in redo.shortcuts()
    w.undo_action.trigger()
    assert s.take_ids == [one, two]
    assert w.undo_action.text() == "Undo Rate" and redo.text() == "Redo Delete segment"
    w.undo_action.trigger()
    assert s.take(one).rating == 0
    redo.trigger()
    assert s.take(one).rating == 4
    again.close()

    third = make_studio(data_dir=data)  # the redo stack survives too
    w, s = third.window, third.session
    assert s.take_ids == [one, two] and s.take(one).rating == 4
    assert w.producer.redo_action.isEnabled()
    w.producer.redo_action.trigger()
    assert s.take_ids == [one]
    w.undo_action.trigger()
    assert s.take_ids == [one, two]
    w.select_segment(1)
    w.producer.move_actions[0].trigger()  # Edit > Move segment left (Alt+Left): a new edit empties redo
    assert s.take_ids == [two, one] and not w.producer.redo_action.isEnabled()
    assert w.selected == 0 and w.undo_action.text() == "Undo Move segment"
    w.undo_action.trigger()
    assert s.take_ids == [one, two]
    undo_labels = [e.label for e in s.edits.entries("undo")]
    assert undo_labels == ["Generate", "Generate", "Rate"]


def test_variations_make_n_distinct_seed_takes_for_ab(qtbot, make_studio, tmp_path):  # noqa: F811
    data = tmp_path / "data"
    studio = make_studio(data_dir=data)
    w, s = studio.window, studio.session
    w.panel.prompt.setPlainText("variation pad")
    w.panel.length.setValue(1.0)
    w.panel.steps.setValue(2)
    tools = w.producer
    assert tools.variations.count.value() == 4  # the default N
    with qtbot.waitSignal(tools.batch.finished, timeout=WAIT_MS) as done:
        assert tools.generate_variations(4)
    assert done.args == [True]
    items = tools.batch.batch.items
    seeds = [v.seed for v in items]
    assert len(set(seeds)) == 4 and all(v.state == "done" for v in items)
    takes = [s.take(v.take_id) for v in items]
    assert [t.seed for t in takes] == seeds and {t.kind for t in takes} == {"variation"}
    assert {t.prompt for t in takes} == {"variation pad"}
    audios = [s.audio(t.id) for t in takes]
    assert all(len(a) == SR for a in audios)
    assert len({a.tobytes() for a in audios}) == 4  # four different takes
    assert s.take_ids == []  # auditioned, not arranged
    table = tools.variations.table
    assert [table.item(r, 1).text() for r in range(table.rowCount())] == [str(x) for x in seeds]  # shown
    last = table.columnCount() - 1
    for row in (1, 3):  # two takes selected, as with Ctrl+click
        table.setRangeSelected(QTableWidgetSelectionRange(row, 0, row, last), True)
    assert tools.variations.selected_ids() == [takes[1].id, takes[3].id]
    tools.variations.buttons["ab"].click()
    assert studio.playback.ab_current == takes[1].id
    assert studio.playback.switch_ab() == takes[3].id
    tools.variations.stars[takes[3].id].rating_changed.emit(5)
    assert s.take(takes[3].id).rating == 5
    table.clearSelection()
    table.selectRow(3)
    tools.variations.buttons["keep"].click()
    assert s.take_ids == [takes[3].id] and w.undo_action.text() == "Undo Keep variation"
    studio.close()
    again = make_studio(data_dir=data)  # the last batch is listed again after a restart
    assert again.window.producer.batch.take_ids() == [t.id for t in takes]
    assert again.window.producer.variations.table.rowCount() == 4


def test_cancel_stops_the_batch(qtbot, make_studio, tmp_path):  # noqa: F811
    class Slow(FakePipeline):
        step_delay = 0.05  # 4 steps x 1 chunk: 0.2 s a take, time to cancel the second

    studio = make_studio(factory=fake_factory(Slow))
    w = studio.window
    w.panel.prompt.setPlainText("slow")
    w.panel.length.setValue(1.0)
    w.panel.steps.setValue(4)
    tools = w.producer
    tools.generate_variations(4)
    qtbot.waitUntil(lambda: tools.batch.batch.items[1].state == "generating", timeout=WAIT_MS)
    here = studio.project
    assert not tools.switch("new", tmp_path / "elsewhere")  # no project switch while generating
    assert "generation is running" in w.messages.text() and studio.project == here
    assert not (tmp_path / "elsewhere").exists()
    with qtbot.waitSignal(tools.batch.finished, timeout=WAIT_MS) as done:
        w.cancel()  # Esc
    assert done.args == [False]
    assert [v.state for v in tools.batch.batch.items] == ["done", "failed", "failed", "failed"]
    assert len(tools.batch.take_ids()) == 1 and not tools.batch.running
    assert tools.variations.go.isEnabled()


def test_variation_seeds():
    assert batch_seeds(4, 7) == [7, 8, 9, 10]  # a locked seed: reproducible batch
    random_seeds = batch_seeds(16, None)
    assert len(set(random_seeds)) == 16


def test_variations_with_the_real_pipeline(qtbot, make_studio, tiny_bundle):  # noqa: F811
    studio = make_studio(factory=real_pipeline, bundle=str(tiny_bundle), device="cpu")
    w = studio.window
    w.panel.prompt.setPlainText("calm piano")
    w.panel.length.setValue(1.0)
    w.panel.steps.setValue(2)
    w.panel.seed.setValue(11)
    w.panel.seed_lock.setChecked(True)
    tools = w.producer
    with qtbot.waitSignal(tools.batch.finished, timeout=120000) as done:
        tools.generate_variations(2)
    assert done.args == [True]
    takes = [studio.session.take(i) for i in tools.batch.take_ids()]
    assert [t.seed for t in takes] == [11, 12]
    a, b = (studio.session.audio(t.id) for t in takes)
    assert len(a) == len(b) == SR and np.isfinite(a).all() and not np.array_equal(a, b)


def test_preset_round_trip(qtbot, make_studio, tmp_path):  # noqa: F811
    cfg = tmp_path / "cfg"
    studio = make_studio(config_dir=cfg)
    tools, panel = studio.window.producer, studio.window.panel
    panel.prompt.setPlainText("warm analog pad")
    panel.steps.setValue(17)
    panel.guidance.setValue(3.25)
    panel.length.setValue(12.0)
    panel.bpm.setValue(93.0)
    panel.key.setCurrentIndex(panel.key.findData("A minor"))
    assert tools.save_preset("My pad")
    panel.prompt.setPlainText("something else")
    panel.steps.setValue(3)
    panel.bpm.setValue(0.0)
    panel.key.setCurrentIndex(0)
    stored = PresetStore(cfg).get("my pad")  # per user: a separate store reads the file back
    assert stored is not None and not stored.builtin
    tools.apply_preset(stored)
    assert panel.prompt_text() == "warm analog pad" and panel.steps.value() == 17
    assert panel.guidance.value() == 3.25 and panel.length.value() == 12.0
    assert panel.musical() == (93.0, "A minor")
    assert panel.settings().prompt == "warm analog pad, 93 bpm, A minor"
    names = [a.text() for a in tools.presets_menu.actions()]
    assert "My pad" in names and "Lo-fi hip hop" in names
    assert not tools.save_preset("Lo-fi hip hop")  # built-ins cannot be overwritten
    lofi = PresetStore(cfg).get("lo-fi hip hop")
    tools.apply_preset(lofi)
    assert panel.prompt_text() == "chill lo-fi hip hop" and panel.musical() == (80.0, None)
    studio.close()
    other = make_studio(data_dir=tmp_path / "other project", config_dir=cfg)  # every project sees it
    assert "My pad" in [a.text() for a in other.window.producer.presets_menu.actions()]
    other.window.producer.delete_preset("My pad")
    assert PresetStore(cfg).get("My pad") is None


def test_builtin_presets_come_from_the_corpus_genres():
    presets = builtin_presets()
    assert len(presets) >= 8 and len({p.name for p in presets}) == len(presets)
    assert all(p.bpm and 60 <= p.bpm <= 180 and p.prompt for p in presets)


def test_undo_history_drops_entries_it_cannot_apply(tmp_path):
    from app.undo_history import UndoHistory

    store = SessionStore(tmp_path / "data")
    sid = store.current_session()
    take = store.add_take(sid, store.write_audio(np.zeros(2400, np.float32), SR), "generate",
                          {"prompt": "x", "seed": 1}, {}, "h")
    store.write_undo(sid, [("undo", "arrangement", "Good", [take.id]),
                           ("undo", "arrangement", "Bad", "oops"),
                           ("undo", "arrangement", "Gone", [take.id + 99]),
                           ("redo", "rating", "Rate", [take.id, 3])])
    history = UndoHistory(store, sid, lambda i: i == take.id)
    assert [e.label for e in history.entries("undo")] == ["Good"] and history.label("redo") == "Rate"
    assert [r.label for r in store.undo_rows(sid)] == ["Good", "Rate"]  # the others are deleted for good
    history.record("rating", "Rate", [take.id, 0])  # a new edit empties redo, in the database too
    assert [(r.stack, r.label) for r in store.undo_rows(sid)] == [("undo", "Good"), ("undo", "Rate")]
    store.close()
