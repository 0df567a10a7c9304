"""Drop zone for a style-prompt audio file: accepts a dropped (or browsed) file, shows its waveform.

The zone only reports the path (`file_dropped`); decoding happens in a worker and the result comes
back through `set_audio` -- or `set_error`, which shows the reason in the zone itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QFileDialog, QFrame, QHBoxLayout, QLabel, QToolButton, QVBoxLayout, QWidget

AUDIO_FILTER = "Audio files (*.wav *.flac *.ogg *.mp3 *.aif *.aiff);;All files (*)"
PREVIEW_HEIGHT = 48


class DropZone(QFrame):
    file_dropped = Signal(str)
    cleared = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAcceptDrops(True)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setObjectName("dropZone")
        self.setStyleSheet("#dropZone { border: 2px dashed palette(mid); border-radius: 6px; }")
        self.path: str | None = None
        self.label = QLabel("Drop an audio file here as a style prompt")
        self.label.setWordWrap(True)
        self.label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview = pg.PlotWidget()
        self.preview.setFixedHeight(PREVIEW_HEIGHT)
        self.preview.hideAxis("left")
        self.preview.hideAxis("bottom")
        self.preview.setMouseEnabled(x=False, y=False)
        self.preview.setMenuEnabled(False)
        self.preview.hide()
        self._curve = self.preview.plot(pen=pg.mkPen("#4c9be8"))
        self._curve.setDownsampling(auto=True, method="peak")
        self._curve.setClipToView(True)
        browse = QToolButton(text="Browse…")
        browse.clicked.connect(self._browse)
        self.clear_button = QToolButton(text="Clear")
        self.clear_button.clicked.connect(self.clear)
        self.clear_button.setEnabled(False)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(browse)
        buttons.addWidget(self.clear_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.label)
        layout.addWidget(self.preview)
        layout.addLayout(buttons)

    # ------------------------------------------------------------------ drag and drop
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        urls = [u for u in event.mimeData().urls() if u.isLocalFile()]
        if not urls:
            self.set_error("only local files can be used as a style prompt")
            return
        event.acceptProposedAction()
        self.drop_path(urls[0].toLocalFile())

    def drop_path(self, path: str) -> None:
        self.label.setText(f"Reading {Path(path).name}…")
        self.file_dropped.emit(path)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Style prompt audio", "", AUDIO_FILTER)
        if path:
            self.drop_path(path)

    # ------------------------------------------------------------------ results
    def set_audio(self, audio: np.ndarray, path: str, sample_rate: int) -> None:
        self.path = path
        self.label.setText(f"Style: {Path(path).name} ({len(audio) / sample_rate:.1f} s)")
        self.label.setToolTip(path)
        self._curve.setData(np.arange(len(audio)) / sample_rate, audio)
        self.preview.show()
        self.clear_button.setEnabled(True)

    def set_error(self, message: str) -> None:
        kept = f" (still using {Path(self.path).name})" if self.path else ""
        self.label.setText(f"⚠ {message}{kept}")

    def clear(self) -> None:
        self.path = None
        self._curve.setData([], [])
        self.preview.hide()
        self.label.setText("Drop an audio file here as a style prompt")
        self.clear_button.setEnabled(False)
        self.cleared.emit()
