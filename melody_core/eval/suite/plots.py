"""PNG plots of `melody eval all` (matplotlib Agg), drawn from results.json alone.

`write_plots(out, results)` draws every plot whose section has results and removes a stale file of
a plot that has none this time (so docs/results never shows a figure of an earlier run); returns
{key: file name} of the plots written.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from melody_core.eval.suite.compare import ARCH_LABELS, PAPER_ARCH, PAPER_SCHEDULE_FAD

PLOTS = {  # key -> file name
    "fad_mcc": "fad_mcc_vs_steps.png",
    "speed": "speed_vs_steps.png",
    "tempo": "tempo_scatter.png",
    "instrument": "instrument_confusion.png",
    "ablation": "ablation_arch.png",
    "seams": "seams.png",
    "judges": "judges_per_genre.png",
}
FIGURE_DPI = 100
WIDE = (10.0, 4.0)  # inches: two panels side by side
SQUARE = (5.5, 5.0)
SCHEDULE_STYLE = {"linear": ("tab:blue", "o"), "uniform": ("tab:orange", "s")}


def _section(r: dict, name: str) -> dict | None:
    s = r.get(name)
    return s if isinstance(s, dict) and "error" not in s else None


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    from melody_core.train.state import atomic_write

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=FIGURE_DPI)
    _plt().close(fig)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def _by_schedule(r: dict) -> dict[str, list[dict]]:
    g = _section(r, "grid")
    out: dict[str, list[dict]] = {}
    for c in g["cells"] if g else []:
        out.setdefault(c["schedule"], []).append(c)
    return {k: sorted(v, key=lambda c: c["steps"]) for k, v in out.items()}


def _none_to_nan(xs: list) -> list[float]:
    return [float("nan") if x is None else x for x in xs]


def plot_fad_mcc(r: dict, path: Path) -> bool:

    groups = _by_schedule(r)
    if not groups:
        return False
    fig, (a, b) = _plt().subplots(1, 2, figsize=WIDE)
    for sched, cells in groups.items():
        color, marker = SCHEDULE_STYLE.get(sched, ("tab:gray", "^"))
        steps = [c["steps"] for c in cells]
        a.errorbar(
            steps,
            _none_to_nan([c["fad"] for c in cells]),
            yerr=_none_to_nan([c["fad_boot_sd"] for c in cells]),
            color=color,
            marker=marker,
            capsize=3,
            label=f"{sched} (ours)",
        )
        paper = PAPER_SCHEDULE_FAD.get(sched, {})
        if paper:
            a.plot(
                list(paper),
                list(paper.values()),
                color=color,
                marker=marker,
                ls=":",
                alpha=0.6,
                label=f"{sched} (paper, VGGish FAD)",
            )
        b.errorbar(
            steps,
            [c["mcc"]["mean"] for c in cells],
            yerr=_none_to_nan([c["mcc"]["se"] for c in cells]),
            color=color,
            marker=marker,
            capsize=3,
            label=sched,
        )
    ref = _section(r, "reference")
    if ref:
        b.axhline(ref["mcc"]["mean"], color="k", ls="--", lw=1, label="reference clips")
    for ax, title in ((a, "FAD (musicnn) ↓"), (b, "MCC (our MuLan) ↑")):
        ax.set_xlabel("sampling steps T")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)
    return True


def plot_speed(r: dict, path: Path) -> bool:
    groups = _by_schedule(r)
    if not groups:
        return False
    fig, ax = _plt().subplots(figsize=SQUARE)
    for sched, cells in groups.items():
        color, marker = SCHEDULE_STYLE.get(sched, ("tab:gray", "^"))
        ax.plot(
            [c["steps"] for c in cells],
            [c["realtime"] for c in cells],
            color=color,
            marker=marker,
            label=sched,
        )
    ax.axhline(1.0, color="k", ls="--", lw=1, label="real time")
    ax.set_xlabel("sampling steps T")
    ax.set_ylabel("× real time (CPU)")
    ax.set_title(f"Generation speed, {r['machine']['pipeline_threads']} threads")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    return True


def plot_tempo(r: dict, path: Path) -> bool:
    t = _section(r, "tempo")
    if not t:
        return False
    gen = [
        (i["asked_bpm"], i["estimated_bpm"])
        for i in t["generated"]["items"]
        if i["estimated_bpm"] is not None
    ]
    ref = [
        (i["known_bpm"], i["estimated_bpm"])
        for i in t["reference"]["items"]
        if i["estimated_bpm"] is not None
    ]
    if not gen and not ref:
        return False
    fig, ax = _plt().subplots(figsize=SQUARE)
    if gen:
        ax.scatter(*zip(*gen), color="tab:blue", alpha=0.7, label="generated (asked BPM)")
    if ref:
        ax.scatter(*zip(*ref), color="tab:green", marker="x", alpha=0.7, label="reference (known BPM)")
    lo, hi = 30, 250
    for k, style in ((1.0, "-"), (2.0, ":"), (0.5, ":")):
        ax.plot([lo, hi], [k * lo, k * hi], color="k", ls=style, lw=0.8)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("asked / known tempo (BPM)")
    ax.set_ylabel("estimated tempo (BPM)")
    ax.set_title("Tempo control (lines: ×1, ×2, ×½)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    return True


def plot_instrument(r: dict, path: Path) -> bool:
    ins = _section(r, "instrument")
    if not ins:
        return False
    fams = ins["families"]
    fig, axes = _plt().subplots(
        1, 2, figsize=(max(WIDE[0], 1.1 * len(fams)), max(WIDE[1], 0.5 * len(fams) + 1.5))
    )
    for ax, key, title in (
        (axes[0], "generated", "generated clips"),
        (axes[1], "reference", "reference clips"),
    ):
        m = ins[key]["confusion"]
        ax.imshow(m, cmap="Blues")
        for i, row in enumerate(m):
            for j, v in enumerate(row):
                if v:
                    ax.text(j, i, str(v), ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(fams)), fams, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(len(fams)), fams, fontsize=8)
        ax.set_xlabel("predicted family (MuLan zero-shot)")
        ax.set_ylabel("asked / true family")
        ax.set_title(title)
    _save(fig, path)
    return True


def plot_ablation(r: dict, path: Path) -> bool:

    ab = _section(r, "ablation")
    if not ab:
        return False
    arms = list(ab["arms"])
    fig, (a, b) = _plt().subplots(1, 2, figsize=WIDE)
    for ax, key, title in ((a, "v_mse", "validation v-MSE ↓"), (b, "si_snri_db", "SI-SNRi (dB) ↑")):
        x = range(len(arms))
        ax.bar(x, [ab["arms"][k][key] for k in arms], color="tab:blue", label="ours")
        paper = ab.get("paper", PAPER_ARCH)
        ax.scatter(
            x,
            [paper.get(k, {}).get(key, float("nan")) for k in arms],
            color="tab:red",
            marker="D",
            zorder=3,
            label="paper",
        )
        ax.set_xticks(list(x), [ARCH_LABELS.get(k, k) for k in arms])
        ax.set_title(title)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    _save(fig, path)
    return True


def plot_seams(r: dict, path: Path) -> bool:
    s = _section(r, "seams")
    if not s or not s["join_ratios"]:
        return False
    fig, ax = _plt().subplots(figsize=SQUARE)
    data = [s["join_ratios"], s["control_ratios"] or [float("nan")]]
    ax.boxplot(data, showmeans=True)
    ax.set_xticks([1, 2], ["chunk joins", "random positions"])
    ax.axhline(1.0, color="k", ls="--", lw=0.8)
    ax.set_ylabel("flux ratio (peak near position / median inside)")
    ax.set_title("Continuation seams")
    ax.grid(alpha=0.3, axis="y")
    _save(fig, path)
    return True


JUDGE_BARS = (  # per-genre key, legend label, colour
    ("mulan", "MuLan genre", "tab:blue"), ("musicnn_genre", "musicnn genre tags", "tab:purple"),
    ("tempo_ours", "tempo ±4 % (ours)", "tab:orange"), ("tempo_librosa", "tempo ±4 % (librosa)", "tab:green"),
    ("key", "key exact", "tab:red"),
)  # fmt: skip


def plot_judges(r: dict, path: Path) -> bool:
    """Share of each genre's clips every judge passes (grouped bars; a missing bar = not judged)."""
    j = _section(r, "judges")
    pg = (j or {}).get("generated", {}).get("per_genre") or {}
    if not pg:
        return False
    genres = list(pg)
    fig, ax = _plt().subplots(figsize=(max(WIDE[0], 0.75 * len(genres)), WIDE[1]))
    width = 0.8 / len(JUDGE_BARS)
    for k, (key, label, color) in enumerate(JUDGE_BARS):
        x = [i + (k - (len(JUDGE_BARS) - 1) / 2) * width for i in range(len(genres))]
        ax.bar(x, _none_to_nan([pg[g].get(key) for g in genres]), width, color=color, label=label)
    ax.set_xticks(range(len(genres)), genres, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of the genre's clips")
    ax.set_title("Independent judges per genre (generated clips)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, ncol=len(JUDGE_BARS), loc="upper center", bbox_to_anchor=(0.5, -0.3))
    _save(fig, path)
    return True


DRAW: dict[str, Callable[[dict, Path], bool]] = {
    "fad_mcc": plot_fad_mcc, "speed": plot_speed, "tempo": plot_tempo, "instrument": plot_instrument,
    "ablation": plot_ablation, "seams": plot_seams, "judges": plot_judges,
}  # fmt: skip


def write_plots(out: Path, results: dict) -> dict[str, str]:
    written = {}
    for key, draw in DRAW.items():
        path = Path(out) / PLOTS[key]
        if draw(results, path):
            written[key] = PLOTS[key]
        elif path.is_file():
            path.unlink()
    return written
