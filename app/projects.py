"""Projects: a project is a folder holding one `SessionStore` (sessions.sqlite3 + audio/ + drag/).

The per-user data folder (`store.default_data_dir`) is the *default project*: an existing user's data
is a project as it is (the store migrates its schema in place at the first start, after its backup),
so nothing moves and nothing is lost. New / Open / Save As switch the window to another folder
(`app.studio.Studio.open_project`); Save As copies the open project first (`SessionStore.copy_to`).
The recent list and the last project live per user (`app.user_config`). The instance lock is the
store's: one window per project folder.

Only rules and names here (no widgets): which folders may become a project, and the recent list.
"""

from __future__ import annotations

from pathlib import Path

from app.store import DB_NAME, default_data_dir
from app.user_config import JsonFile

RECENT_FILE = "recent_projects.json"
RECENT_LIMIT = 10  # entries in File > Open Recent


class ProjectError(ValueError):
    """A folder that cannot be used as asked; `str()` is one line for the window."""


def is_project(folder: Path) -> bool:
    return (Path(folder) / DB_NAME).is_file()


def project_name(folder: Path) -> str:
    """What the window title shows."""
    folder = Path(folder)
    try:
        if folder.resolve() == default_data_dir().resolve():
            return "Default project"
    except OSError:
        pass
    return folder.name or str(folder)


def check_new(folder: str | Path, current: Path | None = None) -> Path:
    """A folder that New / Save As may create the project in: absent, or an empty folder."""
    folder = Path(folder).expanduser().absolute()
    if is_project(folder):
        raise ProjectError(f"{folder} is already a project: open it with File > Open Project")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ProjectError(f"{folder} is not empty: choose a new folder name for the project")
    if current is not None:
        cur = current.absolute()
        if cur == folder or cur in folder.parents:
            raise ProjectError("a project cannot be saved inside the open project's folder")
    if not folder.parent.is_dir():
        raise ProjectError(f"{folder.parent} does not exist")
    return folder


def check_existing(folder: str | Path) -> Path:
    """A folder Open may switch to: it holds a project (the default project also when still empty)."""
    folder = Path(folder).expanduser().absolute()
    if not folder.is_dir():
        raise ProjectError(f"{folder} does not exist")
    if not is_project(folder) and folder.resolve() != default_data_dir().resolve():
        raise ProjectError(f"{folder} is not a MeLoDy Studio project (it has no {DB_NAME})")
    return folder


class RecentProjects:
    """Most recent first; the first entry is the project opened at the next start."""

    def __init__(self, config_dir: Path | None = None) -> None:
        self._file = JsonFile(RECENT_FILE, config_dir)

    def list(self) -> list[Path]:
        """Recent projects that still exist (a deleted folder drops out of the menu)."""
        raw = self._file.load([])
        paths = [Path(p) for p in raw if isinstance(p, str)] if isinstance(raw, list) else []
        return [p for p in paths if is_project(p)]

    def add(self, folder: Path) -> None:
        folder = Path(folder).absolute()
        rest = [p for p in self.list() if p != folder]
        self._file.save([str(p) for p in [folder, *rest][:RECENT_LIMIT]])

    def last(self) -> Path | None:
        items = self.list()
        return items[0] if items else None
