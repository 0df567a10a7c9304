"""The bar/beat grid drawn on the arrangement when a tempo is set.

Two line sets (bars, beats) as `PlotCurveItem`s with `connect="pairs"` (one segment per line), redrawn
for the visible x range only when the view moves (`melody_core.audio.grid.grid_lines` thins them
when zoomed far out), and bar numbers along the bottom for the visible bars. `GridControls` is the
"Snap to bars" toggle and the bar.beat readout.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QWidget

from melody_core.audio.grid import BEATS_PER_BAR, bar_beat, bar_seconds, grid_lines

BAR_COLOR = (150, 150, 150, 170)
BEAT_COLOR = (150, 150, 150, 60)
MAX_LABELS = 40  # bar numbers drawn at most (every k-th bar when zoomed out)
Y_SPAN = (-1.05, 1.05)  # the lines span the waveform's y range


class BarGrid:
    """Grid lines of one PlotWidget's view box; `set_bpm(None)` hides them."""

    def __init__(self, plot: pg.PlotWidget) -> None:
        self.plot = plot
        self.bpm: float | None = None
        self.bars = pg.PlotCurveItem(pen=pg.mkPen(BAR_COLOR, width=1), connect="pairs")
        self.beats = pg.PlotCurveItem(pen=pg.mkPen(BEAT_COLOR, width=1, style=Qt.PenStyle.DotLine),
                                      connect="pairs")
        for item in (self.bars, self.beats):
            item.setZValue(-5)  # under the waveforms, over the spectrogram
            plot.addItem(item)
        self._labels: list[pg.TextItem] = []
        self.bar_times = np.zeros(0)  # drawn bar lines (seconds)
        self.beat_times = np.zeros(0)  # drawn beat lines (seconds)
        plot.getViewBox().sigXRangeChanged.connect(lambda *_: self.redraw())

    def set_bpm(self, bpm: float | None) -> None:
        self.bpm = bpm if bpm and bpm > 0 else None
        self.redraw()

    @staticmethod
    def _pairs(times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.repeat(times, 2)  # (2 * lines,)
        y = np.tile(np.array(Y_SPAN), len(times))  # (2 * lines,)
        return x, y

    def redraw(self) -> None:
        for label in self._labels:
            self.plot.removeItem(label)
        self._labels = []
        if self.bpm is None:
            self.bar_times = self.beat_times = np.zeros(0)
            self.bars.setData([], [])
            self.beats.setData([], [])
            return
        lo, hi = self.plot.getViewBox().viewRange()[0]
        self.bar_times, self.beat_times = grid_lines(self.bpm, lo, hi)
        self.bars.setData(*self._pairs(self.bar_times))
        self.beats.setData(*self._pairs(self.beat_times))
        step = max(1, -(-len(self.bar_times) // MAX_LABELS))
        bar = bar_seconds(self.bpm, BEATS_PER_BAR)
        for t in self.bar_times[::step]:
            label = pg.TextItem(str(int(round(t / bar)) + 1), color=BAR_COLOR, anchor=(0, 1))
            label.setPos(float(t), Y_SPAN[0])
            label.setZValue(-5)
            self.plot.addItem(label)
            self._labels.append(label)

    def labels(self) -> list[str]:
        return [label.textItem.toPlainText() for label in self._labels]


class GridControls(QWidget):
    """"Snap to bars" and the playhead as bar.beat, shown beside the drag-out handles."""

    snap_toggled = Signal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.snap = QCheckBox("Snap to bars")
        self.snap.setToolTip("Snap selections to whole bars of the BPM (set a BPM first)")
        self.snap.toggled.connect(self.snap_toggled)
        self.bar_beat = QLabel("")
        self.bar_beat.setToolTip("Playhead position in bars and beats (4/4, bar 1 at 0 s)")
        self.bar_beat.setMinimumWidth(self.bar_beat.fontMetrics().horizontalAdvance("bar 8888.8") + 4)
        self.bpm: float | None = None
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.snap)
        row.addWidget(self.bar_beat)
        self.set_bpm(None)

    def set_bpm(self, bpm: float | None) -> None:
        self.bpm = bpm or None
        self.snap.setEnabled(self.bpm is not None)
        self.set_position(0.0)

    def set_position(self, seconds: float) -> None:
        if self.bpm is None:
            self.bar_beat.setText("")
            return
        bar, beat = bar_beat(seconds, self.bpm)
        self.bar_beat.setText(f"bar {bar}.{int(beat)}")
