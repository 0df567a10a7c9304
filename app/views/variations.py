"""Variations panel: generate N takes of the prompt in one go, then audition (A/B), rate and keep."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.store import Take
from app.variations import DEFAULT_COUNT, MAX_COUNT, Variation
from app.views.segments import StarRating
from app.views.take_table import TakeTableSelection

COLUMNS = ("#", "Seed", "Length", "Rating")  # "Length" says the state until the take is ready
RATING_COLUMN = 3
STATE_TEXT = {"queued": "queued", "generating": "generating…", "done": "ready", "failed": "—"}
BUTTONS_PER_ROW = 3


class VariationsPanel(TakeTableSelection, QWidget):
    generate = Signal(int)  # count
    cancel = Signal()
    play = Signal(int)  # take id
    compare = Signal(int, int)  # take ids A, B
    switch_ab = Signal()
    keep = Signal(int)  # take id: append to the arrangement
    rate = Signal(int, int)  # take id, rating

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.count = QSpinBox()
        self.count.setRange(1, MAX_COUNT)
        self.count.setValue(DEFAULT_COUNT)
        self.count.setToolTip("How many takes of the prompt, each with its own seed")
        self.go = QPushButton("Generate variations")
        self.go.setToolTip("N takes of the prompt and settings in the Prompt panel; with the seed locked "
                           "they use seed, seed+1, …")
        self.go.clicked.connect(lambda: self.generate.emit(self.count.value()))
        self.stop = QPushButton("Cancel")
        self.stop.clicked.connect(self.cancel)
        self.stop.setEnabled(False)
        top = QHBoxLayout()
        top.addWidget(QLabel("Takes"))
        top.addWidget(self.count)
        top.addWidget(self.go, 1)
        top.addWidget(self.stop)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.itemDoubleClicked.connect(lambda _: self._emit_one(self.play))
        self.buttons = {"play": QPushButton("Play"), "ab": QPushButton("A/B"),
                        "switch": QPushButton("Switch A/B"), "keep": QPushButton("Keep")}
        self.buttons["play"].clicked.connect(lambda: self._emit_one(self.play))
        self.buttons["ab"].clicked.connect(self._compare)
        self.buttons["ab"].setToolTip("Select two takes and compare them at the same position (B switches)")
        self.buttons["switch"].clicked.connect(self.switch_ab)
        self.buttons["switch"].setEnabled(False)
        self.buttons["keep"].clicked.connect(lambda: [self.keep.emit(t) for t in self.selected_ids()])
        self.buttons["keep"].setToolTip("Add the selected takes to the end of the arrangement (undoable)")
        grid = QGridLayout()
        for i, b in enumerate(self.buttons.values()):
            grid.addWidget(b, i // BUTTONS_PER_ROW, i % BUTTONS_PER_ROW)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(top)
        layout.addWidget(self.status)
        layout.addWidget(self.table, 1)
        layout.addLayout(grid)
        self.stars: dict[int, StarRating] = {}
        self._update_buttons()

    def set_items(self, items: list[Variation], takes: dict[int, Take], running: bool) -> None:
        selected = set(self.selected_ids())
        self.table.setRowCount(len(items))
        self.stars = {}
        for r, v in enumerate(items):
            take = takes.get(v.take_id) if v.take_id is not None else None
            length = f"{take.seconds:.1f} s" if take else STATE_TEXT[v.state]
            values = (str(r + 1), str(v.seed), length, "")
            for c, text in enumerate(values):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, v.take_id)
                self.table.setItem(r, c, item)
            if take is not None:
                stars = StarRating(take.rating)
                stars.rating_changed.connect(lambda n, t=take.id: self.rate.emit(t, n))
                self.table.setCellWidget(r, RATING_COLUMN, stars)
                self.stars[take.id] = stars
                if take.id in selected:
                    self.table.selectRow(r)
            else:
                self.table.removeCellWidget(r, RATING_COLUMN)
        self.table.resizeColumnsToContents()
        self.go.setEnabled(not running)
        self.stop.setEnabled(running)
        done = sum(v.state == "done" for v in items)
        self.status.setText(f"Generating {done + 1} of {len(items)}…" if running else
                            (f"{done} of {len(items)} takes ready: select to play, A/B, rate or keep"
                             if items else ""))
        self._update_buttons()

    def _update_buttons(self) -> None:
        n = len(self.selected_ids())
        self.buttons["play"].setEnabled(n >= 1)
        self.buttons["keep"].setEnabled(n >= 1)
        self.buttons["ab"].setEnabled(n == 2)
