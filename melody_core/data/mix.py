"""Mix variety of arranged clips: soundfont, per-track gain and pan, reverb / chorus, EQ tilt and
loudness, all drawn per arrangement from a seeded `random.Random`.

- Gain and pan are MIDI controllers (CC 7 / CC 10) applied by FluidSynth per track before its stereo
  output is summed to mono; reverb and chorus are per-track sends (CC 91 / 93) into FluidSynth's
  effects with a per-clip room size, damping and level.
- EQ tilt *(our choice)*: a first-order split at `TILT_HZ` (scipy.signal Butterworth low-pass), the
  low band scaled by -tilt/2 dB and the rest by +tilt/2 dB: a gentle bright / dark tilt.
- Loudness: every clip is normalised to an integrated loudness drawn from `LUFS_RANGE` with
  pyloudnorm (ITU-R BS.1770-4), then scaled down if its peak would exceed `PEAK_LIMIT_DBFS`; the
  label is the loudness measured after that.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

TILT_HZ = 800.0
TILT_DB = 4.0  # tilt drawn from [-TILT_DB, TILT_DB]
LUFS_RANGE = (-24.0, -12.0)
PEAK_LIMIT_DBFS = -1.0
GAIN_RANGE = {"drums": (90, 120), "bass": (85, 115), "chords": (70, 105), "lead": (85, 120), "pad": (55, 95)}
PAN_SPREAD = {"drums": 0, "bass": 0, "chords": 40, "lead": 25, "pad": 50}  # +- around centre (64)


@dataclass(frozen=True)
class Mix:
    """The mix of one arrangement."""

    soundfont: int  # index into the build's soundfont list
    gains: tuple[tuple[str, int], ...]  # (role, CC 7)
    pans: tuple[tuple[str, int], ...]  # (role, CC 10)
    reverb_send: int  # CC 91 of every track (drums get half)
    chorus_send: int  # CC 93 of the pitched tracks
    room_size: float  # FluidSynth reverb room size 0..1
    reverb_level: float  # FluidSynth reverb level 0..1
    tilt_db: float  # EQ tilt, dB (positive = brighter)
    lufs: float  # loudness target, LUFS

    def options(self) -> tuple[str, ...]:
        """FluidSynth settings (`-o key=value`) of this mix."""
        return (f"synth.reverb.room-size={self.room_size:.2f}", f"synth.reverb.level={self.reverb_level:.2f}",
                "synth.reverb.damp=0.4", "synth.chorus.level=1.5",
                "synth.dynamic-sample-loading=1")  # fmt: skip

    def as_labels(self) -> dict:
        return {"reverb": self.reverb_send, "chorus": self.chorus_send, "room_size": round(self.room_size, 2),
                "eq_tilt_db": round(self.tilt_db, 2), "track_gains": dict(self.gains),
                "track_pans": dict(self.pans)}  # fmt: skip


def draw_mix(rng: random.Random, roles: list[str], n_soundfonts: int) -> Mix:
    gains = tuple((r, rng.randint(*GAIN_RANGE.get(r, (80, 110)))) for r in roles)
    pans = tuple((r, 64 + rng.randint(-PAN_SPREAD.get(r, 30), PAN_SPREAD.get(r, 30))) for r in roles)
    return Mix(
        soundfont=rng.randrange(n_soundfonts),
        gains=gains,
        pans=pans,
        reverb_send=rng.randint(0, 100),
        chorus_send=rng.choice((0, 0, rng.randint(10, 70))),
        room_size=rng.uniform(0.2, 0.9),
        reverb_level=rng.uniform(0.3, 0.9),
        tilt_db=rng.uniform(-TILT_DB, TILT_DB),
        lufs=rng.uniform(*LUFS_RANGE),
    )


def apply_mix(tracks: list, mix: Mix) -> None:
    """Set CC 7 / 10 / 91 / 93 of the tracks (by `Track.name` = role) in place."""
    gains, pans = dict(mix.gains), dict(mix.pans)
    for t in tracks:
        t.volume = gains.get(t.name, 100)
        t.pan = pans.get(t.name, 64)
        t.reverb = mix.reverb_send // (2 if t.name == "drums" else 1)
        t.chorus = 0 if t.name == "drums" else mix.chorus_send


def tilt_eq(wav: np.ndarray, tilt_db: float, sample_rate: int) -> np.ndarray:
    """(T,) -> (T,) with the band below TILT_HZ at -tilt/2 dB and the rest at +tilt/2 dB."""
    from scipy.signal import butter, lfilter

    b, a = butter(1, TILT_HZ / (sample_rate / 2))
    low = lfilter(b, a, wav)
    high = wav - low
    return (low * 10 ** (-tilt_db / 40) + high * 10 ** (tilt_db / 40)).astype(np.float32)


def normalise_loudness(wav: np.ndarray, lufs: float, sample_rate: int) -> tuple[np.ndarray, float]:
    """(T,) -> (scaled, measured integrated loudness in LUFS after the peak guard)."""
    import pyloudnorm

    meter = pyloudnorm.Meter(sample_rate)
    now = meter.integrated_loudness(wav.astype(np.float64))
    if not np.isfinite(now):
        return wav, float("-inf")
    out = wav * 10 ** ((lufs - now) / 20)
    peak = float(np.abs(out).max())
    limit = 10 ** (PEAK_LIMIT_DBFS / 20)
    if peak > limit:
        out = out * (limit / peak)
    return out.astype(np.float32), float(meter.integrated_loudness(out.astype(np.float64)))
