"""Selection behaviour shared by the take tables (History, Variations): each row's first item holds
the take id in `Qt.UserRole`; the panel has `table`, `buttons["switch"]` and a `compare` signal."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal


class TakeTableSelection:
    """Mixin for a QWidget panel with a QTableWidget `table` of takes."""

    def selected_ids(self) -> list[int]:
        rows = sorted({i.row() for i in self.table.selectedIndexes()})
        ids = [self.table.item(r, 0).data(Qt.ItemDataRole.UserRole) for r in rows]
        return [int(i) for i in ids if i is not None]

    def _emit_one(self, signal: Signal) -> None:
        ids = self.selected_ids()
        if ids:
            signal.emit(ids[0])

    def _compare(self) -> None:
        ids = self.selected_ids()
        if len(ids) == 2:
            self.compare.emit(ids[0], ids[1])
            self.buttons["switch"].setEnabled(True)
