"""Saving a long take block by block (issue 18: Stop after a 20-minute "Keep playing" spiked RSS from
0.74 to 4.29 GB -- `save_audio`'s full-scale guard ran the true-peak limiter and the 8x-oversampled
float64 true-peak measure on the whole take at once).

The block path (`levels.true_peak_blocks` / `plan_limit` / `limited_blocks`, `io.save_audio_blocks`,
the store's `file_blocks` over a live journal) must (1) give exactly what one library call on the
whole array gives -- soxr's stream resampler and pedalboard with `reset=False` carry their state
between blocks, so no tolerance is needed: the tests compare bit for bit -- and (2) keep its peak
extra memory bounded, measured with tracemalloc (numpy, soxr and pedalboard outputs are traced),
independent of the take's length.
"""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pedalboard
import soundfile as sf
import soxr
import torch

from app.store import SessionStore, file_blocks
from melody_core.audio.io import FULL_SCALE_GUARD_DBTP, save_audio, save_audio_blocks
from melody_core.audio.levels import (
    BLOCK,
    TRUE_PEAK_RATE,
    LevelSettings,
    array_blocks,
    limit,
    limited_blocks,
    plan_limit,
    true_peak_blocks,
    true_peak_dbtp,
)

SR = 24_000
MB = 1 << 20


def tone_chunks(seconds: float, amp: float, chunk_s: float = 10.0):  # noqa: ANN201 - a BlockSource
    """A re-iterable source of `seconds` of a 220 Hz tone (amplitude `amp`) plus noise, generated
    chunk by chunk (never held whole), like a live journal's chunk files."""
    n, c = int(seconds * SR), int(chunk_s * SR)

    def blocks():  # noqa: ANN202
        for i in range(0, n, c):
            m = min(c, n - i)
            rng = np.random.default_rng(i)
            t = np.arange(i, i + m)
            yield (amp * np.sin(2 * np.pi * 220 * t / SR) + 0.05 * rng.standard_normal(m)).astype(np.float32)

    return blocks


def traced_peak(fn) -> int:  # noqa: ANN001
    """Peak bytes traced by tracemalloc while `fn()` runs (what it allocates beyond what exists)."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_block_true_peak_and_limiter_equal_one_library_call() -> None:
    x = np.concatenate(list(tone_chunks(3.3 * BLOCK / SR, 1.4)()))  # (T,), beyond full scale
    settings = LevelSettings()
    # the true peak: one soxr call on the whole array (BS.1770-4 Annex 2) == the block measure
    factor = math.ceil(TRUE_PEAK_RATE / SR)
    up = soxr.resample(x.astype(np.float64), SR, SR * factor, quality="HQ")
    reference_tp = 20 * math.log10(max(np.abs(up).max(), np.abs(x).max()))
    for block in (4800, 24_001, BLOCK):
        assert true_peak_blocks(array_blocks(x, block)(), SR) == reference_tp
    # the limiter: one pedalboard call at the planned ceiling == the block path, whatever the blocks
    whole = limit(x, SR, settings)
    plan = plan_limit(array_blocks(x), SR, settings)
    assert plan.ceiling_db is not None and plan.gain == 1.0
    one_call = pedalboard.BrickwallLimiter(ceiling_db=plan.ceiling_db, release_ms=settings.release_ms,
                                           lookahead_ms=settings.lookahead_ms, true_peak=True)(x[None], SR)[0]
    assert np.array_equal(whole, one_call)
    for block in (4800, 24_001):
        src = array_blocks(x, block)
        out = np.concatenate(list(limited_blocks(src(), SR, plan_limit(src, SR, settings), settings)), axis=1)
        assert out.shape == (1, len(x))
        assert np.array_equal(out[0], whole)
    assert true_peak_dbtp(whole, SR) <= settings.ceiling_dbtp


def test_loud_take_saves_in_bounded_memory_same_file_as_whole_array(tmp_path) -> None:
    """The limiter path (beyond full scale): peak extra memory is a few blocks, the same for a take
    twice as long, and the file holds exactly the samples the whole-array save writes."""
    peaks = {}
    for seconds in (10, 20):
        src = tone_chunks(seconds, 1.4, chunk_s=5.0)  # several chunks, as a journal has
        peaks[seconds] = traced_peak(lambda: save_audio_blocks(  # noqa: B023 - called at once
            tmp_path / f"blocks{seconds}.flac", src, SR, {"prompt": "x"}, "PCM_24"))  # noqa: B023
    print({k: round(v / MB, 1) for k, v in peaks.items()})
    assert peaks[20] < 24 * MB, peaks  # measured 11.7 MB (a few oversampled blocks in flight)
    assert abs(peaks[20] - peaks[10]) < 2 * MB, peaks  # does not grow with the take (measured 0.1 MB)
    whole = np.concatenate(list(tone_chunks(20, 1.4, chunk_s=5.0)()))
    save_audio(tmp_path / "whole.flac", torch.from_numpy(whole), SR, {"prompt": "x"}, "PCM_24")
    a, _ = sf.read(tmp_path / "blocks20.flac", dtype="float32")
    b, _ = sf.read(tmp_path / "whole.flac", dtype="float32")
    assert np.array_equal(a, b)
    assert np.abs(a).max() <= 1.0  # limited, never clipped: the guard's true-peak ceiling holds
    expected = limit(whole, SR, LevelSettings(ceiling_dbtp=FULL_SCALE_GUARD_DBTP))
    assert np.abs(a - expected).max() <= 2.0 ** -23  # the file is the limiter's output at 24 bits


def test_twenty_minute_journal_recovers_into_a_take_in_bounded_memory(tmp_path) -> None:
    """A 20-minute live stream journalled chunk by chunk (kill -9 before Stop): the restart writes
    its take from the chunk files one at a time. Peak extra memory: the take's samples once (the
    segment's audio the session keeps, read back from the FLAC) plus bounded blocks -- not the
    copies of a whole-array save -- and the file holds exactly the journalled samples."""
    minutes = 20
    store = SessionStore(tmp_path / "data")
    session_id = store.current_session()
    stream = store.begin_live(session_id, "stream", {"prompt": "long"}, "hash")
    src = tone_chunks(60 * minutes, 0.5)
    n = 0
    for chunk in src():
        store.append_live_chunk(stream, chunk, SR)
        n += len(chunk)
    store.close()  # as if killed: the journal is all there is

    recovered: list[SessionStore] = []
    peak = traced_peak(lambda: recovered.append(SessionStore(tmp_path / "data")))
    again = recovered[0]
    take_bytes = n * 4  # 115 MB of float32 samples
    assert any("Recovered 1200.0 s" in line for line in again.recovery), again.recovery
    print(f"peak {peak / MB:.1f} MB for a take of {take_bytes / MB:.1f} MB")
    assert peak < take_bytes + 16 * MB, (peak / MB, take_bytes / MB)  # measured: take + 2.1 MB
    (take,) = again.takes(None, 0)
    path = again.audio_path(take)
    again.close()
    with sf.SoundFile(path) as f:  # compare block by block (no whole copies in the test either)
        assert f.frames == n
        for expected in src():
            got = f.read(len(expected), dtype="float32")
            assert np.abs(got - expected).max() <= 2.0 ** -23  # 24-bit FLAC of the same samples


def test_file_blocks_reads_one_chunk_at_a_time_and_stops_at_the_limit(tmp_path) -> None:
    paths = []
    for i in range(3):
        p = tmp_path / f"c{i}.f32"
        np.full(5, i, np.float32).tofile(p)
        paths.append(p)
    assert [b.tolist() for b in file_blocks(paths)()] == [[0.0] * 5, [1.0] * 5, [2.0] * 5]
    assert [len(b) for b in file_blocks(paths, limit=7)()] == [5, 2]
