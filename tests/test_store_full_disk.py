"""Full disk: a generation that cannot be written is kept in memory (and said so), every slot keeps
working (no unhandled sqlite3.OperationalError), and everything is written once space returns.

`test_full_tmpfs` uses a real 4 MB tmpfs (needs root, as in CI here); `test_enospc_injected` makes
every file write fail with ENOSPC the same way, for machines where mounting is not allowed."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from app_fixtures import WAIT_MS, generate, make_studio  # noqa: F401

from app.store import SessionStore

FILLER_CHUNK = 64 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}); test_enospc_injected covers it")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder: Path) -> Path:
    filler = folder / "filler.bin"
    with open(filler, "wb", buffering=0) as f:  # unbuffered: nothing left to flush (and fail) at close
        try:
            while True:
                f.write(b"\0" * FILLER_CHUNK)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def _full_disk_session(qtbot, studio, make_space) -> None:  # noqa: ANN001
    """Shared body: one saved take, then the disk is full for a generation, a rating, a delete."""
    generate(qtbot, studio, "another", 1.0, steps=2)  # generated while the disk is full
    segs = studio.session.segments()
    assert len(segs) == 3 and segs[2].take.id < 0 and segs[2].take.prompt == "another"
    assert "kept in memory" in studio.window.messages.text()
    assert studio.session.unsaved
    studio.window.rate(0, 4)  # slots keep working: no exception escapes
    studio.window.rate(2, 5)
    studio.window.delete_segment(1)
    assert [s.take.prompt for s in studio.session.segments()] == ["first", "another"]
    make_space()
    qtbot.waitUntil(lambda: not studio.session.unsaved, timeout=WAIT_MS)
    assert studio.window.statusBar().currentMessage().startswith("Saved")


def _assert_saved(data: Path) -> None:
    store = SessionStore(data)
    takes = [store.take(i) for i in store.arrangement(store.current_session())]
    assert [(t.prompt, t.rating) for t in takes] == [("first", 4), ("another", 5)]
    assert len(store.load_audio(takes[1])) == 24000
    assert {t.prompt for t in store.takes()} == {"first", "second", "another"}  # 0 takes lost
    store.close()


def test_full_tmpfs(qtbot, make_studio, small_disk: Path) -> None:  # noqa: F811
    data = small_disk / "data"
    studio = make_studio(data)
    generate(qtbot, studio, "first", 1.0, steps=2)
    generate(qtbot, studio, "second", 1.0, steps=2)
    filler = _fill(small_disk)
    _full_disk_session(qtbot, studio, filler.unlink)
    studio.close()
    _assert_saved(data)


def test_enospc_injected(qtbot, make_studio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    import sqlite3

    import soundfile as sf

    data = tmp_path / "data"
    studio = make_studio(data)
    generate(qtbot, studio, "first", 1.0, steps=2)
    generate(qtbot, studio, "second", 1.0, steps=2)
    full = [True]
    real_init = sf.SoundFile.__init__

    def soundfile_init(self, file, mode="r", *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        if full[0] and "w" in mode:
            raise sf.LibsndfileError(2, prefix=f"Error opening {file!r}: ")  # "System error."
        return real_init(self, file, mode, *a, **k)

    real_connect = studio.store._db
    monkeypatch.setattr(sf.SoundFile, "__init__", soundfile_init)

    class FullDB:  # every write of the store fails like SQLITE_FULL
        def __getattr__(self, name: str):  # noqa: ANN204
            return getattr(real_connect, name)

        def execute(self, sql: str, *args):  # noqa: ANN002, ANN202
            if full[0] and sql.split()[0].upper() in ("INSERT", "UPDATE", "DELETE", "BEGIN"):
                raise sqlite3.OperationalError("database or disk is full")
            return real_connect.execute(sql, *args)

        def executemany(self, sql: str, *args):  # noqa: ANN002, ANN202
            if full[0]:
                raise sqlite3.OperationalError("database or disk is full")
            return real_connect.executemany(sql, *args)

        def __enter__(self):  # noqa: ANN204
            return real_connect.__enter__()

        def __exit__(self, *exc):  # noqa: ANN002, ANN204
            return real_connect.__exit__(*exc)

    studio.store._db = FullDB()  # type: ignore[assignment]
    _full_disk_session(qtbot, studio, lambda: full.__setitem__(0, False))
    studio.store._db = real_connect
    studio.close()
    _assert_saved(data)
    assert not [p for p in (data / "audio").iterdir() if p.name.startswith(".")]  # no temp files left
    assert os.listdir(data / "audio")


def test_starts_on_a_full_disk(qtbot, make_studio, small_disk: Path) -> None:  # noqa: F811
    data = small_disk / "data"
    studio = make_studio(data)
    generate(qtbot, studio, "first", 1.0, steps=2)
    studio.close()
    (data / "sessions.sqlite3.bak").unlink()
    _fill(small_disk)
    studio = make_studio(data)  # used to fail with "disk I/O error"
    assert [s.take.prompt for s in studio.session.segments()] == ["first"]
    studio.window.rate(0, 3)  # and the slots still work
    assert studio.session.unsaved
