"""Evaluation sets of `melody eval all` (`melody_core.eval.suite`): which clips and prompts are used.

- Reference set: the corpus's held-out ("valid") clips, id-sorted, at most `clips` of them spread
  evenly (`card.metrics.select_evenly`, as `eval card`), each the central crop of `seconds` on the
  semantic-token grid (`card.metrics.centre_crop`); the caption of a clip is its first caption
  (the tag list for built corpora). Clips shorter than `MIN_CROP_SECONDS` or unreadable are skipped.
- Prompts with known attributes are written with the corpus's own caption builder
  (`data.captions.symbolic_captions`, first caption = the tag list the clips are described by) from
  the attributes of a template clip with the tempo changed; a corpus without those attributes gets a
  short fallback phrase (`fallback_caption`) in the same tag style.
- Templates *(our choice)*: the first clip (by id) of each instrument family, families ordered by
  clip count (most common first, then by name), so the prompts describe what the model saw most.
- Judge prompts (`JUDGE_PROMPTS`, the "judges" section): one prompt per arranger genre (16 of the
  corpus's 19: folk waltz, jazz ballad and chiptune left out as near neighbours of kept ones), each
  in the arranger's own caption phrasing (`data.captions.arrangement_captions`'s sentence "A {word}
  {genre} beat at {bpm} BPM in {key}, led by {lead} with {kit} drums."; `JUDGE_TEMPLATE`), with the
  genre's caption label and words, a tempo inside its BPM range, a lead instrument and drum kit it
  draws from, and for half of them a key (spelled as the captions spell it), so a prompt is
  in-distribution for a bundle trained on the corpus.
- Seams: where the continuation windows of a long generation join, from the pipeline's own window
  plan (`generation.plan.generation_windows`): each window after the first starts generating new
  frames at the previous window's end. Control positions for the same metric are random times at
  least `CONTROL_GAP_S` from every join, from each other and from the clip ends.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

from melody_core import LATENT_HOP, SAMPLE_RATE, SEMANTIC_RATE, TOKEN_SAMPLES
from melody_core.data.captions import symbolic_captions, tempo_words
from melody_core.data.genres import DRUM_KIT_NAMES, GENRE_BY_NAME, gm_family, gm_name
from melody_core.eval.suite.options import SuiteError

MIN_CROP_SECONDS = 1.0  # shorter held-out clips are skipped
CONTROL_GAP_S = 0.5  # control positions keep this distance from every join and from the clip ends
CONTROL_TRIES = 1000  # rejection-sampling attempts per control position


@dataclass
class RefClip:
    """One held-out clip of the reference set."""

    id: str
    path: Path
    caption: str | None  # first caption (None: the clip has none)
    wav: Tensor  # (T,) central crop, T a multiple of TOKEN_SAMPLES
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def family(self) -> str | None:
        fam = self.attributes.get("instrument_family")
        return fam if isinstance(fam, str) and fam else None

    @property
    def bpm(self) -> float | None:
        bpm = self.attributes.get("bpm")
        return float(bpm) if isinstance(bpm, int | float) and not isinstance(bpm, bool) and bpm > 0 else None


def load_reference(
    root: Path, n_clips: int, seconds: float, log=print
) -> tuple[list[RefClip], dict[str, Any]]:
    """The reference set (module docstring) and facts about it: {"valid_clips", "clip_ids", "skipped"}."""
    from melody_core.audio import AudioError, load_audio
    from melody_core.data.corpus import read_corpus
    from melody_core.eval.card.metrics import centre_crop, select_evenly

    records = sorted(read_corpus(root, split="valid"), key=lambda r: r.id)
    if not records:
        raise SuiteError(f'{root}: no held-out clips (split "valid") in this corpus')
    chosen = [records[i] for i in select_evenly(len(records), n_clips)]
    min_len = round(MIN_CROP_SECONDS * SEMANTIC_RATE) * TOKEN_SAMPLES
    clips: list[RefClip] = []
    skipped: dict[str, str] = {}
    for rec in chosen:
        try:
            wav = load_audio(root / rec.path)
        except AudioError as exc:
            skipped[rec.id] = str(exc)
            continue
        start, length = centre_crop(len(wav), seconds, SAMPLE_RATE, TOKEN_SAMPLES)
        if length < min_len:
            skipped[rec.id] = f"shorter than {MIN_CROP_SECONDS:g} s"
            continue
        caption = rec.captions[0] if rec.captions else None
        clips.append(
            RefClip(rec.id, root / rec.path, caption, wav[start : start + length], dict(rec.attributes))
        )
    log(f"reference set: {len(clips)} of {len(records)} held-out clips ({len(skipped)} skipped)")
    if not clips:
        raise SuiteError(f"{root}: none of the {len(chosen)} chosen held-out clips could be read")
    if not any(c.caption for c in clips):
        raise SuiteError(f"{root}: the held-out clips have no captions (needed as prompts)")
    info = {"valid_clips": len(records), "clip_ids": [c.id for c in clips], "skipped": skipped}
    return clips, info


# ------------------------------------------------------------------------------------------ prompts
def fallback_caption(label: str, bpm: float | None = None) -> str:
    """A tag-style prompt for corpora without symbolic attributes: "solo piano, 100 bpm, moderate"."""
    if bpm is None:
        return label
    return f"{label}, {bpm:g} bpm, {tempo_words(bpm)[0]}"


def caption_for(attributes: dict[str, Any], seed_key: str, bpm: float | None = None) -> str:
    """The corpus caption builder's tag list for `attributes` (tempo replaced by `bpm` when given)."""
    a = dict(attributes)
    if bpm is not None:
        a["bpm"] = int(round(bpm))
    try:
        return symbolic_captions(a, seed_key, n=1)[0]
    except (KeyError, TypeError, ValueError, IndexError):
        label = a.get("ensemble_label") or a.get("instrument_family") or "music"
        return fallback_caption(str(label), a.get("bpm") if bpm is not None else None)


def family_templates(root: Path) -> list[tuple[str, dict[str, Any]]]:
    """(family, attributes of its template clip) for every instrument family of the corpus (all
    splits), most common family first (module docstring)."""
    from melody_core.data.corpus import read_corpus

    records = sorted(read_corpus(root), key=lambda r: r.id)
    counts = Counter(r.attributes.get("instrument_family") for r in records)
    counts.pop(None, None)
    first: dict[str, dict[str, Any]] = {}
    for r in records:
        fam = r.attributes.get("instrument_family")
        if isinstance(fam, str) and fam and fam not in first:
            first[fam] = dict(r.attributes)
    order = sorted(first, key=lambda f: (-counts[f], f))
    return [(f, first[f]) for f in order]


def family_labels(root: Path) -> dict[str, list[str]]:
    """family -> the sorted ensemble labels (caption phrases) of its clips in the corpus."""
    from melody_core.data.corpus import read_corpus

    labels: dict[str, set[str]] = {}
    for r in read_corpus(root):
        fam, label = r.attributes.get("instrument_family"), r.attributes.get("ensemble_label")
        if isinstance(fam, str) and fam:
            labels.setdefault(fam, set())
            if isinstance(label, str) and label:
                labels[fam].add(label)
    return {f: sorted(v) for f, v in labels.items()}


def family_class_texts(family: str, labels: list[str]) -> list[str]:
    """Texts whose mean MuLan embedding represents a family in the zero-shot classifier: the family
    word and each ensemble phrase of that family *(our choice)*."""
    return list(dict.fromkeys([family, *labels]))


def tempo_items(
    templates: list[tuple[str, dict[str, Any]]],
    bpms: tuple[float, ...],
    n_seeds: int,
    fallback_labels: tuple[str, ...],
) -> list[dict[str, Any]]:
    """Prompts with a known tempo: every template (or fallback label) x bpm x seed index."""
    items = []
    sources = [(fam, attrs) for fam, attrs in templates] or [
        (label, {"ensemble_label": label}) for label in fallback_labels
    ]
    for fam, attrs in sources:
        for bpm in bpms:
            prompt = caption_for(attrs, f"eval-tempo/{fam}/{bpm}", bpm)
            for s in range(n_seeds):
                items.append({"family": fam, "asked_bpm": float(bpm), "prompt": prompt, "seed_index": s})
    return items


# ------------------------------------------------------------------------------------ judge prompts
JUDGE_TEMPLATE = "{intro} {label} {beat} at {bpm} BPM{key}, led by {lead}{drums}."


@dataclass(frozen=True)
class JudgePrompt:
    """One genre prompt of the judges section (module docstring: Judge prompts)."""

    genre: str  # arranger genre id (`data.genres.GENRES`)
    word: str  # one of the genre's caption words
    bpm: int  # asked tempo, inside the genre's BPM range
    key: str | None  # asked key as the captions spell it ("B-flat major"); None: no key asked
    lead: int  # GM program of the lead, one of the genre's lead programs
    kit: int | None  # GM drum kit, one of the genre's kits (None: a genre without drums)

    @property
    def label(self) -> str:
        return GENRE_BY_NAME[self.genre].label

    @property
    def family(self) -> str:
        """Instrument family of the lead (`data.genres.gm_family`, as the corpus's `instrument_family`)."""
        return gm_family(self.lead)

    @property
    def text(self) -> str:
        intro = ("An " if self.word[:1].lower() in "aeiou" else "A ") + self.word
        drums = f" with {DRUM_KIT_NAMES[self.kit]} drums" if self.kit is not None else ""
        return JUDGE_TEMPLATE.format(intro=intro, label=self.label, beat="beat" if self.kit is not None
                                     else "track", bpm=self.bpm, key=f" in {self.key}" if self.key else "",
                                     lead=gm_name(self.lead), drums=drums)  # fmt: skip


JUDGE_PROMPTS: tuple[JudgePrompt, ...] = (
    JudgePrompt("lofi", "dusty", 80, "C minor", 11, 32),
    JudgePrompt("trap", "dark", 140, "F minor", 80, 25),
    JudgePrompt("boom_bap", "gritty", 90, None, 61, 8),
    JudgePrompt("house", "groovy", 122, "A minor", 81, 24),
    JudgePrompt("techno", "hypnotic", 130, None, 81, 25),
    JudgePrompt("dnb", "rolling", 174, None, 80, 24),
    JudgePrompt("pop", "catchy", 110, "C major", 0, 0),
    JudgePrompt("rock", "driving", 128, None, 30, 16),
    JudgePrompt("funk", "tight", 108, "E minor", 56, 0),
    JudgePrompt("disco", "glittering", 118, None, 49, 0),
    JudgePrompt("jazz_swing", "swinging", 160, "B-flat major", 65, 32),
    JudgePrompt("bossa_nova", "breezy", 130, "D minor", 24, 40),
    JudgePrompt("reggae", "laid-back", 76, None, 16, 0),
    JudgePrompt("ambient", "dreamy", 70, None, 8, None),
    JudgePrompt("cinematic", "epic", 100, "G minor", 60, 48),
    JudgePrompt("synthwave", "neon", 100, None, 81, 24),
)


def genre_class_texts(genre: str) -> list[str]:
    """Texts whose mean MuLan embedding stands for a genre in the zero-shot genre judge *(our choice,
    as `family_class_texts`)*: the caption label, "<label> beat" (or "track" without drums) and the
    label after each of its first two caption words."""
    g = GENRE_BY_NAME[genre]
    return list(dict.fromkeys([g.label, f"{g.label} {'beat' if g.groove else 'track'}",
                               *(f"{w} {g.label}" for w in g.words[:2])]))  # fmt: skip


# ------------------------------------------------------------------------------------------- seams
def chunk_joins_s(
    layout: Any, seconds: float, steps: int, start: str = "window", continuation_steps: int | None = None
) -> tuple[list[float], int]:
    """(join times in seconds inside a `seconds`-long generation, number of DPD windows), from the
    pipeline's window plan: window k > 0 starts generating new frames at window k - 1's end."""
    from melody_core.generation.plan import frames_for_samples, generation_windows

    n_samples = round(seconds * SAMPLE_RATE)
    n_frames = frames_for_samples(n_samples, LATENT_HOP)
    chunk_steps = layout.chunk_steps(steps, continuation_steps)
    windows = list(generation_windows(layout, n_frames, steps, chunk_steps, start))
    joins = [w.end * LATENT_HOP for w in windows[:-1]]  # first new sample of the next window
    return [j / SAMPLE_RATE for j in joins if 0 < j < n_samples], len(windows)


def control_positions(duration_s: float, joins_s: list[float], n: int, seed: int) -> list[float]:
    """`n` random times in the clip at least a gap from every join, from each other and from both
    ends (fewer when the clip has no room left). The gap is CONTROL_GAP_S, or a quarter of the
    closest spacing of two joins when that is smaller (tiny test windows)."""
    spacing = [b - a for a, b in zip(joins_s, joins_s[1:])]
    gap = min([CONTROL_GAP_S, *(d / 4 for d in spacing)])
    rng = random.Random(seed)
    lo, hi = gap, duration_s - gap
    out: list[float] = []
    for _ in range(n):
        for _ in range(CONTROL_TRIES):
            t = rng.uniform(lo, hi) if hi > lo else -1.0
            if t > 0 and all(abs(t - j) >= gap for j in [*joins_s, *out]):
                out.append(t)
                break
    return sorted(out)
