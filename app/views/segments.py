"""Segment cards under the timeline: one per arrangement slot with its own actions.

Each card: title, prompt, a 1-5 star rating, play / regenerate (new seed, or same seed with the
current settings) / extend / regenerate-selection (inpaint) / delete, and a WAV drag handle.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QMenu,
    QScrollArea,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.session import Segment
from app.views.dragout import DragHandle
from app.views.transport import ElidedLabel

MAX_STARS = 5
CARD_WIDTH = 230
STAR_SCALE = 1.4  # stars drawn larger than the body text


class StarRating(QWidget):
    """Five clickable stars; clicking the current rating again clears it."""

    rating_changed = Signal(int)

    def __init__(self, rating: int = 0, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        self._buttons: list[QToolButton] = []
        font = self.font()
        font.setPointSizeF(font.pointSizeF() * STAR_SCALE)
        for i in range(1, MAX_STARS + 1):
            b = QToolButton(self)
            b.setAutoRaise(True)
            b.setFont(font)
            b.setToolTip(f"Rate {i} of {MAX_STARS} (key {i})")
            b.clicked.connect(lambda _=False, n=i: self._clicked(n))
            layout.addWidget(b)
            self._buttons.append(b)
        layout.addStretch(1)
        self._rating = 0
        self.set_rating(rating)

    def _clicked(self, n: int) -> None:
        self.rating_changed.emit(0 if n == self._rating else n)

    def set_rating(self, rating: int) -> None:
        self._rating = rating
        for i, b in enumerate(self._buttons, start=1):
            b.setText("★" if i <= rating else "☆")

    @property
    def rating(self) -> int:
        return self._rating


class SegmentCard(QFrame):
    selected = Signal(int)
    play = Signal(int)
    rate = Signal(int, int)
    regenerate = Signal(int, bool)  # index, same seed
    extend = Signal(int)
    inpaint = Signal(int)
    delete = Signal(int)

    def __init__(self, seg: Segment, sample_rate: int, make_file: Callable[[int], Path], is_selected: bool,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.index = seg.index
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setFixedWidth(CARD_WIDTH)
        self.set_selected(is_selected)
        take = seg.take
        i = seg.index
        box = QVBoxLayout(self)
        box.setContentsMargins(6, 4, 6, 4)
        title = QLabel(f"<b>#{i + 1}</b> · {seg.length / sample_rate:.1f} s · {take.kind} · seed {take.seed}")
        title.setWordWrap(True)  # a 10-digit seed does not fit the card on one line: wrap, never clip
        prompt = ElidedLabel((take.prompt or "(style audio)").replace("\n", " "))  # "…", full text: tooltip
        prompt.setMaximumWidth(CARD_WIDTH - 12)
        prompt.setTextInteractionFlags(Qt.TextInteractionFlag.NoTextInteraction)
        self.stars = StarRating(take.rating)
        self.stars.rating_changed.connect(lambda n: self.rate.emit(i, n))
        box.addWidget(title)
        box.addWidget(prompt)
        box.addWidget(self.stars)
        row = QHBoxLayout()
        row.setSpacing(2)
        self.buttons: dict[str, QToolButton] = {}
        regen_menu = QMenu(self)
        regen_menu.addAction("New seed (same settings)", lambda: self.regenerate.emit(i, False))
        regen_menu.addAction("Same seed, current settings", lambda: self.regenerate.emit(i, True))
        for key, text, tip, slot in (
            ("play", "▶", "Play this segment", lambda: self.play.emit(i)),
            ("regenerate", "⟳", "Regenerate with a new seed (menu: same seed, current settings)",
             lambda: self.regenerate.emit(i, False)),
            ("extend", "⇥", "Extend: continue from the end of this segment", lambda: self.extend.emit(i)),
            ("inpaint", "✎", "Regenerate only the selected time range", lambda: self.inpaint.emit(i)),
            ("delete", "✕", "Delete this segment (undo: Ctrl+Z)", lambda: self.delete.emit(i)),
        ):
            b = QToolButton(self)
            b.setText(text)
            b.setToolTip(tip)
            b.clicked.connect(slot)
            row.addWidget(b)
            self.buttons[key] = b
        self.buttons["regenerate"].setMenu(regen_menu)
        self.buttons["regenerate"].setPopupMode(QToolButton.ToolButtonPopupMode.MenuButtonPopup)
        self.drag = DragHandle("WAV", lambda: make_file(i))
        self.drag.setToolTip("Drag this segment into a DAW or a file manager (tagged WAV)")
        row.addStretch(1)
        row.addWidget(self.drag)
        box.addLayout(row)

    def set_selected(self, on: bool) -> None:
        """Highlight without rebuilding (a press on the drag handle must keep the handle alive)."""
        self.setProperty("selected", on)
        self.setStyleSheet("SegmentCard { border: 2px solid #f0a030; border-radius: 4px; }" if on else "")

    def mousePressEvent(self, event: QMouseEvent) -> None:
        self.selected.emit(self.index)
        super().mousePressEvent(event)


class SegmentStrip(QScrollArea):
    """Horizontal row of segment cards (rebuilt when the arrangement changes)."""

    selected = Signal(int)
    play = Signal(int)
    rate = Signal(int, int)
    regenerate = Signal(int, bool)
    extend = Signal(int)
    inpaint = Signal(int)
    delete = Signal(int)
    drag_failed = Signal(str)

    def __init__(self, sample_rate: int, make_file: Callable[[int], Path],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.sample_rate = sample_rate
        self._make_file = make_file
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.cards: list[SegmentCard] = []
        self._shown: list[tuple[int, int, int]] = []  # (take id, rating, length) of the cards shown
        self._inner = QWidget()
        self._row = QHBoxLayout(self._inner)
        self._row.setContentsMargins(4, 4, 4, 4)
        self._empty = QLabel("No segments yet: type a prompt and press Generate (Ctrl+Enter).")
        self._row.addWidget(self._empty)
        self._row.addStretch(1)
        self.setWidget(self._inner)

    def set_selected(self, selected: int | None) -> None:
        """Move the highlight; the cards (and a drag in progress) stay."""
        for card in self.cards:
            card.set_selected(card.index == selected)
        if selected is not None and 0 <= selected < len(self.cards):
            self.ensureWidgetVisible(self.cards[selected])

    def set_segments(self, segments: list[Segment], selected: int | None) -> None:
        key = [(s.take.id, s.take.rating, s.length) for s in segments]
        if key == self._shown and len(self.cards) == len(segments):
            self.set_selected(selected)  # same cards: no rebuild
            return
        self._shown = key
        for card in self.cards:
            self._row.removeWidget(card)
            card.hide()  # deleteLater only runs on the next event-loop pass
            card.deleteLater()
        self.cards = []
        self._empty.setVisible(not segments)
        for seg in segments:
            card = SegmentCard(seg, self.sample_rate, self._make_file, seg.index == selected)
            for name in ("selected", "play", "rate", "regenerate", "extend", "inpaint", "delete"):
                getattr(card, name).connect(getattr(self, name))
            card.drag.failed.connect(self.drag_failed)
            self._row.insertWidget(self._row.count() - 1, card)
            self.cards.append(card)
        if selected is not None and 0 <= selected < len(self.cards):
            self.ensureWidgetVisible(self.cards[selected])
