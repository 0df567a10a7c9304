"""`melody eval all` (melody_core.eval.suite): sets, budget, comparisons, the whole suite end to end
on a micro random bundle + a synthetic corpus, the README against results.json, and the CLI.

The metric modules written in parallel (musicnn, metrics, tempo, reconstruct, ablation_arch) are
replaced by small fakes with the agreed APIs (`_fake_modules`), so these tests check the suite's own
plumbing and report exactly; `test_suite_with_the_real_metric_modules` runs the sections once more
on the real metrics / tempo / reconstruction code (the embedder and the ablation stay fakes: no
musicnn weights, no training in a unit test).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from micro_bundle import MICRO_OVERRIDES

from melody_core import SAMPLE_RATE
from melody_core.audio import save_audio
from melody_core.checkpoint import random_bundle
from melody_core.commands import CLIError, eval_suite
from melody_core.data.corpus import ClipRecord, write_records
from melody_core.eval.musicnn import TAGS as MUSICNN_TAGS
from melody_core.eval.suite import run as suite
from melody_core.eval.suite.compare import comparisons, f_fad, f_hz, f_mcc, f_num, f_pct
from melody_core.eval.suite.options import SECTIONS, SuiteOptions
from melody_core.eval.suite.sets import caption_for, chunk_joins_s, control_positions
from melody_core.generation.pipeline import MelodyPipeline
from melody_core.generation.plan import Layout

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLIP_SECONDS = 2.5


# ------------------------------------------------------------------------------------------ fakes
class FakeEmbedder:
    """musicnn stand-in: log energies of `dim` FFT bands of 0.5 s patches."""

    dim = 8

    def embed(self, wav, sample_rate, hop_seconds=1.0):
        x = torch.as_tensor(wav, dtype=torch.float32)
        size = sample_rate // 2
        patches = x[: len(x) // size * size].reshape(-1, size)  # (n, size)
        spec = torch.fft.rfft(patches).abs().pow(2)  # (n, size / 2 + 1)
        bands = torch.stack([b.sum(-1) for b in spec.chunk(self.dim, dim=-1)], dim=-1)  # (n, dim)
        return torch.log(bands + 1e-6)


def _fake_modules() -> dict[str, types.ModuleType]:
    """Deterministic stand-ins with the agreed signatures and result keys."""
    metrics = types.ModuleType("melody_core.eval.metrics")
    metrics.fad = lambda a, b: float((a.mean(0) - b.mean(0)).pow(2).sum())

    def mcc(mulan, captions, wavs):
        per = [len(c) % 7 / 10 for c in captions]
        return {"mean": float(np.mean(per)), "std": float(np.std(per, ddof=1)) if len(per) > 1 else 0.0,
                "n": len(per), "per_item": per}

    metrics.mcc = mcc
    metrics.seam_ratio = lambda wav, sr, joins, tolerance_s=0.05: {
        "ratio": 1.0 + 0.1 * len(joins), "per_join": [1.0 + 0.2 * k for k in range(len(joins))],
        "median_inside": 1.0}
    tempo = types.ModuleType("melody_core.eval.tempo")
    tempo.estimate_bpm = lambda wav, sr, min_bpm=40.0, max_bpm=240.0: (
        100.0 if len(wav) >= 3 * sr else math.nan)

    def tempo_error(est, asked):
        hit = abs(est - asked) <= 0.04 * asked
        return {"abs_error": abs(est - asked), "rel_error": abs(est - asked) / asked, "accuracy1": hit,
                "accuracy2": hit}

    tempo.tempo_error = tempo_error
    recon = types.ModuleType("melody_core.eval.reconstruct")
    recon.reconstruct_files = lambda vae, paths, max_seconds=30.0, log=None: {
        "mel_distance": 0.4321, "si_sdr": -1.25, "files": len(paths), "skipped": 0, "skipped_files": [],
        "per_file": [{"path": str(p), "mel_distance": 0.4321, "si_sdr": -1.25, "seconds": 2.0}
                     for p in paths],
        "audio_seconds": 2.0 * len(paths), "max_seconds": max_seconds, "wall_s": 0.0}
    recon.round_trip = lambda vae, crop: crop
    musicnn = types.ModuleType("melody_core.eval.musicnn")
    musicnn.MusicnnEmbedder = types.SimpleNamespace(load=lambda path=None, device="cpu": FakeEmbedder())
    musicnn.TAGS = MUSICNN_TAGS  # the tag names (eval.judges); the fake embedder has no taggram
    return {m.__name__: m for m in (metrics, tempo, recon, musicnn)}


def fake_ablation(corpus, upstream, work_dir, opts, log):
    """run_arch_ablation stand-in: checks what the suite passes, returns its result layout."""
    assert Path(corpus).is_dir() and Path(upstream).is_dir() and opts.minutes_per_arm == 0.5
    arm = {"params": 1000, "steps": 10, "wall_s": 30.0, "si_snri_per_level": [1.0, 2.0]}
    return {"arms": {"dpd": {**arm, "v_mse": 0.2, "si_snri_db": 1.5},
                     "unet1d": {**arm, "params": 990, "v_mse": 0.25, "si_snri_db": 1.75}},
            "paper": {"dpd": {"v_mse": 0.12, "si_snri_db": 6.15},
                      "unet1d": {"v_mse": 0.13, "si_snri_db": 5.33}},
            "settings": {"budget": "minutes", "minutes_per_arm": 0.5, "steps": None, "seed": opts.seed,
                         "valid_clips": 2, "crop_seconds": 1.6, "levels_deg": [15.0, 30.0],
                         "param_ratio_unet_over_dpd": 0.99}}  # fmt: skip


# ----------------------------------------------------------------------------------------- corpus
ENSEMBLES = {"solo piano": "piano", "a string quartet": "string_quartet"}  # label -> `ensemble`


def _attrs(family: str, label: str, instrument: str, bpm: int) -> dict:
    return {"bpm": bpm, "mode": "major", "tonic": "C", "dynamics": "medium", "instruments": [instrument],
            "num_parts": 1, "style": "chorale", "reverb": "room", "composer": "Bach", "era": "baroque",
            "ensemble_label": label, "instrument_family": family,
            "ensemble": ENSEMBLES.get(label, family)}  # fmt: skip


def _clicks(bpm: float, freq: float) -> np.ndarray:
    t = np.arange(int(CLIP_SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    phase = t % (60.0 / bpm)
    return (0.4 * np.sin(2 * np.pi * freq * t) * np.exp(-phase / 0.03)).astype(np.float32)


def _write_corpus(root: Path) -> None:
    clips = [  # id, split, family, label, instrument, bpm, frequency
        ("v-piano", "valid", "piano", "solo piano", "piano", 100, 440.0),
        ("v-strings", "valid", "strings", "a string quartet", "violin", 80, 660.0),
        ("v-organ", "valid", "organ", "a church organ", "church organ", 120, 220.0),
        ("v-piano2", "valid", "piano", "solo piano", "piano", 140, 550.0),
        ("t-brass", "train", "brass", "a brass ensemble", "trumpet", 90, 330.0),
        ("t-piano", "train", "piano", "solo piano", "piano", 70, 400.0),
    ]
    records = []
    for cid, split, fam, label, inst, bpm, freq in clips:
        save_audio(root / "clips" / f"{cid}.wav", torch.from_numpy(_clicks(bpm, freq)))
        a = _attrs(fam, label, inst, bpm)
        records.append(ClipRecord(id=cid, path=f"clips/{cid}.wav", seconds=CLIP_SECONDS, split=split,
                                  attributes=a, captions=[caption_for(a, cid), f"{label} at {bpm} BPM"]))
    write_records(root / "captions.jsonl", records)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, MelodyPipeline]:
    root = tmp_path_factory.mktemp("suite")
    random_bundle(root / "bundle", "tiny", overrides=MICRO_OVERRIDES)
    _write_corpus(root / "corpus")
    return root / "bundle", root / "corpus", MelodyPipeline.load(root / "bundle", device="cpu")


def _small(tmp: Path, **changes) -> SuiteOptions:
    base = dict(clips=3, seconds=2.0, steps=(1, 2), control_steps=2, tempo_bpms=(100,), tempo_templates=2,
                tempo_seeds=1, tempo_seconds=3.0, family_seeds=1, pair_seeds=1, seam_clips=1,
                seam_seconds=3.0, ablation_minutes=0.5, ablation_work=str(tmp / "ablation"), judge_genres=2,
                judge_seeds=1)  # fmt: skip
    return SuiteOptions(**{**base, **changes})


# ------------------------------------------------------------------------------------------- units
def test_chunk_joins_follow_the_pipeline_plan() -> None:
    layout = Layout(2500, 4)  # the tiny preset: 10 s windows, hop 630 frames = 2.52 s
    joins, windows = chunk_joins_s(layout, 30.0, 10)
    assert windows == 9 and len(joins) == 8
    assert joins[0] == pytest.approx(10.0) and np.allclose(np.diff(joins), 2.52)
    assert chunk_joins_s(layout, 10.0, 10) == ([], 1)
    joins, _ = chunk_joins_s(layout, 12.0, 10, start="progressive")
    assert joins[:4] == pytest.approx([2.48, 5.0, 7.48, 10.0])  # chunk bounds 620 / 1250 / 1870 / 2500


def test_control_positions_avoid_joins_and_are_seeded() -> None:
    joins = [10.0, 12.52, 15.04]
    pos = control_positions(30.0, joins, 3, seed=4)
    assert len(pos) == 3 and pos == control_positions(30.0, joins, 3, seed=4)
    assert all(0.5 <= p <= 29.5 and min(abs(p - j) for j in joins) >= 0.5 for p in pos)
    dense = control_positions(3.0, [1.6, 2.0, 2.4], 2, seed=0)  # gap shrinks to a quarter of 0.4 s
    assert len(dense) == 2 and all(min(abs(p - j) for j in (1.6, 2.0, 2.4)) >= 0.1 - 1e-9 for p in dense)


def test_prompts_use_the_corpus_caption_phrasing() -> None:
    a = _attrs("piano", "solo piano", "piano", 90)
    text = caption_for(a, "k", bpm=130)
    assert text.startswith("piano, baroque, Bach, chorale, 130 bpm") and "130 bpm" in text and "fast" in text
    assert caption_for(a, "k", bpm=130) == text  # seeded by the key
    assert caption_for({"ensemble_label": "solo piano"}, "k", bpm=70) == "solo piano, 70 bpm, slow"


def test_default_budget_fits_an_hour() -> None:
    opts = SuiteOptions()
    est = suite.estimate_seconds(Layout(2500, 4), opts, n_templates=11, n_families=11)
    assert est["total"] == pytest.approx(sum(v for k, v in est.items() if k != "total"), abs=0.5)
    assert 20 * 60 < est["total"] < 55 * 60 and est["ablation"] >= 2 * 8 * 60
    no_ablation = SuiteOptions(skip=frozenset({"ablation"}))
    skipped = suite.estimate_seconds(Layout(2500, 4), no_ablation, 11, 11)
    assert skipped["ablation"] == 0 and skipped["total"] < est["total"]
    with pytest.raises(ValueError, match="cannot skip"):
        SuiteOptions(skip=frozenset({"reference"}))


def _cell(schedule: str, steps: int, fad: float, mcc: float) -> dict:
    return {"schedule": schedule, "steps": steps, "fad": fad, "fad_boot_sd": 0.1, "speed_hz": 1.0,
            "realtime": 1.0, "nfe": 1.0, "mcc": {"mean": mcc, "se": 0.01}}


def test_comparisons_are_computed_with_noise() -> None:
    r = {"grid": {"cells": [_cell("linear", 10, 3.0, 0.30), _cell("uniform", 10, 2.0, 0.305),
                            _cell("linear", 20, 2.5, 0.40), _cell("uniform", 20, 2.55, 0.30)]},
         "reference": {"mcc": {"mean": 0.35, "se": 0.01}}}  # fmt: skip
    by_claim = {c["claim"]: c["agrees"] for c in comparisons(r)}
    assert by_claim["the linear schedule has a lower FAD than the uniform one at 10 steps"] is False
    assert by_claim["the linear schedule has a lower FAD than the uniform one at 20 steps"] is None  # noise
    assert by_claim["the linear schedule has a higher MCC than the uniform one at 10 steps"] is None
    assert by_claim["the linear schedule has a higher MCC than the uniform one at 20 steps"] is True
    assert by_claim["FAD falls from 10 to 20 steps (Table 2)"] is True
    assert by_claim["generated audio has a higher MCC than the reference audio at 10 steps (§5.2)"] is False
    assert by_claim["generated audio has a higher MCC than the reference audio at 20 steps (§5.2)"] is True
    assert comparisons({}) == []


def test_sanitize_makes_json_safe() -> None:
    x = suite.sanitize({"a": math.nan, "b": (1.0, math.inf), "_private": 1, "p": Path("x")})
    assert x == {"a": None, "b": [1.0, None], "p": "x"}


# ------------------------------------------------------------------------------------- end to end
def _check_readme_against_results(out: Path, r: dict) -> str:
    text = (out / "README.md").read_text(encoding="utf-8")
    for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (out / target).read_bytes()[:8] == PNG_MAGIC
    cells = {(c["schedule"], c["steps"]): c for c in r["grid"]["cells"]}
    for (sched, steps), c in cells.items():
        assert f_fad(c["fad"]) in text and f_mcc(c["mcc"]["mean"]) in text
        if sched == "linear":
            assert f"| {steps} | {f_hz(c['speed_hz'])}" in text
    assert f"| reference (held-out clips) | – | – | {f_mcc(r['reference']['mcc']['mean'])}" in text
    assert f_num(r["reconstruction"]["mel_distance"], ".3f") in text
    assert f"**{f_pct(r['pair']['accuracy'])}** correct" in text
    gen = r["instrument"]["generated"]
    assert f"**{f_pct(gen['accuracy'])}** of {gen['n']}" in text
    for heading in ("## Speed and quality vs sampling steps (cf. Table 2)", "## Angle schedule",
                    "## Architecture: DPD vs UNet-1D", "## VAE reconstruction", "### Tempo",
                    "### Instrument family", "## Continuation seams", "## Where we disagree with the paper"):
        assert heading in text
    assert r["command"] in text
    return text


def test_suite_end_to_end_with_fakes(setup, tmp_path, monkeypatch) -> None:
    bundle, corpus, pipe = setup
    for name, module in _fake_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    out, lines = tmp_path / "results", []
    r = suite.run_suite(pipe, corpus, out, _small(tmp_path), lines.append, embedder=FakeEmbedder(),
                        ablation=fake_ablation)
    assert r == json.loads((out / "results.json").read_text()) and r["complete"]
    assert any(line.startswith("estimated wall time") for line in lines)
    assert set(r["timings_s"]) == {*SECTIONS, "total"} and all(v >= 0 for v in r["timings_s"].values())
    assert r["bundle"]["hash"] == pipe.model_hash and r["machine"]["cores"] >= 1 and r["git"] is not None
    assert r["data"]["clip_ids"] == ["v-organ", "v-piano", "v-piano2"] and r["data"]["valid_clips"] == 4
    cells = r["grid"]["cells"]
    assert [(c["schedule"], c["steps"]) for c in cells] == [("linear", 1), ("linear", 2), ("uniform", 1),
                                                          ("uniform", 2)]  # fmt: skip
    for c in cells:
        assert c["clips"] == 3 and c["audio_s"] == pytest.approx(6.0) and c["speed_hz"] > 0
        assert c["realtime"] == pytest.approx(c["speed_hz"] / SAMPLE_RATE) and c["nfe"] > 0 and c["fad"] >= 0
    assert cells[1]["nfe_dpd"] > cells[0]["nfe_dpd"]  # more steps, more DPD evaluations
    t = r["tempo"]
    assert [i["asked_bpm"] for i in t["generated"]["items"]] == [100.0, 100.0]
    assert t["generated"]["accuracy1"] == 1.0 and t["reference"]["estimated"] == 0  # 2 s crops: no estimate
    ins = r["instrument"]
    assert ins["families"][0] == "piano" and set(ins["families"]) == {"piano", "strings", "organ", "brass"}
    assert ins["generated"]["n"] == 4 and ins["reference"]["n"] == 3 and ins["generated"]["chance"] == 0.25
    assert sum(map(sum, ins["generated"]["confusion"])) == 4
    assert r["pair"]["n"] == 2 and r["pair"]["prompts"] == ["solo piano", "string quartet"]
    s = r["seams"]
    assert s["joins_s"] == pytest.approx([1.6, 2.0, 2.4, 2.8]) and s["windows"] == 5 and s["clips"] == 1
    assert r["ablation"]["arms"]["dpd"]["v_mse"] == 0.2 and not r["ablation"]["reused"]
    text = _check_readme_against_results(out, r)
    assert "**Disagree** (" in text and "SI-SNRi than UNet-1D" in text  # fake DPD loses on SI-SNRi
    assert {p.name for p in out.glob("*.png")} == {"fad_mcc_vs_steps.png", "speed_vs_steps.png",
                                                   "tempo_scatter.png", "instrument_confusion.png",
                                                   "ablation_arch.png", "seams.png",
                                                   "judges_per_genre.png"}  # fmt: skip


def test_suite_with_the_real_metric_modules(setup, tmp_path) -> None:
    bundle, corpus, pipe = setup
    opts = _small(tmp_path, clips=2, steps=(1,), schedules=("linear",),
                  skip=frozenset({"ablation", "instrument"}))
    r = suite.run_suite(pipe, corpus, tmp_path / "real", opts, lambda _: None, embedder=FakeEmbedder())
    cell = r["grid"]["cells"][0]
    assert math.isfinite(cell["fad"]) and -1 <= cell["mcc"]["mean"] <= 1 and cell["mcc"]["n"] == 2
    assert r["reconstruction"]["files"] == 2 and math.isfinite(r["reconstruction"]["si_sdr"])
    assert r["seams"]["ratio_mean"] > 0 and len(r["seams"]["per_join_mean"]) == 4
    assert r["tempo"]["generated"]["n"] == 2 and r["pair"]["n"] == 2
    pair = r["pair"]
    assert pair["lm_guidance"] == pipe.lm_guidance(None)
    # the held-out clips of the two ensembles among the reference set, real and through the VAE
    for key in ("reference", "reconstruction"):
        assert pair[key]["n"] == sum(pair[key]["clips"].values()) >= 1
        assert 0 <= pair[key]["accuracy"] <= 1 and math.isfinite(pair[key]["margin_mean"])
    text = (tmp_path / "real" / "README.md").read_text()
    assert "| their VAE round trips | solo piano |" in text
    assert "_Skipped in this run (`--skip ablation`)._" in text and "ablation_arch.png" not in text


# -------------------------------------------------------------------------------------------- CLI
def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    eval_suite.add_parser(parser.add_subparsers(dest="what"))
    return parser.parse_args(["all", *argv])


def test_cli_runs_and_rewrites_the_report(setup, tmp_path, monkeypatch, capsys) -> None:
    bundle, corpus, _ = setup
    for name, module in _fake_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    out = tmp_path / "cli"
    args = _parse("--bundle", str(bundle), "--data", str(corpus), "--out", str(out), "--clips", "2",
                  "--seconds", "2", "--steps", "2,1", "--skip", "tempo,instrument,pair,judges,seams,ablation",
                  "-q")
    assert args.func(args) == 0
    assert "wrote" in capsys.readouterr().out
    r = json.loads((out / "results.json").read_text())
    assert r["settings"]["steps"] == [1, 2] and r["command"].startswith("melody eval all --bundle ")
    assert "--steps 1,2" in r["command"] and "--clips 2" in r["command"]
    readme = (out / "README.md").read_text()
    (out / "README.md").unlink()
    again = _parse("--out", str(out), "--report-only")
    assert again.func(again) == 0 and (out / "README.md").read_text() == readme


@pytest.mark.parametrize("argv, message", [
    (("--clips", "0"), "--clips"),
    (("--seconds", "0.2"), "--seconds"),
    (("--steps", "5,x"), "--steps"),
    (("--steps", "0"), "--steps"),
    (("--skip", "grid,bogus"), "cannot skip bogus"),
    (("--ablation-minutes", "0"), "--ablation-minutes"),
    (("--threads", "0"), "--threads"),
])  # fmt: skip
def test_cli_errors(tmp_path, argv, message) -> None:
    args = _parse("--out", str(tmp_path / "o"), *argv)
    with pytest.raises(CLIError, match=re.escape(message)):
        args.func(args)


def test_cli_default_corpus_missing(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # platformdirs' user cache dir
    args = _parse("--out", str(tmp_path / "o"))
    with pytest.raises(CLIError, match="no corpus at .*melody data build"):
        args.func(args)


def test_cli_errors_on_paths(setup, tmp_path) -> None:
    bundle, corpus, _ = setup
    with pytest.raises(CLIError, match="not a folder"):
        args = _parse("--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o"))
        args.func(args)
    with pytest.raises(CLIError, match="cannot read results"):
        args = _parse("--out", str(tmp_path / "empty"), "--report-only")
        args.func(args)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text('{"format": "other"}')
    with pytest.raises(CLIError, match="not a results file"):
        args = _parse("--out", str(tmp_path / "bad"), "--report-only")
        args.func(args)
    train_only = tmp_path / "train-only"
    train_only.mkdir()
    write_records(train_only / "captions.jsonl",
                  [ClipRecord(id="x", path="x.wav", seconds=1.0, split="train")])
    with pytest.raises(CLIError, match="held-out"):
        args = _parse("--bundle", str(bundle), "--data", str(train_only), "--out", str(tmp_path / "o"), "-q")
        args.func(args)


def test_pair_token_probe_on_a_two_ensemble_corpus(setup, tmp_path) -> None:
    from melody_core.eval.suite.control import PAIR_PROMPTS, pair_tokens
    from melody_core.eval.suite.sets import load_reference

    _, _, pipe = setup
    root = tmp_path / "pairs"
    records = []
    for k, (split, label, freq) in enumerate([("train", "solo piano", 440.0), ("train", "solo piano", 520.0),
                                              ("train", "a string quartet", 660.0),
                                              ("train", "a string quartet", 700.0),
                                              ("valid", "solo piano", 480.0),
                                              ("valid", "a string quartet", 680.0)]):  # fmt: skip
        save_audio(root / "clips" / f"c{k}.wav", torch.from_numpy(_clicks(100, freq)))
        a = _attrs("piano" if "piano" in label else "strings", label, "x", 100)
        records.append(ClipRecord(id=f"c{k}", path=f"clips/c{k}.wav", seconds=CLIP_SECONDS, split=split,
                                  attributes=a, captions=[label]))
    write_records(root / "captions.jsonl", records)
    clips, _ = load_reference(root, 2, 2.0, lambda _: None)
    opts = _small(tmp_path)
    r = pair_tokens(pipe, root, clips, opts)
    assert r["probe_train_clips"] == dict.fromkeys(PAIR_PROMPTS, 2) and r["probe_held_out"]["n"] == 2
    assert r["n"] == 2 * opts.pair_seeds and 0 <= r["accuracy"] <= 1
    assert set(r["per_prompt"]) == set(PAIR_PROMPTS)
    assert r["lm_guidance"] == pipe.lm_guidance(None)
    # the suite's own corpus has one piano and no quartet training clip: a one-line reason instead
    assert "needs >= 2 training clips" in pair_tokens(pipe, setup[1], clips, opts)["error"]
