"""CPU cost of `melody data build` per second of audio, by stage, and the projected wall time of a
50 h build on 2 free cores.

    nice -n 10 python benchmarks/corpus_build_speed.py [--hours 0.3] [--seed 0] [--keep]

Runs a small build with one worker in this process (so every stage can be timed) into a temporary
folder under /tmp (removed afterwards unless --keep) and measures CPU seconds (user + sys of this
process and of its child processes, e.g. `fluidsynth`) per stage, exclusive of nested stages. The
machine may be busy: CPU time, unlike wall time, hardly depends on that. Projected wall time of
`--hours 50` with 2 workers on 2 free cores = total CPU-s per audio-s x 50 h / 2 (the main process's
own work is included in the total; the workers are independent, so they scale), plus the one-time
cost each worker pays once (imports of scipy / pyloudnorm / music21, measured before the build, and
the in-process soundfont loads).

Soundfont loading happens inside the synthesis call: with the in-process synthesizer
(`melody_core.data.synth`) it is its own stage; with the `fluidsynth` command line it is estimated
per call as the CPU of rendering a one-note MIDI file through the same command.
A benchmark, not a test: it asserts nothing and its figures depend on the machine.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (module, attribute, stage): wrapped where it exists (the stages of the old and new renderers differ)
STAGES = (
    ("melody_core.data.jobs", "load_score", "scores: parse (music21)"),
    ("melody_core.data.jobs", "extract_facts", "scores: parse (music21)"),
    ("melody_core.data.jobs", "plan_variation", "scores: variation"),
    ("melody_core.data.jobs", "variation_tracks", "scores: variation"),
    ("melody_core.data.arranger", "arrange", "arrangement (notes)"),
    ("melody_core.data.jobs", "write_midi", "MIDI"),
    ("melody_core.data.render", "midi_bytes", "MIDI"),
    ("melody_core.data.render", "run_guarded", "synthesis (fluidsynth process)"),
    ("melody_core.data.render", "load_audio", "render read-back"),
    ("melody_core.data.synth", "_load_soundfont", "soundfont load"),
    ("melody_core.data.synth", "_render_blocks", "synthesis"),
    ("melody_core.data.mix", "tilt_eq", "mix: EQ tilt"),
    ("melody_core.data.jobs", "cut_clips", "cut clips"),
    ("melody_core.data.mix", "normalise_loudness", "mix: loudness"),
    ("melody_core.data.jobs", "normalize_peak", "mix: loudness"),
    ("melody_core.data.jobs", "save_audio", "FLAC write"),
    ("melody_core.data.jobs", "symbolic_captions", "captions"),
    ("melody_core.data.captions", "arrangement_captions", "captions"),
)
OTHER = "other (build loop, imports, journal, manifest)"
FLUID_CALL = "synthesis (fluidsynth process)"


def cpu_now() -> float:
    """User + sys CPU seconds of this process and its waited-for children."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


class Timer:
    """Exclusive CPU seconds per stage (a stage nested in another is not counted twice)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.fluid_cmds: list[list[str]] = []
        self._stack: list[float] = []  # CPU seconds spent in nested stages, per open stage

    def wrap(self, fn, stage: str):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            if stage == FLUID_CALL:
                self.fluid_cmds.append(list(args[0]))
            start = cpu_now()
            self._stack.append(0.0)
            try:
                return fn(*args, **kwargs)
            finally:
                nested = self._stack.pop()
                spent = cpu_now() - start
                self.seconds[stage] += spent - nested
                self.calls[stage] += 1
                if self._stack:
                    self._stack[-1] += spent

        return inner


def install(timer: Timer) -> list[str]:
    installed = []
    for module, attr, stage in STAGES:
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        fn = getattr(mod, attr, None)
        if fn is None:
            continue
        setattr(mod, attr, timer.wrap(fn, stage))
        installed.append(f"{module}.{attr}")
    return installed


def fluid_load_estimate(cmds: list[list[str]], tmp: Path) -> float:
    """CPU seconds of the soundfont loads inside `cmds` (fluidsynth command lines): each distinct
    command shape renders a one-note MIDI file 3 times; its mean CPU is charged per call."""
    import subprocess

    from melody_core.data.midi import Note, Track, write_midi

    tiny = write_midi(tmp / "one-note.mid", [Track(0, 0, [Note(0.0, 1.0, 60, 100)])], 120.0, stop_after_s=0.5)
    cost: dict[tuple, float] = {}
    total = 0.0
    for cmd in cmds:
        shape = (cmd[-2], "synth.dynamic-sample-loading=1" in cmd)  # soundfont, how it is loaded
        if shape not in cost:
            runs = []
            for _ in range(3):
                start = cpu_now()
                subprocess.run([*cmd[:-3], str(tmp / "one-note.wav"), cmd[-2], str(tiny)], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
                runs.append(cpu_now() - start)
            cost[shape] = sum(runs) / len(runs)
        total += cost[shape]
    return total


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hours", type=float, default=0.3, help="hours of audio to build (default 0.3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arrangement-share", type=float, default=0.8)
    p.add_argument(
        "--target-hours", type=float, default=50.0, help="build size the wall time is projected for"
    )
    p.add_argument("--cores", type=int, default=2, help="free cores (= workers) of the projection")
    p.add_argument("--keep", action="store_true", help="keep the built corpus (its folder is printed)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    start_wall = time.monotonic()
    before_imports = cpu_now()
    import music21  # noqa: F401 - one-time imports of a worker, timed apart from the build
    import pyloudnorm  # noqa: F401
    import scipy.signal  # noqa: F401
    import torch

    from melody_core.data import jobs  # noqa: F401
    from melody_core.data.build import BuildSettings, build_corpus

    torch.set_num_threads(1)
    start_cpu = cpu_now()
    imports_s = start_cpu - before_imports

    timer = Timer()
    installed = install(timer)
    out = Path(tempfile.mkdtemp(prefix="render-bench-", dir="/tmp"))
    try:
        settings = BuildSettings(out=str(out / "corpus"), seed=args.seed, hours=args.hours, workers=1,
                                 arrangement_share=args.arrangement_share)  # fmt: skip
        manifest = build_corpus(settings, log=lambda _msg: None)
        total = cpu_now() - start_cpu
        wall = time.monotonic() - start_wall
        audio_s = manifest["totals"]["hours"] * 3600.0
        stages = dict(timer.seconds)
        if timer.fluid_cmds:
            load = fluid_load_estimate(timer.fluid_cmds, out)
            stages["soundfont load (estimated)"] = load
            stages[FLUID_CALL] -= load
        stages[OTHER] = total - sum(stages.values())
        flac_mb = sum(f.stat().st_size for f in (out / "corpus").rglob("*.flac")) / 1e6
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    one_time = imports_s + stages.get("soundfont load", 0.0)  # in process: once per worker and font
    per_s = (total - stages.get("soundfont load", 0.0)) / audio_s
    projected_h = (per_s * args.target_hours * 3600.0 / args.cores + one_time) / 3600.0
    sources = ", ".join(f"{k} {v['hours']:.3f} h" for k, v in manifest["sources"].items())
    print(f"built {audio_s / 3600:.3f} h of audio ({manifest['totals']['clips']} clips, "
          f"{sources}); "
          f"{flac_mb:.1f} MB FLAC; wall {wall:.0f} s (machine load: not a speed figure)")  # fmt: skip
    print(f"{'stage':<48} {'CPU s':>8} {'CPU s / audio s':>16} {'share':>6} {'calls':>6}")
    for stage, sec in sorted(stages.items(), key=lambda kv: -kv[1]):
        calls = timer.calls.get(stage, "")
        print(f"{stage:<48} {sec:8.1f} {sec / audio_s:16.4f} {sec / total:6.1%} {calls!s:>6}")
    print(f"{'total':<48} {total:8.1f} {total / audio_s:16.4f}")
    print(f"steady-state CPU-s per audio-s (without one-time soundfont loads): {per_s:.4f}; one-time per "
          f"worker: {one_time:.1f} CPU-s (imports {imports_s:.1f} s)")
    print(
        f"real-time factor per core: {1 / per_s:.1f}x; audio hours per wall hour with {args.cores} "
        f"free cores: {args.cores / per_s:.1f}"
    )
    print(
        f"projected wall time of --hours {args.target_hours:g} on {args.cores} free cores: "
        f"{projected_h:.2f} h ({projected_h * 60:.0f} min)"
    )
    if args.keep:
        print(f"corpus kept in {out / 'corpus'}")
    if args.json:
        figures = {"audio_s": audio_s, "cpu_s": total, "cpu_per_audio_s": per_s, "one_time_s": one_time,
                   "projected_wall_h": projected_h, "stages": stages, "wrapped": installed,
                   "flac_mb": flac_mb}  # fmt: skip
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
