"""The genre table of the procedural arranger: tempo range, metre, mode, swing, drum groove, the
General MIDI programs each part draws from, and the words captions use.

*(our choice)* The ranges are the usual production conventions (e.g. house 118-128 BPM, drum and bass
164-178, trap 130-160 written at full tempo with half-time drums). Every genre's BPM is drawn uniformly
from its range, so the corpus covers 60-180 BPM overall. `gm_family` maps a GM program onto the
instrument families the evaluation already uses for the score renders.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Genre:
    """One arranger genre."""

    name: str  # id, e.g. "lofi"
    label: str  # caption phrase, e.g. "lo-fi hip hop"
    bpm: tuple[int, int]  # BPM drawn uniformly from [lo, hi] (beats of the time signature)
    meters: tuple[str, ...]  # time signatures drawn from ("4/4", "3/4", "6/8")
    minor_share: float  # probability of a minor key
    swing: tuple[float, float]  # swing ratio range of the swung subdivision (0.5 = straight)
    swing_unit: float  # swung subdivision in quarter lengths (0.5 = 8ths, 0.25 = 16ths)
    groove: str  # drum groove id in `grooves.GROOVES` ("" = no drums)
    kits: tuple[int, ...]  # GM drum kits (program on channel 10)
    bass: tuple[int, ...]  # GM programs of the bass part
    chords: tuple[int, ...]  # GM programs of the chord / comping part
    lead: tuple[int, ...]  # GM programs of the lead / arpeggio part
    pad: tuple[int, ...]  # GM programs of an optional pad or counter-melody ("" = none)
    bass_style: str  # "roots", "eighths", "walking", "funk", "808", "reggae", "drone", "octaves"
    chord_style: str  # "block", "stabs", "comp", "pad", "strum", "arp", "skank"
    lead_style: str  # "melody" or "arp"
    progressions: str  # progression family in `harmony.PROGRESSIONS`
    words: tuple[str, ...]  # descriptive words for captions
    lead_share: float = 0.8  # probability that a lead / arpeggio part is present


GENRES: tuple[Genre, ...] = (
    Genre("lofi", "lo-fi hip hop", (70, 90), ("4/4",), 0.5, (0.56, 0.64), 0.25, "lofi", (0, 32),
          (33, 32), (4, 5, 0), (11, 4, 26), (89, 52), "roots", "comp", "melody", "jazzy",
          ("chill", "dusty", "mellow", "laid-back", "nostalgic")),
    Genre("trap", "trap", (130, 160), ("4/4",), 0.85, (0.5, 0.5), 0.25, "trap", (25,),
          (38, 39), (0, 89, 49), (80, 81, 10), (91, 88), "808", "pad", "melody", "dark",
          ("dark", "hard", "moody", "aggressive", "heavy 808")),
    Genre("boom_bap", "boom bap hip hop", (84, 96), ("4/4",), 0.6, (0.54, 0.62), 0.25, "boom_bap", (0, 8),
          (33, 34), (0, 4, 48), (61, 11, 56), (48,), "roots", "stabs", "melody", "jazzy",
          ("gritty", "classic", "head-nodding", "old-school")),
    Genre("house", "deep house", (118, 128), ("4/4",), 0.5, (0.5, 0.56), 0.25, "house", (24, 0),
          (38, 39, 33), (4, 0, 89), (81, 80, 11), (89, 90), "octaves", "stabs", "arp", "club",
          ("deep", "groovy", "uplifting", "soulful")),
    Genre("techno", "techno", (124, 138), ("4/4",), 0.8, (0.5, 0.5), 0.25, "techno", (24, 25),
          (38, 39), (90, 89, 50), (81, 80, 87), (95,), "eighths", "stabs", "arp", "dark",
          ("hypnotic", "driving", "dark", "industrial")),
    Genre("dnb", "drum and bass", (164, 178), ("4/4",), 0.7, (0.5, 0.5), 0.25, "dnb", (0, 24),
          (38, 39, 33), (89, 48, 4), (81, 11, 80), (91,), "roots", "pad", "arp", "dark",
          ("fast", "rolling", "energetic", "liquid")),
    Genre("pop", "pop", (96, 124), ("4/4",), 0.3, (0.5, 0.5), 0.5, "pop", (0,),
          (33, 38), (0, 4, 25), (80, 73, 11, 0), (48, 89), "eighths", "block", "melody", "pop",
          ("catchy", "bright", "upbeat", "radio-friendly")),
    Genre("rock", "rock", (100, 150), ("4/4",), 0.4, (0.5, 0.5), 0.5, "rock", (16, 0),
          (34, 33), (29, 30, 25), (30, 29, 27), (48,), "eighths", "strum", "melody", "rock",
          ("driving", "energetic", "raw", "powerful")),
    Genre("funk", "funk", (96, 116), ("4/4",), 0.6, (0.5, 0.56), 0.25, "funk", (0, 8),
          (36, 33), (7, 4, 27), (61, 56, 65, 16), (61,), "funk", "stabs", "melody", "funk",
          ("funky", "tight", "groovy", "syncopated")),
    Genre("disco", "disco", (110, 126), ("4/4",), 0.4, (0.5, 0.5), 0.25, "disco", (0,),
          (33, 38), (48, 4, 27), (49, 56, 61), (48,), "octaves", "stabs", "melody", "pop",
          ("danceable", "glittering", "upbeat", "retro")),
    Genre("jazz_swing", "swing jazz", (120, 180), ("4/4",), 0.4, (0.6, 0.68), 0.5, "swing", (32,),
          (32,), (0, 26), (65, 66, 56, 11, 71), (), "walking", "comp", "melody", "jazz",
          ("swinging", "lively", "classic", "smoky")),
    Genre("jazz_ballad", "jazz ballad", (60, 80), ("4/4", "3/4"), 0.4, (0.58, 0.66), 0.5, "ballad", (40,),
          (32,), (0, 4), (66, 65, 56, 73), (48,), "walking", "comp", "melody", "jazz",
          ("late-night", "intimate", "smoky", "tender")),
    Genre("bossa_nova", "bossa nova", (120, 145), ("4/4",), 0.4, (0.5, 0.5), 0.5, "bossa", (0, 40),
          (32, 33), (24, 0), (73, 65, 11, 24), (48,), "roots", "comp", "melody", "jazz",
          ("breezy", "relaxed", "sunny", "brazilian")),
    Genre("reggae", "reggae", (66, 86), ("4/4",), 0.5, (0.52, 0.6), 0.25, "one_drop", (0,),
          (33, 34), (16, 27, 0), (56, 65, 16), (), "reggae", "skank", "melody", "pop",
          ("laid-back", "sunny", "roots", "skanking")),
    Genre("ambient", "ambient", (60, 90), ("4/4", "3/4"), 0.5, (0.5, 0.5), 0.5, "", (),
          (89, 95, 92), (88, 91, 94, 52), (8, 10, 46, 98, 11), (89,), "drone", "pad", "arp", "ambient",
          ("atmospheric", "dreamy", "floating", "calm", "ethereal"), lead_share=1.0),
    Genre("cinematic", "cinematic orchestral", (70, 130), ("4/4", "3/4", "6/8"), 0.7, (0.5, 0.5), 0.5,
          "cinematic", (48,), (43, 42, 58), (48, 49, 52), (60, 56, 40, 73, 46), (48, 52),
          "octaves", "strum", "melody", "cinematic", ("epic", "dramatic", "heroic", "sweeping", "tense")),
    Genre("chiptune", "chiptune", (120, 170), ("4/4",), 0.4, (0.5, 0.5), 0.25, "chip", (24,),
          (80, 38), (80, 81), (80, 81), (), "octaves", "arp", "melody", "pop",
          ("8-bit", "retro", "video game", "bouncy")),
    Genre("synthwave", "synthwave", (84, 118), ("4/4",), 0.7, (0.5, 0.5), 0.25, "synthwave", (24, 16),
          (38, 39), (89, 90, 50), (81, 80, 87), (88,), "eighths", "pad", "melody", "synth",
          ("retro", "neon", "nostalgic", "80s")),
    Genre("folk_waltz", "folk waltz", (84, 150), ("3/4", "6/8"), 0.4, (0.5, 0.5), 0.5, "waltz", (0, 40),
          (32, 43), (25, 21, 24), (110, 73, 78, 21), (), "roots", "strum", "melody", "pop",
          ("rustic", "lilting", "warm", "acoustic")),
)  # fmt: skip
GENRE_BY_NAME = {g.name: g for g in GENRES}

# (first program, last program, family) in GM order; the first match wins
_FAMILY_RANGES = (
    (0, 3, "piano"), (4, 7, "keyboard"), (46, 46, "harp"), (8, 15, "mallets"), (16, 20, "organ"),
    (21, 23, "keyboard"), (24, 31, "guitar"), (32, 39, "bass"), (40, 45, "strings"), (47, 47, "percussion"),
    (48, 51, "strings"), (52, 54, "choir"), (55, 55, "synth"), (56, 63, "brass"), (64, 79, "woodwinds"),
    (80, 103, "synth"), (110, 110, "strings"), (104, 111, "guitar"), (112, 127, "percussion"),
)  # fmt: skip
GM_NAMES = (
    "acoustic grand piano", "bright piano", "electric grand piano", "honky-tonk piano", "electric piano",
    "FM electric piano", "harpsichord", "clavinet", "celesta", "glockenspiel", "music box", "vibraphone",
    "marimba", "xylophone", "tubular bells", "dulcimer", "drawbar organ", "percussive organ", "rock organ",
    "church organ", "reed organ", "accordion", "harmonica", "tango accordion", "nylon-string guitar",
    "steel-string guitar", "jazz guitar", "clean electric guitar", "muted guitar", "overdriven guitar",
    "distorted guitar", "guitar harmonics", "upright bass", "fingered electric bass", "picked bass",
    "fretless bass", "slap bass", "slap bass", "synth bass", "synth bass", "violin", "viola", "cello",
    "contrabass", "tremolo strings", "pizzicato strings", "harp", "timpani", "string ensemble",
    "slow strings", "synth strings", "synth strings", "choir aahs", "voice oohs", "synth voice",
    "orchestra hit", "trumpet", "trombone", "tuba", "muted trumpet", "French horn", "brass section",
    "synth brass", "synth brass", "soprano sax", "alto sax", "tenor sax", "baritone sax", "oboe",
    "English horn", "bassoon", "clarinet", "piccolo", "flute", "recorder", "pan flute", "blown bottle",
    "shakuhachi", "whistle", "ocarina", "square lead", "sawtooth lead", "calliope lead", "chiff lead",
    "charang lead", "voice lead", "fifths lead", "bass and lead", "new age pad", "warm pad",
    "polysynth pad", "choir pad", "bowed pad", "metallic pad", "halo pad", "sweep pad", "rain pad",
    "soundtrack pad", "crystal", "atmosphere pad", "brightness pad", "goblin pad", "echoes pad",
    "sci-fi pad", "sitar", "banjo", "shamisen", "koto", "kalimba", "bagpipe", "fiddle", "shanai",
    "tinkle bell", "agogo", "steel drums", "woodblock", "taiko drum", "melodic tom", "synth drum",
    "reverse cymbal", "guitar fret noise", "breath noise", "seashore", "bird tweet", "telephone ring",
    "helicopter", "applause", "gunshot",
)  # fmt: skip
DRUM_KIT_NAMES = {0: "standard kit", 8: "room kit", 16: "power kit", 24: "electronic kit", 25: "TR-808 kit",
                  32: "jazz kit", 40: "brush kit", 48: "orchestral percussion"}  # fmt: skip


def gm_family(program: int) -> str:
    """Instrument family of a General MIDI program (0..127)."""
    for lo, hi, family in _FAMILY_RANGES:
        if lo <= program <= hi:
            return family
    return "other"


def gm_name(program: int) -> str:
    return GM_NAMES[program % 128]
