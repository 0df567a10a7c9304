"""Persistence: a real app process is killed with SIGKILL; the next start has every segment and rating."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from app_fixtures import WAIT_MS, make_studio  # noqa: F401

from app.store import SessionStore

TESTS = Path(__file__).parent
ROOT = TESTS.parent

SCRIPT = """
import sys, json
sys.path.insert(0, {tests!r})
from PySide6.QtWidgets import QApplication
app = QApplication([])
from app.studio import Studio
from app_fixtures import fake_factory
import app_fake_pipeline
app_fake_pipeline.FakePipeline.step_delay = 0.02
studio = Studio.create({data!r}, fake_factory(), None, threads=1)
studio.window.show()
done = []
studio.controller.job_finished.connect(lambda kind, tid: done.append(tid))
while studio.controller.engine is None:
    app.processEvents()

def run(action):
    n = len(done)
    action()
    while len(done) == n or studio.controller.busy:
        app.processEvents()

w = studio.window
w.panel.steps.setValue(2)
for prompt in ("intro", "verse", "chorus"):
    w.panel.prompt.setPlainText(prompt)
    w.panel.length.setValue(1.0)
    run(w.generate)
w.panel.length.setValue(2.0)
run(lambda: w.extend(1))
for index, stars in ((0, 3), (1, 5), (3, 1)):
    w.rate(index, stars)
w.delete_segment(2)
print(json.dumps({{"ids": studio.session.take_ids,
                   "ratings": [s.take.rating for s in studio.session.segments()]}}), flush=True)
w.panel.prompt.setPlainText("never finished")
w.panel.length.setValue(60.0)
w.generate()
while studio.controller.live_samples == 0:
    app.processEvents()
print("GENERATING", flush=True)
while True:
    app.processEvents()
"""


def test_kill_9_keeps_every_segment_and_rating(qtbot, make_studio, tmp_path):  # noqa: F811
    import json

    data = tmp_path / "data"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT.format(tests=str(TESTS), data=str(data))], env=env,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        state = json.loads(proc.stdout.readline())
        assert proc.stdout.readline().strip() == "GENERATING"  # killed in the middle of a generation
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-2000:]
    assert len(state["ids"]) == 3 and state["ratings"] == [3, 5, 1]

    store = SessionStore(data)  # the database opens cleanly after the kill
    arrangement = store.arrangement(store.current_session())
    assert arrangement[:3] == state["ids"]
    # the interrupted live generation was journalled as it played: it comes back as a take at the end
    assert len(arrangement) == 4 and len(store.takes()) == 5
    recovered = store.take(arrangement[3])
    assert recovered.prompt == "never finished" and recovered.seconds > 0
    assert any("interrupted live stream" in line for line in store.recovery)
    store.close()
    studio = make_studio(data)  # and so does the app, with every segment and rating
    segs = studio.session.segments()
    assert [s.take.id for s in segs][:3] == state["ids"]
    assert [s.take.rating for s in segs] == [3, 5, 1, 0]
    assert [s.take.prompt for s in segs] == ["intro", "verse", "chorus", "never finished"]
    assert [s.length for s in segs][:3] == [24000, 24000, 24000]  # the extension was deleted
    ext = [t for t in studio.store.takes() if t.kind == "extend"]
    assert len(ext) == 1 and len(studio.store.load_audio(ext[0])) == 48000  # still in the history
    assert len(studio.window.strip.cards) == 4 and studio.window.strip.cards[1].stars.rating == 5
    # the undo history survived the kill too: first the recovery, then the last edit before the kill
    assert studio.window.undo_action.text() == "Undo Recover interrupted take"
    assert studio.session.undo() and studio.session.take_ids == state["ids"]
    assert studio.window.undo_action.text() == "Undo Delete segment"
    assert studio.session.undo() and len(studio.session.take_ids) == 4  # the extension is back
    assert studio.session.take_ids[2] == ext[0].id
