"""The wheel: `python -m build` (sdist, then the wheel from it) carries the bundled model; installed into a
fresh venv, away from any checkout, `melody generate` and `melody-studio --smoke-test` run on it.

The fresh venv reuses this environment's dependencies (a .pth naming its site-packages, like
--system-site-packages) so the test downloads nothing but the build backend; the wheel itself is the
only thing installed into it. packaging/fresh_machine_test.sh does the full install on a bare Debian.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
BUNDLE = ROOT / "resources" / "models" / "melody-tiny"
SOURCES = ["pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "melody_core", "app",
           "resources/models/melody-tiny", "packaging/linux"]


def _copy_sources(dest: Path) -> None:
    """The files a build needs (a copy, so the checkout gets no build/ or *.egg-info)."""
    for rel in SOURCES:
        src = ROOT / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "bundled"))
        else:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


@pytest.mark.slow
def test_wheel_carries_the_model_and_runs_from_a_fresh_venv(tmp_path):
    src, dist = tmp_path / "src", tmp_path / "dist"
    _copy_sources(src)
    r = subprocess.run([sys.executable, "-m", "build", "--outdir", str(dist), str(src)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    wheels = list(dist.glob("melody_studio-*.whl"))
    assert len(wheels) == 1 and list(dist.glob("melody_studio-*.tar.gz")), list(dist.iterdir())

    # the model files are inside, byte for byte
    with zipfile.ZipFile(wheels[0]) as zf:
        names = set(zf.namelist())
        for f in BUNDLE.iterdir():
            if f.is_file():
                arc = f"melody_core/bundled/melody-tiny/{f.name}"
                assert arc in names, arc
                assert zf.read(arc) == f.read_bytes(), arc
        assert "app/main.py" in names and not any(n.startswith("tests/") for n in names)

    # a fresh venv: only the wheel goes into it; dependencies come from this environment
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    vpy = env_dir / "bin" / "python"
    purelib = subprocess.run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    parent_sites = [p for p in site.getsitepackages() if os.path.isdir(p)]
    (Path(purelib) / "_test_parent_env.pth").write_text("\n".join(parent_sites) + "\n")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(vpy), "install", "--no-deps", "-q",
                        str(wheels[0])], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]

    run_dir = tmp_path / "elsewhere"  # no checkout here, and MELODY_BUNDLE unset
    run_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("MELODY_BUNDLE", "PYTHONPATH")}
    env.update(OMP_WAIT_POLICY="PASSIVE", QT_QPA_PLATFORM="offscreen",
               ALSA_CONFIG_PATH=f"/usr/share/alsa/alsa.conf:{TESTS / 'asound_null.conf'}")
    probe = subprocess.run([str(vpy), "-c", "import melody_core.generation.pipeline as p; print(p.__file__); "
                            "print(p.default_bundle_path())"], env=env, cwd=run_dir, capture_output=True,
                           text=True, timeout=300)
    module, bundle = probe.stdout.split()
    assert module.startswith(purelib) and bundle == f"{purelib}/melody_core/bundled/melody-tiny", probe.stdout
    assert not filecmp.dircmp(BUNDLE, bundle).diff_files

    out = run_dir / "clip.wav"
    r = subprocess.run([str(env_dir / "bin" / "melody"), "generate", "calm piano", "-o", str(out),
                        "--seconds", "2", "--steps", "4", "--seed", "1", "--device", "cpu"],
                       env=env, cwd=run_dir, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    info = sf.info(str(out))
    assert abs(info.duration - 2.0) < 0.05 and info.channels >= 1

    r = subprocess.run([str(env_dir / "bin" / "melody-studio"), "--smoke-test", "--device", "cpu",
                        "--data-dir", str(tmp_path / "data")], env=env, cwd=run_dir, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "smoke test ok" in r.stdout and "generated 4.00 s" in r.stdout
