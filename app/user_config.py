"""Per-user settings that belong to no project: recent projects, the last one opened, presets.

One small JSON file per topic in the user's config folder (platformdirs; `MELODY_STUDIO_CONFIG_DIR`
overrides it, which the tests use). Written atomically (temp file + rename); a damaged or unreadable
file reads as empty and is logged, never raised: these are conveniences, the projects hold the work.
*(our choice)* JSON files rather than QSettings: readable by the tests and by people, no Qt in logic.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENV_DIR = "MELODY_STUDIO_CONFIG_DIR"
APP_NAME = "melody-studio"


def config_dir() -> Path:
    """The per-user config folder (e.g. ~/.config/melody-studio)."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


class JsonFile:
    """A JSON document in the config folder, read on every `load` (another window may have written)."""

    def __init__(self, name: str, folder: Path | None = None) -> None:
        self.path = (folder or config_dir()) / name

    def load(self, default: Any) -> Any:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return default
        except (OSError, ValueError) as exc:
            log.warning("cannot read %s: %s", self.path, exc)
            return default

    def save(self, value: Any) -> bool:
        """False (logged) when the file cannot be written."""
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(value, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("cannot write %s: %s", self.path, exc)
            return False
        return True
