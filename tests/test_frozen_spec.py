"""The PyInstaller spec (packaging/melody-studio.spec) without building it (the build takes minutes; see
packaging/build_app.sh): the files it names exist, and the frozen entry point runs the CLI and the studio
with every module the spec excludes made unimportable, so the exclusions cannot break the frozen app."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import soundfile as sf
from app_fixtures import tiny_bundle  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
SPEC = ROOT / "packaging" / "melody-studio.spec"
ENTRY = ROOT / "packaging" / "frozen_main.py"


def _spec_excludes() -> list[str]:
    tree = ast.parse(SPEC.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "EXCLUDES" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("no EXCLUDES list in the spec")


def _run_frozen_entry(argv0: str, args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    """packaging/frozen_main.py as the frozen app runs it: sys.argv[0] = argv0, excluded modules absent."""
    code = (
        "import sys\n"
        f"for m in {_spec_excludes()!r}: sys.modules[m] = None  # import m -> ImportError, as when frozen\n"
        f"sys.path.insert(0, {str(ENTRY.parent)!r})\n"
        "import frozen_main\n"
        f"sys.argv = [{argv0!r}, *{args!r}]\n"
        "sys.exit(frozen_main.main())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "QT_QPA_PLATFORM": "offscreen",
           "ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{TESTS / 'asound_null.conf'}"}
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp, capture_output=True, text=True,
                          timeout=600)


def test_spec_names_existing_files():
    text = SPEC.read_text()
    compile(text, str(SPEC), "exec")  # valid Python
    assert '"packaging" / "frozen_main.py"' in text and ENTRY.is_file()
    assert '"resources" / "models" / "melody-tiny"' in text
    assert (ROOT / "resources" / "models" / "melody-tiny" / "config.json").is_file()
    # the model goes where melody_core.generation.pipeline looks for it outside a checkout
    assert '"melody_core/bundled/melody-tiny"' in text
    import melody_core
    from melody_core.generation import pipeline
    assert pipeline.PACKAGED_BUNDLE.relative_to(Path(melody_core.__file__).resolve().parent) == \
        Path("bundled/melody-tiny")
    assert {"torch", "numpy", "PySide6", "soundfile", "safetensors"}.isdisjoint(_spec_excludes())


def test_spec_collects_the_modules_imported_by_name():
    """The CLI's command modules and the bundle's model classes are imported with importlib from strings
    (PyInstaller's analysis cannot see them; a build without them failed with "No module named
    'melody_core.commands.info'" / "'melody_core.models.dpd'"), so the spec must collect every submodule."""
    text = SPEC.read_text()
    assert 'collect_submodules("melody_core")' in text and 'collect_submodules("app")' in text
    cli = (ROOT / "melody_core" / "cli.py").read_text()
    config = (ROOT / "melody_core" / "config.py").read_text()
    assert "importlib.import_module" in cli and "import_module" in config  # still dynamic: still needed


def test_frozen_entry_runs_the_cli_without_the_excluded_modules(tmp_path, tiny_bundle):  # noqa: F811
    out = tmp_path / "clip.flac"
    r = _run_frozen_entry("/usr/lib/melody-studio/melody", ["generate", "calm piano", "-o", str(out),
                          "--seconds", "1", "--steps", "2", "--bundle", str(tiny_bundle), "--device", "cpu"],
                          tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert abs(sf.info(str(out)).duration - 1.0) < 0.05
    # `melody-studio --cli ...` is the CLI too
    r = _run_frozen_entry("melody-studio", ["--cli", "info", "--audio", str(out)], tmp_path)
    assert r.returncode == 0 and "1.00" in r.stdout, r.stdout + r.stderr


def test_frozen_entry_runs_the_studio_smoke_test_without_the_excluded_modules(tmp_path, tiny_bundle):  # noqa: F811
    r = _run_frozen_entry("/usr/bin/melody-studio", ["--smoke-test", "--bundle", str(tiny_bundle),
                          "--device", "cpu", "--data-dir", str(tmp_path / "data")], tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "smoke test ok" in r.stdout and "generated 4.00 s" in r.stdout


def test_frozen_entry_answers_the_audio_probe(tmp_path):
    """The studio probes PortAudio by running the frozen app with PROBE_FLAG (app/audio/backend.py)."""
    from app.audio.backend import PROBE_FLAG, PROBE_OK

    r = _run_frozen_entry("/usr/lib/melody-studio/melody-studio", [PROBE_FLAG], tmp_path)
    assert "usage:" not in r.stderr, r.stderr
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == PROBE_OK, r.stdout + r.stderr
