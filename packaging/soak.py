"""Long "Keep playing" soak of the real app (offscreen): RSS, lead over playback, underruns, refcounts.

    python packaging/soak.py --minutes 30 --out soak_out [--bundle DIR] [--sink alsa|paced]

`--sink alsa` plays through PortAudio's default device (packaging/soak.sh points ALSA at a FIFO that
a reader drains at real time: a paced null sink); `--sink paced` uses an in-process device thread
that consumes samples at real time (no sound stack at all). Every `--sample-s` seconds a row goes to
OUT/samples.csv; OUT/summary.json holds the verdict. Exit 0 when: no crash (the process is alive
to write it), RSS grew by at most `--rss-limit-mb` after the warm-up (until Stop), the generator
stayed ahead of playback (at most `--max-underruns` gaps after the first sound, default 0) and the
refcounts of True/False/None did not fall. Stop and the saving of the take are reported apart:
RSS at Stop, the peak while saving (VmHWM, reset at Stop) and after, and the time it took.
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


def rss_mb(field: str = "VmRSS") -> float:
    """This process's resident set (VmRSS) or its high-water mark since the last reset (VmHWM), MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux: `5` to /proc/self/clear_refs); False when refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


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
    p.add_argument("--max-underruns", type=int, default=0, help="gaps allowed after the first sound")
    args = p.parse_args()

    from melody_core.runtime import prepare_environment

    prepare_environment()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QEventLoop, QTimer
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
    state = {"start": 0.0, "first_sound": 0.0, "underruns_at_sound": 0, "stop": 0.0, "rss_at_stop": 0.0,
             "hwm_reset": False}

    def sample() -> None:
        now = time.monotonic() - state["start"]
        played = max(studio.player.position(), 0) / sr
        generated = studio.controller.live_samples / sr
        if not state["first_sound"] and played > 0:
            state["first_sound"] = now
            state["underruns_at_sound"] = studio.player.underruns
        phase = "save" if state["stop"] else "play"
        rows.append({"t_s": round(now, 1), "phase": phase, "rss_mb": round(rss_mb(), 1),
                     "generated_s": round(generated, 2),
                     "played_s": round(played, 2), "lead_s": round(generated - played, 2),
                     "underruns": studio.player.underruns, "ref_true": sys.getrefcount(True),
                     "ref_false": sys.getrefcount(False), "ref_none": sys.getrefcount(None)})
        print(json.dumps(rows[-1]), flush=True)
        if now >= 60 * args.minutes and not state["stop"]:
            state["rss_at_stop"] = rss_mb()
            state["hwm_reset"] = reset_peak_rss()  # from here VmHWM is the peak of Stop + saving the take
            state["stop"] = time.monotonic()
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
    # the app's own event loop until the take is saved (as `app.exec()` runs it: no polling here, which
    # woke the GUI thread 200 times a second and took the GIL from the generator thread)
    loop = QEventLoop()
    studio.controller.busy_changed.connect(lambda busy, _kind: None if busy else loop.quit())  # job over
    if studio.controller.busy:
        loop.exec()
    timer.stop()
    save_s = time.monotonic() - state["stop"] if state["stop"] else float("nan")
    rss_peak_save = rss_mb("VmHWM") if state["hwm_reset"] else float("nan")
    rss_after_save = rss_mb()
    take_id = done[0]
    take_s = studio.session.take(take_id).seconds if take_id is not None else 0.0
    studio.close()

    with open(out / "samples.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    play = [r for r in rows if r["phase"] == "play"]  # until Stop; the rows after it are the save
    after = [r for r in play if r["t_s"] >= warmup_s]
    growth = (max(r["rss_mb"] for r in after) - after[0]["rss_mb"]) if after else float("nan")
    sounding = [r for r in play if state["first_sound"] and r["t_s"] > state["first_sound"]]
    underruns = play[-1]["underruns"] - state["underruns_at_sound"]  # Stop's own cut is not a gap
    ref_drop = max(rows[0][k] - rows[-1][k] for k in ("ref_true", "ref_false", "ref_none"))
    summary = {"minutes": args.minutes, "sink": args.sink, "engine": args.engine or "real",
               "wall_s": round(time.monotonic() - t0, 1), "take_seconds": round(take_s, 1),
               "rss_start_mb": rows[0]["rss_mb"],
               "rss_after_warmup_mb": after[0]["rss_mb"] if after else None,
               "rss_at_stop_mb": round(state["rss_at_stop"], 1),
               "rss_growth_after_warmup_mb": round(growth, 1), "warmup_s": warmup_s,
               "min_lead_s": min((r["lead_s"] for r in sounding), default=float("nan")),
               "max_lead_s": max((r["lead_s"] for r in sounding), default=float("nan")),
               "underruns_after_first_sound": underruns, "refcount_drop": ref_drop,
               "rss_peak_during_save_mb": round(rss_peak_save, 1),
               "rss_after_save_mb": round(rss_after_save, 1), "stop_to_saved_s": round(save_s, 1),
               "limits": {"rss_growth_mb": args.rss_limit_mb, "underruns": args.max_underruns,
                          "refcount_drop": 100}}
    ok = (take_id is not None and growth <= args.rss_limit_mb and underruns <= args.max_underruns
          and ref_drop <= 100)
    summary["ok"] = ok
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("summary:", json.dumps(summary))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
