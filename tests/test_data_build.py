"""Micro builds: two short works, a recorded folder; the result is a valid corpus with a manifest."""

import json

import pytest
import torch

from melody_core import SAMPLE_RATE
from melody_core.audio import audio_info, save_audio
from melody_core.data.build import BuildError, BuildSettings, build_corpus
from melody_core.data.catalog import WorkRef
from melody_core.data.corpus import read_corpus
from melody_core.data.render import DEFAULT_SOUNDFONT
from melody_core.data.summary import corpus_summary, label_counts, write_histograms

WORKS = [
    WorkRef("bach/bwv66.6", "bach", "bach/bwv66.6.mxl", None, ""),
    WorkRef("ryansMammoth/AcaciaReel#1", "ryansMammoth", "ryansMammoth/AcaciaReel.abc", 1, "Acacia"),
]


def _micro(out, **kw) -> BuildSettings:
    base = dict(out=str(out), variations=1, max_seconds=11.0, clip_seconds=5.0, min_clip_seconds=4.0,
                arrangement_share=0.0)
    base["workers"] = 1
    return BuildSettings(**{**base, **kw})


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    lines: list[str] = []
    manifest = build_corpus(_micro(out), log=lines.append, works=WORKS)
    return out, manifest, lines


def test_micro_build_is_a_valid_corpus(micro):
    out, manifest, _ = micro
    records = read_corpus(out)
    assert 4 <= len(records) <= 6  # ~11 s per work in ~5 s clips
    assert {r.source for r in records} == {"music21:bach", "music21:ryansMammoth"}
    for r in records:
        info = audio_info(out / r.path)
        assert info.sample_rate == SAMPLE_RATE and info.channels == 1 and info.format == "FLAC"
        assert info.duration_s == pytest.approx(r.seconds, abs=1e-3) and 4.0 <= r.seconds <= 8.0
        assert len(r.captions) == 4 and "public domain" in r.license
        a = r.attributes
        assert {"bpm", "instrument_family", "programs", "key", "mode", "composer"} <= set(a)
        assert f"{a['bpm']} bpm" in r.captions[0]
    assert len({r.split for r in records if r.attributes["work"] == "bach/bwv66.6"}) == 1  # split per work
    assert {r.split for r in records} == {"train", "valid"}  # a tiny corpus still gets a validation work
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(manifest))
    assert manifest["totals"]["clips"] == len(records)
    assert manifest["sources"]["music21:bach"]["license"].startswith("music: public domain")
    assert manifest["versions"]["music21"] and manifest["versions"]["fluidsynth"]
    assert manifest["versions"]["libfluidsynth"].startswith("2.")  # rendered in process
    assert manifest["versions"]["soundfont"]["bytes"] > 0
    assert "essenFolksong" in manifest["excluded_collections"] and manifest["seed"] == 0
    assert not (out / ".tmp").exists()


def test_micro_build_is_deterministic(micro, tmp_path):
    out, _, _ = micro
    build_corpus(_micro(tmp_path), log=lambda _: None, works=WORKS)
    assert (tmp_path / "captions.jsonl").read_text() == (out / "captions.jsonl").read_text()
    for r in read_corpus(out):
        assert (tmp_path / r.path).read_bytes() == (out / r.path).read_bytes()


def test_hours_cap_and_summary(micro, tmp_path):
    build_corpus(_micro(tmp_path, hours=6.0 / 3600), log=lambda _: None, works=WORKS)
    records = read_corpus(tmp_path)
    assert len(records) == 1 and records[0].seconds <= 6.0
    s = corpus_summary(micro[0])
    assert s["kind"] == "built corpus" and s["clips"] == micro[1]["totals"]["clips"]
    assert set(s["sources"]) == {"music21:bach", "music21:ryansMammoth"}


def test_recorded_folder_and_plain_folder_info(tmp_path):
    src = tmp_path / "my music"
    t = torch.arange(12 * SAMPLE_RATE) / SAMPLE_RATE
    save_audio(src / "tone.wav", 0.3 * torch.sin(2 * torch.pi * 220 * t))
    (src / "tone.txt").write_text("a calm sine drone\n", encoding="utf-8")
    save_audio(src / "sub" / "silence.flac", torch.zeros(12 * SAMPLE_RATE))
    s = corpus_summary(src)
    assert s["kind"] == "folder" and s["clips"] == 2 and s["hours"] == pytest.approx(24 / 3600, rel=1e-3)
    assert s["captioned"] == 1
    out = tmp_path / "out"
    lines: list[str] = []
    manifest = build_corpus(
        _micro(out, symbolic=False, recorded=[(str(src), "CC0-1.0")], clip_seconds=6.0), log=lines.append
    )
    records = read_corpus(out)
    assert len(records) == 2 and all(r.captions == ["a calm sine drone"] for r in records)
    assert manifest["sources"] == {
        "recorded:my music": {"clips": 2, "hours": 0.0033, "items": 1, "license": "CC0-1.0",
                              "notes": f"audio folder {src.resolve()}"}
    }  # fmt: skip
    assert any("silence.flac" in ln and "near-silent" in ln for ln in lines)


def test_refuses_to_overwrite_a_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(BuildError, match="not a corpus built by melody"):
        build_corpus(_micro(tmp_path), log=lambda _: None, works=WORKS)
    assert (tmp_path / "notes.txt").exists()


def _arr(out, **kw) -> BuildSettings:
    """Arrangements only, ~60 s of audio in 5 s clips through FluidR3 (no sf3 conversion in tests)."""
    base = dict(out=str(out), symbolic=False, hours=60.0 / 3600, arrangement_seconds=10.0, clip_seconds=5.0,
                min_clip_seconds=4.0, workers=1, soundfont=DEFAULT_SOUNDFONT)  # fmt: skip
    return BuildSettings(**{**base, **kw})


def _files(out) -> dict:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in (out / "clips").rglob("*") if p.is_file()}


def test_killed_build_resumes_without_duplicates(tmp_path, monkeypatch):
    from melody_core.data import build as build_mod

    clean = build_corpus(_arr(tmp_path / "clean"), log=lambda _: None)
    real, calls = build_mod.run_job, []

    def dying(job):
        calls.append(job)
        if len(calls) == 4:
            raise KeyboardInterrupt  # the build is killed while rendering its 4th job
        return real(job)

    monkeypatch.setattr(build_mod, "run_job", dying)
    with pytest.raises(KeyboardInterrupt):
        build_corpus(_arr(tmp_path / "resumed"), log=lambda _: None)
    monkeypatch.setattr(build_mod, "run_job", real)
    lines: list[str] = []
    resumed = build_corpus(_arr(tmp_path / "resumed"), log=lines.append)
    assert any("resuming: 3 finished jobs" in ln for ln in lines)
    assert resumed["totals"]["jobs_resumed"] == 3 and resumed["complete"]
    records = read_corpus(tmp_path / "resumed")
    assert len({r.id for r in records}) == len(records) == clean["totals"]["clips"]
    index = "captions.jsonl"
    assert (tmp_path / "resumed" / index).read_text() == (tmp_path / "clean" / index).read_text()
    assert _files(tmp_path / "resumed") == _files(tmp_path / "clean")  # same clips, no strays
    assert {r.source for r in records} == {"arranger"}
    assert resumed["soundfonts"]["FluidR3_GM"]["clips"] == len(records)


def test_mixed_build_shares_the_hours_and_plots(tmp_path):
    settings = _arr(tmp_path, symbolic=True, hours=30.0 / 3600, arrangement_share=0.5)
    m = build_corpus(settings, log=lambda _: None, works=WORKS)
    hours = {k: v["hours"] for k, v in m["sources"].items()}
    assert 0 < hours["arranger"] <= 15.0 / 3600 + 1e-9
    assert 0 < sum(v for k, v in hours.items() if k.startswith("music21")) <= 15.0 / 3600 + 1e-9
    counts = label_counts(tmp_path)
    assert sum(counts["genre"].values()) == m["totals"]["clips"] and counts["bpm"]
    files = write_histograms(tmp_path, tmp_path / "plots")
    assert all(f.stat().st_size > 1000 and f.read_bytes()[:4] == b"\x89PNG" for f in files)


@pytest.mark.parametrize("content", [None, b"RIFF\x10\x00\x00\x00sfbkLIST", b"not a soundfont at all"])
def test_missing_or_corrupt_soundfont_is_a_one_line_error(tmp_path, content):
    sf = tmp_path / "bad.sf2"
    if content is not None:
        sf.write_bytes(content)
    with pytest.raises(BuildError) as info:
        build_corpus(_arr(tmp_path / "out", soundfont=str(sf)), log=lambda _: None)
    msg = str(info.value)
    assert "bad.sf2" in msg and "\n" not in msg
    assert not (tmp_path / "out").exists()


def _die(job):  # runs in a spawned worker: as a crash in libfluidsynth would end it
    import os

    os._exit(3)


def test_a_worker_that_dies_is_a_one_line_error_not_a_hang():
    from melody_core.data import build as build_mod
    from melody_core.data.clips import ClipSpec
    from melody_core.data.jobs import ArrangementJob

    jobs = iter([ArrangementJob(0, i, "/nonexistent", ClipSpec(), 10.0, ()) for i in range(3)])
    with pytest.raises(BuildError) as info:
        list(build_mod._results(jobs, 2, {}, run=_die))
    assert "worker died while running arr:0" in str(info.value) and "\n" not in str(info.value)
