"""Refcount probe of the Qt bindings: 10,000 emits of several signal shapes (direct and queued across
threads) and as many void Qt calls must leave the reference counts of True, False and None unchanged.

PySide6-Essentials 6.12.0 on CPython 3.11 dropped one reference to `True` per `Signal.emit()` and one
to `None` per void method call, so a long live session aborted in `bool_dealloc`; pyproject.toml pins
the bindings below 6.12 and this test catches the bug if a later release (or a bad pin) brings it back.
The probe runs in a child process because with the bug the count reaches zero and CPython aborts
(measured with 6.12.0: "Fatal Python error: bool_dealloc", exit 134) -- the parent then reports it.
On CPython >= 3.12 these singletons are immortal and the counts are constants; the app targets 3.11.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

EMITS = 10_000
THREAD_SLACK = 16  # references the thread objects themselves may hold (vs. one per emit for the bug)

PROBE = """
import json, sys, threading
from PySide6.QtCore import QObject, QThread, QTimer, Signal
from PySide6.QtWidgets import QApplication, QLabel

EMITS = {emits}

class Emitter(QObject):
    plain = Signal()
    flag = Signal(bool)
    pair = Signal(int, int)
    text = Signal(str)
    anything = Signal(object)
    mixed = Signal(int, bool, str, object)

def counts():
    return [sys.getrefcount(True), sys.getrefcount(False), sys.getrefcount(None)]

app = QApplication([])
received = [0]
def bump(*args):
    received[0] += 1

# direct connections + void Qt calls, in the GUI thread
src = Emitter()
for sig in (src.plain, src.flag, src.pair, src.text, src.anything, src.mixed):
    sig.connect(bump)
label, timer = QLabel("probe"), QTimer()
before = counts()
for i in range(EMITS):
    src.plain.emit()
    src.flag.emit(True)
    src.flag.emit(False)
    src.pair.emit(i, -i)
    src.text.emit("take")
    src.anything.emit(None)
    src.mixed.emit(i, i % 2 == 0, "x", None)
    label.setText("probe")  # void Qt methods (6.12.0 leaked None on these)
    timer.setInterval(5)
direct = {{"before": before, "after": counts(), "received": received[0]}}

# emitted in a worker thread, delivered by the GUI event loop (the app's pattern)
received[0] = 0
queued_src = Emitter()
queued_src.flag.connect(bump)
queued_src.mixed.connect(bump)
thread = QThread()
queued_src.moveToThread(thread)
thread.start()
n = EMITS // 2
before = counts()
def work():
    for i in range(n):
        queued_src.flag.emit(i % 2 == 0)
        queued_src.mixed.emit(i, True, "x", None)
worker = threading.Thread(target=work)
worker.start()
while worker.is_alive() or received[0] < 2 * n:
    app.processEvents()
worker.join()
after = counts()
thread.quit()
thread.wait()
queued = {{"before": before, "after": after, "received": received[0]}}
print(json.dumps({{"direct": direct, "queued": queued}}))
"""


def test_emits_and_void_calls_keep_singleton_refcounts(tmp_path: Path) -> None:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.run([sys.executable, "-c", PROBE.format(emits=EMITS)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"the probe died (exit {proc.returncode}): {proc.stderr[-1500:]}"
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    direct, queued = res["direct"], res["queued"]
    assert direct["received"] == 7 * EMITS and queued["received"] == EMITS  # every emit was delivered
    before, after = direct["before"], direct["after"]
    assert after == before, f"(True, False, None) went {before} -> {after}"
    # the threading.Thread/QThread objects hold a few booleans (started, stopped, ...) of their own
    drift = [a - b for a, b in zip(queued["after"], queued["before"], strict=True)]
    assert all(abs(d) <= THREAD_SLACK for d in drift), f"(True, False, None) moved by {drift}"
