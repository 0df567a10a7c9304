"""Build hook: wheels and sdists carry the bundled default model.

`resources/models/melody-tiny/` (the repo's copy, used by checkouts and editable installs) is copied into
the built package as `melody_core/bundled/melody-tiny/`, where `melody_core.generation.pipeline` finds it
when there is no checkout (a wheel in a venv, the frozen app). Everything else is declared in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

BUNDLE = Path(__file__).resolve().parent / "resources" / "models" / "melody-tiny"
PACKAGED = Path("melody_core") / "bundled" / "melody-tiny"  # where it goes inside the built package


class BuildPyWithModel(build_py):
    """build_py + a copy of the bundled model (not for editable installs: those read the repo's copy)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        if not (BUNDLE / "config.json").is_file():
            raise SystemExit(f"error: the bundled model is missing: {BUNDLE}")
        dest = Path(self.build_lib) / PACKAGED
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(BUNDLE, dest)


setup(cmdclass={"build_py": BuildPyWithModel})
