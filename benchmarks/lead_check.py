"""Bounded lead with the real model: "Keep playing" for 3 real minutes (offscreen window, a paced null
sink consuming samples at real time), a prompt edit typed into the prompt box halfway, then Stop.

    nice -n 0 python benchmarks/lead_check.py [--minutes 3] [--edit-at-s 90] [--threads 1] [--bundle DIR]

Prints one JSON line per `--sample-s` and a summary: the lead over playback (sampled, and at every
chunk's arrival from the lead gate's record) against the gate's bound, underruns after the first
sound, the time from the prompt edit (the keystroke; the 400 ms steer debounce included) to the first
sample of the new prompt at the device, and whether Stop kept exactly the heard samples as the take.
A benchmark, not a test: it asserts nothing and its figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def paced_backend():  # noqa: ANN201 - packaging/soak.py's real-time null sink
    spec = importlib.util.spec_from_file_location("soak", ROOT / "packaging" / "soak.py")
    assert spec is not None and spec.loader is not None
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)
    return soak.PacedBackend()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=3.0, help="playback time before Stop")
    p.add_argument("--edit-at-s", type=float, default=90.0, help="playback time of the prompt edit")
    p.add_argument("--bundle", default=None, help="model bundle (default: the bundled model)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=None, help="diffusion steps (default: the panel's)")
    p.add_argument("--prompt", default="warm lo-fi piano with soft drums")
    p.add_argument("--new-prompt", default="bright synth arpeggios with a driving beat")
    p.add_argument("--sample-s", type=float, default=10.0)
    p.add_argument("--out", default=None, help="data folder (default: a temporary one)")
    args = p.parse_args()

    from melody_core.runtime import prepare_environment

    prepare_environment()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import tempfile

    from PySide6.QtWidgets import QApplication

    from app.engine import real_pipeline
    from app.studio import Studio

    data = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="lead-check-"))
    app = QApplication.instance() or QApplication([])
    studio = Studio.create(data / "data", real_pipeline, paced_backend(), bundle=args.bundle, device="cpu",
                           threads=args.threads)
    c, w, player = studio.controller, studio.window, studio.player
    while c.engine is None:
        app.processEvents()
        if c.engine_error:
            print(f"error: {c.engine_error}", file=sys.stderr)
            return 2
        time.sleep(0.01)
    sr = player.sample_rate
    w.panel.prompt.setPlainText(args.prompt)
    if args.steps:
        w.panel.steps.setValue(args.steps)
    done: list[object] = []
    c.job_finished.connect(lambda kind, tid: done.append(tid))
    t0 = time.perf_counter()
    w.keep_playing()
    gate = c._job.gate  # noqa: SLF001 - the benchmark reads the gate's record
    state: dict[str, float] = {"first_sound": 0.0, "underruns_at_sound": 0, "edit_t": 0.0, "edit_heard": 0,
                               "new_prompt_heard_t": 0.0, "max_lead": 0, "next_sample": 0.0}
    stop_at = int(args.minutes * 60 * sr)
    stopped = False
    while not done:
        app.processEvents()
        time.sleep(0.005)
        now = time.perf_counter() - t0
        heard = max(player.position() + 1, 0)
        if heard > 0 and not state["first_sound"]:
            state["first_sound"], state["underruns_at_sound"] = now, player.underruns
        if heard > 0:
            state["max_lead"] = max(state["max_lead"], c.live_samples - heard)
        if not state["edit_t"] and heard >= args.edit_at_s * sr:
            state["edit_t"], state["edit_heard"] = now, heard
            w.panel.prompt.setPlainText(args.new_prompt)  # typed: the panel's debounced steer follows
        marker = gate.markers[0].sample if gate.markers else None
        if state["edit_t"] and not state["new_prompt_heard_t"] and marker is not None and heard > marker:
            state["new_prompt_heard_t"] = now
        if now >= state["next_sample"]:
            state["next_sample"] = now + args.sample_s
            print(json.dumps({"t_s": round(now, 1), "played_s": round(heard / sr, 2),
                              "generated_s": round(c.live_samples / sr, 2),
                              "lead_s": round((c.live_samples - heard) / sr, 2) if heard else None,
                              "underruns": player.underruns}), flush=True)
        if heard >= stop_at and not stopped:
            stopped = True
            heard_at_stop = heard
            w.cancel()  # Stop
    while c.busy:  # job_finished comes just before the job is cleared
        app.processEvents()
        time.sleep(0.005)
    take_id = done[0]
    take_n = len(studio.session.audio(take_id)) if take_id is not None else 0
    leads = [lead for lead, _ in gate.leads]
    summary = {
        "minutes": args.minutes, "threads": args.threads, "steps": w.panel.steps.value(),
        "model": c.model_name, "chunks": len(gate.leads),
        "first_sound_s": round(state["first_sound"], 2),
        "max_lead_sampled_s": round(state["max_lead"] / sr, 2),
        "max_lead_at_chunk_s": round(max(leads) / sr, 2) if leads else None,
        "bound_s": round(gate.bound / sr, 2), "max_chunk_s": round(gate.max_chunk / sr, 2),
        "lead_within_bound": all(lead <= bound for lead, bound in gate.leads),
        "generator_waits": gate.waits,
        "underruns_after_first_sound": player.underruns - int(state["underruns_at_sound"]),
        "edit_to_new_prompt_audio_s": (round(state["new_prompt_heard_t"] - state["edit_t"], 2)
                                       if state["new_prompt_heard_t"] else None),
        "edit_to_new_prompt_playback_s": (round((gate.markers[0].sample - state["edit_heard"]) / sr, 2)
                                          if gate.markers and state["edit_t"] else None),
        "heard_at_stop_s": round(heard_at_stop / sr, 2) if stopped else None,
        "take_s": round(take_n / sr, 2),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    print("summary:", json.dumps(summary), flush=True)
    studio.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
