"""Long "Keep playing" soak of the real app (offscreen): RSS, lead over playback, underruns, refcounts.

    python packaging/soak.py --minutes 30 --out soak_out [--bundle DIR] [--sink alsa|paced]

`--sink alsa` plays through PortAudio's default device (packaging/soak.sh points ALSA at a FIFO that
a reader drains at real time: a paced null sink); `--sink paced` uses an in-process device thread
that consumes samples at real time (no sound stack at all). Every `--sample-s` seconds a row goes to
OUT/samples.csv; OUT/summary.json holds the verdict. Exit 0 when: no crash (the process is alive
to write it), RSS grew by at most `--rss-limit-mb` after the warm-up, the generator stayed ahead of
playback (no underrun after the first sound) and the refcounts of True/False/None did not fall.
`--engine module:Name` swaps in a stand-in pipeline (tests/app_fake_pipeline.py:FakePipeline).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BLOCK = 480  # frames per callback of the paced in-process device (20 ms at 24 kHz)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class _Flags:
    output_underflow = False


class PacedStream:
    """A device thread that pulls BLOCK frames every BLOCK/rate seconds (real time)."""

    def __init__(self, rate: int, callback) -> None:  # noqa: ANN001
        self.rate, self.callback, self.running = rate, callback, False
        self.thread: threading.Thread | None = None

    @property
    def active(self) -> bool:
        return self.running

    def start(self) -> None:
        import numpy as np

        self.running = True
        out = np.zeros((BLOCK, 1), np.float32)

        def loop() -> None:
            t = time.perf_counter()
            while self.running:
                self.callback(out, BLOCK, None, _Flags())
                t += BLOCK / self.rate
                time.sleep(max(0.0, t - time.perf_counter()))

        self.thread = threading.Thread(target=loop, daemon=True, name="paced-sink")
        self.thread.start()

    def stop(self) -> None:
        self.running = False
        if self.thread is not None:
            self.thread.join(1.0)

    def close(self) -> None:
        self.stop()


class PacedBackend:
    def devices(self) -> list:
        from app.audio.backend import OutputDevice

        return [OutputDevice(0, "paced null sink", True)]

    def open(self, device, sample_rate: int, callback) -> PacedStream:  # noqa: ANN001
        return PacedStream(sample_rate, callback)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--out", default="soak_out")
    p.add_argument("--bundle", default=None, help="model bundle (default: the bundled model)")
    p.add_argument("--engine", default=None, help="module:Name stand-in pipeline (tests)")
    p.add_argument("--sink", choices=("alsa", "paced"), default="paced")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--prompt", default="warm lo-fi piano with soft drums")
    p.add_argument("--warmup-minutes", type=float, default=None, help="default: min(5, minutes / 4)")
    p.add_argument("--sample-s", type=float, default=10.0)
    p.add_argument("--rss-limit-mb", type=float, default=50.0)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()

    from melody_core.runtime import prepare_environment

    prepare_environment()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from app.engine import factory_from_spec, real_pipeline
    from app.studio import Studio
    from melody_core.generation import GenerationSettings

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    warmup_s = 60 * (args.warmup_minutes if args.warmup_minutes is not None else min(5.0, args.minutes / 4))
    app = QApplication.instance() or QApplication([])
    factory = factory_from_spec(args.engine) if args.engine else real_pipeline
    backend = "auto" if args.sink == "alsa" else PacedBackend()
    studio = Studio.create(out / "data", factory, backend, bundle=args.bundle, device="cpu",
                           threads=args.threads)
    if not studio.player.available:
        print(f"error: no audio output ({studio.player.unavailable_reason})", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    while studio.controller.engine is None:
        app.processEvents()
        if studio.controller.engine_error:
            print(f"error: {studio.controller.engine_error}", file=sys.stderr)
            return 2
        time.sleep(0.01)
    sr = studio.player.sample_rate
    rows: list[dict[str, float]] = []
    state = {"start": 0.0, "first_sound": 0.0, "underruns_at_sound": 0}

    def sample() -> None:
        now = time.monotonic() - state["start"]
        played = max(studio.player.position(), 0) / sr
        generated = studio.controller.live_samples / sr
        if not state["first_sound"] and played > 0:
            state["first_sound"] = now
            state["underruns_at_sound"] = studio.player.underruns
        rows.append({"t_s": round(now, 1), "rss_mb": round(rss_mb(), 1), "generated_s": round(generated, 2),
                     "played_s": round(played, 2), "lead_s": round(generated - played, 2),
                     "underruns": studio.player.underruns, "ref_true": sys.getrefcount(True),
                     "ref_false": sys.getrefcount(False), "ref_none": sys.getrefcount(None)})
        print(json.dumps(rows[-1]), flush=True)
        if now >= 60 * args.minutes:
            studio.controller.stop_live()

    done: list[object] = []
    studio.controller.job_finished.connect(lambda kind, tid: done.append(tid))
    timer = QTimer()
    timer.setInterval(int(args.sample_s * 1000))
    timer.timeout.connect(sample)
    state["start"] = time.monotonic()
    studio.controller.keep_playing(GenerationSettings(prompt=args.prompt, seconds=10.0, steps=args.steps))
    sample()
    timer.start()
    while not done:
        app.processEvents()
        time.sleep(0.005)
    timer.stop()
    take_id = done[0]
    take_s = studio.session.take(take_id).seconds if take_id is not None else 0.0
    studio.close()

    with open(out / "samples.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    after = [r for r in rows if r["t_s"] >= warmup_s]
    growth = (max(r["rss_mb"] for r in after) - after[0]["rss_mb"]) if after else float("nan")
    sounding = [r for r in rows if state["first_sound"] and r["t_s"] > state["first_sound"]]
    underruns = rows[-1]["underruns"] - state["underruns_at_sound"]
    ref_drop = max(rows[0][k] - rows[-1][k] for k in ("ref_true", "ref_false", "ref_none"))
    summary = {"minutes": args.minutes, "sink": args.sink, "engine": args.engine or "real",
               "wall_s": round(time.monotonic() - t0, 1), "take_seconds": round(take_s, 1),
               "rss_start_mb": rows[0]["rss_mb"], "rss_end_mb": rows[-1]["rss_mb"],
               "rss_growth_after_warmup_mb": round(growth, 1), "warmup_s": warmup_s,
               "min_lead_s": min((r["lead_s"] for r in sounding), default=float("nan")),
               "underruns_after_first_sound": underruns, "refcount_drop": ref_drop}
    ok = (take_id is not None and growth <= args.rss_limit_mb and underruns == 0 and ref_drop <= 100)
    summary["ok"] = ok
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("summary:", json.dumps(summary))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
