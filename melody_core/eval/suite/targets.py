"""The issue-16 targets of `melody eval all`: one row per target, computed from results.json alone
(`targets`), so `--report-only` rebuilds the table. A row is "met", "not met" or "not measured"
(its section skipped, failed or not in this results file; the row says which).

Rows (thresholds are the module constants; "10 steps" = `TARGET_STEPS` with the linear schedule):
- tempo, our estimator / librosa's beat tracker: Accuracy1 (within ±4 % of the asked BPM) of the
  judges section's genre clips (every judge prompt names a BPM) >= 70 %.
- genre, zero-shot with the bundle's MuLan over the judges' 16 genres >= 70 %.
- musicnn instrument family (the issue's wording: "top tags agree with the prompt's instrument
  family") and musicnn genre (the same threshold for the genre tags; our addition) >= 60 %, rules in
  `eval.judges`.
- key: exact matches on the judge clips whose prompt names a key >= 50 %.
- FAD (musicnn) at 10 steps <= half the baseline run's FAD at 10 steps (`--baseline RESULTS_JSON`,
  `read_baseline`); only when both runs used the same reference set (same clip ids and crop
  length), else "not measured" with the reason.
- generated MCC at 10 steps >= the reference clips' MCC (the paper's Table 2 ordering).
- seam ratio <= 1.2 *(our definition)*: the seams section's mean ratio at the chunk joins over its
  mean ratio at the random non-join positions (1 = a join looks like any other moment).
- speed >= 10x real time: the grid's speed at 10 steps (the issue's setting is 10 s on 2 threads;
  the note gives this run's clip length, threads and load average).
- bundle <= 80 MB (10^6 bytes): the files of the bundle folder.
- hiss and first-chunk latency: not measured by this suite (`melody eval listen`, `melody bench`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from melody_core.eval.suite.compare import f_fad, f_mcc, f_num, f_pct, grid_cells, ok, section
from melody_core.eval.suite.options import RESULTS_FORMAT, SuiteError

TARGET_STEPS = 10  # grid cell (linear schedule) of the FAD, MCC and speed targets
TARGET_SCHEDULE = "linear"
TEMPO_TARGET = 0.70  # Accuracy1 share, both estimators
GENRE_TARGET = 0.70  # MuLan zero-shot genre accuracy
TAGGER_TARGET = 0.60  # musicnn agreement share
KEY_TARGET = 0.50  # exact key matches
FAD_FRACTION = 0.5  # FAD <= this x the baseline's
SEAM_TARGET = 1.2  # mean join ratio / mean control ratio
SPEED_TARGET = 10.0  # x real time
BUNDLE_MB = 80.0  # bundle size limit (10^6 bytes)
MET, NOT_MET, NOT_MEASURED = "met", "not met", "not measured"


def _why(r: dict, name: str) -> str:
    """Why a section gives no number (plain text)."""
    s = r.get(name)
    if name in r.get("skipped_sections", []):
        return f"section {name} skipped"
    if isinstance(s, dict) and "error" in s:
        return f"section {name} failed"
    return f"section {name} not in this run"


def _row(
    name: str, goal: str, value: float | None, passed: bool | None, measured: str, note: str = ""
) -> dict:
    status = NOT_MEASURED if value is None or passed is None else (MET if passed else NOT_MET)
    return {"target": name, "goal": goal, "value": value, "measured": measured if value is not None else "–",
            "status": status, "note": note}  # fmt: skip


def _share_row(name: str, goal: str, threshold: float, s: dict | None, why: str, note: str = "") -> dict:
    """A row from {"n", "accuracy"}: met when accuracy >= threshold."""
    if not s or not s.get("n") or not ok(s.get("accuracy")):
        return _row(name, goal, None, None, "", why if not s else "no clip could be judged")
    return _row(
        name, goal, s["accuracy"], s["accuracy"] >= threshold, f"{f_pct(s['accuracy'])} of {s['n']}", note
    )


def _judge_rows(r: dict) -> list[dict]:
    j = section(r, "judges")
    g = j["generated"] if j else {}
    why = _why(r, "judges")
    tempo = g.get("tempo", {})
    mus = g.get("musicnn") or {}
    mus_why = why if not j else f"musicnn judge failed: {mus.get('error')}"
    mus = {} if "error" in mus else mus
    ref = (j or {}).get("reference", {})

    def ref_note(*path: str, field: str = "accuracy") -> str:
        x: Any = ref
        for p in path:
            x = x.get(p, {}) if isinstance(x, dict) else {}
        return f"held-out clips: {f_pct(x.get(field))} of {x.get('n', 0)}" if x.get("n") else ""

    pct = f"≥ {f_pct(TEMPO_TARGET)}"
    return [
        _share_row("Tempo within ±4 % of the asked BPM (our estimator)", pct, TEMPO_TARGET,
                   tempo.get("ours") and {**tempo["ours"], "accuracy": tempo["ours"]["accuracy1"]}, why,
                   ref_note("tempo", "ours", field="accuracy1")),
        _share_row("Tempo within ±4 % of the asked BPM (librosa beat tracker)", pct, TEMPO_TARGET,
                   tempo.get("librosa") and {**tempo["librosa"], "accuracy": tempo["librosa"]["accuracy1"]},
                   why, ref_note("tempo", "librosa", field="accuracy1")),
        _share_row("Genre, zero-shot with the bundle's MuLan (16 genres)", f"≥ {f_pct(GENRE_TARGET)}",
                   GENRE_TARGET, g.get("mulan_genre"), why, ref_note("mulan_genre")),
        _share_row("musicnn top-5 tags agree with the prompt's instrument family (guitar, synth)",
                   f"≥ {f_pct(TAGGER_TARGET)}", TAGGER_TARGET, mus.get("family"), mus_why,
                   ref_note("musicnn", "family")),
        _share_row("musicnn top-5 genre tags agree with the prompt's genre (our addition)",
                   f"≥ {f_pct(TAGGER_TARGET)}", TAGGER_TARGET, mus.get("genre"), mus_why,
                   ref_note("musicnn", "genre")),
        _share_row("Key matches exactly (prompts that name a key; Krumhansl–Kessler on chroma)",
                   f"≥ {f_pct(KEY_TARGET)}", KEY_TARGET, g.get("key"), why, ref_note("key")),
    ]  # fmt: skip


def _cell(r: dict) -> dict | None:
    return grid_cells(r).get((TARGET_SCHEDULE, TARGET_STEPS))


def _no_cell(r: dict) -> str:
    return (
        _why(r, "grid") if not section(r, "grid") else f"no {TARGET_SCHEDULE} {TARGET_STEPS}-step grid cell"
    )


def _fad_row(r: dict) -> dict:
    name, c, b = "FAD (musicnn) vs held-out clips, 10 steps", _cell(r), r.get("baseline")
    goal = f"≤ {FAD_FRACTION:g} × baseline"
    if c is None or not ok(c.get("fad")):
        return _row(name, goal, None, None, "", _no_cell(r))
    measured = f_fad(c["fad"])
    if not b:
        return _row(name, goal, c["fad"], None, measured, "no baseline (`--baseline RESULTS_JSON`)")
    goal = (
        f"≤ {f_fad(FAD_FRACTION * b['fad'])} (half of bundle {b['bundle']}'s {f_fad(b['fad'])})"
        if ok(b.get("fad"))
        else goal
    )
    mine = {"clip_ids": r.get("data", {}).get("clip_ids"), "seconds": r.get("settings", {}).get("seconds")}
    if not ok(b.get("fad")):
        return _row(name, goal, c["fad"], None, measured, f"the baseline run has no {TARGET_STEPS}-step FAD")
    if mine["clip_ids"] != b.get("clip_ids") or mine["seconds"] != b.get("seconds"):
        return _row(name, goal, c["fad"], None, measured, "the baseline run used another reference set")
    return _row(name, goal, c["fad"], c["fad"] <= FAD_FRACTION * b["fad"], measured)


def _mcc_row(r: dict) -> dict:
    name, c, ref = (
        "Generated MCC ≥ reference MCC, 10 steps (Table 2 ordering)",
        _cell(r),
        section(r, "reference"),
    )
    if c is None or ref is None:
        return _row(name, "≥ reference", None, None, "", _no_cell(r))
    gen, rm = c["mcc"]["mean"], ref["mcc"]["mean"]
    return _row(name, f"≥ {f_mcc(rm)} (reference)", gen, gen >= rm, f_mcc(gen))


def _seam_row(r: dict) -> dict:
    name, s = "Seam ratio: mean join ratio / mean control ratio", section(r, "seams")
    goal = f"≤ {SEAM_TARGET:g}"
    if not s or not ok(s.get("ratio_mean")) or not ok(s.get("control_mean")) or not s["control_mean"] > 0:
        return _row(name, goal, None, None, "", _why(r, "seams") if not s else "no control positions")
    v = s["ratio_mean"] / s["control_mean"]
    return _row(
        name,
        goal,
        v,
        v <= SEAM_TARGET,
        f_num(v, ".2f"),
        f"joins {f_num(s['ratio_mean'], '.2f')}, control {f_num(s['control_mean'], '.2f')}",
    )


def _speed_row(r: dict) -> dict:
    name, c, g = "Speed, 10 steps (grid)", _cell(r), section(r, "grid")
    goal = f"≥ {SPEED_TARGET:g}× real time"
    if c is None or not ok(c.get("realtime")):
        return _row(name, goal, None, None, "", _no_cell(r))
    loads = [x for x in c.get("load_avg", []) if ok(x)]
    m = r.get("machine", {})
    note = (f"{f_num(g['seconds'], 'g')} s clips, {g['threads']} threads on {m.get('cores', '?')} cores, "
            f"load average {', '.join(f_num(x, '.2f') for x in loads) or '?'}; the issue's setting: 10 s on "
            "2 threads (`melody bench`)")  # fmt: skip
    return _row(
        name, goal, c["realtime"], c["realtime"] >= SPEED_TARGET, f"{f_num(c['realtime'], '.2f')}×", note
    )


def _bundle_row(r: dict) -> dict:
    size = r.get("bundle", {}).get("bytes")
    goal = f"≤ {BUNDLE_MB:g} MB"
    if not ok(size):
        return _row("Bundle size", goal, None, None, "", "not recorded in this results file")
    mb = size / 1e6
    return _row("Bundle size", goal, mb, mb <= BUNDLE_MB, f"{mb:.1f} MB")


def targets(r: dict) -> list[dict[str, Any]]:
    """The targets table of a results dict (module docstring)."""
    elsewhere = [
        _row("No broadband hiss in sustained notes (corpus level)", "≤ corpus renders", None, None, "",
             "measured by `melody eval listen --data CORPUS`, not by this suite"),
        _row("First chunk latency", "≤ 0.5 s", None, None, "",
             "measured by `melody bench`, not by this suite"),
    ]  # fmt: skip
    return [
        *_judge_rows(r),
        _fad_row(r),
        _mcc_row(r),
        _seam_row(r),
        _speed_row(r),
        _bundle_row(r),
        *elsewhere,
    ]


def read_baseline(path: str | Path) -> dict[str, Any]:
    """What the FAD target needs from another run's results.json (SuiteError: one line)."""
    p = Path(path)
    try:
        r = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SuiteError(f"--baseline {p}: cannot read results ({exc})") from None
    if not isinstance(r, dict) or r.get("format") != RESULTS_FORMAT:
        raise SuiteError(f"--baseline {p}: not a results file of `melody eval all`")
    c = grid_cells(r).get((TARGET_SCHEDULE, TARGET_STEPS))
    if c is None:
        raise SuiteError(f"--baseline {p}: no {TARGET_SCHEDULE} {TARGET_STEPS}-step grid cell in that run")
    return {
        "path": str(p), "bundle": r.get("bundle", {}).get("short_hash"),
        "hash": r.get("bundle", {}).get("hash"),
        "fad": c.get("fad"), "fad_boot_sd": c.get("fad_boot_sd"), "steps": TARGET_STEPS,
        "schedule": TARGET_SCHEDULE, "seconds": r.get("settings", {}).get("seconds"),
        "clip_ids": r.get("data", {}).get("clip_ids"), "corpus": r.get("data", {}).get("corpus"),
    }  # fmt: skip
