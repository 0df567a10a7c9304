"""The main window: assembles the views and wires them to the controller, session and playback.

Widgets never call the pipeline; they call `Controller` (generation), `SessionModel` (ratings,
arrangement edits, undo, export) and `Playback` (transport). Errors of any kind end up in the
message bar at the top of the window.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import QRect, Qt, QTimer
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QColor, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QScrollArea,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.audio.player import Player, State
from app.controller import Controller
from app.exporter import RATES, ExportOptions, drag_path, export_audio
from app.playback import Playback
from app.session import SessionModel
from app.views import theme
from app.views.dragout import DragHandle
from app.views.grid import GridControls
from app.views.history import HistoryPanel
from app.views.prompt_panel import PromptPanel
from app.views.segments import SegmentStrip
from app.views.transport import TransportBar
from app.views.waveform import ArrangementView
from melody_core.audio.levels import OFF, LevelSettings

log = logging.getLogger(__name__)

POSITION_POLL_MS = 30
PANEL_WIDTH = 380
SCROLLBAR_ALLOWANCE = 24  # the prompt panel scrolls vertically: leave room for the bar
HISTORY_WIDTH = 360
EXPORT_FILTERS = {"wav": "WAV (*.wav)", "flac": "FLAC (*.flac)"}
DEFAULT_SIZE = (1360, 820)  # first start: shrunk to the screen's available geometry
_B = QMessageBox.StandardButton
KEEP_PARTIAL_BUTTONS = _B.Yes | _B.No | _B.Cancel  # below this the docks and the timeline stop being usable
BUSY_TEXT = {"generate": "Generating…", "stream": "Keep playing: generating… (Esc stops)",
             "regenerate": "Regenerating…", "extend": "Extending…", "inpaint": "Regenerating the selection…"}
MESSAGE_COLORS = {"error": "#c0392b", "warning": "#b9770e", "info": ""}


class MessageBar(QWidget):
    """A dismissable line at the top of the window for errors and warnings."""

    def __init__(self) -> None:
        super().__init__()
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QToolButton(text="✕")
        close.setAutoRaise(True)
        close.clicked.connect(self.hide)
        row = QHBoxLayout(self)
        row.setContentsMargins(8, 2, 8, 2)
        row.addWidget(self.label, 1)
        row.addWidget(close)
        self.level = ""
        self.hide()

    def show_message(self, level: str, text: str) -> None:
        self.level = level
        self.label.setText(text)
        self.setStyleSheet(f"background: {MESSAGE_COLORS[level]}; color: white;")
        self.show()

    def text(self) -> str:
        return self.label.text() if self.isVisible() else ""


class MainWindow(QMainWindow):
    def __init__(self, session: SessionModel, controller: Controller, playback: Playback, player: Player,
                 theme_mode: str = "system") -> None:
        super().__init__()
        self.session, self.controller, self.playback = session, controller, playback
        self.player = player  # devices, volume and levels (the transport goes through `playback`)
        self.store = session.store
        self.sample_rate = self.player.sample_rate
        self.selected: int | None = None
        self._theme_mode = theme_mode
        self._drag_dir = self.store.folder / "drag"  # kept: a DAW project may use these files
        self.setWindowTitle("MeLoDy Studio")
        self._build()
        self._wire()
        self._shortcuts()
        self._restore_prefs()
        self.refresh_arrangement()
        self.refresh_history()
        self._poll = QTimer(self, interval=POSITION_POLL_MS)
        self._poll.timeout.connect(self._update_position)
        self._poll.start()
        self.apply_theme(theme_mode)
        hints = QApplication.styleHints()
        if hasattr(hints, "colorSchemeChanged"):
            hints.colorSchemeChanged.connect(lambda *_: self.apply_theme(self._theme_mode))

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        self.messages = MessageBar()
        self.arrangement = ArrangementView(self.sample_rate)
        self.strip = SegmentStrip(self.sample_rate, lambda i: self._drag_file(indices=[i]))
        self.strip.setMinimumHeight(150)
        drags = QHBoxLayout()
        drags.addWidget(QLabel("Drag out:"))
        self.drag_all = DragHandle("Arrangement WAV", lambda: self._drag_file())
        self.drag_sel = DragHandle("Selection WAV", lambda: self._drag_file(selection=True))
        for h in (self.drag_all, self.drag_sel):
            h.failed.connect(lambda m: self.show_message("error", m))
            drags.addWidget(h)
        drags.addStretch(1)
        self.grid_controls = GridControls()
        drags.addWidget(self.grid_controls)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.arrangement)
        splitter.addWidget(self.strip)
        splitter.setSizes([480, 200])
        central = QWidget()
        col = QVBoxLayout(central)
        col.setContentsMargins(4, 4, 4, 4)
        col.addWidget(self.messages)
        col.addWidget(splitter, 1)
        col.addLayout(drags)
        self.transport = TransportBar()
        col.addWidget(self.transport)
        self.setCentralWidget(central)
        self.panel = PromptPanel()
        scroll = QScrollArea()
        scroll.setWidget(self.panel)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(max(PANEL_WIDTH, self.panel.minimumSizeHint().width() + SCROLLBAR_ALLOWANCE))
        left = QDockWidget("Prompt", self)
        left.setObjectName("promptDock")
        left.setWidget(scroll)
        left.setFeatures(QDockWidget.DockWidgetFeature.NoDockWidgetFeatures)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, left)
        self.history = HistoryPanel()
        right = QDockWidget("History", self)
        right.setObjectName("historyDock")
        right.setWidget(self.history)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, right)
        self.resizeDocks([left, right], [PANEL_WIDTH, HISTORY_WIDTH], Qt.Orientation.Horizontal)
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.setTextVisible(True)
        self.progress.hide()
        self.statusBar().addPermanentWidget(self.progress)
        self._menus()

    def _menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        self.file_menu = file_menu  # app.views.producer puts the project entries on top
        self._action(file_menu, "Export arrangement…", self.export_arrangement, "Ctrl+E")
        self._action(file_menu, "Export selected segment…", self.export_segment, "Ctrl+Shift+E")
        self._action(file_menu, "Export selection…", lambda: self.export_dialog(selection=True))
        self.export_loop_action = self._action(file_menu, "Export loop…",
                                               lambda: self.export_dialog(selection=True, loop=True))
        file_menu.addSeparator()
        self._action(file_menu, "Quit", self.close, QKeySequence.StandardKey.Quit)
        edit = bar.addMenu("&Edit")
        self.edit_menu = edit  # Redo: app.views.producer
        self.undo_action = self._action(edit, "Undo", self.undo, QKeySequence.StandardKey.Undo)
        self.undo_action.setEnabled(False)
        view = bar.addMenu("&View")
        self.spec_action = self._action(view, "Spectrogram", lambda: None)
        self.spec_action.setCheckable(True)
        self.spec_action.toggled.connect(self.arrangement.set_spectrogram)
        themes = view.addMenu("Theme")
        self.theme_actions: dict[str, QAction] = {}
        group = QActionGroup(self)
        for mode in ("system", "light", "dark"):
            # `triggered` passes `checked`: it must not land in `m` (that made every entry "light")
            action = self._action(themes, mode.capitalize(), lambda _checked=False, m=mode: self.apply_theme(
                m, save=True))
            action.setCheckable(True)
            group.addAction(action)
            self.theme_actions[mode] = action
        settings = bar.addMenu("&Settings")
        self.levels_action = self._action(settings, "Level output (-14 LUFS, -1 dBTP true-peak limiter)",
                                          lambda: None)
        self.levels_action.setCheckable(True)
        self.levels_action.setChecked(True)
        self.levels_action.setToolTip("Loudness normalisation and a lookahead true-peak limiter on "
                                      "everything played and exported; off = the model's raw levels")
        self.levels_action.toggled.connect(self.set_levels_enabled)
        fmt_menu = settings.addMenu("Export format")
        self.format_actions: dict[tuple[str, object], QAction] = {}
        for key, values in (("format", [("WAV", "wav"), ("FLAC", "flac")]),
                            ("bits", [("16-bit", 16), ("24-bit", 24)]),
                            ("rate", [(f"{r / 1000:g} kHz", r) for r in RATES]),
                            ("channels", [("Mono", 1), ("Stereo (dual mono)", 2)])):
            group = QActionGroup(self)
            for text, value in values:
                action = self._action(fmt_menu, text, lambda _c=False, k=key, v=value: self._set_format(k, v))
                action.setCheckable(True)
                group.addAction(action)
                self.format_actions[(key, value)] = action
            fmt_menu.addSeparator()
        help_menu = bar.addMenu("&Help")
        self._action(help_menu, "Keyboard shortcuts", lambda: theme.show_shortcuts(self), "F1")

    def _action(self, menu, text: str, slot, shortcut=None) -> QAction:  # noqa: ANN001
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(slot)
        menu.addAction(action)
        return action

    def _shortcuts(self) -> None:
        keys = {
            "Ctrl+Return": self.generate, "Ctrl+Enter": self.generate, "Ctrl+Shift+Return": self.keep_playing,
            "Escape": self.cancel, "Space": self.playback.toggle, "S": self.playback.stop,
            "L": self.transport.loop.toggle, "Left": lambda: self.select_segment((self.selected or 0) - 1),
            "Right": lambda: self.select_segment(-1 if self.selected is None else self.selected + 1),
            "P": lambda: self._with_selected(self.playback.play_segment),
            "R": lambda: self._with_selected(lambda i: self.regenerate(i, False)),
            "Shift+R": lambda: self._with_selected(lambda i: self.regenerate(i, True)),
            "E": lambda: self._with_selected(self.extend), "I": lambda: self._with_selected(self.inpaint),
            "Delete": lambda: self._with_selected(self.delete_segment), "B": self.playback.switch_ab,
            "Ctrl+Shift+C": self.panel.copy_seed,
        }
        for n in range(6):
            keys[str(n)] = lambda n=n: self._with_selected(lambda i: self.rate(i, n))
        self._shortcut_objs = []
        for key, slot in keys.items():
            sc = QShortcut(QKeySequence(key), self)
            sc.activated.connect(slot)
            self._shortcut_objs.append(sc)

    # ------------------------------------------------------------------ wiring
    def _wire(self) -> None:
        c, p, s = self.controller, self.panel, self.session
        p.generate_requested.connect(self.generate)
        p.keep_playing_requested.connect(self.keep_playing)
        p.cancel_requested.connect(self.cancel)
        p.model_requested.connect(self.load_model)
        p.style_file_dropped.connect(c.load_style)
        p.steer.connect(lambda prompt, w: c.steer(prompt=prompt, style_weight=w))
        c.style_loaded.connect(self._on_style)
        c.message.connect(self.show_message)
        c.busy_changed.connect(self._on_busy)
        c.progress.connect(self._on_progress)
        c.engine_changed.connect(self._on_engine_changed)
        c.engine_loading.connect(lambda on: p.engine_label.setText("loading the model…") if on else None)
        c.live_chunk.connect(lambda pcm, start: self.arrangement.add_live(
            pcm, len(self.session.arrangement_audio()) + start))
        c.live_cleared.connect(self.arrangement.clear_live)
        c.marker_added.connect(lambda sample, prompt: self.arrangement.add_live_marker(
            len(self.session.arrangement_audio()) + sample, prompt))
        c.unheard_take.connect(lambda _tid: self.refresh_history())
        c.seed_used.connect(p.set_seed)
        c.first_sound.connect(lambda ms: self.statusBar().showMessage(f"First sound after {ms:.0f} ms", 8000))
        c.job_finished.connect(self._on_job_finished)
        s.arrangement_changed.connect(self.refresh_arrangement)
        s.takes_changed.connect(self.refresh_history)
        s.rating_changed.connect(self._on_rating)
        s.undo_changed.connect(self.undo_action.setEnabled)
        self.arrangement.segment_clicked.connect(lambda i: self.select_segment(i if i >= 0 else None))
        self.arrangement.seek_requested.connect(lambda sec: self.playback.seek(int(sec * self.sample_rate)))
        self.arrangement.selection_changed.connect(lambda _: self._update_loop())
        st = self.strip
        st.selected.connect(self.select_segment)
        st.play.connect(self.playback.play_segment)
        st.rate.connect(self.rate)
        st.regenerate.connect(self.regenerate)
        st.extend.connect(self.extend)
        st.inpaint.connect(self.inpaint)
        st.delete.connect(self.delete_segment)
        st.drag_failed.connect(lambda m: self.show_message("error", m))
        t = self.transport
        t.play_pause.connect(self.playback.toggle)
        t.stop.connect(self.playback.stop)
        t.loop_toggled.connect(lambda _: self._update_loop())
        self.grid_controls.snap_toggled.connect(self.arrangement.set_snap)  # musical grid: BPM -> bar lines
        p.bpm.valueChanged.connect(lambda bpm: (self.arrangement.set_grid(bpm or None),
                                                self.grid_controls.set_bpm(bpm or None),
                                                self.store.set_pref("bpm", bpm)))
        p.key.currentIndexChanged.connect(lambda _: self.store.set_pref("key", p.key.currentData()))
        self.grid_controls.snap_toggled.connect(lambda on: self.store.set_pref("snap", on))
        t.device_chosen.connect(self._choose_device)
        t.volume_changed.connect(self._set_volume)
        self.playback.state_changed.connect(lambda st_: t.set_playing(st_ == State.PLAYING.value))
        h = self.history
        h.play_take.connect(self.playback.play_take)
        h.compare.connect(self.playback.set_ab)
        h.switch_ab.connect(self.playback.switch_ab)
        h.restore.connect(lambda tid: self.panel.apply_settings(self.session.take(tid).settings))
        h.add_take.connect(self.session.append)
        h.filter_changed.connect(lambda _: self.refresh_history())
        if self.player.available:
            t.set_devices(self.player.devices(), self.player.device)
        else:
            t.set_unavailable(self.player.unavailable_reason or "no device")

    # ------------------------------------------------------------------ preferences
    def _restore_prefs(self) -> None:
        st = self.store
        self.panel.bundle.setText(st.pref("bundle", "") or "")
        idx = self.panel.device.findData(st.pref("device", "auto"))
        self.panel.device.setCurrentIndex(max(idx, 0))
        for prompt in reversed(st.pref("prompt_history", [])):
            self.panel.remember_prompt(prompt)
        last = st.pref("last_settings")
        if last:
            self.panel.apply_settings({**last, "seed": None})
        self.panel.bpm.setValue(float(st.pref("bpm", 0.0) or 0.0))  # the musical grid survives a restart
        self.panel.key.setCurrentIndex(max(0, self.panel.key.findData(st.pref("key"))))
        self.grid_controls.snap.setChecked(bool(st.pref("snap", False)))
        volume = float(st.pref("volume", 1.0))
        self.transport.set_volume(volume)
        self.player.set_volume(volume)
        self._theme_mode = st.pref("theme", self._theme_mode)
        if self._theme_mode not in ("system", "light", "dark"):  # an old build saved "false"
            self._theme_mode = "system"
        self.levels_action.setChecked(LevelSettings.from_dict(st.pref("levels")).enabled)
        self.player.set_levels(self.levels())
        self._check_format_actions()
        self.restore_geometry()

    def _remember(self) -> None:
        settings = self.panel.settings()
        self.panel.remember_prompt(settings.prompt)
        self.store.set_pref("prompt_history", self.panel.prompts())
        self.store.set_pref("last_settings", settings.to_dict())

    def _on_engine_changed(self, desc: str) -> None:
        """The model picker's label: device, name and hash, then honest info from the bundle's card."""
        label = self.panel.engine_label
        label.setWordWrap(True)
        info = self.controller.model_info() if desc else None
        engine = self.controller.engine
        self.panel.set_explicit_controls(tuple(engine.controls) if desc and engine is not None else ())
        text = desc or self.controller.engine_error or "no model"
        if info is not None:
            text += "\n" + " — ".join(x for x in (f"{info.size_mb:.1f} MB", info.card_line) if x)
            label.setToolTip(info.card_paragraph)
        label.setText(text)

    def load_model(self, bundle: str | None, device: str) -> None:
        self.store.set_pref("bundle", bundle or "")
        self.store.set_pref("device", device)
        self.controller.load_engine(bundle, device)

    def _choose_device(self, device: int | None) -> None:
        self.player.set_device(device)
        self.store.set_pref("output_device", device)

    def _set_volume(self, volume: float) -> None:
        self.player.set_volume(volume)
        self.store.set_pref("volume", volume)

    def apply_theme(self, mode: str, save: bool = False) -> None:
        self._theme_mode = mode
        app = QApplication.instance()
        dark = theme.apply_theme(app, mode) if isinstance(app, QApplication) else False
        bg, fg = (QColor("#1e1f22"), QColor("#d0d0d0")) if dark else (QColor("#ffffff"), QColor("#303030"))
        self.arrangement.apply_theme(bg, fg)
        self.panel.drop.preview.setBackground(bg)
        for widget in self.findChildren(QWidget):  # style-sheeted widgets keep the palette they were
            if widget.styleSheet():  # polished with: polish them again
                widget.setStyleSheet(widget.styleSheet())
        self.strip.set_segments(self.session.segments(), self.selected)
        if mode in self.theme_actions:
            self.theme_actions[mode].setChecked(True)
        if save:
            self.store.set_pref("theme", mode)

    # ------------------------------------------------------------------ actions
    def show_message(self, level: str, text: str) -> None:
        if level == "info":
            self.statusBar().showMessage(text, 10000)
        else:
            self.messages.show_message(level, text)
            if level == "error" and self.panel.drop.label.text().startswith("Reading"):
                self.panel.drop.set_error(text)

    def generate(self) -> None:
        self._remember()
        self.controller.generate(self.panel.settings())

    def keep_playing(self) -> None:
        self._remember()
        self.controller.keep_playing(self.panel.settings())

    def cancel(self) -> None:
        kind = self.controller.job_kind  # which kind decides Stop vs Cancel
        if kind == "stream":
            self.controller.stop_live()
        elif kind is not None:
            self.controller.cancel()

    def regenerate(self, index: int, same_seed: bool) -> None:
        self.select_segment(index)
        self.controller.regenerate(index, self.panel.settings(), same_seed)

    def extend(self, index: int) -> None:
        self.select_segment(index)
        self.controller.extend(index, self.panel.settings())

    def inpaint(self, index: int) -> None:
        sel = self.arrangement.selection()
        segs = self.session.segments()
        if sel is None or not 0 <= index < len(segs):
            self.show_message("warning", "Drag across the waveform to select the range to regenerate first")
            return
        seg = segs[index]
        a, b = int(sel[0] * self.sample_rate) - seg.start, int(sel[1] * self.sample_rate) - seg.start
        if a < 0 or b > seg.length:
            self.show_message("warning", f"The selection must lie inside segment #{index + 1}")
            return
        self.controller.inpaint(index, a, b, self.panel.settings())

    def rate(self, index: int, rating: int) -> None:
        ids = self.session.take_ids
        if 0 <= index < len(ids):
            self.session.rate(ids[index], rating)

    def delete_segment(self, index: int) -> None:
        if 0 <= index < len(self.session.take_ids):
            self.session.remove(index)
            self.select_segment(min(index, len(self.session.take_ids) - 1) if self.session.take_ids else None)

    def undo(self) -> None:
        if not self.session.undo():
            self.statusBar().showMessage("Nothing to undo", 3000)

    def _with_selected(self, fn) -> None:  # noqa: ANN001
        if self.selected is not None and 0 <= self.selected < len(self.session.take_ids):
            fn(self.selected)

    def select_segment(self, index: int | None) -> None:
        n = len(self.session.take_ids)
        if index is not None and n:
            index = index % n if index < 0 else min(index, n - 1)
        self.selected = index if n else None
        self.arrangement.set_selected(self.selected)
        self.strip.set_segments(self.session.segments(), self.selected)

    # ------------------------------------------------------------------ export and drag
    def levels(self) -> LevelSettings:
        """Level settings of playback and export (Settings menu; persisted)."""
        saved = LevelSettings.from_dict(self.store.pref("levels"))
        return saved if self.levels_action.isChecked() else OFF

    def set_levels_enabled(self, on: bool) -> None:
        self.store.set_pref("levels", replace(LevelSettings.from_dict(self.store.pref("levels")),
                                              enabled=on).to_dict())
        self.player.set_levels(self.levels())

    def _format_pref(self) -> dict:
        saved = self.store.pref("export_format") or {}
        return {"format": "wav", "bits": 24, "rate": 48_000, "channels": 2, **saved}

    def _set_format(self, key: str, value: object) -> None:
        self.store.set_pref("export_format", {**self._format_pref(), key: value})
        self._check_format_actions()

    def _check_format_actions(self) -> None:
        for (key, value), action in self.format_actions.items():
            action.setChecked(self._format_pref().get(key) == value)

    def export_options(self, loop: bool = False, fmt: str | None = None) -> ExportOptions:
        f = self._format_pref()
        bpm, key = self.panel.musical()
        return ExportOptions(format=fmt or str(f["format"]), bits=int(f["bits"]), sample_rate=int(f["rate"]),
                             channels=int(f["channels"]), levels=self.levels(), loop=loop, bpm=bpm, key=key,
                             model_name=self.controller.model_name or None)

    def _selection_samples(self) -> tuple[int, int] | None:
        sel = self.arrangement.selection()
        return None if sel is None else (int(sel[0] * self.sample_rate), int(sel[1] * self.sample_rate))

    def _drag_file(self, indices: list[int] | None = None, selection: bool = False) -> Path:
        """The file a drag offers: written into the project's drag folder (never deleted while the
        project exists), reused when the same audio was dragged before."""
        rng = self._selection_samples() if selection else None
        if selection and rng is None:
            raise ValueError("select a time range first")
        options = self.export_options(fmt="wav")
        path = drag_path(self._drag_dir, self.session, indices, rng, options)
        if path.exists():
            return path
        return export_audio(self.session, path, options, indices, rng)

    def export_dialog(self, indices: list[int] | None = None, selection: bool = False,
                      loop: bool = False) -> None:
        rng = self._selection_samples() if selection else None
        if selection and rng is None:
            self.show_message("warning", "Select a time range first")
            return
        options = self.export_options()
        default = drag_path(Path(self.store.pref("export_dir", str(Path.home()))), self.session, indices, rng,
                            options)
        filters = sorted(EXPORT_FILTERS.values(), key=lambda v: v != EXPORT_FILTERS[options.format])
        path, chosen = QFileDialog.getSaveFileName(self, "Export audio", str(default), ";;".join(filters))
        if path:
            fmt = next((k for k, v in EXPORT_FILTERS.items() if v == chosen), options.format)
            self.export_to(path, indices, rng, fmt=fmt, loop=loop)

    def export_to(self, path: str, indices: list[int] | None = None,
                  sample_range: tuple[int, int] | None = None, fmt: str | None = None,
                  loop: bool = False) -> Path | None:
        """Export with the current format settings; a path without an extension gets `fmt`'s."""
        try:
            out = export_audio(self.session, path, self.export_options(loop=loop, fmt=fmt), indices,
                               sample_range)
        except Exception as exc:  # noqa: BLE001 - AudioError, ValueError, OSError: all become messages
            self.show_message("error", f"Export failed: {' '.join(str(exc).split())}")
            return None
        self.store.set_pref("export_dir", str(out.parent))
        self.statusBar().showMessage(f"Exported {out}", 8000)
        return out

    def export_arrangement(self) -> None:
        self.export_dialog()

    def export_segment(self) -> None:
        if self.selected is None:
            self.show_message("warning", "Select a segment first")
        else:
            self.export_dialog([self.selected])

    # ------------------------------------------------------------------ updates
    def refresh_arrangement(self) -> None:
        segs = self.session.segments()
        if self.selected is not None and self.selected >= len(segs):
            self.selected = len(segs) - 1 if segs else None
        self.arrangement.set_segments(segs, self.selected)
        self.strip.set_segments(segs, self.selected)

    def _on_rating(self, take_id: int, rating: int) -> None:
        for seg in self.session.segments():
            if seg.take.id == take_id:
                self.strip.cards[seg.index].stars.set_rating(rating)
        self.arrangement.update_labels(self.session.segments())

    def refresh_history(self) -> None:
        self.history.set_takes(self.session.history(self.history.min_rating()))

    def _update_loop(self) -> None:
        self.playback.set_loop(self._selection_samples(), self.transport.loop.isChecked())

    def _update_position(self) -> None:
        pos = self.playback.position()
        self.arrangement.set_playhead(pos)
        total = len(self.session.arrangement_audio()) + self.controller.live_samples
        if pos >= 0:
            self.transport.set_position(pos / self.sample_rate, total / self.sample_rate)
            self.grid_controls.set_position(pos / self.sample_rate)
        elif self.playback.source_kind == "take":
            self.transport.set_position(max(self.playback.source_position(), 0) / self.sample_rate, 0)

    def _on_busy(self, busy: bool, kind: str) -> None:
        self.panel.set_busy(busy, kind)
        self.progress.setVisible(busy)
        if busy:
            self.progress.setRange(0, 0)
            self.messages.hide()
            self.statusBar().showMessage(BUSY_TEXT.get(kind, "Working…"))

    def _on_progress(self, stage: str, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        self.progress.setFormat(f"{stage} {done}/{total}")

    def _on_job_finished(self, kind: str, take_id: int | None) -> None:
        if take_id is None:
            return
        ids = self.session.take_ids
        if take_id in ids:
            self.select_segment(ids.index(take_id))

    def _on_style(self, audio, path: str) -> None:  # noqa: ANN001
        if audio is None:
            return
        self.panel.drop.set_audio(audio, path, self.sample_rate)
        self.controller.steer(style_audio_path=path)

    # ------------------------------------------------------------------ geometry
    def restore_geometry(self, available: QRect | None = None) -> None:
        """The saved geometry (or the default size), then shrunk/moved onto the screen."""
        saved = self.store.pref("window_rect")  # [x, y, w, h]: Qt's restoreGeometry blob re-fits itself
        if isinstance(saved, list) and len(saved) == 4:
            self.move(int(saved[0]), int(saved[1]))
            self.resize(int(saved[2]), int(saved[3]))
        else:
            self.resize(*DEFAULT_SIZE)
        self.fit_to_screen(available)

    def fit_to_screen(self, available: QRect | None = None) -> None:
        """Never larger than the screen's available geometry, and on it."""
        if available is None:
            screen = self.screen() or QApplication.primaryScreen()
            if screen is None:
                return
            available = screen.availableGeometry()
        frame = self.frameGeometry().size() - self.geometry().size()  # title bar and borders
        w = min(self.width(), available.width() - frame.width())
        h = min(self.height(), available.height() - frame.height())
        self.resize(w, h)
        x = min(max(self.x(), available.left()), available.right() - w - frame.width() + 1)
        y = min(max(self.y(), available.top()), available.bottom() - h - frame.height() + 1)
        self.move(x, y)

    # ------------------------------------------------------------------ shutdown
    def ask_keep_partial(self, seconds: float) -> QMessageBox.StandardButton:
        """Quit while generating: keep the partial take? (Yes / No / Cancel; tests replace this)."""
        return QMessageBox.question(
            self, "A generation is running",
            f"{seconds:.1f} s have been generated so far. Keep them as a take before quitting?",
            KEEP_PARTIAL_BUTTONS, QMessageBox.StandardButton.Yes)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        partial = self.controller.live_samples
        if self.controller.busy and partial > 0:
            answer = self.ask_keep_partial(partial / self.sample_rate)
            if answer == QMessageBox.StandardButton.Cancel:
                event.ignore()
                return
            if answer == QMessageBox.StandardButton.Yes:
                self.controller.keep_partial()
            else:
                self.controller.discard_partial()
        self.store.set_pref("window_rect", [self.x(), self.y(), self.width(), self.height()])
        self._poll.stop()
        self.controller.shutdown()
        self.player.shutdown()
        super().closeEvent(event)
