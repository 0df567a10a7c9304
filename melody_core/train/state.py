"""Training-state files: atomic writes, RNG capture/restore, and weight hashes.

A checkpoint is written to a temporary file in the same folder, fsynced, then `os.replace`d over
the old one (and the folder fsynced), so a `kill -9` at any moment leaves either the previous or
the new checkpoint, never a torn one. Checkpoints hold only tensors and plain Python values and
are read with `torch.load(weights_only=True)`: nothing arbitrary is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import re
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Call `write(file)` on a temp file next to `path`, fsync, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give them the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def save_state(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda f: torch.save(state, f))


class StateFileError(ValueError):
    """A training checkpoint that cannot be read; the message is one line naming the file."""


def load_state(path: Path) -> dict[str, Any]:
    """A checkpoint written by `save_state`. Raises StateFileError for a missing, truncated, damaged
    or hostile file (one that would unpickle anything but tensors and plain values: never run)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise StateFileError(f"{path}: checkpoint not found") from None
    except pickle.UnpicklingError as exc:
        raise StateFileError(f"{path}: {_unpickling_reason(exc)}") from None
    except (EOFError, RuntimeError, ValueError, OSError, zipfile.BadZipFile) as exc:
        first = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise StateFileError(f"{path}: truncated or damaged checkpoint ({first})") from None
    if not isinstance(state, dict):
        raise StateFileError(f"{path}: not a training checkpoint (holds a {type(state).__name__})")
    return state


def _unpickling_reason(exc: Exception) -> str:
    """One line from torch's multi-paragraph weights-only refusal."""
    text = str(exc)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return (f"refused to load (it would run code: it refers to {found.group(1)}; only tensors and "
                "plain values are loaded)")
    if "Unsupported operand" in text:
        return "truncated or damaged checkpoint (not a PyTorch file, or its pickle data is corrupt)"
    if "weights_only" in text or "Weights only" in text:
        return "refused to load (it holds objects other than tensors and plain values)"
    return "truncated or damaged checkpoint (" + (" ".join(text.split())[:160] or "no detail") + ")"


def write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    atomic_write(path, lambda f: f.write(text), mode="w")


# ------------------------------------------------------------------------------------------------ RNG
def seed_all(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng() -> dict[str, Any]:
    """Global RNG states (python, numpy, torch CPU, every CUDA device) as loadable plain values."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(_tuplify(state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(x: Any) -> Any:
    """random.setstate wants nested tuples (a list may come back from a checkpoint)."""
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


# --------------------------------------------------------------------------------------------- hashes
def state_hash(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the sorted names, dtypes, shapes and bytes of a state_dict (hex)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def module_hash(module: nn.Module) -> str:
    return state_hash(module.state_dict())


def encoder_hash(vae: nn.Module) -> str:
    """Hash of a VAE's encoder weights only: what its latents (and runs trained on them) depend on."""
    return state_hash(vae.encoder.state_dict())


def combine_hashes(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()
