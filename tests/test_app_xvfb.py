"""`melody-studio --smoke-test` on a real X server (Xvfb) with the real pipeline and a random tiny
bundle, playing through an ALSA null device; and its one-line error for a missing bundle."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from app_fixtures import tiny_bundle  # noqa: F401
from PySide6.QtGui import QImage

TESTS = Path(__file__).parent
ROOT = TESTS.parent
XVFB_SCREEN = "1600x1000x24"


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{TESTS / 'asound_null.conf'}",
            "PYTHONPATH": str(ROOT), **extra}


def test_smoke_test_under_xvfb_saves_a_screenshot(tmp_path, tiny_bundle):  # noqa: F811
    assert shutil.which("xvfb-run"), "xvfb-run is missing (apt package xvfb, see packaging/setup.sh)"
    shot = tmp_path / "window.png"
    cmd = ["xvfb-run", "-a", "-s", f"-screen 0 {XVFB_SCREEN}", sys.executable, "-m", "app.main",
           "--smoke-test", "--screenshot", str(shot), "--bundle", str(tiny_bundle), "--device", "cpu",
           "--data-dir", str(tmp_path / "data")]
    proc = subprocess.run(cmd, env=_env(QT_QPA_PLATFORM="xcb"), cwd=ROOT, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "smoke test ok" in proc.stdout and "generated 4.00 s" in proc.stdout
    assert "time from Generate to first sound" in proc.stdout  # measured at the (null) device
    image = QImage(str(shot))
    assert image.width() >= 1000 and image.height() >= 600
    ptr = image.convertToFormat(QImage.Format.Format_RGB32).constBits()
    pixels = np.frombuffer(ptr, np.uint8).reshape(image.height(), image.width(), 4)[..., :3]
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # a rendered window, not a blank frame
    log = (tmp_path / "data" / "studio.log").read_text()
    assert "time from Generate to first sound" in log


def test_smoke_test_reports_a_missing_bundle(tmp_path):
    cmd = [sys.executable, "-m", "app.main", "--smoke-test", "--bundle", str(tmp_path / "nope"),
           "--data-dir", str(tmp_path / "data")]
    proc = subprocess.run(cmd, env=_env(QT_QPA_PLATFORM="offscreen"), cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot load") and "nope" in last
