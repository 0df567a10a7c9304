"""Layout proof at 1366x768 and 1600x1000 (offscreen, real widgets): with the musical grid showing
(a BPM set) and a take in the arrangement, every visible control of the whole window -- prompt
panel, timeline rows, transport, and each tab of the History/Variations dock in turn -- is at least
as large as its minimum size hint (text not clipped), lies inside the window (and horizontally
inside the prompt panel's scroll view), and no two controls overlap."""

from __future__ import annotations

import pytest
from app_fixtures import generate, make_studio  # noqa: F401
from PySide6.QtCore import QPoint, QRect
from PySide6.QtWidgets import QAbstractScrollArea, QAbstractSpinBox, QDockWidget, QLabel, QMessageBox, QWidget
from test_app_studio_v2 import _leaves, _overlaps

from app.views.transport import ElidedLabel


def _in_scroll_area(w: QWidget) -> QAbstractScrollArea | None:
    p = w.parentWidget()
    while p is not None:
        if isinstance(p, QAbstractScrollArea):
            return p
        p = p.parentWidget()
    return None


@pytest.mark.parametrize("screen", [(1366, 768), (1600, 1000)])
def test_every_visible_control_fits_unclipped_without_overlap(qtbot, make_studio, screen):  # noqa: F811
    studio = make_studio()
    generate(qtbot, studio, "layout check with a fairly long prompt to fill the labels", 2.0)
    w = studio.window
    w.panel.bpm.setValue(128.0)
    w.grid_controls.snap.setChecked(True)
    w.resize(*screen)
    w.fit_to_screen(QRect(0, 0, *screen))
    qtbot.wait(150)
    assert w.frameGeometry().width() <= screen[0] and w.frameGeometry().height() <= screen[1]
    docks = [d for d in w.findChildren(QDockWidget) if d.isVisible()]
    tabs = [d for d in docks if w.tabifiedDockWidgets(d)]  # History / Variations share a place
    for front in tabs or [None]:
        if front is not None:
            front.raise_()
            qtbot.wait(100)
        _check(w, front)
    assert len(tabs) >= 2 or not tabs  # each tab of a shared dock place was in front once


def _check(w: QWidget, front: QWidget | None) -> None:
    """Every control on screen (a dock tab in the back is moved off screen by Qt: not on screen)."""
    leaves = [x for x in _leaves(w) if not isinstance(x.parentWidget(), QMessageBox)
              and x.window() is w and not x.visibleRegion().isEmpty()]
    assert len(leaves) > 40  # the whole window, not one panel
    assert w.grid_controls.snap in leaves and w.grid_controls.bar_beat in leaves
    assert front is None or any(front.isAncestorOf(x) for x in leaves)  # the tab in front was checked
    clipped, outside = [], []
    for x in leaves:
        hint = x.minimumSizeHint()
        if isinstance(x.parentWidget(), QAbstractSpinBox) or isinstance(x, ElidedLabel):
            pass  # a spin box's own line edit (the spin box is checked); a label that elides by design
        elif isinstance(x, QLabel) and x.wordWrap():
            if x.heightForWidth(x.width()) > x.height():  # wrapped text taller than the label
                clipped.append((type(x).__name__, x.text(), x.size(), x.heightForWidth(x.width())))
        elif x.width() < hint.width() or x.height() < hint.height():
            clipped.append((type(x).__name__, getattr(x, "text", lambda: "")(), x.size(), hint))
        r = QRect(x.mapTo(w, QPoint(0, 0)), x.size())
        scroll = _in_scroll_area(x)
        if scroll is not None:  # scrolls vertically: only the width must fit in its view
            view = QRect(scroll.viewport().mapTo(w, QPoint(0, 0)), scroll.viewport().size())
            if r.left() < view.left() or r.right() > view.right():
                outside.append((type(x).__name__, getattr(x, "text", lambda: "")()))
        elif not w.rect().contains(r):
            outside.append((type(x).__name__, getattr(x, "text", lambda: "")()))
    assert not clipped, clipped
    assert not outside, outside
    assert not _overlaps(leaves, w)
