"""The procedural arranger: deterministic per seed, labels that the notes and the rendered audio confirm."""

from collections import Counter

import pytest
import torch

from melody_core import SAMPLE_RATE
from melody_core.audio import load_audio
from melody_core.data.arranger import arrange, genre_of, plan_arrangement
from melody_core.data.captions import arrangement_captions, short_prompts
from melody_core.data.clips import ClipSpec
from melody_core.data.genres import GENRES
from melody_core.data.jobs import TMP_DIR, ArrangementJob, run_arrangement
from melody_core.data.midi import DRUM_CHANNEL, midi_bytes
from melody_core.data.render import DEFAULT_SOUNDFONT
from melody_core.data.symbolic import estimate_key
from melody_core.eval.tempo import estimate_bpm
from melody_core.eval.token_probe import tonic_pitch_class

N_CHECKED = 2 * len(GENRES)  # every genre twice


def test_arrangement_is_deterministic_per_seed():
    a, b, c = arrange(7, 3), arrange(7, 3), arrange(8, 3)
    assert midi_bytes(a.tracks, a.plan.qpm) == midi_bytes(b.tracks, b.plan.qpm)
    assert a.attributes == b.attributes
    assert midi_bytes(a.tracks, a.plan.qpm) != midi_bytes(c.tracks, c.plan.qpm)


def test_genres_are_balanced_and_bpm_in_range():
    genres = Counter(genre_of(0, i).name for i in range(N_CHECKED))
    assert len(GENRES) >= 16 and set(genres) == {g.name for g in GENRES} and set(genres.values()) == {2}
    for i in range(N_CHECKED):
        p = plan_arrangement(0, i, 40.0)
        assert p.genre.bpm[0] <= p.bpm <= p.genre.bpm[1] and 60 <= p.bpm <= 180
        assert 20.0 <= p.seconds <= 55.0


def test_labelled_key_is_the_key_the_notes_imply():
    for i in range(N_CHECKED):
        arr = arrange(1, i)
        a = arr.attributes
        pitched = [n for t in arr.tracks if t.channel != DRUM_CHANNEL for n in t.notes]
        tonic, mode = estimate_key(pitched)
        assert (tonic, mode) == (tonic_pitch_class(a["tonic"]), a["mode"]), (a["genre"], a["key"])
        drums = [t for t in arr.tracks if t.channel == DRUM_CHANNEL]
        assert bool(drums) == a["drums"]
        assert all(0 <= t.program < 128 for t in arr.tracks)


def test_captions_write_the_bpm_in_at_least_half():
    for i in range(len(GENRES)):
        a = dict(arrange(2, i).attributes, section="main")
        caps = arrangement_captions(a, f"s{i}", 5)
        assert len(set(caps)) == 5 and a["genre_label"] in caps[0]
        assert sum(str(a["bpm"]) in c for c in caps) >= len(caps) / 2
        prompts = short_prompts(a)
        assert prompts[0] == a["genre_label"] and f"{a['bpm']} bpm" in prompts[1]


def _first_index(genre: str, meter: str | None = None) -> int:
    for i in range(10 * len(GENRES)):
        p = plan_arrangement(0, i, 14.0)
        if p.genre.name == genre and (meter is None or p.meter == meter):
            return i
    raise AssertionError(f"no {genre} {meter}")


@pytest.mark.parametrize(
    "genre,meter",
    [("trap", None), ("jazz_swing", None), ("house", None), ("cinematic", "6/8"), ("folk_waltz", "3/4"),
     ("ambient", None)],
)  # fmt: skip
def test_rendered_tempo_matches_the_label(tmp_path, genre, meter):
    """The beat period of the rendered audio (onset-envelope autocorrelation searched within
    -20 %..+25 % of the label, so the 8th-note pulse and the bar are outside) is the label +- 2 %."""
    (tmp_path / TMP_DIR).mkdir()
    index = _first_index(genre, meter)
    job = ArrangementJob(0, index, str(tmp_path), ClipSpec(target_s=30.0, min_s=4.0), 14.0,
                         (("FluidR3_GM", DEFAULT_SOUNDFONT, "MIT"),))  # fmt: skip
    res = run_arrangement(job)
    assert res.records, res.skipped
    rec = res.records[0]
    bpm = rec.attributes["bpm"]
    wav = load_audio(tmp_path / rec.path)
    assert wav.numel() / SAMPLE_RATE == pytest.approx(rec.seconds, abs=0.01)
    measured = estimate_bpm(wav, SAMPLE_RATE, min_bpm=0.8 * bpm, max_bpm=1.25 * bpm)
    assert abs(measured / bpm - 1.0) <= 0.02, (genre, bpm, measured)
    assert rec.attributes["soundfont"] == "FluidR3_GM" and "MIT" in rec.license
    assert torch.isfinite(wav).all() and wav.abs().max() <= 10 ** (-1.0 / 20) + 1e-3
