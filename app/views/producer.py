"""The producer basics, added to a built window: projects (File > New / Open / Open Recent / Save As),
Edit > Redo, the Presets menu and the Variations dock.

Installed by `Studio._build` on every window (a project switch builds a new one), so `MainWindow`
keeps only its own menus; everything here talks to the studio, session, controller and playback.
The `*_dialog` methods ask (file dialogs) and call the plain methods, which the tests call directly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QDockWidget, QFileDialog, QInputDialog, QMenu

from app.controller import Controller
from app.playback import Playback
from app.presets import Preset, PresetStore
from app.projects import ProjectError
from app.session import SessionModel
from app.variations import PREF_KEY, VariationBatch
from app.views.prompt_panel import ADHERENCE_DEFAULT
from app.views.variations import VariationsPanel


class Studio(Protocol):
    """What the tools use of `app.studio.Studio` (not imported: the studio installs these tools)."""

    window: Any
    session: SessionModel
    controller: Controller
    playback: Playback
    options: Any

    @property
    def project(self) -> Path: ...

    def recent_projects(self) -> list[Path]: ...

    def open_project(self, folder: str | Path) -> None: ...

    def new_project(self, folder: str | Path) -> None: ...

    def save_project_as(self, folder: str | Path) -> None: ...

log = logging.getLogger(__name__)


class ProducerTools(QObject):
    def __init__(self, studio: Studio) -> None:
        super().__init__(studio.window)
        self.studio = studio
        self.window, self.session = studio.window, studio.session
        assert studio.options is not None
        self.presets = PresetStore(studio.options.config_dir)
        self._project_actions()
        self._edit_actions()
        self._presets_menu()
        self._variations_dock()

    # ------------------------------------------------------------------ projects
    def _project_actions(self) -> None:
        menu: QMenu = self.window.file_menu
        first = menu.actions()[0]
        acts = [("New Project…", self.new_project_dialog, "Ctrl+Shift+N"),
                ("Open Project…", self.open_project_dialog, QKeySequence.StandardKey.Open)]
        for text, slot, key in acts:
            menu.insertAction(first, self._act(text, slot, key))
        self.recent_menu = QMenu("Open Recent", menu)
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        menu.insertMenu(first, self.recent_menu)
        menu.insertAction(first, self._act("Save Project As…", self.save_as_dialog, "Ctrl+Shift+S"))
        menu.insertSeparator(first)
        self._fill_recent()

    def _act(self, text: str, slot, key=None) -> QAction:  # noqa: ANN001
        action = QAction(text, self.window)
        if key is not None:
            action.setShortcut(QKeySequence(key))
        action.triggered.connect(lambda _checked=False: slot())
        return action

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        recent = self.studio.recent_projects()
        for folder in recent:
            self.recent_menu.addAction(self._act(str(folder), lambda f=folder: self.switch("open", f)))
        self.recent_menu.setEnabled(bool(recent))

    def switch(self, how: str, folder: str | Path) -> bool:
        """how: "open" | "new" | "save_as". A refusal is a message in this window; False."""
        call = {"open": self.studio.open_project, "new": self.studio.new_project,
                "save_as": self.studio.save_project_as}[how]
        try:
            call(folder)
        except ProjectError as exc:
            self.window.show_message("error", str(exc)[0].upper() + str(exc)[1:])
            return False
        self.studio.window.statusBar().showMessage(f"Project {self.studio.project}", 8000)
        return True

    def _start_dir(self) -> str:
        return str(self.studio.project.parent)

    def open_project_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self.window, "Open project folder", self._start_dir())
        if path:
            self.switch("open", path)

    def new_project_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self.window, "New project (a new folder)",
                                              str(Path(self._start_dir()) / "Untitled project"))
        if path:
            self.switch("new", path)

    def save_as_dialog(self) -> None:
        default = Path(self._start_dir()) / f"{self.studio.project.name} copy"
        path, _ = QFileDialog.getSaveFileName(self.window, "Save project as (a new folder)", str(default))
        if path:
            self.switch("save_as", path)

    # ------------------------------------------------------------------ undo / redo
    def _edit_actions(self) -> None:
        w = self.window
        self.redo_action = self._act("Redo", self.redo)
        keys = QKeySequence.keyBindings(QKeySequence.StandardKey.Redo)  # the platform's (Ctrl+Y here) ...
        extra = QKeySequence("Ctrl+Shift+Z")  # ... and the one every DAW and editor also takes
        self.redo_action.setShortcuts([*keys, extra] if extra not in keys else keys)
        w.edit_menu.addAction(self.redo_action)
        w.edit_menu.addSeparator()
        self.move_actions = [self._act("Move segment left", lambda: self.move_selected(-1), "Alt+Left"),
                             self._act("Move segment right", lambda: self.move_selected(1), "Alt+Right")]
        for action in self.move_actions:
            w.edit_menu.addAction(action)
        self.session.edits_changed.connect(self._update_edit)
        self._update_edit()

    def move_selected(self, step: int) -> None:
        """Move the selected segment one slot left/right in the arrangement (undoable)."""
        index, n = self.window.selected, len(self.session.take_ids)
        if index is None or not 0 <= index + step < n:
            return
        self.session.move(index, index + step)
        self.window.select_segment(index + step)

    def redo(self) -> None:
        if not self.session.redo():
            self.window.statusBar().showMessage("Nothing to redo", 3000)

    def _update_edit(self) -> None:
        h = self.session.edits
        self.window.undo_action.setEnabled(h.can_undo)
        self.window.undo_action.setText(f"Undo {h.label('undo')}".strip())
        self.redo_action.setEnabled(h.can_redo)
        self.redo_action.setText(f"Redo {h.label('redo')}".strip())

    # ------------------------------------------------------------------ presets
    def _presets_menu(self) -> None:
        bar = self.window.menuBar()
        before = next((a for a in bar.actions() if a.text() == "&Settings"), None)
        self.presets_menu = QMenu("&Presets", bar)
        self.presets_menu.aboutToShow.connect(self._fill_presets)
        bar.insertMenu(before, self.presets_menu) if before else bar.addMenu(self.presets_menu)
        self._fill_presets()

    def _fill_presets(self) -> None:
        m = self.presets_menu
        m.clear()
        m.addAction(self._act("Save current settings as preset…", self.save_preset_dialog))
        m.addSeparator()
        user = self.presets.user()
        for group in ([p for p in self.presets.all() if p.builtin], user):
            for p in group:
                m.addAction(self._act(p.name, lambda p=p: self.apply_preset(p)))
            if group:
                m.addSeparator()
        delete = m.addMenu("Delete preset")
        for p in user:
            delete.addAction(self._act(p.name, lambda p=p: self.delete_preset(p.name)))
        delete.setEnabled(bool(user))

    def current_preset(self, name: str) -> Preset:
        panel = self.window.panel
        bpm, key = panel.musical()
        return Preset(name=name, prompt=panel.prompt_text(), steps=panel.steps.value(),
                      guidance=panel.guidance.value(), lm_guidance=panel.lm_guidance(),
                      seconds=panel.length.value(), style_weight=panel.style_weight(), bpm=bpm, key=key)

    def save_preset(self, name: str) -> bool:
        try:
            self.presets.save(self.current_preset(name))
        except (ValueError, OSError) as exc:
            self.window.show_message("error", f"Cannot save the preset: {exc}")
            return False
        self._fill_presets()
        self.window.statusBar().showMessage(f"Preset {name.strip()!r} saved", 5000)
        return True

    def delete_preset(self, name: str) -> None:
        self.presets.delete(name)
        self._fill_presets()

    def save_preset_dialog(self) -> None:
        name, ok = QInputDialog.getText(self.window, "Save preset", "Preset name:")
        if ok and name.strip():
            self.save_preset(name)

    def apply_preset(self, preset: Preset) -> None:
        """Put the preset's prompt and settings into the panel (the seed is left as it is)."""
        panel = self.window.panel
        panel.prompt.setPlainText(preset.prompt)
        panel.steps.setValue(int(preset.steps))
        panel.guidance.setValue(float(preset.guidance))
        lm = preset.lm_guidance
        panel.adherence.setValue(ADHERENCE_DEFAULT if lm is None else float(lm))
        panel.length.setValue(float(preset.seconds))
        panel.weight.setValue(round(100 * float(preset.style_weight)))
        panel.bpm.setValue(float(preset.bpm or 0.0))
        panel.key.setCurrentIndex(max(panel.key.findData(preset.key), 0))
        self.window.statusBar().showMessage(f"Preset {preset.name!r}", 5000)

    # ------------------------------------------------------------------ variations
    def _variations_dock(self) -> None:
        w, s, pb = self.window, self.session, self.studio.playback
        self.batch = VariationBatch(self.studio.controller)
        self.variations = VariationsPanel()
        dock = QDockWidget("Variations", w)
        dock.setObjectName("variationsDock")
        dock.setWidget(self.variations)
        w.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        history = w.findChild(QDockWidget, "historyDock")
        if history is not None:
            w.tabifyDockWidget(history, dock)
            history.raise_()
        self.variations_dock = dock
        v = self.variations
        v.generate.connect(self.generate_variations)
        v.cancel.connect(self.batch.cancel)
        v.play.connect(pb.play_take)
        v.compare.connect(pb.set_ab)
        v.switch_ab.connect(pb.switch_ab)
        v.keep.connect(lambda tid: s.append(tid, "Keep variation"))
        v.rate.connect(s.rate)
        self.batch.changed.connect(self._show_batch)
        self.batch.finished.connect(self._batch_done)
        s.rating_changed.connect(lambda tid, n: v.stars[tid].set_rating(n) if tid in v.stars else None)
        last = self.session.store.pref(PREF_KEY) or []
        items = []
        for pair in last if isinstance(last, list) else []:
            try:
                s.take(int(pair[0]))
                items.append((int(pair[0]), int(pair[1])))
            except (KeyError, TypeError, ValueError, IndexError):
                continue
        self.batch.load(items)

    def generate_variations(self, count: int) -> bool:
        self.variations_dock.raise_()
        return self.batch.start(self.window.panel.settings(), count)

    def _show_batch(self) -> None:
        b = self.batch.batch
        items = b.items if b else []
        takes = {v.take_id: self.session.take(v.take_id) for v in items if v.take_id is not None}
        self.variations.set_items(items, takes, self.batch.running)

    def _batch_done(self, completed: bool) -> None:
        b = self.batch.batch
        done = [v for v in (b.items if b else []) if v.take_id is not None]
        self.session.store.set_pref(PREF_KEY, [[v.take_id, v.seed] for v in done])
        if done:
            seeds = ", ".join(str(v.seed) for v in done)
            self.window.statusBar().showMessage(f"{len(done)} variations ready (seeds {seeds})", 10000)


def install(studio: Studio) -> ProducerTools:
    tools = ProducerTools(studio)
    studio.window.producer = tools  # type: ignore[attr-defined]
    return tools
