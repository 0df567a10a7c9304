"""metrics.csv (one row per logged step or validation) and the loss-curve plot.

Columns: step, split ("train" / "valid"), wall_s (training wall time so far), lr, then the stage's
metric names (empty where a metric does not apply). Values are written with `repr` precision so a
resumed run can be compared bit for bit. On resume, rows after the checkpoint's step are dropped
(they belong to steps that will be run again).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

from melody_core.train.state import atomic_write

BASE_COLUMNS = ("step", "split", "wall_s", "lr")
SMOOTH_POINTS = 50  # target number of points of the smoothed training curve


class MetricsLog:
    """Append-only CSV with a fixed header; rank 0 only."""

    def __init__(self, path: Path, metrics: Sequence[str]) -> None:
        self.path = Path(path)
        self.columns = list(BASE_COLUMNS) + list(metrics)
        self._fh: io.TextIOBase | None = None

    def truncate_after(self, step: int) -> None:
        """Keep the header and rows with step <= `step` (rewritten atomically)."""
        rows = read_metrics(self.path) if self.path.is_file() else []
        keep = [r for r in rows if (r.get("step") or "").isdigit() and int(r["step"]) <= step]  # torn rows go
        buf = io.StringIO()
        writer = csv.DictWriter(buf, self.columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(keep)
        atomic_write(self.path, lambda f: f.write(buf.getvalue()), mode="w")

    def write(self, step: int, split: str, wall_s: float, lr: float, values: dict[str, float]) -> None:
        if self._fh is None:
            new = not self.path.is_file() or self.path.stat().st_size == 0
            self._fh = open(self.path, "a", encoding="utf-8", newline="")
            if new:
                csv.writer(self._fh).writerow(self.columns)
        row = {"step": step, "split": split, "wall_s": f"{wall_s:.3f}", "lr": repr(float(lr))}
        row.update({k: repr(float(v)) for k, v in values.items() if k in self.columns})
        csv.DictWriter(self._fh, self.columns, extrasaction="ignore").writerow(row)
        self._fh.flush()  # a SIGKILL keeps what reached the OS

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_metrics(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def plot_metrics(csv_path: Path, png_path: Path, title: str, metrics: Sequence[str]) -> None:
    """Loss curves (smoothed training values, validation points), one panel per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(csv_path)
    shown = [m for m in metrics if any(r.get(m) for r in rows)]
    if not shown:
        return
    cols = min(3, len(shown))
    nrows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.0 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, shown):
        for split, style in (("train", "-"), ("valid", "o-")):
            pts = [(int(r["step"]), float(r[name])) for r in rows if r["split"] == split and r.get(name)]
            if not pts:
                continue
            xs, ys = zip(*pts)
            if split == "train":
                xs, ys = _smooth(xs, ys)
            ax.plot(xs, ys, style, label=split, markersize=3)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(shown) :]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write(png_path, lambda f: f.write(buf.getvalue()))


def _smooth(xs: Sequence[int], ys: Sequence[float]) -> tuple[list[int], list[float]]:
    """Means over windows so the curve has about SMOOTH_POINTS points."""
    w = max(1, len(xs) // SMOOTH_POINTS)
    out_x, out_y = [], []
    for i in range(0, len(xs), w):
        out_x.append(xs[min(i + w, len(xs)) - 1])
        out_y.append(sum(ys[i : i + w]) / len(ys[i : i + w]))
    return out_x, out_y
