"""packaging/setup.sh: the apt-lock wait, and a real install into a prefix (idempotent, --uninstall)."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SETUP = ROOT / "packaging" / "setup.sh"


def _fake_bin(tmp: Path, apt_body: str) -> Path:
    """A PATH folder with fake apt-get / dpkg-query / sudo / python (the venv step is never reached)."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    scripts = {
        "apt-get": f"#!/bin/bash\necho \"$*\" >> {tmp}/apt-calls\n{apt_body}\n",
        "dpkg-query": "#!/bin/bash\nexit 1\n",  # every package is missing
        "sudo": '#!/bin/bash\nexec "$@"\n',
        # fails `import ensurepip` and the version check: setup stops right after the apt step
        "fakepython": "#!/bin/bash\nexit 1\n",
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def _run_setup(tmp: Path, bin_dir: Path, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp / "home"),
            "MELODY_PYTHON": "fakepython", "MELODY_APT_RETRY": "0.2", **env}
    return subprocess.run(["bash", str(SETUP)], env=full, capture_output=True, text=True, timeout=60)


def test_setup_waits_for_the_apt_lock(tmp_path):
    # apt-get reports the lock held by another program on its first two calls, then works
    body = f"""n=$(wc -l < {tmp_path}/apt-calls)
if (( n <= 2 )); then
  echo "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (unattended-upgr)"
  exit 100
fi"""
    r = _run_setup(tmp_path, _fake_bin(tmp_path, body))
    calls = (tmp_path / "apt-calls").read_text().splitlines()
    assert calls[:3] == ["-q update"] * 3, calls
    assert calls[3].startswith("-q install -y --no-install-recommends ")
    assert "libportaudio2" in calls[3] and "python3-venv" in calls[3]
    assert r.stdout.count("another program holds the apt lock") == 1, r.stdout
    # then it stops at the (fake) interpreter, after the apt step
    assert r.returncode == 2 and "error: MeLoDy Studio needs Python >= 3.10" in r.stderr, r.stderr


def test_setup_gives_up_on_a_lock_that_stays_held(tmp_path):
    body = 'echo "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 7 (apt-get)"; exit 100'
    r = _run_setup(tmp_path, _fake_bin(tmp_path, body), MELODY_APT_WAIT="2")
    assert r.returncode == 1
    assert "error: apt is still locked by another program after 2 s" in r.stderr
    tries = len((tmp_path / "apt-calls").read_text().splitlines())
    assert 2 <= tries <= 20, tries  # retried for about MELODY_APT_WAIT, then stopped


def test_setup_other_apt_errors_are_not_retried(tmp_path):
    r = _run_setup(tmp_path, _fake_bin(tmp_path, 'echo "E: Unable to locate package x"; exit 100'))
    assert r.returncode == 100
    assert (tmp_path / "apt-calls").read_text().splitlines() == ["-q update"]


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """path -> (size, mtime_ns) of everything under root, symlinks not followed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.mark.slow
def test_setup_prefix_install_is_idempotent_and_uninstalls(tmp_path):
    """A real install (reusing this interpreter's packages through --system-site-packages, so nothing is
    downloaded but the build tools): launchers, menu entry, icon; a second run changes nothing;
    --uninstall leaves the prefix as it found it."""
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    (prefix / "bin").mkdir()
    (prefix / "bin" / "other-tool").write_text("not ours\n")
    env = {**os.environ, "MELODY_PYTHON": sys.executable, "MELODY_VENV_ARGS": "--system-site-packages",
           "HOME": str(tmp_path / "home")}
    cmd = ["bash", str(SETUP), "--prefix", str(prefix), "--skip-apt"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    venv = prefix / "lib" / "melody-studio" / "venv"
    for launcher in ("melody", "melody-studio"):
        link = prefix / "bin" / launcher
        assert link.is_symlink() and os.readlink(link) == str(venv / "bin" / launcher)
    desktop = (prefix / "share" / "applications" / "melody-studio.desktop").read_text()
    assert f"Exec={prefix}/bin/melody-studio\n" in desktop and "Icon=melody-studio\n" in desktop
    assert (prefix / "share/icons/hicolor/scalable/apps/melody-studio.svg").is_file()
    assert (prefix / "share/icons/hicolor/256x256/apps/melody-studio.png").is_file()
    # the venv runs the installed package (not this checkout) with the packaged model
    code = "import melody_core.generation.pipeline as p; print(p.__file__); print(p.default_bundle_path())"
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", code], env={**env, "MELODY_BUNDLE": ""},
                           cwd=tmp_path, capture_output=True, text=True)
    module, bundle = probe.stdout.split()
    assert module.startswith(str(venv)) and bundle.startswith(str(venv)), probe.stdout + probe.stderr
    assert not filecmp.dircmp(ROOT / "resources" / "models" / "melody-tiny", bundle).diff_files
    r = subprocess.run([str(prefix / "bin" / "melody"), "info", "--bundle", bundle], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "vae" in r.stdout, r.stdout + r.stderr

    before = _tree(prefix)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "up to date" in r.stdout
    assert _tree(prefix) == before  # a second run changes nothing

    r = subprocess.run([*cmd, "--uninstall"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    left = sorted(str(p.relative_to(prefix)) for p in prefix.rglob("*"))
    assert left == ["bin", "bin/other-tool"], left


TORCH_LIB = ROOT / "packaging" / "lib" / "torch.sh"
CPU_INDEX = "https://cpu-index.invalid/whl/cpu"


def _install_torch(*, torch_ok: bool = False, gpu: bool = False, reachable: bool = True,
                   index_has_pin: bool = True) -> list[str]:
    """setup.sh's torch choice (packaging/lib/torch.sh, install_torch) with fake probes and a fake pip:
    returns what it printed and each pip call, in order. No network, no venv."""
    driver = f"""
set -euo pipefail
VPY=/nonexistent/python TORCH_REQ=torch==2.13.0 TORCH_CPU_INDEX={CPU_INDEX}
say() {{ echo "setup: $*"; }}
source {TORCH_LIB}
torch_ok() {{ return {0 if torch_ok else 1}; }}
has_nvidia() {{ return {0 if gpu else 1}; }}
reachable() {{ echo "probe $1"; return {0 if reachable else 1}; }}
pip_install() {{ echo "pip $*"; if [[ $* == *--index-url* ]]; then return {0 if index_has_pin else 1}; fi; }}
install_torch
"""
    r = subprocess.run(["bash", "-c", driver], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def test_torch_already_satisfied_installs_nothing():
    assert _install_torch(torch_ok=True) == []


def test_torch_with_an_nvidia_gpu_takes_the_pypi_build_without_probing_the_cpu_index():
    out = _install_torch(gpu=True)
    assert out == ["setup: NVIDIA GPU found: installing torch==2.13.0 from PyPI (CUDA build)",
                   "pip torch==2.13.0"]


def test_torch_without_gpu_prefers_the_cpu_index_when_reachable():
    out = _install_torch()
    assert out == [f"probe {CPU_INDEX}", f"pip --index-url {CPU_INDEX} torch==2.13.0",
                   f"setup: installed torch==2.13.0 from PyTorch's CPU-only index ({CPU_INDEX})"]


def test_torch_without_gpu_falls_back_when_the_cpu_index_is_unreachable():
    out = _install_torch(reachable=False)
    assert out[0] == f"probe {CPU_INDEX}"
    assert "not reachable or lacks torch==2.13.0" in out[1]
    assert out[2:] == ["setup: installing torch==2.13.0 from the configured package index (pip's choice)",
                       "pip torch==2.13.0"]
    assert not any("--index-url" in line for line in out)


def test_torch_without_gpu_falls_back_when_the_cpu_index_lacks_the_pin():
    out = _install_torch(index_has_pin=False)
    pips = [line for line in out if line.startswith("pip ")]
    assert pips == [f"pip --index-url {CPU_INDEX} torch==2.13.0", "pip torch==2.13.0"]
    assert any("not reachable or lacks" in line for line in out)


@pytest.mark.parametrize("smi_rc", [0, 9])
def test_has_nvidia_asks_nvidia_smi(tmp_path, smi_rc):
    """The real GPU probe with a fake nvidia-smi (rc 9: installed, but no driver/GPU)."""
    (tmp_path / "nvidia-smi").write_text(f"#!/bin/bash\nexit {smi_rc}\n")
    (tmp_path / "nvidia-smi").chmod(0o755)
    r = subprocess.run(["bash", "-c", f"source {TORCH_LIB}; has_nvidia"], capture_output=True, text=True,
                       env={**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin"}, timeout=30)
    expected = smi_rc == 0 or Path("/proc/driver/nvidia/version").exists()
    assert (r.returncode == 0) == expected, r.stderr
