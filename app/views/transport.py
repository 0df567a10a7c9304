"""Transport bar: play/pause, stop, loop selection, position, output device, volume, audio notice."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QSlider,
    QStyle,
    QToolButton,
    QWidget,
)

from app.audio.backend import OutputDevice

VOLUME_STEPS = 100
VOLUME_WIDTH = 90
DEVICE_CHARS = 12  # the device combo shows this many characters (the list shows full names)


class ElidedLabel(QLabel):
    """A one-line label that shrinks with its layout and elides its text (full text in the tooltip),
    so a long notice never pushes the transport controls over each other."""

    def __init__(self, text: str = "") -> None:
        super().__init__()
        self._full = ""
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.setMinimumWidth(0)
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 - Qt override
        self._full = text
        self.setToolTip(text)
        self._elide()

    def full_text(self) -> str:
        return self._full

    def resizeEvent(self, event) -> None:  # noqa: ANN001, N802 - Qt override
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        shown = self.fontMetrics().elidedText(self._full, Qt.TextElideMode.ElideRight, max(self.width(), 0))
        super().setText(shown)


def format_time(seconds: float) -> str:
    seconds = max(0.0, seconds)
    return f"{int(seconds // 60)}:{seconds % 60:05.2f}"


class TransportBar(QWidget):
    play_pause = Signal()
    stop = Signal()
    loop_toggled = Signal(bool)
    device_chosen = Signal(object)  # device index or None (system default)
    volume_changed = Signal(float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        style = self.style()
        self.play_button = QToolButton()
        self.play_button.setIcon(style.standardIcon(QStyle.StandardPixmap.SP_MediaPlay))
        self.play_button.setToolTip("Play / pause (Space)")
        self.play_button.clicked.connect(self.play_pause)
        self.stop_button = QToolButton()
        self.stop_button.setIcon(style.standardIcon(QStyle.StandardPixmap.SP_MediaStop))
        self.stop_button.setToolTip("Stop (S)")
        self.stop_button.clicked.connect(self.stop)
        self.loop = QCheckBox("Loop")
        self.loop.setToolTip("Loop the selected time range (L)")
        self.loop.toggled.connect(self.loop_toggled)
        self.position = QLabel(format_time(0) + " / " + format_time(0))
        self.position.setMinimumWidth(self.position.sizeHint().width())
        self.devices = QComboBox()
        self.devices.setToolTip("Output device")
        self.devices.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.devices.setMinimumContentsLength(DEVICE_CHARS)
        self.devices.activated.connect(lambda i: self.device_chosen.emit(self.devices.itemData(i)))
        self.volume = QSlider(Qt.Orientation.Horizontal)
        self.volume.setRange(0, VOLUME_STEPS)
        self.volume.setValue(VOLUME_STEPS)
        self.volume.setFixedWidth(VOLUME_WIDTH)
        self.volume.setToolTip("Volume")
        self.volume.valueChanged.connect(lambda v: self.volume_changed.emit(v / VOLUME_STEPS))
        self.notice = ElidedLabel("")
        self.notice.setStyleSheet("color: #d08020;")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 2, 4, 2)
        for w in (self.play_button, self.stop_button, self.loop, self.position):
            layout.addWidget(w)
        layout.addWidget(self.notice, 1)
        layout.addWidget(self.devices)
        layout.addWidget(QLabel("Vol"))
        layout.addWidget(self.volume)

    def set_devices(self, devices: list[OutputDevice], current: int | str | None) -> None:
        self.devices.clear()
        self.devices.addItem("System default", None)
        for d in devices:
            self.devices.addItem(d.name + (" (default)" if d.is_default else ""), d.index)
        idx = self.devices.findData(current)
        self.devices.setCurrentIndex(max(idx, 0))

    def set_unavailable(self, reason: str) -> None:
        self.notice.setText(f"No audio output: {reason}. Generating and exporting still work.")
        for w in (self.play_button, self.stop_button, self.devices, self.volume):
            w.setEnabled(False)

    def set_playing(self, playing: bool) -> None:
        icon = QStyle.StandardPixmap.SP_MediaPause if playing else QStyle.StandardPixmap.SP_MediaPlay
        self.play_button.setIcon(self.style().standardIcon(icon))

    def set_position(self, seconds: float, total: float) -> None:
        self.position.setText(f"{format_time(seconds)} / {format_time(total)}")

    def set_volume(self, volume: float) -> None:
        self.volume.setValue(round(volume * VOLUME_STEPS))
