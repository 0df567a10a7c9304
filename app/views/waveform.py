"""The arrangement timeline: segments end to end as waveforms (or a spectrogram), playhead, selection.

pyqtgraph does the heavy lifting: `setDownsampling(auto=True, method='peak')` keeps the envelope
of long takes, `setClipToView(True)` only draws what is visible. Left-drag selects a time range
(for inpainting, looping, exporting), a click selects the segment under it, the wheel zooms and
right/middle drag pan as usual in pyqtgraph. With a tempo set (`set_grid`) a bar/beat grid is drawn
(app/views/grid.py), and with snapping on (`set_snap`) selections snap to whole bars
(`melody_core.audio.grid.snap_range`).
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QVBoxLayout, QWidget

from app.session import Segment
from app.views.grid import BarGrid
from melody_core.audio.grid import snap_range

SEGMENT_COLORS = ("#4c9be8", "#3fb68b")  # alternate so neighbouring segments stay distinct
SELECTED_COLOR = "#f0a030"
LIVE_COLOR = "#d05ad0"
PLAYHEAD_COLOR = "#e04040"
BORDER_COLOR = "#888888"
MARKER_COLOR = "#e0a000"
LABEL_FILL_ALPHA = 190  # opacity of the segment labels' background
MARKER_LABEL_CHARS = 24  # prompt characters shown on a marker (the tooltip has it all)
SPEC_NFFT = 512
SPEC_MAX_COLUMNS = 3000  # the spectrogram hop grows with the length to stay this wide at most
SPEC_FLOOR_DB = -80.0
LIVE_BINS_PER_S = 50  # envelope bins a second of the live curve (20 ms: a pixel of a 30 s view is ~20 ms)


def spectrogram(audio: np.ndarray, n_fft: int = SPEC_NFFT,
                max_columns: int = SPEC_MAX_COLUMNS) -> tuple[np.ndarray, int]:
    """Log-magnitude spectrogram (columns, n_fft//2+1) in dB and its hop in samples."""
    hop = max(n_fft // 2, int(np.ceil(len(audio) / max_columns)))
    if len(audio) < n_fft:
        audio = np.pad(audio, (0, n_fft - len(audio)))
    n_frames = 1 + (len(audio) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]  # (frames, n_fft)
    frames = audio[idx] * np.hanning(n_fft).astype(np.float32)
    mag = np.abs(np.fft.rfft(frames, axis=1))  # (frames, bins)
    return np.maximum(20 * np.log10(mag + 1e-9), SPEC_FLOOR_DB), hop


def live_envelope(pcm: np.ndarray, start: int, sample_rate: int,
                  bins_per_s: int = LIVE_BINS_PER_S) -> tuple[np.ndarray, np.ndarray]:
    """Min/max envelope of `pcm` (n,) drawn from sample `start`: x (2 * bins,) seconds, y (2 * bins,)
    with each bin's min at its start and its max half a bin later (a zig-zag that fills like the
    waveform). The last bin may be shorter."""
    size = max(1, sample_rate // bins_per_s)
    n_bins = -(-len(pcm) // size)
    padded = np.pad(pcm, (0, n_bins * size - len(pcm)), mode="edge").reshape(n_bins, size)  # (bins, size)
    y = np.stack([padded.min(axis=1), padded.max(axis=1)], axis=1).reshape(-1)  # (2 * bins,)
    first = start + np.arange(n_bins) * size  # first sample of each bin
    x = np.stack([first, first + size / 2], axis=1).reshape(-1) / sample_rate  # (2 * bins,)
    return x, y.astype(np.float32)


class _TimelineBox(pg.ViewBox):
    """ViewBox whose left button selects time instead of panning."""

    def __init__(self, relay: _Relay) -> None:
        super().__init__()
        self._relay = relay
        self.setMouseEnabled(x=True, y=False)

    def mouseDragEvent(self, ev, axis=None) -> None:  # noqa: ANN001 - pyqtgraph event
        if ev.button() != Qt.MouseButton.LeftButton:
            super().mouseDragEvent(ev, axis)
            return
        ev.accept()
        a = self.mapSceneToView(ev.buttonDownScenePos()).x()
        b = self.mapSceneToView(ev.scenePos()).x()
        self._relay.dragged.emit(min(a, b), max(a, b), bool(ev.isFinish()))

    def mouseClickEvent(self, ev) -> None:  # noqa: ANN001
        if ev.button() == Qt.MouseButton.LeftButton:
            ev.accept()
            self._relay.clicked.emit(self.mapSceneToView(ev.scenePos()).x(), bool(ev.double()))
        else:
            super().mouseClickEvent(ev)


class _Relay(QObject):
    dragged = Signal(float, float, bool)
    clicked = Signal(float, bool)


class ArrangementView(QWidget):
    """Timeline of the session; seconds on the x axis."""

    segment_clicked = Signal(int)  # index, or -1 for empty space
    seek_requested = Signal(float)  # seconds (double click)
    selection_changed = Signal(object)  # (start_s, end_s) or None

    def __init__(self, sample_rate: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.sample_rate = sample_rate
        self._relay = _Relay()
        self._box = _TimelineBox(self._relay)
        self.plot = pg.PlotWidget(viewBox=self._box)
        self.plot.setYRange(-1.0, 1.0, padding=0.05)
        self.plot.setLabel("bottom", "time", units="s")
        self.plot.hideAxis("left")
        self.plot.showGrid(x=True, y=False, alpha=0.2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot)
        self._items: list[pg.GraphicsObject] = []
        self._curves: list[pg.PlotDataItem] = []
        self._labels: list[pg.TextItem] = []
        self._segments: list[Segment] = []
        self._selected: int | None = None
        self._live_curve: pg.PlotDataItem | None = None  # the stream being generated, as an envelope
        self._live_x = np.zeros(0, np.float64)  # envelope points (seconds), 2 per LIVE_BINS_PER_S bin
        self._live_y = np.zeros(0, np.float32)  # min, max of each bin
        self._live_n = 0  # envelope points in use
        self._live_samples = 0  # samples drawn
        self._live_items: list[pg.GraphicsObject] = []  # prompt markers of the live stream
        self.live_markers: list[tuple[int, str]] = []
        self.markers: list[tuple[int, str]] = []
        self.playhead = pg.InfiniteLine(pos=0, angle=90, pen=pg.mkPen(PLAYHEAD_COLOR, width=2))
        self.playhead.setZValue(20)
        self.playhead.hide()
        self.plot.addItem(self.playhead)
        self.region = pg.LinearRegionItem(values=(0, 0), brush=pg.mkBrush(240, 160, 48, 50))
        self.region.setZValue(15)
        self.region.hide()
        self.region.sigRegionChangeFinished.connect(self._region_moved)
        self.plot.addItem(self.region)
        self._spec = pg.ImageItem()
        self._spec.hide()
        self.plot.addItem(self._spec)
        self._spectrogram = False
        self._label_fill = pg.mkBrush(255, 255, 255, LABEL_FILL_ALPHA)  # the theme's background, translucent
        self.grid = BarGrid(self.plot)
        self.snap = False  # selections snap to bars (when a tempo is set)
        self._snapping = False  # re-entrancy guard: setRegion emits sigRegionChangeFinished
        self._relay.dragged.connect(self._on_drag)
        self._relay.clicked.connect(self._on_click)

    @staticmethod
    def _prep(curve: pg.PlotDataItem) -> None:
        curve.setDownsampling(auto=True, method="peak")
        curve.setClipToView(True)

    # ------------------------------------------------------------------ content
    def set_segments(self, segments: list[Segment], selected: int | None) -> None:
        for item in self._items:
            self.plot.removeItem(item)
        self._items, self._curves, self._labels, self._segments = [], [], [], list(segments)
        self.markers: list[tuple[int, str]] = []  # (arrangement sample, prompt) of the saved takes
        self._selected = selected
        sr = self.sample_rate
        for seg in segments:
            audio = seg.take.audio if seg.take.audio is not None else np.zeros(seg.length, np.float32)
            x = (seg.start + np.arange(seg.length)) / sr
            curve = pg.PlotDataItem(pen=pg.mkPen(self._color(seg.index)))
            label = pg.TextItem(self._label(seg), anchor=(0, 0), color=self._color(seg.index),
                                fill=self._label_fill)  # readable over its own waveform
            label.setToolTip(seg.take.prompt or "(style audio)")
            label.setPos(seg.start / sr, 1.0)
            border = pg.InfiniteLine(pos=seg.start / sr, angle=90,
                                     pen=pg.mkPen(BORDER_COLOR, style=Qt.PenStyle.DashLine))
            for item in (curve, label, border):
                self.plot.addItem(item)
                self._items.append(item)
            self._prep(curve)  # after addItem: pyqtgraph needs the ViewBox to clip/downsample
            curve.setData(x, audio)
            self._curves.append(curve)
            self._labels.append(label)
            curve.setVisible(not self._spectrogram)
            for sample, prompt in seg.take.metadata.get("prompt_markers", []) or []:
                self._add_marker_item(seg.start + int(sample), str(prompt), self._items, self.markers)
        self._refresh_spectrogram()
        total = segments[-1].end / sr if segments else 1.0
        self.plot.setXRange(0, max(total, 1.0), padding=0.02)

    @staticmethod
    def _label(seg: Segment) -> str:
        return f"#{seg.index + 1} " + "★" * seg.take.rating + "☆" * (5 - seg.take.rating)

    def _color(self, index: int) -> str:
        return SELECTED_COLOR if index == self._selected else SEGMENT_COLORS[index % len(SEGMENT_COLORS)]

    def update_labels(self, segments: list[Segment]) -> None:
        """Refresh the '#n ★★★☆☆' labels (ratings changed, audio did not)."""
        for seg, label in zip(segments, self._labels):
            label.setText(self._label(seg))

    def set_selected(self, index: int | None) -> None:
        self._selected = index
        for i, curve in enumerate(self._curves):
            curve.setPen(pg.mkPen(self._color(i)))

    def add_live(self, pcm: np.ndarray, start: int) -> None:
        """A chunk being generated (not saved yet), drawn from arrangement sample `start`.

        Drawn as a min/max envelope (`LIVE_BINS_PER_S` bins a second, two points each) on one
        curve, not sample by sample: a "Keep playing" then holds 1.2 KB a second of audio here (x float64
        + y float32 per point, 100 points a second; ~2 MB an hour, plus pyqtgraph's copies) instead of
        every sample as x float64 + y float32 (0.29 MB a second at 24 kHz before pyqtgraph's copies,
        one PlotDataItem per chunk: most of issue 18's RSS growth)."""
        if len(pcm) == 0:
            return
        if self._live_curve is None:
            self._live_curve = pg.PlotDataItem(pen=pg.mkPen(LIVE_COLOR))
            self.plot.addItem(self._live_curve)
            self._prep(self._live_curve)
        x, y = live_envelope(np.asarray(pcm, np.float32), start, self.sample_rate)
        need = self._live_n + len(x)
        if need > len(self._live_x):  # amortised growth (doubling)
            grow = max(need, 2 * len(self._live_x), 1024) - self._live_n
            self._live_x = np.concatenate([self._live_x[: self._live_n], np.zeros(grow)])
            self._live_y = np.concatenate([self._live_y[: self._live_n], np.zeros(grow, np.float32)])
        self._live_x[self._live_n : need] = x
        self._live_y[self._live_n : need] = y
        self._live_n = need
        self._live_samples += len(pcm)
        self._live_curve.setData(self._live_x[:need], self._live_y[:need])
        end = (start + len(pcm)) / self.sample_rate
        lo, hi = self._box.viewRange()[0]
        if end > hi:
            self.plot.setXRange(lo, end + 1.0, padding=0)

    def _add_marker_item(self, sample: int, prompt: str, into: list, record: list) -> None:
        """A prompt-change marker: a dotted line with the new prompt's first words."""
        line = pg.InfiniteLine(pos=sample / self.sample_rate, angle=90,
                               pen=pg.mkPen(MARKER_COLOR, width=1, style=Qt.PenStyle.DotLine),
                               label=prompt[:MARKER_LABEL_CHARS],
                               labelOpts={"position": 0.9, "color": MARKER_COLOR})
        line.setToolTip(f"Prompt changed to: {prompt}")
        line.setZValue(18)
        self.plot.addItem(line)
        into.append(line)
        record.append((sample, prompt))

    def add_live_marker(self, sample: int, prompt: str) -> None:
        """A prompt change in the stream being generated, at arrangement sample `sample`."""
        self._add_marker_item(sample, prompt, self._live_items, self.live_markers)

    def clear_live(self) -> None:
        if self._live_curve is not None:
            self.plot.removeItem(self._live_curve)
        self._live_curve = None
        self._live_x, self._live_y = np.zeros(0, np.float64), np.zeros(0, np.float32)
        self._live_n = self._live_samples = 0
        for item in self._live_items:
            self.plot.removeItem(item)
        self._live_items, self.live_markers = [], []

    def live_samples(self) -> int:
        """Samples of the live stream drawn so far."""
        return self._live_samples

    def live_points(self) -> int:
        """Points the live stream's envelope holds (bounded by the stream's length, not its samples)."""
        return self._live_n

    def set_playhead(self, sample: int) -> None:
        if sample < 0:
            self.playhead.hide()
            return
        self.playhead.setPos(sample / self.sample_rate)
        self.playhead.show()

    # ------------------------------------------------------------------ spectrogram option
    def set_spectrogram(self, on: bool) -> None:
        self._spectrogram = on
        for curve in self._curves:
            curve.setVisible(not on)
        self._refresh_spectrogram()

    def _refresh_spectrogram(self) -> None:
        if not self._spectrogram or not self._segments:
            self._spec.hide()
            return
        audio = np.concatenate([s.take.audio for s in self._segments if s.take.audio is not None])
        spec, hop = spectrogram(audio)
        self._spec.setImage(spec, autoLevels=False, levels=(SPEC_FLOOR_DB, 0.0))
        self._spec.setColorMap(pg.colormap.get("viridis"))
        width = spec.shape[0] * hop / self.sample_rate
        self._spec.setRect(0.0, -1.0, width, 2.0)  # frequency 0..Nyquist drawn over the y range -1..1
        self._spec.setZValue(-10)
        self._spec.show()

    # ------------------------------------------------------------------ selection
    def selection(self) -> tuple[float, float] | None:
        if not self.region.isVisible():
            return None
        a, b = self.region.getRegion()
        return (float(a), float(b)) if b > a else None

    def set_selection(self, sel: tuple[float, float] | None) -> None:
        """Select (start_s, end_s) -- snapped to bars when snapping is on -- or nothing."""
        if sel is None:
            self.region.hide()
        else:
            self._snapping = True
            try:
                self.region.setRegion(sel)
            finally:
                self._snapping = False
            self.region.show()
            if self.snap and self.grid.bpm is not None:
                self._snap_region()
                return
        self.selection_changed.emit(self.selection())

    # ------------------------------------------------------------------ grid and snapping
    def set_grid(self, bpm: float | None) -> None:
        """Draw the bar/beat grid for `bpm` (None or 0: no grid, no snapping); the seconds grid of
        the time axis is hidden while the bar grid shows (two grids at once are clutter)."""
        self.grid.set_bpm(bpm)
        self.plot.showGrid(x=self.grid.bpm is None, y=False, alpha=0.2)
        if self.snap:
            self._snap_region()

    def set_snap(self, on: bool) -> None:
        self.snap = on
        if on:
            self._snap_region()

    def _total_s(self) -> float:
        return self._segments[-1].end / self.sample_rate if self._segments else 0.0

    def _snapped(self, a: float, b: float) -> tuple[float, float] | None:
        """(a, b) on bar lines when snapping (None: not a whole bar fits), else unchanged."""
        if not self.snap or self.grid.bpm is None:
            return (a, b)
        return snap_range(a, b, self.grid.bpm, limit_s=self._total_s())

    def _snap_region(self) -> None:
        sel = self.selection()
        if sel is None or self._snapping:
            return
        snapped = self._snapped(*sel)
        self._snapping = True
        try:
            if snapped is None:
                self.region.hide()
            else:
                self.region.setRegion(snapped)
        finally:
            self._snapping = False
        self.selection_changed.emit(self.selection())

    def _on_drag(self, a: float, b: float, finished: bool) -> None:
        a, b = max(0.0, a), min(self._total_s(), b)
        snapped = self._snapped(a, b) if b > a else None
        if snapped is not None:
            a, b = snapped
        self._snapping = True
        try:
            self.region.setRegion((a, b))
        finally:
            self._snapping = False
        self.region.setVisible(snapped is not None and b > a)
        if finished:
            self.selection_changed.emit(self.selection())

    def _region_moved(self) -> None:
        if self._snapping:
            return
        if self.snap and self.grid.bpm is not None:
            self._snap_region()
            return
        self.selection_changed.emit(self.selection())

    def _on_click(self, x: float, double: bool) -> None:
        sample = int(x * self.sample_rate)
        index = next((s.index for s in self._segments if s.start <= sample < s.end), -1)
        if double:
            self.seek_requested.emit(max(0.0, x))
            return
        self.region.hide()
        self.selection_changed.emit(None)
        self.segment_clicked.emit(index)

    def apply_theme(self, background: QColor, foreground: QColor) -> None:
        self.plot.setBackground(background)
        fill = QColor(background)
        fill.setAlpha(LABEL_FILL_ALPHA)
        self._label_fill = pg.mkBrush(fill)
        for label in self._labels:
            label.fill = self._label_fill
            label.update()
        for axis in ("bottom", "left"):
            self.plot.getAxis(axis).setPen(foreground)
            self.plot.getAxis(axis).setTextPen(foreground)
