"""Device packs and packaging/device_train.sh on the CPU (issue 16): a tiny home DPD run is packed,
trained by the one-shot script (the same code as on a GPU machine; CUDA absent, so the CPU), its
weights come back as shards under the return limits, a killed script still leaves its last
checkpoint, and the imported weights resume the home run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from melody_core.commands.train import main
from melody_core.commands.train_smoke import stage_argv
from melody_core.train import devpack, devrun
from melody_core.train.data import write_synthetic_corpus
from melody_core.train.state import load_state
from melody_core.train.upstream import TrainError

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "packaging" / "device_train.sh"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic corpus, tiny upstream runs, a 4-step home dpd run and a pack of it in a git checkout."""
    root = tmp_path_factory.mktemp("devpack")
    data = write_synthetic_corpus(root / "corpus", n_train=6, n_valid=2, seconds=2.0)
    for stage in ("vae", "ssl", "kmeans", "dpd"):
        assert main(stage_argv(stage, data, root / "runs")) == 0
    checkout = root / "checkout"
    checkout.mkdir()
    subprocess.run(["git", "init", "-q", str(checkout)], check=True)
    (checkout / ".gitignore").write_text("/.devpack/\n")
    (checkout / "big.bin").write_bytes(b"x" * 300_000)  # what a device call sends besides the pack
    return root


def _pack(home: Path, **kw) -> dict:
    return devpack.build_pack(home / "runs" / "dpd", home / "corpus", home / "checkout" / ".devpack",
                              home / "checkout", window_seconds=0.8, log=lambda *_: None, **kw)


def _script(home: Path, out: Path, *train_args: str, **env: str) -> subprocess.Popen:
    env = dict(os.environ, OUT=str(out), MINUTES="4", CKPT_MINUTES="2", THREADS="1", BATCH_SIZE="2",
               VALID_EVERY="3", PYTHON=sys.executable, WORK=str(out.parent / (out.name + "-work")),
               TRAIN_ARGS=" ".join(train_args), PYTHONPATH=str(REPO), OMP_WAIT_POLICY="PASSIVE", **env)
    cmd = ["bash", str(SCRIPT), str(home / "checkout" / ".devpack")]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own process group: the kill test kills it all


def test_latent_coding_is_within_half_a_step() -> None:
    torch.manual_seed(0)
    # (L, D): slowly varying channels of different scales, as VAE latents (lag-1 correlation ~0.9)
    z = torch.cumsum(torch.randn(333, 16) * 0.1, 0) * torch.linspace(0.1, 3.0, 16) + 2.0
    blob, bounds = devpack.encode_latents(z)
    back = devpack.decode_latents(blob, bounds, len(z))
    step = (bounds[1] - bounds[0]) / 255
    assert back.shape == z.shape and back.dtype == torch.float32
    assert ((back - z).abs() <= step / 2 + 1e-5).all()
    assert len(blob) < 0.8 * z.numel()  # delta coding + LZMA: under a byte a value


def test_pack_fills_the_budget_and_refuses_other_upstream(home: Path) -> None:
    meta = _pack(home)
    pack = home / "checkout" / ".devpack"
    assert len(meta["windows"]["train"]) == 6  # all fit
    assert meta["checkout_bytes"] >= 300_000
    assert meta["pack_bytes"] == devpack.folder_bytes(pack)
    assert all("pack" in e for e in meta["upstream"])  # runs outside the checkout: slim copies
    z, t = devpack.read_features(pack, "train")[0]
    assert len(z) == 200 and len(t) == 20  # a 0.8 s window: 200 latent frames, 20 tokens

    # a budget of about two windows: fewer windows, and the features stay under it
    small = _pack(home, data_mib=(meta["pack_bytes"] - devpack.folder_bytes(pack / "upstream")
                                  - (pack / "init.safetensors").stat().st_size) / 2**20 * 0.4)
    assert 1 <= len(small["windows"]["train"]) < 6
    with pytest.raises(TrainError, match="MiB"):
        _pack(home, limit_mib=0.2)  # the checkout alone is over it

    meta = _pack(home)  # a pack whose k-means differs from the checkout's is refused
    data = json.loads((pack / "pack.json").read_text())
    data["upstream_hashes"]["kmeans"] = "0" * 64
    (pack / "pack.json").write_text(json.dumps(data))
    with pytest.raises(TrainError, match="kmeans differs"):
        devpack.unpack_pack(pack, home / "work", home / "checkout", log=lambda *_: None)


@pytest.mark.slow
def test_device_script_trains_returns_shards_and_resumes_home(home: Path, tmp_path: Path) -> None:
    _pack(home)
    out = tmp_path / "out"
    proc = _script(home, out, "--steps", "6", "--ckpt-every", "3")
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log[-3000:]
    assert "gpu none (CPU run)" in log and "devrun: exported dpd-last.0.safetensors" in log
    files = sorted(p.name for p in out.iterdir())
    assert files == ["device.json", "dpd-best.0.safetensors", "dpd-last.0.safetensors", "metrics.csv",
                     "train.log"]
    assert all((out / f).stat().st_size < devrun.RETURN_FILE_LIMIT for f in files)
    weights, meta = devrun.read_shards(out, "last")
    device_run = tmp_path / "out-work" / "run"
    ckpt = load_state(device_run / "checkpoints" / "last.pt")
    assert meta["step"] == "6" == str(ckpt["step"])
    assert all(torch.equal(weights[k], v) for k, v in ckpt["models"]["dpd"].items())
    run = json.loads((out / "device.json").read_text())["run"]
    assert run["init_from"]["source"].endswith("(last, step 4)")  # started from the home weights
    assert run["export_meta"]["latent_scale"] == json.loads(
        (home / "runs" / "dpd" / "run.json").read_text())["export_meta"]["latent_scale"]

    into = tmp_path / "home-with-device-weights"
    devrun.import_weights(out, home / "runs" / "dpd", into, "last", log=lambda *_: None)
    state = load_state(into / "checkpoints" / "last.pt")
    assert state["step"] == 4  # the home run's position, with the device's weights
    assert all(torch.equal(state["models"]["dpd"][k], v) for k, v in weights.items())
    argv = stage_argv("dpd", home / "corpus", home / "runs", out=into)
    argv[argv.index("--steps") + 1] = "5"
    assert main(argv) == 0
    assert load_state(into / "checkpoints" / "last.pt")["step"] == 5


@pytest.mark.slow
def test_a_killed_script_leaves_its_last_checkpoint(home: Path, tmp_path: Path) -> None:
    _pack(home)
    out = tmp_path / "out"
    proc = _script(home, out, "--steps", "100000", "--ckpt-every", "2")
    shard = out / "dpd-last.0.safetensors"
    deadline = time.monotonic() + 300
    while not shard.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # as the device call's limit does: everything at once
    log, _ = proc.communicate(timeout=60)
    assert shard.is_file(), log[-3000:]
    weights, meta = devrun.read_shards(out, "last")
    assert int(meta["step"]) >= 2 and int(meta["step"]) % 2 == 0
    assert set(weights) == set(load_state(home / "runs" / "dpd" / "checkpoints" / "last.pt")["models"]["dpd"])


@pytest.mark.slow
def test_a_trainer_that_encodes_features_of_its_own_is_stopped(home: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    _pack(home)
    real = devpack.unpack_pack

    def unpack_then_lose_an_entry(pack, work, repo, log=print):  # noqa: ANN001
        paths = real(pack, work, repo, log=log)
        next((work / "cache").glob("latents-*/*.safetensors")).unlink()  # the trainer would encode silence
        return paths

    monkeypatch.setattr(devpack, "unpack_pack", unpack_then_lose_an_entry)
    lines: list[str] = []
    rc = devrun.train_on_device(home / "checkout" / ".devpack", tmp_path / "out", repo=REPO,
                                 work=tmp_path / "work", minutes=3, poll_s=0.2, log=lines.append,
                                 extra=["--device", "cpu", "--threads", "1", "--steps", "100000"])
    assert rc == 3, "\n".join(lines[-20:])
    assert any("encoding features of its own" in line for line in lines)
    assert not list((tmp_path / "out").glob("dpd-*.safetensors"))  # nothing trained on silence comes back


def test_command_line_errors_are_one_line(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    runs = home / "runs"
    cases = [["import", str(tmp_path / "empty"), "--home", str(runs / "dpd"), "--into", str(tmp_path / "x")],
             ["build", str(home / "runs" / "vae"), str(home / "corpus"), str(tmp_path / "p"),
              "--repo", str(home / "checkout")]]
    for argv in cases:
        assert devrun.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "x").exists() and not (tmp_path / "p").exists()  # nothing half-written
