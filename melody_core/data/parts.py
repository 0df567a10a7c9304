"""Pitched parts of the arranger: bass lines, chord comping / pads / strums, lead melodies built from
repeating and varied motifs, arpeggios, plus swing and humanisation shared by every part.

All times are quarter lengths (ql) from the piece start; `BarContext` says where a bar is, its chord
(absolute pitch classes, root first) and the scale. *(our choice)* Melodies put chord tones on the
beats and scale steps between them, repeat a one-bar motif (rhythm and contour) and vary its end, and
land on a long chord tone at phrase ends: simple rules that make phrases a listener can follow.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from melody_core.data.harmony import pitches_in_range, voice_chord
from melody_core.data.midi import Note

BASS_RANGE = (28, 52)
CHORD_RANGE = (52, 76)
PAD_RANGE = (55, 81)
LEAD_RANGE = (62, 86)
MOTIF_CELLS = {  # one-bar onset grids in sixteenth steps
    "4/4": ((0, 4, 8, 12), (0, 2, 4, 8, 10, 12), (0, 3, 6, 8, 12), (0, 4, 6, 8, 14), (0, 2, 4, 6, 8, 12),
            (0, 6, 8, 10, 12), (0, 4, 8, 10, 11, 12)),
    "3/4": ((0, 4, 8), (0, 2, 4, 8), (0, 4, 6, 8, 10), (0, 6, 8)),
    "6/8": ((0, 4, 6, 10), (0, 2, 4, 6, 8, 10), (0, 6, 8, 10), (0, 4, 6)),
}  # fmt: skip
STEP = 0.25


@dataclass(frozen=True)
class BarContext:
    """One bar of the arrangement."""

    start: float  # ql from the piece start
    length: float  # ql (4 for 4/4, 3 for 3/4 and 6/8)
    beat: float  # ql per labelled beat (1 or 1.5 for 6/8)
    chord: tuple[int, ...]  # absolute pitch classes, root first
    scale: tuple[int, ...]  # absolute pitch classes of the key's scale
    section: str  # intro / build / main / break / outro
    last_of_phrase: bool  # the bar before a phrase boundary (fills, cadences)


def _root_pitch(pc: int, lo: int = BASS_RANGE[0] + 3) -> int:
    return lo + (pc - lo) % 12


def _beats(bar: BarContext) -> list[float]:
    n = round(bar.length / bar.beat)
    return [bar.start + i * bar.beat for i in range(n)]


def bass_bar(style: str, bar: BarContext, next_root: int, vel: int, rng: random.Random) -> list[Note]:
    """One bar of bass in a style (see `genres.Genre.bass_style`)."""
    root = _root_pitch(bar.chord[0])
    fifth = root + 7 if root + 7 <= BASS_RANGE[1] else root - 5
    beats, s, L = _beats(bar), bar.start, bar.length
    if style == "drone":
        return [Note(s, L, root, vel)]
    if style == "roots":
        out = [Note(s, bar.beat * (2 if len(beats) > 2 else 1.5), root, vel)]
        if len(beats) >= 3:
            out.append(
                Note(beats[-1] if len(beats) == 3 else beats[2], bar.beat, rng.choice((root, fifth)), vel - 8)
            )
        if len(beats) == 4 and rng.random() < 0.5:
            out.append(
                Note(
                    beats[3] + 0.5, 0.5, _root_pitch(next_root) - 1 if rng.random() < 0.5 else fifth, vel - 12
                )
            )
        return out
    if style == "eighths":
        return [Note(s + i * 0.5, 0.45, root, vel - (0 if i % 2 == 0 else 10)) for i in range(int(L / 0.5))]
    if style == "octaves":
        return [Note(s + i * 0.5, 0.4, root + (12 if i % 2 else 0), vel - (6 if i % 2 else 0))
                for i in range(int(L / 0.5))]  # fmt: skip
    if style == "walking":
        tones = [root, root + rng.choice((3, 4)), fifth, root + 12]
        target = _root_pitch(next_root)
        out = []
        for i, b in enumerate(beats):
            if i == 0:
                p = root
            elif i == len(beats) - 1:
                p = target + rng.choice((-1, 1, -2))
            else:
                p = rng.choice(tones[1:])
            out.append(Note(b, bar.beat * 0.9, p, vel - rng.randrange(8)))
        return out
    if style == "funk":
        grid = rng.choice(("x..x..x.x.x..x..", "x.xx...xx..x.x..", "x..x.x..x.xx..x."))[: round(L / STEP)]
        choices = (root, root, root + 12, fifth, root + 10)
        return [Note(s + i * STEP, 0.2, rng.choice(choices), vel - rng.randrange(10))
                for i, ch in enumerate(grid) if ch == "x"]  # fmt: skip
    if style == "808":
        grid = "x......x..x....."[: round(L / STEP)]
        hits = [i for i, ch in enumerate(grid) if ch == "x"]
        out = []
        for j, i in enumerate(hits):
            end = hits[j + 1] if j + 1 < len(hits) else round(L / STEP)
            out.append(
                Note(s + i * STEP, (end - i) * STEP, root if j != 2 else rng.choice((root, fifth)), vel)
            )
        return out
    if style == "reggae":
        grid = "..x.x...x.x.x..."[: round(L / STEP)]
        return [Note(s + i * STEP, 0.4, rng.choice((root, root, fifth, root + 12)), vel - rng.randrange(8))
                for i, ch in enumerate(grid) if ch == "x"]  # fmt: skip
    raise ValueError(f"unknown bass style {style!r}")


def chord_bar(
    style: str,
    bar: BarContext,
    prev: list[int] | None,
    vel: int,
    rng: random.Random,
    size: int = 4,
) -> tuple[list[Note], list[int]]:
    """One bar of the chord part; returns its notes and the voicing (for the next bar's voice leading)."""
    lo, hi = PAD_RANGE if style == "pad" else CHORD_RANGE
    voicing = voice_chord(list(bar.chord), prev, lo, hi, size)
    s, L = bar.start, bar.length
    hits: list[tuple[float, float]]  # (offset ql, length ql)
    if style == "pad":
        hits = [(0.0, L)]
    elif style == "block":
        hits = [(0.0, L / 2), (L / 2, L / 2)] if rng.random() < 0.6 else [(0.0, L)]
    elif style == "stabs":
        grid = rng.choice(("..x...x...x...x.", "x..x..x...x..x..", "..x..x....x..x.."))[: round(L / STEP)]
        hits = [(i * STEP, 0.3) for i, ch in enumerate(grid) if ch == "x"]
    elif style == "comp":
        grid = rng.choice(("x.....x...x.....", "...x..x.....x...", "x.....x.....x..."))[: round(L / STEP)]
        hits = [(i * STEP, rng.choice((0.5, 0.75, 1.0))) for i, ch in enumerate(grid) if ch == "x"]
    elif style == "skank":
        hits = [(i * bar.beat + bar.beat / 2, bar.beat * 0.35) for i in range(round(L / bar.beat))]
    elif style == "strum":
        grid = rng.choice(("x.x.x.x.x.x.x.x.", "x..x..x.x.x.x.x.", "x...x.x...x.x.x."))[: round(L / STEP)]
        hits = [(i * STEP, 0.45) for i, ch in enumerate(grid) if ch == "x"]
    elif style == "arp":
        tones = voicing + [voicing[0] + 12]
        return [Note(s + i * STEP, STEP * 0.9, tones[i % len(tones)], vel - (i % 4) * 4)
                for i in range(round(L / STEP))], voicing  # fmt: skip
    else:
        raise ValueError(f"unknown chord style {style!r}")
    out = []
    for off, length in hits:
        spread = 0.02 if style == "strum" else 0.0  # strums roll the notes upward
        for k, p in enumerate(voicing):
            out.append(Note(s + off + k * spread, max(0.1, min(length, L - off)), p, vel - rng.randrange(6)))
    return out, voicing


def pad_bar(bar: BarContext, prev: list[int] | None, vel: int) -> tuple[list[Note], list[int]]:
    """A sustained three-note pad an octave range above the chords."""
    voicing = voice_chord(list(bar.chord), prev, PAD_RANGE[0] + 5, PAD_RANGE[1], 3)
    return [Note(bar.start, bar.length, p, vel) for p in voicing], voicing


def arp_bar(bar: BarContext, vel: int, rng: random.Random, rate: float, up_down: bool) -> list[Note]:
    """Chord tones cycled upward (or up and down) at `rate` ql per note in the lead range."""
    lo = LEAD_RANGE[0] - 2
    tones = pitches_in_range(bar.chord, lo, lo + 19)[:5]
    cycle = tones + tones[-2:0:-1] if up_down and len(tones) > 2 else tones
    n = round(bar.length / rate)
    return [Note(bar.start + i * rate, rate * 0.9, cycle[i % len(cycle)], vel - (0 if i % 2 == 0 else 10))
            for i in range(n)]  # fmt: skip


@dataclass
class Motif:
    """A one-bar melodic idea: onsets (sixteenth steps) and scale-step moves between notes."""

    cell: tuple[int, ...]
    moves: list[int]


def new_motif(meter: str, rng: random.Random) -> Motif:
    cell = rng.choice(MOTIF_CELLS[meter])
    return Motif(cell, [rng.choice((-2, -1, -1, 1, 1, 2, 0, 3)) for _ in cell])


def vary(motif: Motif, rng: random.Random) -> Motif:
    """The same rhythm with its last one or two moves changed."""
    moves = list(motif.moves)
    for i in range(max(0, len(moves) - rng.choice((1, 2))), len(moves)):
        moves[i] = rng.choice((-2, -1, 1, 2))
    return Motif(motif.cell, moves)


def _scale_step(pitch: int, steps: int, scale: tuple[int, ...], lo: int, hi: int) -> int:
    pool = pitches_in_range(scale, lo, hi)
    idx = min(range(len(pool)), key=lambda i: abs(pool[i] - pitch))
    idx = max(0, min(len(pool) - 1, idx + steps))
    return pool[idx]


def _nearest(pitch: int, pcs: tuple[int, ...], lo: int, hi: int) -> int:
    return min(pitches_in_range(pcs, lo, hi), key=lambda p: (abs(p - pitch), p))


def melody_bar(
    motif: Motif, bar: BarContext, prev: int, vel: int, lead_range: tuple[int, int], cadence: bool
) -> tuple[list[Note], int]:
    """One bar of melody from a motif; returns the notes and the last pitch. Onsets on a beat take the
    nearest chord tone after the move, others a scale step; a cadence bar ends on a long chord tone."""
    lo, hi = lead_range
    steps_per_bar = round(bar.length / STEP)
    beat_steps = round(bar.beat / STEP)
    cell = motif.cell[: max(1, len(motif.cell) - 1)] if cadence else motif.cell
    out, p = [], prev
    for i, step in enumerate(cell):
        p = _scale_step(p, motif.moves[i], bar.scale, lo, hi)
        if step % beat_steps == 0:
            p = _nearest(p, bar.chord, lo, hi)
        end = cell[i + 1] if i + 1 < len(cell) else steps_per_bar
        accent = 8 if step == 0 else 0
        out.append(Note(bar.start + step * STEP, (end - step) * STEP * 0.92, p, vel + accent))
    if cadence:
        last = out[-1]
        root = _nearest(last.pitch, bar.chord[:1], lo, hi)
        out[-1] = Note(last.start, bar.start + bar.length - last.start - 0.05, root, last.velocity)
        p = root
    return out, p


def swing_time(t: float, ratio: float, unit: float) -> float:
    """Move the off-beat `unit` of every pair to `ratio` of the pair (0.5 = straight)."""
    if ratio == 0.5:
        return t
    pair = 2 * unit
    base = (t // pair) * pair
    p = t - base
    if p < unit:
        return base + p * (ratio * pair / unit)
    return base + ratio * pair + (p - unit) * ((1 - ratio) * pair / unit)


def humanise(
    notes: list[Note], rng: random.Random, ratio: float, unit: float, jitter_ql: float, vel_jitter: int
) -> list[Note]:
    """Swing, then random timing (+- jitter_ql) and velocity (+- vel_jitter) deviations."""
    out = []
    for n in notes:
        start = swing_time(n.start, ratio, unit)
        end = swing_time(n.start + n.duration, ratio, unit)
        dt = rng.uniform(-jitter_ql, jitter_ql) if jitter_ql > 0 else 0.0
        start = max(0.0, start + dt)
        vel = max(1, min(127, n.velocity + rng.randint(-vel_jitter, vel_jitter)))
        out.append(Note(start, max(0.05, end - start - 0.01 + dt), n.pitch, vel))
    return out
