"""MeLoDy Studio desktop app (PySide6 + pyqtgraph). Imports melody_core, never the reverse."""
