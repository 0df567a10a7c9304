"""Deterministic 16 kHz test signals for the musicnn parity test (pure numpy, no torch).

`packaging/tools/convert_musicnn.py` imports this file by path (inside the TensorFlow virtualenv) to
write TensorFlow's reference outputs, and tests/test_musicnn.py regenerates the same signals, so the
fixture stores only outputs. The noise comes from an integer hash of the sample index (splitmix64),
not from a numpy Generator, so it is bit-identical across numpy versions and platforms.
"""

from __future__ import annotations

import numpy as np

SR = 16_000  # Hz, musicnn's sample rate

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # splitmix64 constants
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def hash_noise(n: int, seed: int) -> np.ndarray:
    """(n,) float64 uniform in [-1, 1): splitmix64 of (seed, index)."""
    with np.errstate(over="ignore"):
        z = np.arange(n, dtype=np.uint64) + np.uint64(seed) * np.uint64(1 << 32)
        z = z * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 52) - 1.0


def _t(seconds: float, sr: int = SR) -> np.ndarray:
    return np.arange(round(seconds * sr), dtype=np.float64) / sr


def chord(seconds: float = 4.0, sr: int = SR) -> np.ndarray:
    """A-minor triad (A3 C4 E4), 3 harmonics each, slow tremolo (any sample rate, for resampling tests)."""
    t = _t(seconds, sr)
    y = np.zeros_like(t)
    for f0 in (220.0, 261.63, 329.63):
        for h, amp in ((1, 1.0), (2, 0.5), (3, 0.25)):
            y += amp * np.sin(2 * np.pi * f0 * h * t)
    return 0.08 * y * (0.75 + 0.25 * np.sin(2 * np.pi * 0.5 * t))


def noise_bursts(seconds: float = 5.0) -> np.ndarray:
    """Hash noise gated into 250 ms bursts every 500 ms with an exponential decay."""
    t = _t(seconds)
    phase = np.mod(t, 0.5)
    gate = np.where(phase < 0.25, np.exp(-phase / 0.08), 0.0)
    return 0.3 * hash_noise(t.size, seed=1) * gate


def clicks(seconds: float = 3.5) -> np.ndarray:
    """Click train at 4 Hz (decaying 1.5 kHz blips) over a 55 Hz kick on every second click."""
    t = _t(seconds)
    tick = np.mod(t, 0.25)
    beat = np.mod(t, 0.5)
    blip = np.exp(-tick / 0.004) * np.sin(2 * np.pi * 1500.0 * tick)
    kick = np.exp(-beat / 0.06) * np.sin(2 * np.pi * 55.0 * beat)
    return 0.4 * blip + 0.5 * kick


def sweep(seconds: float = 6.0) -> np.ndarray:
    """Exponential sine sweep 60 Hz -> 6 kHz plus quiet hash noise."""
    t = _t(seconds)
    f0, f1 = 60.0, 6000.0
    k = np.log(f1 / f0) / seconds
    phase = 2 * np.pi * f0 * (np.exp(k * t) - 1.0) / k
    return 0.25 * np.sin(phase) + 0.01 * hash_noise(t.size, seed=2)


def short_tone(seconds: float = 1.2) -> np.ndarray:
    """A short 440 Hz tone with vibrato: shorter than one 3 s patch (exercises zero-padding)."""
    t = _t(seconds)
    return 0.2 * np.sin(2 * np.pi * 440.0 * t + 3.0 * np.sin(2 * np.pi * 5.0 * t))


SIGNALS = {
    "chord": chord, "noise_bursts": noise_bursts, "clicks": clicks, "sweep": sweep, "short": short_tone,
}


def make_signals() -> dict[str, np.ndarray]:
    """Name -> (T,) float32 waveform at `SR`."""
    return {name: fn().astype(np.float32) for name, fn in SIGNALS.items()}
