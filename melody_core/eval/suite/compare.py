"""The paper's numbers, number formats and the computed paper comparisons of `melody eval all`.

Every number of docs/results/README.md is a results.json value formatted by one of the `f_*`
helpers here (the tests check the README against the JSON through them).

`comparisons` checks each claim of the paper the run can test on our numbers; a difference smaller
than `NOISE_SIGMAS` times its combined uncertainty (FAD: bootstrap SD over clips; MCC: standard
error; none for the single-run architecture ablation) is "within the noise", neither agreement nor
disagreement.
"""

from __future__ import annotations

import math
from typing import Any

PAPER_TABLE2 = {  # Table 2 (CPU: Xeon Platinum 8260; FAD: VGGish vs MusicCaps; MCC: their MuLan)
    5: {"cpu_hz": 1472, "cpu_rt": 0.06, "fad": 7.23, "mcc": 0.49},
    10: {"cpu_hz": 893, "cpu_rt": 0.04, "fad": 5.93, "mcc": 0.52},
    20: {"cpu_hz": 498, "cpu_rt": 0.02, "fad": 5.41, "mcc": 0.53},
}
PAPER_REFERENCE_MCC = 0.43  # Table 2: MusicCaps reference audio with its captions
PAPER_SCHEDULE_FAD = {"linear": {10: 5.93, 20: 5.41}, "uniform": {10: 8.52, 20: 6.31}}  # poster table 5
PAPER_ARCH = {"dpd": {"v_mse": 0.12, "si_snri_db": 6.15}, "unet1d": {"v_mse": 0.13, "si_snri_db": 5.33}}
ARCH_LABELS = {"dpd": "DPD", "unet1d": "UNet-1D"}
NOISE_SIGMAS = 2.0  # a difference below this many combined SDs is "within the noise"
NA = "n/a"


# ------------------------------------------------------------------------------------------ formats
def ok(x: Any) -> bool:
    """A finite number (not a bool)."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def f_num(x: Any, spec: str) -> str:
    return format(x, spec) if ok(x) else NA


def f_fad(x: Any) -> str:
    return f_num(x, ".2f")


def f_mcc(x: Any) -> str:
    return f_num(x, ".3f")


def f_hz(x: Any) -> str:
    return f"{f_num(x, ',.0f')} Hz"


def f_rt(x: Any) -> str:
    return f"{f_num(x, '.2f')}×"


def f_pct(x: Any) -> str:
    return f"{100 * x:.0f} %" if ok(x) else NA


def f_pm(x: Any, sd: Any, fmt=f_fad) -> str:
    """"x ± sd" (just x without a finite sd)."""
    return fmt(x) + (f" ± {fmt(sd)}" if ok(sd) else "")


def f_min(seconds: Any) -> str:
    return f"{seconds / 60:.1f} min" if ok(seconds) else NA


# ----------------------------------------------------------------------------------------- sections
def section(r: dict, name: str) -> dict | None:
    """A section's result; None when it was skipped, not run or failed."""
    s = r.get(name)
    return s if isinstance(s, dict) and "error" not in s else None


def status(r: dict, name: str) -> str:
    """Why a section has no result (Markdown)."""
    s = r.get(name)
    if name in r.get("skipped_sections", []):
        return f"_Skipped in this run (`--skip {name}`)._"
    if isinstance(s, dict) and "error" in s:
        return f"_Failed in this run: {s['error']}_"
    return "_Not run._"


def grid_cells(r: dict) -> dict[tuple[str, int], dict]:
    """(schedule, steps) -> grid cell."""
    g = section(r, "grid")
    return {(c["schedule"], c["steps"]): c for c in g["cells"]} if g else {}


# -------------------------------------------------------------------------------------- comparisons
def _verdict(diff: float, sd: float | None) -> bool | None:
    """True if diff > 0 beyond the noise, False if < 0 beyond it, None within the noise."""
    if sd is not None and abs(diff) < NOISE_SIGMAS * sd:
        return None
    return diff > 0


def _combined(*sds: Any) -> float | None:
    return math.sqrt(sum(s * s for s in sds)) if all(ok(s) for s in sds) else None


def _schedule_claims(cells: dict, add) -> None:
    for t in sorted({t for _, t in cells}):  # poster table 5 (FAD); Appendix D (MCC)
        lin, uni = cells.get(("linear", t)), cells.get(("uniform", t))
        if not (lin and uni):
            continue
        if ok(lin["fad"]) and ok(uni["fad"]):
            add(f"the linear schedule has a lower FAD than the uniform one at {t} steps",
                f"linear {f_fad(lin['fad'])} vs uniform {f_fad(uni['fad'])}",
                _verdict(uni["fad"] - lin["fad"], _combined(lin["fad_boot_sd"], uni["fad_boot_sd"])))
        lm, um = lin["mcc"], uni["mcc"]
        add(f"the linear schedule has a higher MCC than the uniform one at {t} steps",
            f"linear {f_mcc(lm['mean'])} vs uniform {f_mcc(um['mean'])}",
            _verdict(lm["mean"] - um["mean"], _combined(lm["se"], um["se"])))


def _steps_claims(cells: dict, ref: dict | None, add) -> None:
    steps = sorted(t for s, t in cells if s == "linear")
    for a, b in zip(steps, steps[1:]):  # Table 2 trends
        ca, cb = cells[("linear", a)], cells[("linear", b)]
        if ok(ca["fad"]) and ok(cb["fad"]):
            add(f"FAD falls from {a} to {b} steps (Table 2)", f"{f_fad(ca['fad'])} → {f_fad(cb['fad'])}",
                _verdict(ca["fad"] - cb["fad"], _combined(ca["fad_boot_sd"], cb["fad_boot_sd"])))
        ma, mb = ca["mcc"], cb["mcc"]
        add(f"MCC rises from {a} to {b} steps (Table 2)", f"{f_mcc(ma['mean'])} → {f_mcc(mb['mean'])}",
            _verdict(mb["mean"] - ma["mean"], _combined(ma["se"], mb["se"])))
    if ref is None:
        return
    rm = ref["mcc"]
    for t in steps:  # §5.2: generated MCC above the reference set's at every step count
        c = cells[("linear", t)]["mcc"]
        add(f"generated audio has a higher MCC than the reference audio at {t} steps (§5.2)",
            f"{f_mcc(c['mean'])} vs reference {f_mcc(rm['mean'])}",
            _verdict(c["mean"] - rm["mean"], _combined(c["se"], rm["se"])))


def comparisons(r: dict) -> list[dict[str, Any]]:
    """[{"claim", "ours", "agrees": True / False / None (within the noise)}] for every claim of the
    paper this run can test."""
    out: list[dict[str, Any]] = []

    def add(claim: str, ours: str, verdict: bool | None) -> None:
        out.append({"claim": claim, "ours": ours, "agrees": verdict})

    cells = grid_cells(r)
    _schedule_claims(cells, add)
    _steps_claims(cells, section(r, "reference"), add)
    ab = section(r, "ablation")
    if ab and {"dpd", "unet1d"} <= set(ab.get("arms", {})):
        d, u = ab["arms"]["dpd"], ab["arms"]["unet1d"]
        add("DPD reaches a lower validation v-MSE than UNet-1D (poster table 4)",
            f"DPD {f_num(d['v_mse'], '.4f')} vs UNet-1D {f_num(u['v_mse'], '.4f')} (one run each)",
            u["v_mse"] > d["v_mse"])
        add("DPD reaches a higher SI-SNRi than UNet-1D (poster table 4)",
            f"DPD {f_num(d['si_snri_db'], '.2f')} dB vs UNet-1D {f_num(u['si_snri_db'], '.2f')} dB "
            "(one run each)", d["si_snri_db"] > u["si_snri_db"])
    return out
