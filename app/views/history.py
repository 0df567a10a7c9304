"""History panel: every take (prompt, seed, settings, rating, time), filter by rating, A/B, seed recall."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QGridLayout,
    QHeaderView,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.store import Take
from app.views.take_table import TakeTableSelection

BUTTONS_PER_ROW = 3
COLUMNS = ("Time", "Rating", "Prompt", "Seed", "Steps", "CFG", "Length", "Kind")
FILTERS = (("All takes", 0), ("★ and up", 1), ("★★ and up", 2), ("★★★ and up", 3), ("★★★★ and up", 4),
           ("★★★★★ only", 5))


class HistoryPanel(TakeTableSelection, QWidget):
    play_take = Signal(int)
    compare = Signal(int, int)
    switch_ab = Signal()
    restore = Signal(int)
    add_take = Signal(int)
    filter_changed = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.filter = QComboBox()
        for label, value in FILTERS:
            self.filter.addItem(label, value)
        self.filter.currentIndexChanged.connect(lambda i: self.filter_changed.emit(self.filter.itemData(i)))
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.itemDoubleClicked.connect(lambda _: self._emit_one(self.play_take))
        self.buttons = {
            "play": QPushButton("Play"), "ab": QPushButton("A/B compare"),
            "switch": QPushButton("Switch A/B"), "restore": QPushButton("Restore settings"),
            "add": QPushButton("Add to arrangement"),
        }
        self.buttons["play"].clicked.connect(lambda: self._emit_one(self.play_take))
        self.buttons["ab"].clicked.connect(self._compare)
        self.buttons["ab"].setToolTip("Select two takes, then compare them at the same position (B switches)")
        self.buttons["switch"].clicked.connect(self.switch_ab)
        self.buttons["switch"].setEnabled(False)
        self.buttons["restore"].clicked.connect(lambda: self._emit_one(self.restore))
        self.buttons["restore"].setToolTip("Put this take's prompt, seed and settings back in the panel")
        self.buttons["add"].clicked.connect(lambda: self._emit_one(self.add_take))
        row = QGridLayout()  # two rows: the history dock stays narrow enough for a 1366 px screen
        for i, b in enumerate(self.buttons.values()):
            row.addWidget(b, i // BUTTONS_PER_ROW, i % BUTTONS_PER_ROW)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.filter)
        layout.addWidget(self.table, 1)
        layout.addLayout(row)
        self._update_buttons()

    def set_takes(self, takes: list[Take]) -> None:
        selected = set(self.selected_ids())
        self.table.setRowCount(len(takes))
        for r, take in enumerate(takes):
            s = take.settings
            stars = "★" * take.rating + "☆" * (5 - take.rating)
            prompt = (take.prompt or "(style audio)").replace("\n", " ")
            values = (time.strftime("%H:%M:%S", time.localtime(take.created)), stars, prompt,
                      str(take.seed), str(s.get("steps", "")), f"{float(s.get('guidance', 0)):.2f}",
                      f"{take.seconds:.1f} s", take.kind)
            for c, v in enumerate(values):
                item = QTableWidgetItem(v)
                item.setData(Qt.ItemDataRole.UserRole, take.id)
                item.setToolTip(f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(take.created))}\n"
                                f"{take.prompt or '(style audio)'}")
                self.table.setItem(r, c, item)
            if take.id in selected:
                self.table.selectRow(r)
        self._update_buttons()

    def _update_buttons(self) -> None:
        n = len(self.selected_ids())
        for key in ("play", "restore", "add"):
            self.buttons[key].setEnabled(n >= 1)
        self.buttons["ab"].setEnabled(n == 2)

    def min_rating(self) -> int:
        return int(self.filter.currentData())
