"""Exact resumption after kill -9: run A uninterrupted; run B SIGKILLed in a subprocess after a
checkpoint, then resumed; B's per-step losses after the checkpoint must equal A's. Runs A and the
resumption are in-process (1 thread, like the subprocess) to save interpreter start-ups."""

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from melody_core.commands.train import main
from melody_core.commands.train_smoke import stage_argv
from melody_core.train.data import write_synthetic_corpus

REPO = Path(__file__).resolve().parents[1]
STEPS = ["--steps", "8", "--ckpt-every", "3", "--valid-every", "4"]
KILL_AT = 5  # last checkpoint before it: step 3
TOL = 1e-6


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("resume")
    data = write_synthetic_corpus(root / "corpus", n_train=6, n_valid=2, seconds=1.0)
    for stage in ("vae", "ssl", "kmeans"):  # upstream of the dpd case
        assert main(stage_argv(stage, data, root / "runs")) == 0
    return root


def _launch(argv: list[str]) -> subprocess.Popen:
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-m", "melody_core.cli", "train", *argv],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_all(procs: dict[str, subprocess.Popen]) -> dict[str, tuple[int, str, str]]:
    """Wait for every process: {name: (returncode, stdout, stderr)}."""
    outs = {k: p.communicate(timeout=240) for k, p in procs.items()}
    return {k: (procs[k].returncode, *outs[k]) for k in procs}


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_kill9_then_resume_repeats_the_uninterrupted_losses(
    runs: Path, capsys: pytest.CaptureFixture
) -> None:
    # vae: two optimizers + the GAN phase; dpd: diffusion noise, CFG dropout, caches, latent scale
    stages = ("vae", "dpd")
    data = runs / "corpus"
    argv_b = {}
    for stage in stages:
        assert main(stage_argv(stage, data, runs / "runs", *STEPS, out=runs / "A" / stage)) == 0
        argv_b[stage] = stage_argv(stage, data, runs / "runs", *STEPS, out=runs / "B" / stage)

    killed = _wait_all({s: _launch([*argv_b[s], "--kill-at-step", str(KILL_AT)]) for s in stages})
    for stage in stages:  # the two B runs run side by side
        rc, _, err = killed[stage]
        assert rc == -signal.SIGKILL, err[-2000:]
        out_b = runs / "B" / stage
        assert torch.load(out_b / "checkpoints" / "last.pt", weights_only=True)["step"] == 3
        assert max(int(r["step"]) for r in _rows(out_b / "metrics.csv")) == KILL_AT

    for stage in stages:  # resume in this process (same code path as a fresh `melody train` call)
        capsys.readouterr()
        assert main(argv_b[stage]) == 0
        assert f"{stage}: resuming at step 3" in capsys.readouterr().out
        _assert_same_run(runs / "A" / stage, runs / "B" / stage, stage)


def _assert_same_run(out_a: Path, out_b: Path, stage: str) -> None:
    rows_a, rows_b = _rows(out_a / "metrics.csv"), _rows(out_b / "metrics.csv")
    assert [(r["step"], r["split"]) for r in rows_a] == [(r["step"], r["split"]) for r in rows_b]
    metric_cols = [c for c in rows_a[0] if c not in ("step", "split", "wall_s")]
    compared = 0
    for ra, rb in zip(rows_a, rows_b):
        for col in metric_cols:
            assert (ra[col] == "") == (rb[col] == ""), (stage, ra["step"], col)
            if ra[col]:
                a, b = float(ra[col]), float(rb[col])
                assert abs(a - b) <= TOL * max(1.0, abs(a)), (stage, ra["step"], ra["split"], col, a, b)
                compared += int(int(ra["step"]) > 3)
    assert compared >= 5  # the post-resume steps really were compared
    final_a = torch.load(out_a / "checkpoints" / "last.pt", weights_only=True)["models"]
    final_b = torch.load(out_b / "checkpoints" / "last.pt", weights_only=True)["models"]
    for name, state in final_a.items():
        for key, t in state.items():
            assert torch.allclose(t.float(), final_b[name][key].float(), atol=1e-6), (stage, name, key)


def test_kill9_before_the_first_checkpoint_then_resume_logs_each_step_once(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A run SIGKILLed before any checkpoint starts over on resume; metrics.csv must not list the
    first steps twice (it listed steps 1-12 twice, 72 rows for 60 steps)."""
    data = write_synthetic_corpus(tmp_path / "corpus", n_train=4, n_valid=2, seconds=0.5)
    steps = ["--steps", "6", "--ckpt-every", "100", "--valid-every", "0", "--log-every", "1"]
    argv = stage_argv("vae", data, tmp_path / "runs", *steps, out=tmp_path / "run")
    rc, _, err = _wait_all({"b": _launch([*argv, "--kill-at-step", "4"])})["b"]
    assert rc == -signal.SIGKILL, err[-2000:]
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()
    assert [r["step"] for r in _rows(tmp_path / "run" / "metrics.csv")] == ["1", "2", "3", "4"]

    capsys.readouterr()
    assert main(argv) == 0  # --resume is the default: nothing to resume, so it starts over
    assert "vae: starting" in capsys.readouterr().out
    rows = _rows(tmp_path / "run" / "metrics.csv")
    train_steps = [int(r["step"]) for r in rows if r["split"] == "train"]
    assert train_steps == [1, 2, 3, 4, 5, 6]
