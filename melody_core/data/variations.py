"""Variations of one score: instrumentation, tempo, transposition, dynamics, reverb, excerpt.

Every choice is drawn from a `random.Random` seeded by (build seed, work id, variation index), so a
build is reproducible whatever the worker scheduling. Ensembles are General MIDI programs listed
top voice to bass; a score with n parts takes n programs spread evenly over that list (the top part
gets the first, the bass part the last).

*(our choices)*
- Tempo: the beat tempo of the score (its first metronome mark, else the collection's typical
  tempo) times a factor in [0.7, 1.35], rounded to whole beats per minute and clamped to
  [MIN_BPM, MAX_BPM]; one constant tempo per render, so the stored bpm is exact.
- Dynamics: a velocity level (soft / medium / loud) with a small per-note jitter and an accent on
  the top part. The render is later scaled to a peak level tied to the same dynamics, so loudness
  and timbre both follow it.
- Long works are excerpted (from a bar line) to at most `max_seconds` per variation, so different
  variations of a long movement cover different passages.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from melody_core.data.midi import Note, Track
from melody_core.data.symbolic import ScoreFacts, assign_channels, estimate_key, key_name


@dataclass(frozen=True)
class Ensemble:
    """A General MIDI instrumentation."""

    name: str  # id, e.g. "string_quartet"
    label: str  # caption phrase, e.g. "a string quartet"
    family: str  # instrument family used by the evaluation (strings, piano, organ, ...)
    programs: tuple[int, ...]  # GM programs, top voice first
    max_parts: int = 16  # not used for scores with more parts
    solo_ok: bool = True  # suitable for a single melody line


ENSEMBLES: tuple[Ensemble, ...] = (
    Ensemble("piano", "solo piano", "piano", (0,)),
    Ensemble("string_quartet", "a string quartet", "strings", (40, 40, 41, 42), solo_ok=False),
    Ensemble("string_orchestra", "a string orchestra", "strings", (48, 48, 49, 43), solo_ok=False),
    Ensemble("violin", "a solo violin", "strings", (40,), max_parts=1),
    Ensemble("cello", "a solo cello", "strings", (42,), max_parts=1),
    Ensemble("fiddle", "a folk fiddle", "strings", (110,), max_parts=2),
    Ensemble("organ", "a church organ", "organ", (19,)),
    Ensemble("choir", "a choir singing aahs", "choir", (52,), solo_ok=False),
    Ensemble("guitar", "nylon-string guitar", "guitar", (24,), max_parts=3),
    Ensemble("steel_guitar", "acoustic steel-string guitar", "guitar", (25,), max_parts=3),
    Ensemble("brass", "a brass ensemble", "brass", (56, 60, 57, 58), solo_ok=False),
    Ensemble("trumpet", "a solo trumpet", "brass", (56,), max_parts=1),
    Ensemble("woodwinds", "a woodwind ensemble", "woodwinds", (73, 68, 71, 70), solo_ok=False),
    Ensemble("flute", "a solo flute", "woodwinds", (73,), max_parts=1),
    Ensemble("clarinet", "a solo clarinet", "woodwinds", (71,), max_parts=1),
    Ensemble("whistle", "a tin whistle", "woodwinds", (78,), max_parts=1),
    Ensemble("harp", "a harp", "harp", (46,)),
    Ensemble("mallets", "marimba and vibraphone", "mallets", (11, 12)),
    Ensemble("synth_pad", "warm synth pads", "synth", (89, 88, 89, 38), solo_ok=False),
    Ensemble("synth_lead", "a synth lead", "synth", (81,), max_parts=1),
    Ensemble("harpsichord", "a harpsichord", "keyboard", (6,)),
    Ensemble("electric_piano", "an electric piano", "keyboard", (4,)),
    Ensemble("accordion", "an accordion", "keyboard", (21,), max_parts=2),
)
ENSEMBLE_BY_NAME = {e.name: e for e in ENSEMBLES}
PROGRAM_NAMES = {  # General MIDI programs used above -> caption names
    0: "piano", 4: "electric piano", 6: "harpsichord", 11: "vibraphone", 12: "marimba",
    19: "church organ", 21: "accordion", 24: "nylon-string guitar", 25: "steel-string guitar",
    38: "synth bass", 40: "violin", 41: "viola", 42: "cello", 43: "double bass", 46: "harp",
    48: "string ensemble", 49: "slow strings", 52: "choir", 56: "trumpet", 57: "trombone", 58: "tuba",
    60: "French horn", 68: "oboe", 70: "bassoon", 71: "clarinet", 73: "flute", 78: "tin whistle",
    81: "sawtooth synth lead", 88: "new age pad", 89: "warm pad", 110: "fiddle",
}  # fmt: skip

TEMPO_FACTORS = (0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.35)
MIN_BPM, MAX_BPM = 40, 200
TRANSPOSITIONS = (-4, -3, -2, -1, 0, 0, 1, 2, 3, 4)  # semitones (0 twice: the written key is common)
LOWEST_PITCH, HIGHEST_PITCH = 24, 105  # transpositions that leave this MIDI range are not used
DYNAMICS = {"soft": 52, "medium": 76, "loud": 100}  # level -> base velocity
VELOCITY_JITTER = 6  # +- per note
TOP_PART_ACCENT = 6  # extra velocity for the melody (top part)
REVERB = {"dry": 10, "room": 45, "hall": 100}  # level -> CC 91 send
SUSTAINED_FAMILIES = ("strings", "synth", "choir", "organ")  # get a little chorus (CC 93)
CHORUS_SEND = 30


@dataclass(frozen=True)
class Variation:
    """One rendering of a score (everything the MIDI and the captions need)."""

    index: int  # variation number within the work
    ensemble: str  # Ensemble.name
    programs: tuple[int, ...]  # GM program per part
    channels: tuple[int, ...]  # MIDI channel per part
    bpm: int  # beats per minute (beat of the time signature)
    qpm: float  # quarter notes per minute
    transpose: int  # semitones
    dynamics: str  # "soft" | "medium" | "loud"
    reverb: str  # "dry" | "room" | "hall"
    start_ql: float  # excerpt start (a bar line), quarter lengths
    end_ql: float  # excerpt end, quarter lengths
    tonic: str  # key of the excerpt after transposition, e.g. "Eb"
    mode: str  # "major" | "minor"

    @property
    def seconds(self) -> float:
        return (self.end_ql - self.start_ql) * 60.0 / self.qpm


def programs_for(ensemble: Ensemble, num_parts: int) -> tuple[int, ...]:
    """Spread the ensemble's programs over n parts, top to bottom."""
    progs = ensemble.programs
    if num_parts <= 1 or len(progs) == 1:
        return tuple(progs[0] for _ in range(num_parts))
    return tuple(progs[round(i * (len(progs) - 1) / (num_parts - 1))] for i in range(num_parts))


def suitable_ensembles(num_parts: int) -> list[Ensemble]:
    return [e for e in ENSEMBLES if num_parts <= e.max_parts and (num_parts > 1 or e.solo_ok)]


def _transposition(facts: ScoreFacts, rng: random.Random) -> int:
    pitches = [n.pitch for pn in facts.parts for n in pn]
    lo, hi = (min(pitches), max(pitches)) if pitches else (60, 60)
    ok = [t for t in TRANSPOSITIONS if lo + t >= LOWEST_PITCH and hi + t <= HIGHEST_PITCH]
    return rng.choice(ok) if ok else 0


def _excerpt(facts: ScoreFacts, window_ql: float, rng: random.Random) -> tuple[float, float]:
    if facts.length_ql <= window_ql:
        return 0.0, facts.length_ql
    starts = [s for s in facts.measure_starts if s + window_ql <= facts.length_ql] or [0.0]
    start = rng.choice(starts)
    return start, start + window_ql


def plan_variation(
    facts: ScoreFacts, base_bpm: float, seed: int, work_id: str, index: int, max_seconds: float
) -> Variation:
    """Choose the variation `index` of a work (deterministic in seed, work id and index)."""
    order = suitable_ensembles(len(facts.parts))
    random.Random(f"{seed}:{work_id}:ensembles").shuffle(order)  # variations of a work differ
    ensemble = order[index % len(order)]
    rng = random.Random(f"{seed}:{work_id}:{index}")
    beat_ql = facts.beat_ql if facts.beat_ql > 0 else 1.0
    written_bpm = facts.score_qpm / beat_ql if facts.score_qpm else base_bpm
    bpm = int(min(MAX_BPM, max(MIN_BPM, round(written_bpm * rng.choice(TEMPO_FACTORS)))))
    qpm = bpm * beat_ql
    start, end = _excerpt(facts, max_seconds * qpm / 60.0, rng)
    transpose = _transposition(facts, rng)
    excerpt = [n for pn in facts.parts for n in pn if start <= n.start < end]
    tonic_pc, mode = estimate_key(excerpt)
    return Variation(
        index=index,
        ensemble=ensemble.name,
        programs=programs_for(ensemble, len(facts.parts)),
        channels=tuple(assign_channels(len(facts.parts))),
        bpm=bpm,
        qpm=qpm,
        transpose=transpose,
        dynamics=rng.choice(sorted(DYNAMICS)),
        reverb=rng.choice(sorted(REVERB)),
        start_ql=start,
        end_ql=end,
        tonic=key_name(tonic_pc + transpose, mode),
        mode=mode,
    )


def variation_tracks(facts: ScoreFacts, var: Variation, seed: int, work_id: str) -> list[Track]:
    """MIDI tracks of the excerpt: transposed, re-timed to start at 0, velocities from dynamics."""
    rng = random.Random(f"{seed}:{work_id}:{var.index}:velocity")
    family = ENSEMBLE_BY_NAME[var.ensemble].family
    base = DYNAMICS[var.dynamics]
    tracks = []
    for i, (notes, program, channel) in enumerate(zip(facts.parts, var.programs, var.channels)):
        accent = TOP_PART_ACCENT if i == 0 and len(facts.parts) > 1 else 0
        out = []
        for n in notes:
            if not var.start_ql <= n.start < var.end_ql:
                continue
            end = min(n.start + n.duration, var.end_ql)
            vel = base + accent + rng.randint(-VELOCITY_JITTER, VELOCITY_JITTER)
            out.append(Note(n.start - var.start_ql, end - n.start, n.pitch + var.transpose, vel))
        tracks.append(
            Track(
                channel=channel,
                program=program,
                notes=out,
                name=f"part {i + 1}",
                reverb=REVERB[var.reverb],
                chorus=CHORUS_SEND if family in SUSTAINED_FAMILIES else 0,
            )
        )
    return tracks
