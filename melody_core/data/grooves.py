"""Drum grooves of the arranger on the General MIDI percussion channel: step patterns per genre,
fills at phrase ends, crashes on section starts, and humanised timing / velocity.

A pattern is one bar of steps per drum ("x" accent, "o" normal, "g" ghost, "." rest); a 4/4 bar has
16 sixteenth steps, a 3/4 bar 12 and a 6/8 bar 12 (sixteenths of the dotted-quarter beat). Trap and
drum and bass patterns are the usual half-time feel (snare on beat 3) written at full tempo, so the
labelled BPM stays the tempo producers name.
"""

from __future__ import annotations

import random

from melody_core.data.midi import Note

KICK, SIDE_STICK, SNARE, CLAP, CLOSED_HAT, PEDAL_HAT, OPEN_HAT = 36, 37, 38, 39, 42, 44, 46
LOW_TOM, MID_TOM, HIGH_TOM, CRASH, RIDE, TAMBOURINE, COWBELL, SHAKER = 45, 47, 50, 49, 51, 54, 56, 70
CLAVES, HIGH_BONGO, LOW_CONGA = 75, 60, 64
STEP_VELOCITY = {"x": 1.0, "o": 0.8, "g": 0.45}
STEP_QL = 0.25  # one step = a sixteenth note

GROOVES: dict[str, dict[str, dict[int, str]]] = {  # groove -> meter -> drum -> steps
    "lofi": {"4/4": {KICK: "x......o..o.....", SNARE: "....x.......x...",
                     CLOSED_HAT: "o.g.o.g.o.g.o.gg"}},
    "trap": {"4/4": {KICK: "x......x..x....o", CLAP: "........x.......",
                     CLOSED_HAT: "x.o.x.o.x.o.x.o.", OPEN_HAT: "..............o."}},
    "boom_bap": {"4/4": {KICK: "x......x.x......", SNARE: "....x.......x..g",
                         CLOSED_HAT: "o.o.o.o.o.o.o.o."}},
    "house": {"4/4": {KICK: "x...x...x...x...", CLAP: "....x.......x...",
                      OPEN_HAT: "..o...o...o...o.", CLOSED_HAT: "g.g.g.g.g.g.g.g."}},
    "techno": {"4/4": {KICK: "x...x...x...x...", CLOSED_HAT: "..o...o...o...o.",
                       RIDE: "gogogogogogogogo", CLAP: "....o.......o..."}},
    "dnb": {"4/4": {KICK: "x.........x.....", SNARE: "....x.......x...",
                    CLOSED_HAT: "o.o.o.o.o.o.o.o.", RIDE: "..g...g...g...g."}},
    "pop": {"4/4": {KICK: "x.......x.x.....", SNARE: "....x.......x...",
                    CLOSED_HAT: "o.o.o.o.o.o.o.o.", TAMBOURINE: "....o.......o..."}},
    "rock": {"4/4": {KICK: "x.......x.o.....", SNARE: "....x.......x...",
                     CLOSED_HAT: "x.o.x.o.x.o.x.o."}},
    "funk": {"4/4": {KICK: "x..o..o...x..o..", SNARE: "....x..g.g..x..g",
                     CLOSED_HAT: "xoooxoooxoooxooo"}},
    "disco": {"4/4": {KICK: "x...x...x...x...", SNARE: "....x.......x...",
                      OPEN_HAT: "..o...o...o...o.", CLOSED_HAT: "o...o...o...o..."}},
    "swing": {"4/4": {RIDE: "x...o.o.x...o.o.", PEDAL_HAT: "....o.......o...",
                      KICK: "g...g...g...g...", SNARE: "......g.......g."}},
    "ballad": {"4/4": {RIDE: "o...o.g.o...o.g.", PEDAL_HAT: "....o.......o...", SNARE: "g...g...g...g..."},
               "3/4": {RIDE: "o...o.g.o.g.", PEDAL_HAT: "....o...o...", SNARE: "g...g...g..."}},
    "bossa": {"4/4": {KICK: "x..ox..ox..ox..o", SIDE_STICK: "x..x..x...x..x..",
                      CLOSED_HAT: "o.o.o.o.o.o.o.o.", SHAKER: "gogogogogogogogo"}},
    "one_drop": {"4/4": {KICK: "........x.......", SIDE_STICK: "........x.......",
                         CLOSED_HAT: "o.o.o.o.o.o.o.o."}},
    "cinematic": {"4/4": {KICK: "x.......x.......", LOW_TOM: "x...o...x...o...", MID_TOM: "..g...g...g...g."},
                  "3/4": {KICK: "x...........", LOW_TOM: "x...o...o...", MID_TOM: "..g...g...g."},
                  "6/8": {KICK: "x.....x.....", LOW_TOM: "x.....o.....", MID_TOM: "..g.g...g.g."}},
    "chip": {"4/4": {KICK: "x.......x.x.....", SNARE: "....x.......x...", CLOSED_HAT: "o.o.o.o.o.o.o.o."}},
    "synthwave": {"4/4": {KICK: "x...x...x...x...", SNARE: "....x.......x...",
                          CLOSED_HAT: "oooooooooooooooo"}},
    "waltz": {"3/4": {KICK: "x...........", SNARE: "....o...o...", CLOSED_HAT: "o.o.o.o.o.o."},
              "6/8": {KICK: "x.....x.....", SNARE: "......o.....", CLOSED_HAT: "o.o.o.o.o.o."}},
}  # fmt: skip
FILL_DRUMS = (SNARE, HIGH_TOM, MID_TOM, LOW_TOM)


def bar_steps(meter: str) -> int:
    return {"4/4": 16, "3/4": 12, "6/8": 12}[meter]


def pattern(groove: str, meter: str) -> dict[int, str]:
    """The bar pattern of a groove in a meter (a 4/4 pattern is cut to 12 steps for other meters)."""
    by_meter = GROOVES[groove]
    if meter in by_meter:
        return by_meter[meter]
    base = by_meter.get("4/4") or next(iter(by_meter.values()))
    return {d: s[: bar_steps(meter)] for d, s in base.items()}


def drum_bar(
    groove: str,
    meter: str,
    bar_start: float,
    velocity: int,
    rng: random.Random,
    fill: bool = False,
    crash: bool = False,
    sparse: bool = False,
) -> list[Note]:
    """Notes of one bar (ql from the piece start). `fill` replaces the last beat with a snare/tom fill,
    `crash` adds a crash on the downbeat, `sparse` keeps only hats / ride (intros and builds)."""
    steps = bar_steps(meter)
    fill_from = steps - (6 if meter == "6/8" else 4) if fill else steps
    notes = []
    for drum, row in pattern(groove, meter).items():
        if sparse and drum not in (CLOSED_HAT, RIDE, PEDAL_HAT, SHAKER, OPEN_HAT):
            continue
        for i, ch in enumerate(row[:fill_from]):
            if ch == ".":
                continue
            vel = velocity * STEP_VELOCITY[ch]
            notes.append(Note(bar_start + i * STEP_QL, STEP_QL, drum, int(vel)))
    if fill:
        for j, i in enumerate(range(fill_from, steps)):
            drum = FILL_DRUMS[min(len(FILL_DRUMS) - 1, j * len(FILL_DRUMS) // (steps - fill_from))]
            if rng.random() < 0.85:
                notes.append(Note(bar_start + i * STEP_QL, STEP_QL, drum, int(velocity * (0.7 + 0.05 * j))))
    if crash:
        notes.append(Note(bar_start, 1.0, CRASH, int(velocity * 0.9)))
        notes.append(Note(bar_start, STEP_QL, KICK, velocity))
    return notes


def trap_rolls(notes: list[Note], bar_start: float, velocity: int, rng: random.Random) -> list[Note]:
    """Trap hi-hat rolls: a beat of the bar gets 32nd or triplet-16th hats instead of 16ths."""
    beat = rng.randrange(4)
    division = rng.choice((8, 6))  # 32nds or 16th triplets in one beat
    lo, hi = bar_start + beat, bar_start + beat + 1
    kept = [n for n in notes if not (n.pitch == CLOSED_HAT and lo <= n.start < hi)]
    for k in range(division):
        kept.append(Note(lo + k / division, 1 / division, CLOSED_HAT, int(velocity * (0.55 + 0.04 * k))))
    return kept
