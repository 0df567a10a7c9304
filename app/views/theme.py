"""Light and dark themes (Fusion palettes) that follow the system colour scheme; the shortcut list."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication, QDialog, QDialogButtonBox, QLabel, QVBoxLayout, QWidget

DARK = {"window": "#2b2d31", "base": "#1e1f22", "alt": "#2f3136", "text": "#e6e6e6", "button": "#3a3c41",
        "highlight": "#4c9be8", "disabled": "#7a7a7a", "link": "#7fb8f0"}

SHORTCUTS = (
    ("Ctrl+Enter", "Generate a new segment"),
    ("Ctrl+Shift+Enter", "Keep playing (endless, steer with the prompt)"),
    ("Esc", "Cancel the generation / stop keep playing"),
    ("Space", "Play / pause"),
    ("S", "Stop playback"),
    ("L", "Loop the selection on/off"),
    ("Left / Right", "Select the previous / next segment"),
    ("P", "Play the selected segment"),
    ("1 … 5, 0", "Rate the selected segment (0 clears)"),
    ("R", "Regenerate the selected segment with a new seed"),
    ("Shift+R", "Regenerate with the same seed and the current settings"),
    ("E", "Extend the selected segment"),
    ("I", "Regenerate only the selected time range (inpaint)"),
    ("Delete", "Delete the selected segment"),
    ("Ctrl+Z", "Undo (also edits made before a restart)"),
    ("Ctrl+Shift+Z / Ctrl+Y", "Redo"),
    ("Alt+Left / Alt+Right", "Move the selected segment left / right"),
    ("Ctrl+Shift+N / Ctrl+O", "New project / open a project"),
    ("Ctrl+Shift+S", "Save the project as a copy in a new folder"),
    ("B", "Switch A/B while comparing two takes"),
    ("Ctrl+E", "Export the arrangement (WAV/FLAC)"),
    ("Ctrl+Shift+E", "Export the selected segment"),
    ("Ctrl+Shift+C", "Copy the seed"),
    ("F1", "This list"),
)


def system_is_dark() -> bool:
    hints = QGuiApplication.styleHints()
    scheme = getattr(hints, "colorScheme", None)
    if scheme is not None and scheme() != Qt.ColorScheme.Unknown:
        return scheme() == Qt.ColorScheme.Dark
    window = QGuiApplication.palette().color(QPalette.ColorRole.Window)
    return window.lightness() < 128


def dark_palette() -> QPalette:
    p = QPalette()
    c = {k: QColor(v) for k, v in DARK.items()}
    R = QPalette.ColorRole
    roles = {R.Window: c["window"], R.WindowText: c["text"], R.Base: c["base"], R.AlternateBase: c["alt"],
             R.Text: c["text"], R.Button: c["button"], R.ButtonText: c["text"], R.ToolTipBase: c["alt"],
             R.ToolTipText: c["text"], R.Highlight: c["highlight"], R.HighlightedText: QColor("#ffffff"),
             R.Link: c["link"], R.PlaceholderText: c["disabled"]}
    for role, color in roles.items():
        p.setColor(role, color)
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText, QPalette.ColorRole.WindowText):
        p.setColor(QPalette.ColorGroup.Disabled, role, c["disabled"])
    return p


def apply_theme(app: QApplication, mode: str = "system") -> bool:
    """mode: system | light | dark. Returns True when the dark palette is in use."""
    app.setStyle("Fusion")
    dark = system_is_dark() if mode == "system" else mode == "dark"
    app.setPalette(dark_palette() if dark else app.style().standardPalette())
    return dark


def show_shortcuts(parent: QWidget) -> QDialog:
    dialog = QDialog(parent)
    dialog.setWindowTitle("Keyboard shortcuts")
    rows = "".join(f"<tr><td><b>{k}</b>&nbsp;&nbsp;</td><td>{v}</td></tr>" for k, v in SHORTCUTS)
    label = QLabel(f"<table>{rows}</table>")
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
    buttons.rejected.connect(dialog.reject)
    layout = QVBoxLayout(dialog)
    layout.addWidget(label)
    layout.addWidget(buttons)
    dialog.show()
    return dialog
