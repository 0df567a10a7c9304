"""Drag audio out of the app as a WAV file (into a DAW or a file manager).

The file is written when the drag starts (by the `make_file` callback) into the app's export
folder, and offered as a `text/uri-list` file URL, which every DAW and file manager accepts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QMimeData, QPoint, Qt, QUrl, Signal
from PySide6.QtGui import QDrag, QMouseEvent
from PySide6.QtWidgets import QApplication, QLabel, QWidget

log = logging.getLogger(__name__)

MakeFile = Callable[[], Path]


def file_mime(path: Path) -> QMimeData:
    """Mime data for dragging one file."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    return mime


class DragHandle(QLabel):
    """A label you drag from: writes the file with `make_file()` and starts a file drag."""

    failed = Signal(str)

    def __init__(self, text: str, make_file: MakeFile, parent: QWidget | None = None) -> None:
        super().__init__(text, parent)
        self._make_file = make_file
        self._press: QPoint | None = None
        self.setCursor(Qt.CursorShape.OpenHandCursor)
        self.setToolTip("Drag this into a DAW or a file manager (WAV)")
        self.setStyleSheet("QLabel { border: 1px dashed palette(mid); border-radius: 4px;"
                           " padding: 2px 6px; }")

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self._press = event.position().toPoint()
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._press is None or not event.buttons() & Qt.MouseButton.LeftButton:
            return
        if (event.position().toPoint() - self._press).manhattanLength() < QApplication.startDragDistance():
            return
        self._press = None
        mime = self.build_mime()
        if mime is not None:
            drag = QDrag(self)
            drag.setMimeData(mime)
            drag.exec(Qt.DropAction.CopyAction)

    def build_mime(self) -> QMimeData | None:
        """Write the file and wrap it (None and `failed` on error)."""
        try:
            return file_mime(self._make_file())
        except Exception as exc:  # noqa: BLE001 - a failed export must not crash a drag
            log.warning("drag export failed: %s", exc)
            self.failed.emit(f"Cannot export for dragging: {' '.join(str(exc).split())}")
            return None
