"""Issue 18: an endless stream ("Keep playing") holds bounded memory -- the core keeps a bounded
window of its latent/token timeline and spools its audio to disk -- and trimming changes nothing
(the same chunks as an untrimmed run, bit for bit)."""

from __future__ import annotations

import numpy as np
import pytest
from micro_bundle import MICRO_OVERRIDES

from melody_core.checkpoint import random_bundle
from melody_core.generation import jobs
from melody_core.generation.decode import AudioSpool
from melody_core.generation.pipeline import MelodyPipeline
from melody_core.generation.types import AudioChunk, GenerationSettings, StreamControl, StreamFinished

FAST = {"steps": 2, "seed": 3}
N_CHUNKS = 80  # ~34 s of audio on the micro bundle: many times its stream history


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory) -> MelodyPipeline:
    path = tmp_path_factory.mktemp("bundle") / "tiny"
    random_bundle(path, "tiny", overrides=MICRO_OVERRIDES)
    return MelodyPipeline.load(path, device="cpu", threads=1)


def _endless(pipe: MelodyPipeline, monkeypatch: pytest.MonkeyPatch) -> tuple[list, np.ndarray, list]:
    made: list = []
    real = jobs.generation_job

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        job = real(*args, **kwargs)
        made.append(job)
        return job

    monkeypatch.setattr("melody_core.generation.pipeline.generation_job", spy)
    control, chunks, caps = StreamControl(), [], []
    for event in pipe.stream(GenerationSettings(prompt="calm piano", **FAST), control, endless=True):
        if isinstance(event, AudioChunk):
            chunks.append(event.pcm)
            caps.append(made[0].timeline.z.shape[1])
            if len(chunks) == N_CHUNKS:
                control.stop_after_current()
        if isinstance(event, StreamFinished):
            return chunks, event.result.audio, caps
    raise AssertionError("no StreamFinished")


def test_endless_timeline_is_bounded_and_trimming_changes_nothing(pipe, monkeypatch) -> None:
    history = jobs.stream_history(pipe.models)
    chunks, audio, caps = _endless(pipe, monkeypatch)
    frames = sum(len(c) for c in chunks) // pipe.models.vae.hop
    assert frames > 4 * history  # long enough for the bound to matter
    # capacity: history + one window, doubled at most once on the way (the buffer never grows past)
    bound = 2 * (history + 2 * pipe.models.layout.length)
    assert max(caps) <= bound < frames, (max(caps), bound, frames)
    np.testing.assert_array_equal(audio, np.concatenate(chunks))  # the spooled result = the chunks
    # the same stream without trimming: identical chunks
    monkeypatch.setattr(jobs, "stream_history", lambda models: 10**9)
    untrimmed, _, caps_all = _endless(pipe, monkeypatch)
    assert max(caps_all) > bound  # without the bound the timeline keeps growing
    assert len(untrimmed) == len(chunks)
    for a, b in zip(chunks, untrimmed):
        np.testing.assert_array_equal(a, b)


def test_audio_spool() -> None:
    parts = [np.arange(5, dtype=np.float32), np.ones(3, np.float32)]
    for spill in (False, True):
        spool = AudioSpool(spill)
        for p in parts:
            spool.append(p)
        assert spool.count == 2 and spool.samples == 8
        assert spool.held == (0 if spill else 8)  # spilled: nothing held in memory
        np.testing.assert_array_equal(spool.read(), np.concatenate(parts))
    assert AudioSpool(True).read().shape == (0,)
