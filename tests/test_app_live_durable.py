"""kill -9 during "Keep playing": everything that was heard is in the project after the restart.

The app runs in a subprocess with an in-process output device that appends every block it plays to a
file (flushed per block, so the file survives the kill). After the kill the data folder is opened
again: the interrupted stream must be a take in the arrangement whose samples start with exactly
what was played (the take is 24-bit FLAC: within 2^-23)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
from app_fixtures import make_studio  # noqa: F401

from melody_core import SAMPLE_RATE

TESTS = Path(__file__).parent
ROOT = TESTS.parent
PLAYED_SECONDS = 4.0  # heard before the kill
SR = SAMPLE_RATE

SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from PySide6.QtWidgets import QApplication
app = QApplication([])
import app_fake_audio, app_fake_pipeline
from app.studio import Studio
from app_fixtures import fake_factory
from melody_core.generation.types import GenerationSettings

app_fake_pipeline.FakePipeline.step_delay = 0.1  # 2 steps per 1 s chunk: ~5x real time
played = open({played!r}, "wb")
sound = [0]  # non-silent samples played

class Recording(app_fake_audio.FakeBackend):
    def open(self, device, sample_rate, callback):
        def tee(out, frames, t, status):
            callback(out, frames, t, status)
            played.write(out[:, 0].tobytes())
            played.flush()  # the OS keeps it after SIGKILL
            sound[0] += int((out != 0).sum())
        return super().open(device, sample_rate, tee)

studio = Studio.create({data!r}, fake_factory(), Recording(speed=2.0), threads=1)
studio.window.levels_action.setChecked(False)  # raw samples, to compare with the recovered take
while studio.controller.engine is None:
    app.processEvents()
studio.controller.keep_playing(GenerationSettings(prompt="endless groove", seconds=10.0, steps=2, seed=7))
announced = False
while True:
    app.processEvents()
    if not announced and sound[0] >= {min_samples}:
        print("PLAYED", flush=True)
        announced = True
"""


def _trim(x: np.ndarray) -> np.ndarray:
    nz = np.flatnonzero(np.abs(x) > 1e-7)
    return x[nz[0] : nz[-1] + 1] if len(nz) else x[:0]


def test_kill_9_during_keep_playing_keeps_everything_heard(qtbot, make_studio, tmp_path: Path) -> None:  # noqa: F811
    data, played_file = tmp_path / "data", tmp_path / "played.f32"
    script = SCRIPT.format(tests=str(TESTS), data=str(data), played=str(played_file),
                           min_samples=int(PLAYED_SECONDS * SR))
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "PLAYED", proc.stderr.read()[-3000:]
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    heard = _trim(np.fromfile(played_file, dtype=np.float32))
    assert len(heard) >= PLAYED_SECONDS * SR * 0.9

    studio = make_studio(data)
    segs = studio.session.segments()
    assert len(segs) == 1 and segs[0].take.prompt == "endless groove" and segs[0].take.kind == "stream"
    assert "interrupted live stream" in studio.window.messages.text()
    kept = _trim(studio.session.audio(segs[0].take.id))
    assert len(kept) >= len(heard), (len(kept), len(heard))
    np.testing.assert_allclose(kept[: len(heard)], heard, atol=2.0**-22)
    assert not list((data / "live").iterdir())  # the journal became the take


def test_cancelled_and_finished_streams_leave_no_journal(qtbot, make_studio, tmp_path: Path) -> None:  # noqa: F811
    from app_fixtures import WAIT_MS, generate

    from melody_core.generation.types import GenerationSettings

    data = tmp_path / "data"
    studio = make_studio(data)
    generate(qtbot, studio, "kept", 2.0, steps=2)  # finished: its journal is replaced by the take
    assert not list((data / "live").iterdir())
    studio.controller.keep_playing(GenerationSettings(prompt="thrown away", seconds=10.0, steps=2))
    qtbot.waitUntil(lambda: studio.controller.live_samples >= 2 * SR, timeout=WAIT_MS)
    assert list((data / "live").iterdir())  # journalled while it plays
    with qtbot.waitSignal(studio.controller.job_finished, timeout=WAIT_MS):
        studio.controller.cancel()  # the user discards it
    qtbot.waitUntil(lambda: not studio.controller.busy, timeout=WAIT_MS)
    assert not list((data / "live").iterdir())
    studio.close()
    again = make_studio(data)
    assert [s.take.prompt for s in again.session.segments()] == ["kept"]
    assert "interrupted" not in again.window.messages.text()


def test_keep_playing_holds_no_audio_in_memory(qtbot, make_studio, tmp_path: Path) -> None:  # noqa: F811
    """Issue 18: while a stream plays, the controller keeps no journalled samples (it reads them back
    from the journal when asked) and the arrangement draws an envelope, not every sample."""
    from app_fixtures import WAIT_MS

    from app.views.waveform import LIVE_BINS_PER_S
    from melody_core.generation.types import GenerationSettings

    studio = make_studio(tmp_path / "data")
    got: list[np.ndarray] = []
    studio.controller.live_chunk.connect(lambda pcm, start: got.append(np.array(pcm)))
    studio.controller.keep_playing(GenerationSettings(prompt="endless", seconds=10.0, steps=2, seed=3))
    qtbot.waitUntil(lambda: studio.controller.live_samples >= 3 * SR, timeout=WAIT_MS)
    ctl, view = studio.controller, studio.window.arrangement
    assert ctl.live_samples_in_memory == 0
    n = ctl.live_samples
    audio = ctl.live_audio()
    assert len(audio) == n and np.array_equal(audio, np.concatenate(got)[:n])
    assert view.live_samples() == sum(len(g) for g in got)
    assert view.live_points() <= 2 * (LIVE_BINS_PER_S * view.live_samples() // SR + len(got)) < n // 50
    with qtbot.waitSignal(ctl.job_finished, timeout=WAIT_MS):
        ctl.cancel()
    qtbot.waitUntil(lambda: not ctl.busy, timeout=WAIT_MS)
    studio.close()
