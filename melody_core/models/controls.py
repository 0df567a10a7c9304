"""Explicit BPM / key controls of the semantic LM (issue 16): reading them from text.

One implementation of the rules, used by the trainer (a corpus clip's `bpm` / `key` attributes) and
by generation (the prompt, `GenerationSettings.bpm` / `.key`, CLI `--bpm` / `--key`, the app's
fields). It lives beside the LM (models layer) because both the trainer and generation import it.
Tokens (buckets, null) are `LMConfig`'s business (`semantic_lm`); this module only reads text.

Key index: tonic pitch class (C = 0, C# / Db = 1, ..., B = 11) + 12 for minor, 24 values
(`semantic_lm.KEY_VOCAB`). Enharmonic spellings share an index ("F# major" = "Gb major").

Prompt grammar *(our choice)*, case-insensitive unless said:
- BPM: a number 20..400 followed by "bpm" or "beats per minute" ("120 bpm", "at 85 BPM",
  "120bpm", "(141 bpm)"), or "bpm" / "tempo" followed by it ("BPM: 98", "tempo 120").
- Key: a tonic letter with an optional accidental (#, ♯, b, ♭, "sharp", "flat", "-flat") and a mode
  word (major, maj, minor, min): "in D minor", "F# major", "Bb min", "E-flat major". A lowercase
  tonic counts only after "in " or "key of " ("in a minor"), so "a minor change" is no key.
The first match of each wins; an explicit setting overrides the parsed value (`resolve_controls`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

BPM_RANGE = (20.0, 400.0)  # accepted explicit / parsed tempos (the LM clamps to its buckets' range)
KEY_VOCAB = 24  # 12 tonics x (major, minor); = semantic_lm.KEY_VOCAB
PITCH_CLASSES = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
SHARP_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")  # display spelling
MINOR_WORDS = ("minor", "min")
KEY_EXAMPLES = 'e.g. "D minor", "F# major", "Bb min"'

_ACC = r"#|♯|b|♭|[\s-]?sharp|[\s-]?flat"  # accidentals after a tonic letter
_MODE = r"major|maj|minor|min"  # mode words
_KEY_FULL = re.compile(rf"^\s*(?P<tonic>[a-g])(?P<acc>{_ACC})?\s*(?P<mode>{_MODE})?\.?\s*$", re.IGNORECASE)
# in a prompt: "in <key>" / "key of <key>" (any case), or an uppercase tonic followed by a mode word
_KEY_IN_PROMPT = re.compile(
    rf"(?i:\b(?:in|key\s+of)\s+(?P<t1>[a-g])(?P<a1>{_ACC})?\s*(?P<m1>{_MODE})\b)"
    rf"|\b(?P<t2>[A-G])(?P<a2>(?i:{_ACC}))?\s*(?P<m2>(?i:{_MODE}))\b"
)
_BPM_IN_PROMPT = re.compile(
    r"(?P<n1>\d{2,3}(?:\.\d+)?)\s*(?:bpm|beats\s+per\s+minute)\b"
    r"|\b(?:bpm|tempo)\s*[:=]?\s*(?P<n2>\d{2,3}(?:\.\d+)?)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Controls:
    """Tempo and key of a prompt or a clip (None = not given)."""

    bpm: float | None = None  # beats per minute
    key: int | None = None  # tonic pitch class + 12 * minor

    @property
    def key_name(self) -> str | None:
        return None if self.key is None else key_name(self.key)


def key_index(tonic: str, accidental: str | None, mode: str | None) -> int:
    """("F", "#", "minor") -> 18; a missing mode is major."""
    pc = PITCH_CLASSES[tonic.lower()]
    acc = (accidental or "").strip(" -").lower()
    if acc in ("#", "♯", "sharp"):
        pc += 1
    elif acc in ("b", "♭", "flat"):
        pc -= 1
    minor = (mode or "").lower() in MINOR_WORDS
    return pc % 12 + (12 if minor else 0)


def key_name(index: int) -> str:
    """18 -> "F# minor"."""
    return f"{SHARP_NAMES[index % 12]} {'minor' if index >= 12 else 'major'}"


def parse_key(text: str) -> int | None:
    """A whole key string ("D minor", "F# major", "Bb min", "E-flat", "eb") -> key index, else None."""
    m = _KEY_FULL.match(text or "")
    return None if m is None else key_index(m["tonic"], m["acc"], m["mode"])


def parse_bpm(value: object) -> float | None:
    """A tempo value (number or numeric string) inside `BPM_RANGE` -> float, else None."""
    try:
        bpm = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return bpm if math.isfinite(bpm) and BPM_RANGE[0] <= bpm <= BPM_RANGE[1] else None


def find_controls(prompt: str | None) -> Controls:
    """The BPM and key a prompt names (module docstring: grammar), None where it names none."""
    text = prompt or ""
    bpm = None
    for m in _BPM_IN_PROMPT.finditer(text):
        bpm = parse_bpm(m["n1"] or m["n2"])
        if bpm is not None:
            break
    key = None
    m = _KEY_IN_PROMPT.search(text)
    if m is not None:
        key = (key_index(m["t1"], m["a1"], m["m1"]) if m["t1"] is not None
               else key_index(m["t2"], m["a2"], m["m2"]))
    return Controls(bpm, key)


def resolve_controls(prompt: str | None, bpm: float | None = None, key: str | None = None) -> Controls:
    """Explicit settings (already validated) over what the prompt says."""
    parsed = find_controls(prompt)
    return Controls(
        parsed.bpm if bpm is None else float(bpm),
        parsed.key if not key else parse_key(key),
    )


def clip_controls(attributes: dict) -> Controls:
    """A corpus clip's labels from its attributes (`bpm`, `key` as written by `melody data build`:
    "F# minor"; or `tonic` + `mode`); None where a label is missing or unreadable."""
    bpm = parse_bpm(attributes.get("bpm")) if attributes.get("bpm") is not None else None
    key = None
    if isinstance(attributes.get("key"), str):
        key = parse_key(attributes["key"])
    if key is None and isinstance(attributes.get("tonic"), str) and isinstance(attributes.get("mode"), str):
        key = parse_key(f"{attributes['tonic']} {attributes['mode']}")
    return Controls(bpm, key)


def prompt_with_controls(prompt: str | None, bpm: float | None, key: str | None) -> str | None:
    """The prompt with a tempo and key appended as text ("..., 92 bpm, A minor") unless it says them
    already: how they reach a model whose LM has no control tokens (MuLan reads the text)."""
    extra = [f"{bpm:g} bpm" if bpm else "", key or ""]
    extra = [e for e in extra if e and e.lower() not in (prompt or "").lower()]
    if not extra:
        return prompt
    return ", ".join([p for p in [prompt or ""] if p] + extra)
