"""Exact resumption after kill -9: run A uninterrupted; run B SIGKILLed in a subprocess after a
checkpoint, then resumed; B's per-step losses after the checkpoint must equal A's."""

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from melody_core.commands.train import main
from melody_core.train.data import write_synthetic_corpus
from melody_core.train.smoke import stage_argv

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


def _subprocess(argv: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "melody_core.train", *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("stage", ["vae", "dpd"])  # vae: two optimizers + GAN phase; dpd: noise, CFG, caches
def test_kill9_then_resume_repeats_the_uninterrupted_losses(runs: Path, stage: str) -> None:
    data = runs / "corpus"
    out_a, out_b = runs / "A" / stage, runs / "B" / stage
    assert main(stage_argv(stage, data, runs / "runs", *STEPS, out=out_a)) == 0
    argv_b = stage_argv(stage, data, runs / "runs", *STEPS, out=out_b)

    killed = _subprocess([*argv_b, "--kill-at-step", str(KILL_AT)])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    ckpt = torch.load(out_b / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["step"] == 3  # checkpoint at 3, killed after 5
    assert max(int(r["step"]) for r in _rows(out_b / "metrics.csv")) == KILL_AT

    resumed = _subprocess(argv_b)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming at step 3" in resumed.stdout

    rows_a, rows_b = _rows(out_a / "metrics.csv"), _rows(out_b / "metrics.csv")
    assert [(r["step"], r["split"]) for r in rows_a] == [(r["step"], r["split"]) for r in rows_b]
    metric_cols = [c for c in rows_a[0] if c not in ("step", "split", "wall_s")]
    compared = 0
    for ra, rb in zip(rows_a, rows_b):
        for col in metric_cols:
            assert (ra[col] == "") == (rb[col] == ""), (ra["step"], col)
            if ra[col]:
                a, b = float(ra[col]), float(rb[col])
                assert abs(a - b) <= TOL * max(1.0, abs(a)), (stage, ra["step"], ra["split"], col, a, b)
                compared += int(int(ra["step"]) > 3)
    assert compared >= 5  # the post-resume steps really were compared
    final_a = torch.load(out_a / "checkpoints" / "last.pt", weights_only=True)["models"]
    final_b = torch.load(out_b / "checkpoints" / "last.pt", weights_only=True)["models"]
    for name, state in final_a.items():
        for key, t in state.items():
            assert torch.allclose(t.float(), final_b[name][key].float(), atol=1e-6), (name, key)
