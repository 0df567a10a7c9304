"""Levels: loudness normalisation + lookahead true-peak limiter (melody_core.audio.levels)."""

from __future__ import annotations

import numpy as np
import pytest

from melody_core.audio.levels import (
    LIVE_MARGIN_DB,
    OFF,
    LevelSettings,
    LiveMaster,
    integrated_lufs,
    master,
    sample_peak_db,
    true_peak_dbtp,
)

SR = 24_000


def loud(seconds: float = 6.0, amp: float = 1.6, seed: int = 0) -> np.ndarray:
    """A decoder-overshoot-like test signal: a swelling sine well above full scale plus noise."""
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    x = amp * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.5 * t))
    return (x + 0.3 * rng.standard_normal(len(t))).astype(np.float32)


def test_master_respects_true_peak_ceiling_and_loudness_target() -> None:
    x = loud()
    assert true_peak_dbtp(x, SR) > 3.0  # the input really is far over
    y = master(x, SR)
    assert y.shape == x.shape and y.dtype == np.float32
    assert true_peak_dbtp(y, SR) <= -1.0 + 1e-6
    assert sample_peak_db(y) <= -1.0
    # loud input is turned down to about the target (the limiter takes a little more off)
    assert -16.0 < integrated_lufs(y, SR) <= -14.0 + 0.1


def test_master_quiet_input_is_raised_but_capped_and_not_distorted() -> None:
    t = np.arange(4 * SR) / SR
    quiet = (0.01 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    y = master(quiet, SR, LevelSettings(max_gain_db=12.0))
    assert np.allclose(y, quiet * 10 ** (12 / 20), atol=1e-5)  # pure gain: nothing limited


def test_off_switch_passes_audio_unchanged() -> None:
    x = loud(2.0)
    assert np.array_equal(master(x, SR, OFF), x)


def test_stereo_is_limited_linked() -> None:
    x = loud(3.0)
    y = master(np.stack([x, 0.5 * x]), SR)
    assert y.shape == (2, len(x)) and true_peak_dbtp(y, SR) <= -1.0 + 1e-6
    ratio = y[1, SR:] / np.where(np.abs(y[0, SR:]) > 1e-3, y[0, SR:], np.nan)
    assert np.nanmax(np.abs(ratio - 0.5)) < 1e-3  # same gain on both channels


@pytest.mark.parametrize("chunk", [4_800, 24_000, 50_000])
def test_live_master_is_aligned_and_below_the_ceiling(chunk: int) -> None:
    x = loud(8.0, seed=1)
    live = LiveMaster(SR)
    parts = [live.process(x[i:i + chunk]) for i in range(0, len(x), chunk)] + [live.flush()]
    y = np.concatenate(parts)
    assert len(y) == len(x)
    assert sample_peak_db(y) <= -1.0 - LIVE_MARGIN_DB + 1e-4
    # aligned: the same limiter run on the whole clip at once gives the same samples
    whole = master(x * np.float32(live.gain), SR, LevelSettings(target_lufs=None), exact=False)
    assert np.abs(y - whole).max() < 1e-4
