"""music21 scores -> plain note lists (per part) and the facts captions are built from.

- `strip_grace_notes`: grace notes have zero length; music21 exports them as note-ons whose
  note-offs FluidSynth can miss (stuck voices), so they are removed before anything else.
- `part_notes`: notes of one part with ties merged (*(our choice)*: merged here instead of with
  music21's `stripTies`, which took ~13 s on a Beethoven quartet movement), zero-length notes,
  chord symbols and unpitched notes dropped.
- `assign_channels`: one MIDI channel per part, never the drum channel.
- `estimate_key`: Krumhansl-Kessler key profiles correlated with the duration-weighted pitch-class
  histogram of the notes (the same method as music21's default key analysis, run on our note lists
  so that it can describe an excerpt).

Repeats are expanded only for short scores (folk tunes, whose repeats are most of their length);
long works are excerpted anyway, and expanding them costs seconds per movement.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from melody_core.data.catalog import WorkRef
from melody_core.data.midi import DRUM_CHANNEL, NUM_CHANNELS, Note

EXPAND_REPEATS_MAX_QL = 256.0  # expand repeats only for scores up to this many quarter notes
TIE_GAP_QL = 1e-3  # a tied continuation must start this close to the end of the held note
DEFAULT_VELOCITY = 80
PITCH_CLASSES = 12
# Krumhansl & Kessler (1982) probe-tone profiles, tonic first
MAJOR_PROFILE = (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88)
MINOR_PROFILE = (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17)
MAJOR_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MINOR_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")


@dataclass
class ScoreFacts:
    """What the builder needs from a score."""

    parts: list[list[Note]]  # per part (top to bottom), notes in quarter lengths
    part_names: list[str]  # instrument / part names from the score ("" if none)
    length_ql: float  # end of the last note, quarter lengths
    beat_ql: float  # length of one beat of the first time signature (1.5 for 6/8)
    time_signature: str  # e.g. "3/4" ("" if none)
    score_qpm: float | None  # first metronome mark, quarter notes per minute (None if none)
    measure_starts: list[float] = field(default_factory=list)  # offsets of the bars, ql


def load_score(work: WorkRef):
    """Parse one work of the music21 corpus (a Score)."""
    from music21 import corpus

    if work.number is None:
        return corpus.parse(work.path)
    return corpus.parse(work.path, number=work.number)


def strip_grace_notes(stream) -> int:
    """Remove every grace note / grace chord from a music21 stream in place; returns the count."""
    graces = [n for n in stream.recurse().notes if n.duration.isGrace]
    for n in graces:
        site = n.activeSite
        if site is not None:
            site.remove(n)
    return len(graces)


def assign_channels(num_parts: int) -> list[int]:
    """One MIDI channel per part (0..15 without the drum channel 9). With more than 15 parts the
    extra parts reuse channels round-robin (note_ticks keeps shared channels consistent)."""
    pool = [c for c in range(NUM_CHANNELS) if c != DRUM_CHANNEL]
    return [pool[i % len(pool)] for i in range(num_parts)]


def _tie_type(element, pitch) -> str | None:
    tie = element.getTie(pitch) if hasattr(element, "getTie") and element.isChord else element.tie
    return tie.type if tie is not None else None


def part_notes(part) -> list[Note]:
    """Pitched notes of a part (chords split into notes) with tied notes merged."""
    from music21 import harmony

    out: list[Note] = []
    held: dict[int, list[float]] = {}  # midi pitch -> [start, end, velocity] of a tied note
    flat = part.flatten()
    for el in flat.notes:
        if isinstance(el, harmony.ChordSymbol) or el.duration.isGrace:
            continue
        dur = float(el.duration.quarterLength)
        if dur <= 0 or not hasattr(el, "pitches"):
            continue
        start = float(el.getOffsetBySite(flat))
        vel = el.volume.velocity if el.volume.velocity is not None else DEFAULT_VELOCITY
        for p in el.pitches:
            midi, tie = int(p.midi), _tie_type(el, p)
            prev = held.get(midi)
            if prev is not None and tie in ("stop", "continue") and abs(prev[1] - start) < TIE_GAP_QL:
                prev[1] = start + dur
                if tie == "stop":
                    out.append(Note(prev[0], prev[1] - prev[0], midi, int(prev[2])))
                    del held[midi]
                continue
            if prev is not None:  # a tie that never stopped: close it
                out.append(Note(prev[0], prev[1] - prev[0], midi, int(prev[2])))
                del held[midi]
            if tie in ("start", "continue"):
                held[midi] = [start, start + dur, vel]
            else:
                out.append(Note(start, dur, midi, int(vel)))
    out += [Note(s, e - s, m, int(v)) for m, (s, e, v) in held.items()]
    out.sort(key=lambda n: (n.start, n.pitch))
    return out


def extract_facts(score) -> ScoreFacts:
    """Grace notes stripped, repeats expanded (short scores), per-part notes and meta facts."""
    from music21 import stream as m21stream

    if score.highestTime <= EXPAND_REPEATS_MAX_QL:
        try:
            score = score.expandRepeats()
        except Exception:  # noqa: BLE001 - malformed repeat marks: keep the score as written
            pass
    strip_grace_notes(score)
    parts = list(score.parts) if isinstance(score, m21stream.Score) and score.parts else [score]
    notes, names = [], []
    for part in parts:
        pn = part_notes(part)
        if pn:
            notes.append(pn)
            inst = part.getInstrument(returnDefault=False)
            names.append(str(inst.instrumentName or inst.partName or "") if inst is not None else "")
    flat = score.flatten()
    sigs = flat.getElementsByClass("TimeSignature")
    marks = flat.getElementsByClass("MetronomeMark")
    qpm = None
    if marks:
        q = marks[0].getQuarterBPM()
        qpm = float(q) if q else None
    measures = parts[0].getElementsByClass("Measure") if parts else []
    starts = sorted({float(m.offset) for m in measures})
    length = max((n.start + n.duration for pn in notes for n in pn), default=0.0)
    return ScoreFacts(
        parts=notes,
        part_names=names,
        length_ql=length,
        beat_ql=float(sigs[0].beatDuration.quarterLength) if sigs else 1.0,
        time_signature=sigs[0].ratioString if sigs else "",
        score_qpm=qpm,
        measure_starts=starts or [0.0],
    )


def estimate_key(notes: list[Note]) -> tuple[int, str]:
    """(tonic pitch class 0..11, "major" | "minor") of a note list (C major if empty)."""
    hist = np.zeros(PITCH_CLASSES)
    for n in notes:
        hist[n.pitch % PITCH_CLASSES] += n.duration
    if hist.sum() <= 0:
        return 0, "major"
    best = (-2.0, 0, "major")
    for mode, profile in (("major", MAJOR_PROFILE), ("minor", MINOR_PROFILE)):
        prof = np.asarray(profile)
        for tonic in range(PITCH_CLASSES):
            r = np.corrcoef(hist, np.roll(prof, tonic))[0, 1]
            if np.isfinite(r) and r > best[0]:
                best = (float(r), tonic, mode)
    return best[1], best[2]


def key_name(tonic: int, mode: str) -> str:
    """Conventional spelling, e.g. (3, "major") -> "Eb", (1, "minor") -> "C#"."""
    names = MAJOR_NAMES if mode == "major" else MINOR_NAMES
    return names[tonic % PITCH_CLASSES]
