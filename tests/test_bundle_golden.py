"""Bit-identity of the committed bundle's output across refactors: generate, continue, inpaint and
stream with a fixed prompt, seed and few steps, compared by sha256 of the float32 PCM against
`fixtures/bundle_golden.json` (written from the code before the generation package refactor).

The reference is valid for this CPU build of torch (float results can differ between CPU kernels,
e.g. AVX2 vs AVX-512); after an intended change of the output, rewrite it with
`PYTHONPATH=. python tests/test_bundle_golden.py --write` and say why in the commit.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

from melody_core import SAMPLE_RATE
from melody_core.generation.pipeline import DEFAULT_BUNDLE, MelodyPipeline
from melody_core.generation.types import AudioChunk, GenerationSettings

REFERENCE = Path(__file__).parent / "fixtures" / "bundle_golden.json"
SETTINGS = {"steps": 2, "seed": 1234}  # few steps: each case runs in about a second on a CPU core


def _sha(audio: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(audio, dtype=np.float32).tobytes()).hexdigest()


def _clip(seconds: float) -> np.ndarray:
    rng = np.random.default_rng(3)
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def outputs(pipe: MelodyPipeline) -> dict[str, str]:
    """sha256 of each mode's float32 output (stream: the concatenated chunks)."""
    src = _clip(1.5)
    s = GenerationSettings(prompt="warm jazz piano", seconds=1.2, **SETTINGS)
    gen = pipe.generate(s)
    cont = pipe.continue_(src, GenerationSettings(seconds=0.8, **SETTINGS))
    inp = pipe.inpaint(src, 0.5, 0.9, GenerationSettings(prompt="drums", **SETTINGS))
    chunks = [e.pcm for e in pipe.stream(s) if isinstance(e, AudioChunk)]
    return {"generate": _sha(gen.audio), "continue": _sha(cont.audio), "inpaint": _sha(inp.audio),
            "stream": _sha(np.concatenate(chunks))}


def _load() -> MelodyPipeline:
    torch.set_num_threads(1)  # the reference was made with one thread (reductions depend on it)
    return MelodyPipeline.load(DEFAULT_BUNDLE, device="cpu", threads=1)


def test_committed_bundle_output_is_bit_identical() -> None:
    before = torch.get_num_threads()
    try:
        got = outputs(_load())
    finally:
        torch.set_num_threads(before)
    assert got == json.loads(REFERENCE.read_text())["sha256"]


if __name__ == "__main__" and "--write" in sys.argv:
    ref = {"note": "sha256 of float32 PCM; tests/test_bundle_golden.py --write", "torch": torch.__version__,
           "sha256": outputs(_load())}
    REFERENCE.write_text(json.dumps(ref, indent=2, sort_keys=True) + "\n")
    print(ref)
