"""The bounded-lead gate's allowance rule (app/lead.py), on a fake clock: no threads, no wall time."""

from __future__ import annotations

import numpy as np

from app.lead import MIN_ALLOWANCE_S, RECENT_CHUNKS, SAFETY, LeadGate
from melody_core.generation import AudioChunk, StreamControl

SR = 1000


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _chunks(clock: FakeClock, gen_times: list[float]):
    """Pipeline events: each chunk 'takes' its generation time on the fake clock."""
    for s in gen_times:
        clock.t += s
        yield AudioChunk(index=0, start_sample=0, pcm=np.zeros(SR // 2, np.float32))


def test_allowance_follows_the_slowest_recent_chunk():
    clock = FakeClock()
    gate = LeadGate(SR)
    gate.clock = clock
    gate.release()  # never wait: only the allowance arithmetic is under test
    times = [1.0, 1.0, 3.0] + [1.0] * RECENT_CHUNKS
    allowances = []
    for _ in gate.wrap(_chunks(clock, times), StreamControl()):
        allowances.append(gate.allowance)
    expect = lambda s: int((SAFETY * s + MIN_ALLOWANCE_S) * SR)  # noqa: E731
    assert allowances[:2] == [expect(1.0), expect(1.0)]
    # the 3 s chunk keeps the allowance up for RECENT_CHUNKS chunks, then it falls back
    assert allowances[2 : 2 + RECENT_CHUNKS] == [expect(3.0)] * RECENT_CHUNKS
    assert allowances[2 + RECENT_CHUNKS] == expect(1.0)
    assert gate.bound == gate.max_chunk + expect(3.0)
