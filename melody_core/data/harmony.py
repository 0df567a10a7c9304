"""Harmony of the arranger: scales, functional progressions per genre family and mode, chords as
pitch classes, and voice-led voicings.

*(our choice)* Progressions are written as Roman numerals (upper case major, lower case minor, "o"
diminished, "7"/"maj7" extensions) and parsed with music21's `roman.RomanNumeral`, the maintained
implementation of that notation, once per distinct (numeral, mode) (cached: music21 is slow to
parse). Every progression starts on the tonic chord, so that the pitch content of a clip implies its
labelled key; the arranger still checks that with `symbolic.estimate_key` and re-draws otherwise.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)  # natural minor (the V chord is raised where written "V")

PROGRESSIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "pop": {
        "major": ("I V vi IV", "I vi IV V", "I IV vi V", "I IV I V", "I V IV V", "I iii IV V"),
        "minor": ("i VI III VII", "i VII VI VII", "i iv VI V", "i VI iv V", "i iv VII III"),
    },
    "rock": {
        "major": ("I IV V IV", "I bVII IV I", "I V IV IV", "I IV I V"),
        "minor": ("i VII VI VII", "i VI VII i", "i iv VII i", "i III VII VI"),
    },
    "jazzy": {
        "major": (
            "Imaj7 vi7 ii7 V7",
            "Imaj7 IVmaj7 iii7 vi7",
            "Imaj7 ii7 iii7 IVmaj7",
            "Imaj7 IVmaj7 Imaj7 V7",
        ),
        "minor": ("i7 iv7 VIImaj7 IIImaj7", "i7 VImaj7 iv7 V7", "i7 iv7 i7 V7", "i7 iv7 VImaj7 V7"),
    },
    "jazz": {
        "major": ("Imaj7 vi7 ii7 V7", "Imaj7 I7 IVmaj7 iv7", "Imaj7 ii7 V7 Imaj7", "Imaj7 iii7 ii7 V7"),
        "minor": ("i7 iv7 V7 i7", "i7 VImaj7 ii7 V7", "i7 i7 iv7 V7", "i7 iv7 VII7 IIImaj7"),
    },
    "club": {
        "major": ("I vi IV V", "I IV vi IV", "I iii vi IV", "Imaj7 IVmaj7 Imaj7 IVmaj7"),
        "minor": ("i7 iv7 i7 v7", "i VI VII i", "i iv VI VII", "i7 VImaj7 iv7 i7"),
    },
    "dark": {
        "major": ("I bVI bVII I", "I iii vi IV"),
        "minor": ("i VI i VII", "i i VI V", "i iv i VI", "i VII VI V", "i ii i VI"),
    },
    "funk": {
        "major": ("I7 IV7 I7 IV7", "I7 I7 IV7 V7", "Imaj7 ii7 Imaj7 ii7"),
        "minor": ("i7 iv7 i7 iv7", "i7 i7 IV7 IV7", "i7 VII7 i7 iv7"),
    },
    "ambient": {
        "major": ("Imaj7 IVmaj7 Imaj7 vi7", "I IV I IV", "Imaj7 iii7 IVmaj7 Imaj7"),
        "minor": ("i VI i VI", "i7 iv7 i7 VImaj7", "i III VI i"),
    },
    "cinematic": {
        "major": ("I V vi IV", "I iii IV I", "I bVI bVII I", "I IV vi V"),
        "minor": ("i VI III VII", "i iv VI V", "i VI iv V", "i III VII iv"),
    },
    "synth": {
        "major": ("I vi IV V", "I V vi IV", "vi IV I V"),
        "minor": ("i VI III VII", "i VI VII i", "i iv VI VII"),
    },
}
PITCH_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MINOR_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")


@dataclass(frozen=True)
class Chord:
    """A chord of a progression."""

    figure: str  # Roman numeral as written, e.g. "ii7"
    root: int  # root pitch class offset from the tonic, 0..11
    tones: tuple[int, ...]  # chord tones as pitch-class offsets from the tonic, root first


def scale_of(mode: str) -> tuple[int, ...]:
    return MINOR_SCALE if mode == "minor" else MAJOR_SCALE


@functools.lru_cache(maxsize=512)
def parse_numeral(figure: str, mode: str) -> Chord:
    """A Roman numeral in C major / C minor -> Chord (pitch classes relative to the tonic)."""
    from music21 import roman

    key = "C" if mode == "major" else "c"
    rn = roman.RomanNumeral(figure, key)
    root = rn.root().pitchClass
    tones = [root] + [p.pitchClass for p in rn.pitches if p.pitchClass != root]
    return Chord(figure, root, tuple(dict.fromkeys(tones)))


def progression(family: str, mode: str, rng: random.Random) -> list[Chord]:
    """A four-chord progression of a family in a mode (one chord per bar)."""
    text = rng.choice(PROGRESSIONS[family][mode])
    return [parse_numeral(fig, mode) for fig in text.split()]


def key_name(tonic: int, mode: str) -> str:
    """Conventional spelling of a tonic pitch class: (3, "major") -> "Eb", (1, "minor") -> "C#"."""
    return (MINOR_NAMES if mode == "minor" else PITCH_NAMES)[tonic % 12]


def pitches_in_range(pcs: tuple[int, ...] | list[int], lo: int, hi: int) -> list[int]:
    """All MIDI pitches in [lo, hi] whose pitch class is in `pcs` (absolute pitch classes)."""
    pcset = {p % 12 for p in pcs}
    return [p for p in range(lo, hi + 1) if p % 12 in pcset]


def voice_chord(tones: list[int], prev: list[int] | None, lo: int, hi: int, size: int) -> list[int]:
    """A `size`-note voicing of absolute pitch classes `tones` (root first) inside [lo, hi], chosen
    among the close-position inversions to move least from `prev` (voice leading)."""
    tones = list(tones)[:size] if len(tones) >= size else list(tones) + list(tones)[: size - len(tones)]
    candidates = []
    for inv in range(len(tones)):
        order = tones[inv:] + tones[:inv]
        for base in range(lo, hi - 11):
            if base % 12 != order[0] % 12:
                continue
            voicing, last = [base], base
            for pc in order[1:]:
                nxt = last + ((pc - last) % 12 or 12)
                voicing.append(nxt)
                last = nxt
            if voicing[-1] <= hi:
                candidates.append(voicing)
    if not candidates:
        return sorted(lo + (pc - lo) % 12 for pc in tones)
    if prev is None:
        mid = (lo + hi) / 2
        return min(candidates, key=lambda v: abs(sum(v) / len(v) - mid))
    return min(candidates, key=lambda v: sum(abs(a - b) for a, b in zip(sorted(v), sorted(prev))))
