"""Score -> notes -> MIDI: grace notes, channels, ties, note pairing, key, variations, work list."""

from music21 import chord, meter, note, stream, tie
from music21.midi import MidiFile

from melody_core.data.catalog import COLLECTION_BY_NAME, all_works, order_works
from melody_core.data.midi import DRUM_CHANNEL, Note, Track, midi_bytes, note_ticks
from melody_core.data.symbolic import (
    assign_channels,
    estimate_key,
    extract_facts,
    part_notes,
    strip_grace_notes,
)
from melody_core.data.variations import plan_variation, variation_tracks


def _part(pitches: list[str], grace_before: int | None = None) -> stream.Part:
    p = stream.Part()
    p.append(meter.TimeSignature("4/4"))
    for i, name in enumerate(pitches):
        if i == grace_before:
            p.append(note.Note("D5", quarterLength=0.5).getGrace())
        p.append(note.Note(name, quarterLength=1.0))
    return p


def _score(n_parts: int = 4) -> stream.Score:
    s = stream.Score()
    s.insert(0, _part(["C5", "E5", "G5", "C6"], grace_before=2))
    for i in range(1, n_parts):
        s.insert(0, _part(["C4", "E4", "G4", "C4"], grace_before=1 if i == 1 else None))  # same pitches
    return s


def test_strip_grace_notes_removes_only_graces():
    s = _score()
    assert sum(n.duration.isGrace for n in s.recurse().notes) == 2
    assert strip_grace_notes(s) == 2
    assert not any(n.duration.isGrace for n in s.recurse().notes)
    assert len(list(s.recurse().notes)) == 16


def test_part_notes_have_positive_length_even_with_graces():
    notes = part_notes(_part(["C5", "E5", "G5"], grace_before=1))  # not stripped: still skipped
    assert [n.pitch for n in notes] == [72, 76, 79]
    assert all(n.duration > 0 for n in notes)


def test_ties_are_merged_and_chords_split():
    p = stream.Part()
    a, b = note.Note("C4", quarterLength=1.0), note.Note("C4", quarterLength=2.0)
    a.tie, b.tie = tie.Tie("start"), tie.Tie("stop")
    p.append([a, b, chord.Chord(["E4", "G4"], quarterLength=1.0)])
    notes = part_notes(p)
    assert [(n.start, n.duration, n.pitch) for n in notes] == [(0.0, 3.0, 60), (3.0, 1.0, 64), (3.0, 1.0, 67)]


def test_channels_one_per_part_never_drums():
    for n in (1, 4, 9, 10, 15):
        ch = assign_channels(n)
        assert len(set(ch)) == n and DRUM_CHANNEL not in ch
    assert DRUM_CHANNEL not in assign_channels(20)


def _note_pairs(data: bytes) -> dict[int, tuple[int, int]]:
    mf = MidiFile()
    mf.readstr(data)
    counts: dict[int, list[int]] = {}  # 0-based channel -> [note-ons, note-offs] (music21 counts from 1)
    for track in mf.tracks:
        for ev in track.events:
            if ev.isNoteOn():
                counts.setdefault(ev.channel - 1, [0, 0])[0] += 1
            elif ev.isNoteOff():
                counts.setdefault(ev.channel - 1, [0, 0])[1] += 1
    return {ch: tuple(v) for ch, v in counts.items()}


def test_midi_of_same_instrument_parts_pairs_every_note():
    facts = extract_facts(_score(4))
    assert all(n.duration > 0 for pn in facts.parts for n in pn)
    var = plan_variation(facts, 90.0, seed=0, work_id="t", index=0, max_seconds=60.0)
    tracks = variation_tracks(facts, var, seed=0, work_id="t")
    pairs = _note_pairs(midi_bytes(tracks, var.qpm))
    assert sorted(pairs) == sorted(var.channels) and len(pairs) == 4  # four parts, four channels
    assert all(on == off == 4 for on, off in pairs.values())


def test_overlapping_same_pitch_notes_are_cut():
    ticks = note_ticks([Note(0.0, 2.0, 60, 80), Note(1.0, 1.0, 60, 80), Note(3.0, 0.0, 62, 80)])
    assert ticks == [(0, 480, 60, 80), (480, 960, 60, 80)]  # zero-length note dropped
    pairs = _note_pairs(midi_bytes([Track(0, 0, [Note(0, 2, 60, 80), Note(1, 1, 60, 80)])], 120.0))
    assert pairs == {0: (2, 2)}


def test_estimate_key():
    c_major = [Note(i, 1.0, p, 80) for i, p in enumerate([60, 62, 64, 65, 67, 69, 71, 72, 67, 64, 60])]
    assert estimate_key(c_major) == (0, "major")
    a_minor = [Note(i, 1.0, p, 80) for i, p in enumerate([57, 59, 60, 62, 64, 65, 68, 69, 64, 60, 57, 57])]
    assert estimate_key(a_minor) == (9, "minor")


def test_variations_are_deterministic_and_differ():
    facts = extract_facts(_score(4))
    a = [plan_variation(facts, 90.0, 0, "w", i, 60.0) for i in range(3)]
    b = [plan_variation(facts, 90.0, 0, "w", i, 60.0) for i in range(3)]
    assert a == b
    assert len({v.ensemble for v in a}) == 3
    assert all(40 <= v.bpm <= 200 and v.qpm == v.bpm * facts.beat_ql for v in a)


def test_excluded_collections_are_not_in_the_work_list():
    assert COLLECTION_BY_NAME["essenFolksong"].excluded and COLLECTION_BY_NAME["palestrina"].excluded
    works = all_works()
    names = {w.collection for w in works}
    assert "essenFolksong" not in names and "palestrina" not in names and "leadSheet" not in names
    assert not any(w.path.endswith(".krn") or w.path.startswith("essenFolksong/") for w in works)
    assert {"bach", "oneills1850", "monteverdi"} <= names and len(works) > 1000
    order = order_works(works, seed=3)
    assert sorted(w.id for w in order) == sorted(w.id for w in works)
    assert order[:50] == order_works(works, seed=3)[:50] and order[:50] != order_works(works, seed=4)[:50]
    assert len({w.collection for w in order[:40]}) >= 4  # interleaved, not one collection first
