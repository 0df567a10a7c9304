"""The musical grid (beats, bars, snapping) and the seamless-loop rule of melody_core."""

from __future__ import annotations

import numpy as np
import pytest

from melody_core.audio.grid import bar_beat, bar_seconds, beat_seconds, grid_lines, snap_range, snap_to_bar
from melody_core.audio.levels import LevelSettings, master, true_peak_dbtp
from melody_core.audio.loops import fade_samples, loop_length, periodic, seamless_loop

SR = 24000


def test_beats_bars_and_grid_lines() -> None:
    assert beat_seconds(120) == 0.5 and bar_seconds(120) == 2.0 and bar_seconds(90, 3) == 2.0
    bars, beats = grid_lines(120, 0.0, 4.0)
    np.testing.assert_allclose(bars, [0.0, 2.0, 4.0])
    np.testing.assert_allclose(beats, [0.5, 1.0, 1.5, 2.5, 3.0, 3.5])
    bars, beats = grid_lines(120, 1.2, 3.1)  # only the lines inside the view
    np.testing.assert_allclose(bars, [2.0])
    np.testing.assert_allclose(beats, [1.5, 2.5, 3.0])
    bars, beats = grid_lines(120, 0.0, 3600.0, max_lines=100)  # an hour: beats dropped, bars thinned
    assert len(beats) == 0 and 50 <= len(bars) <= 100 and bars[0] == 0.0
    assert np.allclose(np.diff(bars) % 2.0, 0.0)  # still on bar lines
    assert bar_beat(0.0, 120) == (1, 1.0) and bar_beat(2.75, 120) == (2, 2.5)
    for bad in (0, -5, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            beat_seconds(bad)


def test_snapping_to_bars() -> None:
    assert snap_to_bar(2.9, 120) == 2.0 and snap_to_bar(3.1, 120) == 4.0 and snap_to_bar(-1, 120) == 0.0
    assert snap_range(0.3, 5.1, 120) == (0.0, 6.0)
    assert snap_range(5.1, 0.3, 120) == (0.0, 6.0)  # either drag direction
    assert snap_range(2.1, 2.4, 120) == (2.0, 4.0)  # at least one bar
    assert snap_range(3.0, 9.9, 120, limit_s=7.0) == (4.0, 6.0)  # whole bars inside the audio only
    assert snap_range(6.5, 6.9, 120, limit_s=7.0) == (4.0, 6.0)
    assert snap_range(0.0, 1.0, 120, limit_s=1.5) is None  # not one whole bar
    a, b = snap_range(1.0, 7.0, 97.0)
    bar = 4 * 60 / 97
    assert abs(a / bar - round(a / bar)) < 1e-9 and abs((b - a) / bar - round((b - a) / bar)) < 1e-9


def _sine(n: int, freq: float = 331.7) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(n) / SR)).astype(np.float32)


def _wrap_jump(loop: np.ndarray) -> float:
    """|first - last| sample step across the wrap."""
    return float(abs(loop[0] - loop[-1]))


@pytest.mark.parametrize("where", ["middle", "at_end", "whole"])
def test_seamless_loop_wraps_without_a_click(where: str) -> None:
    x = _sine(6 * SR)  # 331.7 Hz: a 2 s cut is not a whole number of cycles, so a plain cut clicks
    fade = fade_samples(SR)
    start, end = {"middle": (SR, 3 * SR), "at_end": (4 * SR, 6 * SR), "whole": (0, 6 * SR)}[where]
    plain = x[start:end]
    loop = seamless_loop(x, start, end, fade)
    body_step = float(np.abs(np.diff(plain)).max())  # the largest step between neighbours in the music
    assert _wrap_jump(plain) > 3 * body_step  # the plain cut has a step at the wrap ...
    assert _wrap_jump(loop) <= body_step * 1.01  # ... the loop does not
    assert len(loop) == loop_length(len(x), start, end, fade)
    if where == "whole":
        assert len(loop) == end - start - fade  # rule 3: no audio around it, the fade is removed
    else:
        assert len(loop) == end - start  # rules 1 and 2 keep the length (bars stay bars)
    inner = slice(fade, len(loop) - fade)
    np.testing.assert_array_equal(loop[inner], plain[inner])  # only the crossfade region changed
    twice = np.concatenate([loop, loop])
    assert float(np.abs(np.diff(twice)).max()) <= body_step * 1.01  # played twice: no step anywhere


def test_seamless_loop_rejects_bad_ranges() -> None:
    x = _sine(SR)
    for a, b in ((0, 0), (-1, 10), (10, 5), (0, SR + 1)):
        with pytest.raises(ValueError):
            seamless_loop(x, a, b, 100)
    np.testing.assert_array_equal(seamless_loop(x, 10, 20, 0), x[10:20])


def test_periodic_mastering_has_no_step_at_the_wrap() -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(2 * SR) * 0.6).astype(np.float32)  # loud noise: the limiter works hard
    x[: SR // 2] *= 0.05  # a quiet head: a one-shot limiter's gain differs at the two ends
    loop = seamless_loop(x, 0, len(x), fade_samples(SR))
    settings = LevelSettings()
    out = periodic(lambda a: master(a, SR, settings), loop)
    assert len(out) == len(loop)
    assert true_peak_dbtp(out, SR) <= settings.ceiling_dbtp + 0.01
    twice = np.concatenate([out, out])
    ref = master(np.concatenate([loop, loop, loop]), SR, settings)[len(loop):2 * len(loop)]
    np.testing.assert_allclose(out, ref, atol=1e-6)  # it is the middle of the periodic master
    assert np.isfinite(twice).all()
    up = periodic(lambda a: np.repeat(a, 2), loop, ratio=2.0)
    assert len(up) == 2 * len(loop)
    np.testing.assert_array_equal(up, np.repeat(loop, 2))
