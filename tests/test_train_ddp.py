"""Two-process DDP on CPU (gloo, 127.0.0.1): ranks stay identical and match one process with the
same global batch (the sampler shards one global batch stream)."""

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from melody_core.commands.train import main
from melody_core.commands.train_smoke import stage_argv
from melody_core.train.data import write_synthetic_corpus

REPO = Path(__file__).resolve().parents[1]
WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses(path: Path) -> list[float]:
    with open(path, newline="") as f:
        return [float(r["loss"]) for r in csv.DictReader(f) if r["split"] == "train"]


def test_two_process_ddp_keeps_ranks_identical_and_matches_single_process(tmp_path: Path) -> None:
    data = write_synthetic_corpus(tmp_path / "corpus", n_train=6, n_valid=2, seconds=1.0)
    runs = tmp_path / "runs"
    for stage in ("ssl", "kmeans", "mulan"):  # upstream of the LM
        assert main(stage_argv(stage, data, runs)) == 0
    common = ["--steps", "3", "--warmup", "0"]
    argv = stage_argv("lm", data, runs, *common, "--batch-size", "2", out=tmp_path / "ddp")
    port = str(_free_port())
    procs = []
    for rank in range(WORLD):  # what torchrun sets up, without its launcher process
        env = dict(
            os.environ,
            OMP_WAIT_POLICY="PASSIVE",
            PYTHONPATH=str(REPO),
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(WORLD),
            LOCAL_WORLD_SIZE=str(WORLD),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "melody_core.cli", "train", *argv],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    assert "world 2" in outs[0][0] and outs[1][0] == ""  # only rank 0 talks

    check = json.loads((tmp_path / "ddp" / "ddp_check.json").read_text())
    assert check["world"] == WORLD and check["step"] == 3 and check["identical"]
    assert len(check["params_hashes"]) == WORLD

    # one process with the global batch (2 x 2) sees the same examples: same losses, same weights
    assert main(stage_argv("lm", data, runs, *common, "--batch-size", "4", out=tmp_path / "single")) == 0
    ddp, single = _losses(tmp_path / "ddp" / "metrics.csv"), _losses(tmp_path / "single" / "metrics.csv")
    assert len(ddp) == len(single) == 3
    assert all(abs(a - b) < 1e-4 for a, b in zip(ddp, single)), (ddp, single)
    w_ddp = torch.load(tmp_path / "ddp" / "checkpoints" / "last.pt", weights_only=True)["models"]["lm"]
    w_one = torch.load(tmp_path / "single" / "checkpoints" / "last.pt", weights_only=True)["models"]["lm"]
    assert max(float((w_ddp[k] - w_one[k]).abs().max()) for k in w_ddp) < 1e-4
