"""Work-around for a reference-count bug of PySide6 6.12 on Python < 3.12.

Measured here (PySide6-Essentials 6.12.0, CPython 3.11): every call of a bound Qt method that
returns void (`QWidget.show`, `QApplication.processEvents`, `QTimer.start`, ...) drops one
reference to `None` that it never took. From Python 3.12 `None` is immortal and nothing happens;
on 3.11 the count falls by thousands per second in a busy GUI until CPython aborts with
"none_dealloc: deallocating None". `guard_none_refcount()` detects the leak with a few probe calls
and, only if it is there, gives `None` a huge reference count -- the same thing CPython 3.12 does
to make it immortal -- so the process cannot hit zero.
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

PROBE_CALLS = 64  # void Qt calls used to detect the leak
IMMORTAL_BOOST = 1 << 60  # references added to None (2^60: out of reach of any leak rate)
_applied = False


def leaks_none(calls: int = PROBE_CALLS) -> bool:
    """True when void PySide6 calls lose references to None in this interpreter."""
    if sys.version_info >= (3, 12):
        return False  # None is immortal
    from PySide6.QtCore import QObject

    probe = QObject()
    before = sys.getrefcount(None)
    for _ in range(calls):
        probe.setObjectName("probe")  # a void method
    return sys.getrefcount(None) < before - calls // 2


def guard_none_refcount() -> bool:
    """Apply the work-around if needed (idempotent). Returns True when it was applied."""
    global _applied
    if _applied:
        return True
    if not leaks_none():
        return False
    refcnt = ctypes.c_ssize_t.from_address(id(None))  # PyObject.ob_refcnt is the first field
    refcnt.value += IMMORTAL_BOOST
    _applied = True
    log.warning("PySide6 %s leaks references to None on Python %d.%d: made None immortal as a work-around",
                _pyside_version(), *sys.version_info[:2])
    return True


def _pyside_version() -> str:
    import PySide6

    return getattr(PySide6, "__version__", "?")
