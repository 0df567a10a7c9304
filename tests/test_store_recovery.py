"""Damaged, deleted and shared data folders: the user-visible outcome and 0 takes lost.

Takes are made through the real app (fake pipeline) and the folder is then damaged the way the
fault runs did: a truncated / overwritten database, a deleted one, a missing or garbage FLAC, a second
instance on the same folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from app_fixtures import WAIT_MS, generate, make_studio  # noqa: F401

from app.store import DB_NAME, SessionStore, StoreLocked

TESTS = Path(__file__).parent
ROOT = TESTS.parent


def _make_takes(qtbot, make_studio, data: Path, prompts: tuple[str, ...]) -> list[tuple[str, int, str]]:  # noqa: ANN001, F811
    """Generate one take per prompt (1 s each), rate them 1, 2, ...; (prompt, rating, file) in order."""
    studio = make_studio(data)
    for prompt in prompts:
        generate(qtbot, studio, prompt, 1.0, steps=2)
    for i in range(len(prompts)):
        studio.window.rate(i, i + 1)
    out = [(s.take.prompt, s.take.rating, s.take.audio_file) for s in studio.session.segments()]
    studio.close()
    return out


def _audio_files(data: Path) -> set[str]:
    return {p.name for p in (data / "audio").glob("take-*.flac")}


@pytest.mark.parametrize("damage", ["truncate", "overwrite"])
def test_damaged_database_is_rebuilt_from_backup_and_audio_files(damage: str, qtbot, make_studio,  # noqa: F811
                                                                 tmp_path: Path) -> None:
    data = tmp_path / "data"
    before = _make_takes(qtbot, make_studio, data, ("intro", "verse"))
    studio = make_studio(data)  # this start takes the backup (2 takes, ratings 1 and 2)
    generate(qtbot, studio, "chorus", 1.0, steps=2)  # made after the backup
    studio.close()
    files = _audio_files(data)
    assert len(files) == 3
    db = data / DB_NAME
    raw = db.read_bytes()
    db.write_bytes(raw[: len(raw) // 3] if damage == "truncate" else b"\x00garbage" * (len(raw) // 8))
    for ext in ("-wal", "-shm"):
        Path(f"{db}{ext}").unlink(missing_ok=True)

    studio = make_studio(data)  # starts (it used to stop with "database disk image is malformed")
    segs = studio.session.segments()
    assert [(s.take.prompt, s.take.rating, s.take.audio_file) for s in segs[:2]] == before
    assert segs[2].take.prompt == "chorus" and segs[2].take.kind == "generate"
    assert {t.audio_file for t in studio.store.takes()} == files  # 0 takes lost
    msg = studio.window.messages.text()
    assert "damaged" in msg and "restored from the backup" in msg and "Recovered 1 take(s)" in msg
    assert list(data.glob(f"{DB_NAME}.damaged-*"))  # the damaged file is kept, not deleted


def test_deleted_database_and_backup_reindexes_every_take(qtbot, make_studio, tmp_path: Path) -> None:  # noqa: F811
    data = tmp_path / "data"
    before = _make_takes(qtbot, make_studio, data, ("intro", "verse", "outro"))
    for p in data.glob(f"{DB_NAME}*"):
        p.unlink()
    studio = make_studio(data)
    segs = studio.session.segments()
    assert [(s.take.prompt, s.take.audio_file) for s in segs] == [(p, f) for p, _, f in before]
    assert all(s.take.settings.get("steps") == 2 and s.take.seed is not None for s in segs)  # from the tags
    assert [s.length for s in segs] == [24000] * 3
    msg = studio.window.messages.text()
    assert "missing; it was rebuilt" in msg and "Recovered 3 take(s)" in msg


@pytest.mark.parametrize("fault, label", [("delete", "file missing"), ("garbage", "file unreadable")])
def test_missing_take_file_stays_in_the_arrangement_as_missing(
        fault: str, label: str, qtbot, make_studio, tmp_path: Path) -> None:  # noqa: ANN001, F811
    data = tmp_path / "data"
    before = _make_takes(qtbot, make_studio, data, ("intro", "verse", "outro"))
    victim = data / "audio" / before[1][2]
    if fault == "delete":
        victim.unlink()
    else:
        victim.write_bytes(b"not a flac" * 100)
    studio = make_studio(data)
    segs = studio.session.segments()
    assert [s.take.audio_file for s in segs] == [f for _, _, f in before]  # never dropped
    assert segs[1].take.missing == label and not segs[1].take.audio.any() and segs[1].length == 24000
    assert "#2 (" + label in studio.window.messages.text()
    # edits and history actions on it work, and do not make the loss permanent
    studio.window.rate(1, 4)
    studio.window.delete_segment(0)
    studio.controller.regenerate(0, studio.window.panel.settings(), same_seed=True)
    qtbot.waitUntil(lambda: not studio.controller.busy, timeout=WAIT_MS)
    out = studio.session.export(tmp_path / "all.wav")
    assert out.exists()
    studio.close()
    store = SessionStore(data)
    ids = store.arrangement(store.current_session())
    assert before[1][2] not in [store.take(i).audio_file for i in ids]  # replaced by the regeneration ...
    assert before[1][2] in {t.audio_file for t in store.takes()}  # ... and still in the history
    store.close()


def test_second_store_on_one_folder_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    first = SessionStore(tmp_path / "data")
    with pytest.raises(StoreLocked) as info:
        SessionStore(tmp_path / "data")
    assert "open in another MeLoDy Studio window" in str(info.value) and "--project" in str(info.value)
    assert "File > Open Project" in str(info.value)  # the way to open another project
    other = SessionStore(tmp_path / "other")  # another project opens fine
    other.close()
    first.close()
    SessionStore(tmp_path / "data").close()  # free again once the first closed


def test_second_app_instance_exits_with_the_reason(qtbot, make_studio, tmp_path: Path) -> None:  # noqa: F811
    data = tmp_path / "data"
    studio = make_studio(data)
    generate(qtbot, studio, "mine", 1.0, steps=2)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": f"{ROOT}{os.pathsep}{TESTS}"}
    proc = subprocess.run([sys.executable, "-m", "app.main", "--no-audio", "--engine",
                           "app_fake_pipeline:FakePipeline", "--data-dir", str(data)],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot start:") and "open in another MeLoDy Studio window" in last
    assert [s.take.prompt for s in studio.session.segments()] == ["mine"]  # the first is untouched
    assert np.asarray(studio.session.arrangement_audio()).size == 24000
