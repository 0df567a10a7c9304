"""Audio set-up faults fall back to "no audio output" with a notice instead of stopping the app:
a malformed ALSA configuration (PortAudioError at import) and an empty one (alsa-lib aborts the
process inside Pa_Initialize, exit 134). Each runs in a subprocess with ALSA_CONFIG_PATH pointing at
the bad file, through the backend and through the real entry point (`--smoke-test`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
ROOT = TESTS.parent
MALFORMED = "pcm.!default { type plug; slave.pcm \n"  # unterminated block
SYSTEM_CONF = "/usr/share/alsa/alsa.conf"

BACKEND_SCRIPT = """
from app.studio import open_backend
backend, reason = open_backend("auto")
print("backend:", backend is not None)
print("reason:", reason)
"""


def _configs(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "malformed.conf").write_text(MALFORMED)
    (tmp_path / "empty.conf").write_text("")
    return {"malformed": f"{SYSTEM_CONF}:{tmp_path / 'malformed.conf'}",
            "malformed-alone": str(tmp_path / "malformed.conf"),
            "empty": str(tmp_path / "empty.conf")}


def _env(alsa: str) -> dict[str, str]:
    return {**os.environ, "ALSA_CONFIG_PATH": alsa, "PYTHONPATH": f"{ROOT}{os.pathsep}{TESTS}",
            "QT_QPA_PLATFORM": "offscreen"}


def test_the_empty_configuration_really_aborts_an_unprotected_process(tmp_path: Path) -> None:
    """The fault the probe exists for (if alsa-lib stops aborting, the probe is no longer needed)."""
    env = _env(_configs(tmp_path)["empty"])
    proc = subprocess.run([sys.executable, "-c", "import sounddevice"], env=env, capture_output=True,
                          timeout=60)
    assert proc.returncode in (-6, 134), proc.returncode


@pytest.mark.parametrize("which, reason", [("malformed", "failed to start (Error initializing PortAudio"),
                                           ("malformed-alone", "failed to start"),
                                           ("empty", "crashed while starting (SIGABRT)")])
def test_bad_alsa_configuration_means_no_audio_output_with_a_reason(which: str, reason: str,
                                                                   tmp_path: Path) -> None:
    env = _env(_configs(tmp_path)[which])
    proc = subprocess.run([sys.executable, "-c", BACKEND_SCRIPT], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "backend: False" in proc.stdout
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("reason:"))
    assert reason in line and "ALSA_CONFIG_PATH" in line, line


def test_a_good_configuration_still_gives_a_backend(tmp_path: Path) -> None:
    env = _env(f"{SYSTEM_CONF}:{TESTS / 'asound_null.conf'}")
    proc = subprocess.run([sys.executable, "-c", BACKEND_SCRIPT], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "backend: True" in proc.stdout, proc.stdout + proc.stderr[-2000:]


@pytest.mark.parametrize("which", ["malformed", "empty"])
def test_smoke_test_runs_without_audio_on_a_bad_alsa_configuration(which: str, tmp_path: Path) -> None:
    env = _env(_configs(tmp_path)[which])
    cmd = [sys.executable, "-m", "app.main", "--smoke-test", "--engine", "app_fake_pipeline:FakePipeline",
           "--data-dir", str(tmp_path / "data")]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "note: no audio output (the audio system" in proc.stdout and "smoke test ok" in proc.stdout
    log = (tmp_path / "data" / "studio.log").read_text()
    assert "no audio output" in log
