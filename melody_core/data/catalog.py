"""The music21 corpus collections the builder may use, with what is known of their licences.

music21 ships its corpus with a general note (`music21/corpus/license.txt`): the encodings are
distributed with the permission of their encoders, each piece is "to the best of our knowledge"
out of copyright in the US or licensed for use, and some encodings carry non-commercial or other
restrictions stated in the files or folders. The table below records, per collection, what the
files themselves say (copyright / rights lines read from the files of music21 10.x). A collection
is *excluded* when its terms forbid reuse or reserve derived formats (rendered audio is one):
- essenFolksong: its license.txt grants non-commercial distribution and use only;
- palestrina: Humdrum files "(c) 2000 John Miller, rights to all derivative electronic formats
  reserved", with a licensing agreement that is not shipped;
- leadSheet: an Irving Berlin song marked "All Rights Reserved";
- chopin and the Humdrum (.krn) files of other folders: CCARH / kernscores encodings whose terms
  are not stated in the file (the three Bach .krn files reserve derivative formats);
- demos, theoryExercises: test and teaching material, not repertoire.
Where a licence is not stated for an encoding, the entry says so instead of guessing.

*(our choice)* Works are ordered for the build by a weighted interleave of the collections
(`share`), so that any `--hours` cap gives a mix of styles rather than the first collection only.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

MUSIC21_NOTE = (
    "music21 corpus note: encodings distributed with the permission of the encoders; to the best of "
    "music21's knowledge out of copyright in the US or licensed for use, possibly with restrictions"
)
PD_MUSIC = "music: public domain"
UNSTATED = "encoding licence not stated in the files"
SCORE_SUFFIXES = (".mxl", ".xml", ".musicxml", ".abc")
_ABC_X = re.compile(r"^X:\s*(\d+)")  # never .krn (see above), .rntxt or .mus


@dataclass(frozen=True)
class Collection:
    """One folder of the music21 core corpus."""

    name: str  # folder name in music21/corpus
    composer: str  # composer, or "traditional"
    era: str  # "medieval", "renaissance", "baroque", "classical", "romantic", "modern", "folk"
    style: str  # short description used in captions
    license: str  # what is known of the licence (music and encoding)
    share: float  # relative share of the work order (interleave weight); 0 = excluded
    base_bpm: float = 90.0  # beat tempo used when the score gives none
    excluded: str = ""  # reason the collection is not used ("" = used)

    @property
    def source(self) -> str:
        return f"music21:{self.name}"


def _c(name, composer, era, style, license, share, base_bpm=90.0, excluded=""):
    return Collection(name, composer, era, style, license, share, base_bpm, excluded)


# fmt: off
COLLECTIONS: tuple[Collection, ...] = (
    _c("bach", "J. S. Bach", "baroque", "four-part chorale", f"{PD_MUSIC} (J. S. Bach, d. 1750); "
       f"MusicXML encodings: {UNSTATED}", 0.24, 72.0),
    _c("beethoven", "Beethoven", "classical", "string quartet", f"{PD_MUSIC} (d. 1827); {UNSTATED}",
       0.05, 100.0),
    _c("haydn", "Haydn", "classical", "string quartet", f"{PD_MUSIC} (d. 1809); {UNSTATED}", 0.03, 100.0),
    _c("mozart", "Mozart", "classical", "string quartet", f"{PD_MUSIC} (d. 1791); {UNSTATED}", 0.04, 100.0),
    _c("monteverdi", "Monteverdi", "renaissance", "madrigal", f"{PD_MUSIC} (d. 1643); {UNSTATED}",
       0.06, 70.0),
    _c("josquin", "Josquin des Prez", "renaissance", "chanson", f"{PD_MUSIC} (d. 1521); ABC encodings "
       "(c) 1999 Laura E. Conrad, GPL-2.0-or-later", 0.02, 60.0),
    _c("trecento", "trecento composers", "medieval", "Italian ars nova song", f"{PD_MUSIC} (14th "
       f"century); encodings after the PMFC edition, {UNSTATED}", 0.04, 70.0),
    _c("ciconia", "Johannes Ciconia", "medieval", "ars nova song", f"{PD_MUSIC}; encoding CC-BY-SA 3.0 "
       "(M. S. Cuthbert)", 0.01, 70.0),
    _c("luca", "Gaffurius / Luca", "renaissance", "mass movement", f"{PD_MUSIC}; encoding CC-BY-SA 3.0 "
       "(M. S. Cuthbert)", 0.01, 70.0),
    _c("lusitano", "Vicente Lusitano", "renaissance", "madrigal", f"{PD_MUSIC}; {UNSTATED}", 0.01, 70.0),
    _c("corelli", "Corelli", "baroque", "trio sonata", f"{PD_MUSIC}; encoding CC-BY (2014)", 0.01, 90.0),
    _c("handel", "Handel", "baroque", "aria", f"{PD_MUSIC}; {UNSTATED}", 0.01, 60.0),
    _c("cpebach", "C. P. E. Bach", "classical", "keyboard piece", f"{PD_MUSIC}; {UNSTATED}", 0.01, 100.0),
    _c("schubert", "Schubert", "romantic", "song", f"{PD_MUSIC}; encoding by L. Poeppel, {UNSTATED}",
       0.01, 80.0),
    _c("schumann_robert", "Robert Schumann", "romantic", "romantic character piece",
       f"{PD_MUSIC}; {UNSTATED}", 0.01, 80.0),
    _c("schumann_clara", "Clara Schumann", "romantic", "polonaise", f"{PD_MUSIC}; {UNSTATED}", 0.01, 90.0),
    _c("weber", "Weber", "romantic", "romantic piece", f"{PD_MUSIC}; encoding released to the public "
       "domain (1998)", 0.01, 90.0),
    _c("verdi", "Verdi", "romantic", "operatic aria", f"{PD_MUSIC}; {UNSTATED}", 0.01, 120.0),
    _c("joplin", "Scott Joplin", "romantic", "ragtime", f"{PD_MUSIC}; MuseScore community encoding, "
       f"{UNSTATED}", 0.01, 90.0),
    _c("beach", "Amy Beach", "romantic", "art song", "music: public domain (1915); engraving CC-BY-SA "
       "(M. S. Cuthbert 2017)", 0.01, 80.0),
    _c("liliuokalani", "Liliuokalani", "romantic", "Hawaiian song", "music: public domain; encoding CC0",
       0.01, 80.0),
    _c("johnson_j_r", "J. Rosamond Johnson", "modern", "hymn", "music: public domain; encoding CC0",
       0.01, 80.0),
    _c("schoenberg", "Schoenberg", "modern", "atonal piano piece", "music: Op. 19 (1911), public domain "
       f"in the US (published before 1929); {UNSTATED}", 0.01, 60.0),
    _c("webern", "Webern", "modern", "twelve-tone song", "music: Op. 16 (1924), public domain in the US "
       f"(published before 1929); {UNSTATED}", 0.01, 60.0),
    _c("oneills1850", "traditional", "folk", "Irish folk tune", "music: traditional, O'Neill's Music of "
       f"Ireland (1903), public domain; ABC transcriptions by N. Paap and others, {UNSTATED}", 0.12, 100.0),
    _c("ryansMammoth", "traditional", "folk", "fiddle tune", "music: traditional, Ryan's Mammoth "
       f"Collection (1883), public domain; ABC contributed by R. Davies and others, {UNSTATED}",
       0.12, 110.0),
    _c("airdsAirs", "traditional", "folk", "Scottish air", "music: traditional, Aird's Selection "
       f"(1778-1803), public domain; {UNSTATED}", 0.08, 90.0),
    _c("nottingham-dataset", "traditional", "folk", "folk dance tune", "music: traditional; Nottingham "
       f"Music Database ABC (E. Foxley), {UNSTATED}", 0.01, 110.0),
    _c("miscFolk", "traditional", "folk", "fife and minstrel tune", "music: traditional, public domain; "
       f"{UNSTATED}", 0.03, 100.0),
    _c("essenFolksong", "traditional", "folk", "European folk song", "Essen folksong collection: "
       "non-commercial distribution and use only", 0.0, excluded="licence allows non-commercial use only"),
    _c("palestrina", "Palestrina", "renaissance", "mass movement", "Humdrum encodings (c) 2000 John "
       "Miller, derivative electronic formats reserved", 0.0,
       excluded="encoding reserves derivative electronic formats"),
    _c("leadSheet", "Irving Berlin", "modern", "song", "All Rights Reserved", 0.0,
       excluded="copyrighted song"),
    _c("chopin", "Chopin", "romantic", "mazurka", f"{PD_MUSIC}; Humdrum encoding, {UNSTATED}", 0.0,
       excluded="only a Humdrum encoding whose terms are not stated"),
    _c("demos", "various", "modern", "demo", "test material", 0.0, excluded="demo and test files"),
    _c("theoryExercises", "various", "modern", "exercise", "teaching material", 0.0,
       excluded="theory exercises, not repertoire"),
)
# fmt: on
COLLECTION_BY_NAME = {c.name: c for c in COLLECTIONS}


@dataclass(frozen=True)
class WorkRef:
    """One score of the music21 corpus (a file, or one tune of a multi-tune ABC file)."""

    id: str  # stable id, e.g. "bach/bwv66.6" or "oneills1850/0001-0050#12"
    collection: str  # Collection.name
    path: str  # path relative to the corpus folder, as music21's corpus.parse takes it
    number: int | None  # tune number inside an ABC opus, else None
    title: str  # from the metadata, may be ""


def allowed_collections() -> list[Collection]:
    return [c for c in COLLECTIONS if not c.excluded]


def corpus_root() -> Path:
    """The folder of music21's bundled core corpus."""
    import music21

    return Path(music21.__file__).parent / "corpus"


def abc_tunes(path: Path) -> list[tuple[int, str]]:
    """(reference number X:, first title T:) of each tune of an ABC file, first occurrence kept."""
    tunes: dict[int, str] = {}
    current = None
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = _ABC_X.match(line)
        if m:
            current = int(m.group(1))
            if current in tunes:
                current = None  # a repeated number: music21 parses the first one
            else:
                tunes[current] = ""
            continue
        if current is not None and line.startswith("T:") and not tunes[current]:
            tunes[current] = line[2:].strip()
    return sorted(tunes.items())


def all_works(root: Path | None = None) -> list[WorkRef]:
    """Every score of the allowed collections, sorted by id (files of the corpus folder; ABC files
    count one work per tune)."""
    root = root or corpus_root()
    works: list[WorkRef] = []
    for coll in allowed_collections():
        folder = root / coll.name
        if not folder.is_dir():
            continue
        for p in sorted(folder.rglob("*")):
            if not p.is_file() or not p.name.lower().endswith(SCORE_SUFFIXES):
                continue
            rel = p.relative_to(root).as_posix()
            stem = rel.rsplit(".", 1)[0]
            if p.suffix.lower() != ".abc":
                works.append(WorkRef(stem, coll.name, rel, None, ""))
                continue
            works += [WorkRef(f"{stem}#{x}", coll.name, rel, x, title) for x, title in abc_tunes(p)]
    return sorted(works, key=lambda w: w.id)


def order_works(works: list[WorkRef], seed: int) -> list[WorkRef]:
    """Deterministic build order: each collection shuffled, then interleaved by `share`."""
    by_coll: dict[str, list[WorkRef]] = {}
    for w in works:
        by_coll.setdefault(w.collection, []).append(w)
    keyed = []
    for name in sorted(by_coll):
        rng = random.Random(f"{seed}:{name}")
        items = sorted(by_coll[name], key=lambda w: w.id)
        rng.shuffle(items)
        share = COLLECTION_BY_NAME[name].share
        phase = rng.random()
        keyed += [((k + phase) / share, name, w.id, w) for k, w in enumerate(items)]
    keyed.sort(key=lambda t: t[:3])
    return [t[3] for t in keyed]
