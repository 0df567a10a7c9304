"""The procedural multi-track General MIDI arranger: one seeded arrangement per (build seed, index),
with exactly known labels.

An arrangement is a genre (`genres.GENRES`, balanced: every block of len(GENRES) indices holds each
genre once), a BPM drawn uniformly from the genre's range, a time signature, a key and mode, and a
sequence of sections (intro / build / main / break / outro) of whole bars over a four-chord
progression. Parts: drums on the GM percussion channel (genre groove, fills at phrase ends, crash on
section starts), bass, chords / pads / comping, a lead melody or arpeggio and an optional pad or
counter line; all swung and humanised. The tempo is constant, so the labelled BPM is exact.

Key labels are checked, not assumed: the duration-weighted pitch-class histogram of the pitched
notes goes through the Krumhansl-Kessler estimate (`symbolic.estimate_key`), and an arrangement whose
notes imply another key is re-drawn (new progression and melody, same genre / tempo / key) up to
`KEY_ATTEMPTS` times, then with a tonic pedal under the bass (and given up after `PEDAL_ATTEMPTS` more:
`ArrangementError`, the build skips it). Everything is drawn from
`random.Random` objects seeded by strings, so an arrangement is a pure function of (seed, index).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from melody_core.data import grooves, parts
from melody_core.data.genres import DRUM_KIT_NAMES, GENRES, Genre, gm_family, gm_name
from melody_core.data.harmony import Chord, key_name, progression, scale_of
from melody_core.data.midi import DRUM_CHANNEL, Note, Track
from melody_core.data.symbolic import estimate_key

METER_BEAT_QL = {"4/4": 1.0, "3/4": 1.0, "6/8": 1.5}  # ql per labelled beat
METER_BAR_QL = {"4/4": 4.0, "3/4": 3.0, "6/8": 3.0}
SECTION_PLANS = (  # (section, bars) sequences; bar counts are scaled to the target length
    (("intro", 2), ("build", 2), ("main", 4), ("break", 2), ("main", 4)),
    (("intro", 4), ("main", 4), ("break", 2), ("build", 2), ("main", 4)),
    (("build", 2), ("main", 4), ("main", 4), ("break", 2), ("outro", 2)),
    (("intro", 2), ("main", 4), ("break", 4), ("main", 4), ("outro", 2)),
    (("main", 4), ("break", 2), ("build", 2), ("main", 4), ("main", 4)),
)
ARRANGER_VERSION = 2  # bump when a change alters the notes of a (seed, index): resumed builds restart
KEY_ATTEMPTS = 8  # re-draws of progression + melody before the tonic pedal
PEDAL_ATTEMPTS = 4  # re-draws with the pedal before the arrangement is given up
ELECTRONIC_GROOVES = ("trap", "house", "techno", "chip", "synthwave", "dnb")
JITTER_MS = {True: 3.0, False: 12.0}  # timing humanisation (+-) for electronic / played grooves
VELOCITY_JITTER = 8
DENSITY_WORDS = ((8.0, "sparse"), (14.0, "medium"), (float("inf"), "dense"))  # notes/s upper bounds


class ArrangementError(RuntimeError):
    """An arrangement whose notes never implied its key (the build skips it; one line)."""


@dataclass(frozen=True)
class ArrangementPlan:
    """The choices made before any note: cheap to compute, used to plan a build's length."""

    seed: int
    index: int
    genre: Genre
    bpm: int
    meter: str
    tonic: int  # pitch class 0..11
    mode: str  # "major" | "minor"
    sections: tuple[tuple[str, int], ...]  # (section, bars)

    @property
    def id(self) -> str:
        return f"arr{self.seed}-{self.index:07d}"

    @property
    def qpm(self) -> float:
        return self.bpm * METER_BEAT_QL[self.meter]

    @property
    def bar_seconds(self) -> float:
        return METER_BAR_QL[self.meter] * 60.0 / self.qpm

    @property
    def seconds(self) -> float:
        return sum(b for _, b in self.sections) * self.bar_seconds


@dataclass
class Arrangement:
    plan: ArrangementPlan
    tracks: list[Track]
    attributes: dict  # labels of the whole arrangement (see `labels`)
    sections: list[tuple[str, float, float]] = field(default_factory=list)  # (name, start s, end s)


def genre_of(seed: int, index: int) -> Genre:
    """Balanced genres: each block of len(GENRES) consecutive indices is a permutation of GENRES."""
    block = index // len(GENRES)
    order = random.Random(f"genres:{seed}:{block}").sample(range(len(GENRES)), len(GENRES))
    return GENRES[order[index % len(GENRES)]]


def plan_arrangement(seed: int, index: int, target_s: float) -> ArrangementPlan:
    """Genre, BPM, metre, key and sections of arrangement `index` (about `target_s` long)."""
    rng = random.Random(f"plan:{seed}:{index}")
    genre = genre_of(seed, index)
    bpm = rng.randint(*genre.bpm)
    meter = rng.choice(genre.meters)
    tonic = rng.randrange(12)
    mode = "minor" if rng.random() < genre.minor_share else "major"
    base = rng.choice(SECTION_PLANS)
    bar_s = METER_BAR_QL[meter] * 60.0 / (bpm * METER_BEAT_QL[meter])
    total_bars = sum(b for _, b in base)
    scale = max(0.25, target_s / (total_bars * bar_s))
    sections: list[tuple[str, int]] = []
    for name, bars in base:
        n = max(1, round(bars * scale / 2) * 2) if bars * scale >= 1.5 else 1
        sections.append((name, n))
    while sum(b for _, b in sections) * bar_s > target_s * 1.25 and len(sections) > 1:
        sections.pop()
    return ArrangementPlan(seed, index, genre, bpm, meter, tonic, mode, tuple(sections))


def _bars(plan: ArrangementPlan, chords: list[Chord]) -> list[parts.BarContext]:
    bar_ql, beat = METER_BAR_QL[plan.meter], METER_BEAT_QL[plan.meter]
    scale = tuple((plan.tonic + s) % 12 for s in scale_of(plan.mode))
    out, t, k = [], 0.0, 0
    for name, n in plan.sections:
        for i in range(n):
            ch = chords[k % len(chords)]
            last = i == n - 1 or (i % 4 == 3)
            chord = tuple((plan.tonic + p) % 12 for p in ch.tones)
            out.append(parts.BarContext(t, bar_ql, beat, chord, scale,
                                        name, last))  # fmt: skip
            t += bar_ql
            k += 1
    return out


@dataclass
class _Parts:
    drums: list[Note] = field(default_factory=list)
    bass: list[Note] = field(default_factory=list)
    chords: list[Note] = field(default_factory=list)
    lead: list[Note] = field(default_factory=list)
    pad: list[Note] = field(default_factory=list)


ACTIVE = {  # section -> parts playing
    "intro": ("chords", "pad", "drums_sparse"),
    "build": ("chords", "bass", "drums_sparse", "pad"),
    "main": ("chords", "bass", "drums", "lead", "pad"),
    "break": ("chords", "lead", "pad"),
    "outro": ("chords", "bass", "pad", "drums_sparse"),
}


def _compose(plan: ArrangementPlan, rng: random.Random, has_lead: bool, lead_range, pedal: bool) -> tuple:
    g = plan.genre
    chords = progression(g.progressions, plan.mode, rng)
    bars = _bars(plan, chords)
    p = _Parts()
    motif = parts.new_motif(plan.meter, rng)
    prev_voicing: list[int] | None = None
    prev_pad: list[int] | None = None
    pitch = (lead_range[0] + lead_range[1]) // 2
    arp_rate = rng.choice((0.25, 0.5)) if plan.qpm < 110 else 0.5
    up_down = rng.random() < 0.5
    drum_vel = rng.randint(85, 112)
    section_starts = {0} | {i for i in range(1, len(bars)) if bars[i].section != bars[i - 1].section}
    for i, bar in enumerate(bars):
        act = ACTIVE[bar.section]
        next_root = bars[i + 1].chord[0] if i + 1 < len(bars) else bars[0].chord[0]
        if g.groove and ("drums" in act or "drums_sparse" in act):
            sparse = "drums" not in act
            fill = bar.last_of_phrase and not sparse or (bar.section == "build" and bar.last_of_phrase)
            crash = i in section_starts and not sparse and i > 0
            notes = grooves.drum_bar(g.groove, plan.meter, bar.start, drum_vel, rng, fill, crash, sparse)
            if g.groove == "trap" and not sparse and rng.random() < 0.5:
                notes = grooves.trap_rolls(notes, bar.start, drum_vel, rng)
            p.drums += notes
        if "bass" in act:
            p.bass += parts.bass_bar(g.bass_style, bar, next_root, 96, rng)
        notes, prev_voicing = parts.chord_bar(g.chord_style, bar, prev_voicing, 72, rng)
        p.chords += notes
        if g.pad and "pad" in act:
            notes, prev_pad = parts.pad_bar(bar, prev_pad, 58)
            p.pad += notes
        if has_lead and "lead" in act or (has_lead and g.lead_style == "arp" and not g.groove):
            if g.lead_style == "arp":
                p.lead += parts.arp_bar(bar, 84, rng, arp_rate, up_down)
            else:
                if i % 4 == 0:
                    motif = parts.new_motif(plan.meter, rng) if rng.random() < 0.3 else motif
                m = parts.vary(motif, rng) if i % 2 == 1 else motif
                notes, pitch = parts.melody_bar(m, bar, pitch, 88, lead_range, bar.last_of_phrase)
                p.lead += notes
    if pedal:  # the last resort for an ambiguous key: a tonic + fifth pedal under everything
        end = bars[-1].start + bars[-1].length
        root = 36 + (plan.tonic - 36) % 12
        p.bass += [Note(0.0, end, root, 70), Note(0.0, end, root + 7, 60)]
    return bars, p


def _key_matches(plan: ArrangementPlan, p: _Parts) -> bool:
    pitched = p.bass + p.chords + p.lead + p.pad
    return estimate_key(pitched) == (plan.tonic, plan.mode)


def _density(tracks: list[Track], seconds: float) -> tuple[float, str]:
    rate = sum(len(t.notes) for t in tracks) / max(seconds, 1e-6)
    return rate, next(word for bound, word in DENSITY_WORDS if rate < bound)


def arrange(seed: int, index: int, target_s: float = 40.0) -> Arrangement:
    """Arrangement `index` of a build seeded with `seed`."""
    plan = plan_arrangement(seed, index, target_s)
    g = plan.genre
    rng = random.Random(f"arrange:{seed}:{index}")
    programs = {
        "bass": rng.choice(g.bass), "chords": rng.choice(g.chords), "lead": rng.choice(g.lead),
        "pad": rng.choice(g.pad) if g.pad else None, "kit": rng.choice(g.kits) if g.kits else None,
    }  # fmt: skip
    has_lead = rng.random() < g.lead_share
    lead_range = (
        (parts.LEAD_RANGE[0] - 7, parts.LEAD_RANGE[1] - 7)
        if gm_family(programs["lead"]) in ("brass", "guitar")
        else parts.LEAD_RANGE
    )
    swing = round(rng.uniform(*g.swing), 3)
    attempts, pedal = 0, False
    while True:
        sub = random.Random(f"compose:{seed}:{index}:{attempts}")
        bars, p = _compose(plan, sub, has_lead, lead_range, pedal)
        if _key_matches(plan, p):
            break
        attempts += 1
        pedal = attempts >= KEY_ATTEMPTS
        if attempts > KEY_ATTEMPTS + PEDAL_ATTEMPTS:
            raise ArrangementError(f"{plan.id}: no draw implies {plan.tonic} {plan.mode}")
    human = random.Random(f"human:{seed}:{index}")
    jitter = JITTER_MS[g.groove in ELECTRONIC_GROOVES] / 1000.0 * plan.qpm / 60.0  # ms -> ql
    tracks: list[Track] = []
    channels = iter(c for c in range(16) if c != DRUM_CHANNEL)
    for role in ("drums", "bass", "chords", "lead", "pad"):
        notes = getattr(p, role)
        if not notes:
            continue
        notes = parts.humanise(notes, human, swing, g.swing_unit, jitter, VELOCITY_JITTER)
        if role == "drums":
            tracks.append(Track(DRUM_CHANNEL, programs["kit"] or 0, notes, name="drums"))
        else:
            tracks.append(Track(next(channels), programs[role], notes, name=role))
    spb = 60.0 / plan.qpm  # seconds per quarter
    sections, t = [], 0.0
    for name, n in plan.sections:
        end = t + n * METER_BAR_QL[plan.meter] * spb
        sections.append((name, round(t, 3), round(end, 3)))
        t = end
    arr = Arrangement(plan, tracks, {}, sections)
    arr.attributes = labels(arr, programs, has_lead, swing, attempts, pedal)
    return arr


def labels(
    arr: Arrangement, programs: dict, has_lead: bool, swing: float, attempts: int, pedal: bool
) -> dict:
    """The exact labels of an arrangement (clip-level labels are added by the renderer)."""
    plan, g = arr.plan, arr.plan.genre
    pitched = [t for t in arr.tracks if t.channel != DRUM_CHANNEL]
    roles = {t.name: t.program for t in pitched}
    lead_role = "lead" if "lead" in roles else "chords"
    rate, density = _density(arr.tracks, plan.seconds)
    return {
        "kind": "arrangement",
        "work": plan.id,
        "genre": g.name,
        "genre_label": g.label,
        "bpm": plan.bpm,
        "qpm": plan.qpm,
        "time_signature": plan.meter,
        "tonic": key_name(plan.tonic, plan.mode),
        "mode": plan.mode,
        "key": f"{key_name(plan.tonic, plan.mode)} {plan.mode}",
        "swing": swing,
        "drums": bool(g.groove),
        "drum_kit": DRUM_KIT_NAMES.get(programs["kit"], "") if g.groove else "",
        "programs": {role: prog for role, prog in roles.items()},
        "instruments": list(dict.fromkeys(gm_name(p) for p in roles.values())),
        "instrument_family": gm_family(roles[lead_role]),
        "families": sorted({gm_family(p) for p in roles.values()} | ({"drums"} if g.groove else set())),
        "lead": gm_name(roles[lead_role]),
        "lead_style": g.lead_style if has_lead else "",
        "density": density,
        "notes_per_second": round(rate, 2),
        "sections": [list(s) for s in arr.sections],
        "key_redraws": attempts,
        "tonic_pedal": pedal,
        "words": list(g.words),
    }
