"""Free-form captions of rendered clips, built only from what is known about them.

The paper (§5.1) trains MuLan on tags paired at random with free-form captions written from the
tags. *(our choice)* Without a language model, captions are drawn from templates: one tag list
plus sentence templates mentioning the instruments, tempo (BPM and a word: slow / andante / fast
...), key and mode, era / composer / style, texture, dynamics, room, and mood words that follow
from mode and tempo (minor + slow -> melancholic ...). Choices use a `random.Random` seeded by
(build seed, clip id), so the captions of a clip never change for a given seed.
"""

from __future__ import annotations

import random
from typing import Any

# (upper bpm bound, plain word, Italian term)
TEMPO_WORDS = (
    (60, "very slow", "largo"),
    (76, "slow", "adagio"),
    (108, "moderate", "andante"),
    (120, "moderate", "moderato"),
    (156, "fast", "allegro"),
    (176, "very fast", "vivace"),
    (10_000, "very fast", "presto"),
)
MOODS = {
    ("minor", "slow"): ("melancholic", "somber", "mournful", "wistful"),
    ("minor", "moderate"): ("pensive", "brooding", "wistful", "serious"),
    ("minor", "fast"): ("dramatic", "restless", "urgent", "stormy"),
    ("major", "slow"): ("calm", "serene", "peaceful", "tender"),
    ("major", "moderate"): ("warm", "graceful", "gentle", "pleasant"),
    ("major", "fast"): ("joyful", "lively", "bright", "energetic"),
}
DYNAMICS_WORDS = {"soft": ("soft", "quiet", "delicate"), "medium": ("moderately loud", "balanced"),
                  "loud": ("loud", "bold", "powerful")}  # fmt: skip
REVERB_WORDS = {"dry": "a dry, close sound", "room": "a small-room ambience",
                "hall": "a spacious hall reverb"}  # fmt: skip
ACCIDENTALS = {"b": "-flat", "#": "-sharp"}
NUM_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}
DEFAULT_NUM_CAPTIONS = 4


def tempo_words(bpm: float) -> tuple[str, str]:
    """(plain word, Italian term) for a beat tempo."""
    for bound, plain, italian in TEMPO_WORDS:
        if bpm < bound:
            return plain, italian
    return TEMPO_WORDS[-1][1], TEMPO_WORDS[-1][2]


def tempo_class(bpm: float) -> str:
    plain, _ = tempo_words(bpm)
    return {"very slow": "slow", "very fast": "fast"}.get(plain, plain)


def mood_words(mode: str, bpm: float) -> tuple[str, ...]:
    return MOODS[("minor" if mode == "minor" else "major", tempo_class(bpm))]


def spell_key(tonic: str, mode: str) -> str:
    """("Eb", "major") -> "E-flat major"."""
    name = tonic[0] + ACCIDENTALS.get(tonic[1:], tonic[1:])
    return f"{name} {mode}"


def texture_phrase(num_parts: int, style: str) -> str:
    """A noun phrase without article, e.g. "solo melody", "four-part chorale harmony"."""
    if num_parts <= 1:
        return "solo melody"
    if "chorale" in style:
        return f"{NUM_WORDS.get(num_parts, str(num_parts))}-part chorale harmony"
    if num_parts == 2:
        return "two-voice counterpoint"
    return f"{NUM_WORDS.get(num_parts, str(num_parts))}-voice polyphony"


def _join(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _article(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _work_phrase(a: dict[str, Any]) -> str:
    if a["composer"] == "traditional":
        return _article(f"traditional {a['style']}")
    return _article(f"{a['era']} {a['style']}") + f" by {a['composer']}"


def symbolic_captions(a: dict[str, Any], seed_key: str, n: int = DEFAULT_NUM_CAPTIONS) -> list[str]:
    """Captions for a rendered clip from its attributes (see `build.symbolic_attributes`):
    a tag list first, then n - 1 distinct sentences."""
    rng = random.Random(seed_key)
    bpm, mode = a["bpm"], a["mode"]
    plain, italian = tempo_words(bpm)
    mood = rng.choice(mood_words(mode, bpm))
    key = spell_key(a["tonic"], mode)
    dyn = rng.choice(DYNAMICS_WORDS[a["dynamics"]])
    instruments = _join(a["instruments"])
    texture = texture_phrase(a["num_parts"], a["style"])
    room = REVERB_WORDS[a["reverb"]]
    work = _work_phrase(a)
    ens = a["ensemble_label"]
    tags = [a["instrument_family"], *a["instruments"], a["era"], a["style"], f"{bpm} bpm", plain, key, mood,
            dyn, texture]  # fmt: skip
    if a["composer"] != "traditional":
        tags.insert(3, a["composer"])
    sentences = [
        f"{_cap(work)} played by {ens}, {plain} tempo at {bpm} BPM, in {key}.",
        f"{_cap(mood)} {a['era']} music for {instruments}, {italian} ({bpm} bpm), {key}.",
        f"{_cap(ens)} performing {work}; {dyn} and {mood}, about {bpm} beats per minute.",
        f"{_cap(plain)}, {mood} {texture} in {key} on {instruments}, with {room}.",
        f"{_cap(instruments)} playing {_article(texture)}: {italian}, {bpm} BPM, {mode} key, {dyn}.",
        f"An instrumental {a['style']} in {key} at {bpm} BPM, {mood} and {dyn}, arranged for {ens}.",
    ]
    rng.shuffle(sentences)
    seen = list(dict.fromkeys(tags))
    return [", ".join(seen)] + sentences[: max(0, n - 1)]


def short_prompts(a: dict[str, Any]) -> list[str]:
    """What a user types rather than a full caption, from a clip's attributes: for an arranged clip
    its genre ("trap", "trap 141 bpm", "dark trap"); else the ensemble
    ("solo piano", "a string quartet"), with its style, its tempo word or its mood. Empty without an
    `ensemble_label` (recorded or user corpora). Used by the LM trainer's text prefixes (the MuLan
    RVQ codes of a two-word prompt differ from those of a long caption of the same clip)."""
    if a.get("genre_label"):  # an arranged clip: genre, genre + tempo, word + genre
        g, bpm = str(a["genre_label"]), a.get("bpm")
        out = [g, f"{g} {bpm} bpm" if bpm else g]
        out += [f"{w} {g}" for w in a.get("words", ())[:2]]
        return list(dict.fromkeys(out))
    label = str(a.get("ensemble_label") or "").strip()
    if not label:
        return []
    bare = label.split(" ", 1)[1] if label.split(" ", 1)[0] in ("a", "an") and " " in label else label
    out = [bare, label]
    if a.get("style"):
        out.append(f"{bare}, {a['style']}")
    bpm = a.get("bpm")
    if isinstance(bpm, int | float) and bpm > 0:
        out.append(f"{tempo_words(float(bpm))[0]} {bare}")
        if a.get("mode"):
            out.append(f"{bare}, {mood_words(str(a['mode']), float(bpm))[0]}")
    return list(dict.fromkeys(out))


METER_WORDS = {"4/4": "four-four", "3/4": "waltz-time three-four", "6/8": "six-eight"}


def arrangement_captions(a: dict[str, Any], seed_key: str, n: int = DEFAULT_NUM_CAPTIONS) -> list[str]:
    """Captions of an arranged clip (attributes of `arranger.labels` plus the render's): a tag list,
    then sentences and producer-style prompts ("dark trap beat 140 bpm"). The BPM is written as a
    number in the tag list and in at least half of the rest (rounded up)."""
    rng = random.Random(seed_key)
    bpm, genre, mode = a["bpm"], a["genre_label"], a["mode"]
    word = rng.choice(a["words"])
    mood = rng.choice(mood_words(mode, bpm))
    key = spell_key(a["tonic"], mode)
    plain, _ = tempo_words(bpm)
    lead, inst = a["lead"], _join(a["instruments"][:3])
    beat = "beat" if a["drums"] else "track"
    drums = f" with {a['drum_kit']} drums" if a["drums"] and a.get("drum_kit") else ""
    section = a.get("section", "")
    meter = METER_WORDS.get(a["time_signature"], a["time_signature"])
    tags = [genre, *a["instruments"], a["drum_kit"] if a["drums"] else "no drums", f"{bpm} bpm", key, word,
            mood, a["density"], a["time_signature"], section]  # fmt: skip
    with_bpm = [
        f"{word} {genre} {beat} {bpm} bpm",
        f"{genre} {beat} at {bpm} bpm in {key}",
        f"{_cap(_article(word))} {genre} {beat} at {bpm} BPM in {key}, led by {lead}{drums}.",
        f"{_cap(mood)} {genre} in {key}, {bpm} BPM, {meter}, featuring {inst}.",
        f"{bpm} bpm {genre}, {mode} key, {word}",
        f"{_cap(genre)} instrumental at {bpm} beats per minute: {inst}, {a['density']} arrangement.",
    ]
    without = [
        f"{word} {genre} {beat}",
        f"{_cap(plain)} {mood} {genre} with {inst}.",
        f"{genre} {beat}, {lead} lead, {key}",
        f"{_cap(_article(a['density']))} {genre} groove in {key}{drums}.",
    ]
    rng.shuffle(with_bpm)
    rng.shuffle(without)
    rest = max(0, n - 1)
    n_bpm = (rest + 1) // 2
    picked = with_bpm[:n_bpm] + rng.sample(with_bpm[n_bpm:] + without, rest - n_bpm)
    rng.shuffle(picked)
    return [", ".join(dict.fromkeys(t for t in tags if t))] + picked
