"""`run_suite`: every section of `melody eval all` in order (package docstring), the wall-time
budget model and the run's context (machine, git, bundle)."""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from melody_core import LATENT_HOP, SAMPLE_RATE, __version__
from melody_core.eval.suite import control, gen, judges
from melody_core.eval.suite.compare import f_min
from melody_core.eval.suite.options import RESULTS_FORMAT, Log, SuiteOptions, default_ablation_work
from melody_core.eval.suite.report import write_report
from melody_core.eval.suite.sets import chunk_joins_s, family_labels, family_templates, load_reference
from melody_core.eval.suite.targets import read_baseline, targets
from melody_core.train.state import write_json

# Cost model (measured on the reference 2-core CPU with the bundled tiny model, 2 threads, while the
# machine also ran two training jobs): 10 s at 5 / 10 / 20 steps took 1.6 / 3.4 / 5.1 s; musicnn
# embedded 10 s in 0.6-1.1 s. Every term but the ablation's training budget is scaled by the
# calibration generation (`run_suite`), so a busier or faster machine gets a matching estimate.
GEN_BASE_S = 0.8  # seconds per 10 s of audio outside the DPD steps (MuLan, LM, VAE decode)
GEN_STEP_S = 0.22  # seconds per DPD step on one full window (CFG batch of 2)
SCORE_S = 0.8  # seconds to embed and score one generated 10 s clip (musicnn, MuLan)
REF_CLIP_S = 1.0  # seconds per 10 s reference clip (load, musicnn, MuLan, tempo)
RECON_CLIP_S = 0.2  # seconds per 10 s reference clip for the VAE round trip
# The judges on the reference CPU (measured, 2 threads, two training jobs beside): librosa's beat tracker
# 0.16 s and chroma_cqt 0.53 s per 10 s clip once warm; librosa's first beat_track in a process
# compiles its numba kernels (~12 s with a warm numba cache, ~50 s on a first-ever run).
JUDGE_CLIP_S = 0.8  # seconds per 10 s clip for the beat tracker, the key finder and our estimator
JUDGE_WARMUP_S = 15.0  # librosa / numba warm-up, once per run
ABLATION_EXTRA_S = 300.0  # ablation besides the two training budgets (caches on a first run, evaluation)
HOUR_S = 3600.0  # the documented budget of a default run
CALIBRATION_STEPS = 10  # one timed generation of `seconds` at these steps scales the cost model
ABLATION_MARKER = "ablation.json"  # `ablation_arch`'s per-arm marker: folders holding it are its runs


# ------------------------------------------------------------------------------------------- budget
def generation_cost(layout: Any, seconds: float, steps: int) -> float:
    """Modelled wall seconds of one generation on the reference CPU (module constants)."""
    _, n_windows = chunk_joins_s(layout, seconds, steps)
    window_s = layout.length * LATENT_HOP / SAMPLE_RATE
    dpd_steps = steps * min(1.0, seconds / window_s) + (n_windows - 1) * layout.chunk_steps(steps)
    return GEN_BASE_S * seconds / 10 + GEN_STEP_S * dpd_steps


def estimate_seconds(
    layout: Any, opts: SuiteOptions, n_templates: int, n_families: int, scale: float = 1.0
) -> dict[str, float]:
    """Estimated wall seconds per section; generation costs times `scale` (this machine vs the model)."""

    def gen(seconds: float, steps: int) -> float:
        return scale * (generation_cost(layout, seconds, steps) + SCORE_S * seconds / 10)

    n_judge = opts.judge_genres * opts.judge_seeds
    n_tempo = min(opts.tempo_templates, max(n_templates, 1)) * len(opts.tempo_bpms) * opts.tempo_seeds
    est = {
        "reference": scale * opts.clips * REF_CLIP_S * opts.seconds / 10,
        "reconstruction": scale * opts.clips * RECON_CLIP_S * opts.seconds / 10,
        "grid": opts.clips * sum(gen(opts.seconds, t) for t in opts.steps) * len(opts.schedules),
        "tempo": n_tempo * gen(opts.tempo_seconds or opts.seconds, opts.control_steps),
        "instrument": n_families * opts.family_seeds * gen(opts.seconds, opts.control_steps),
        "pair": 2 * opts.pair_seeds * gen(opts.seconds, opts.control_steps),
        "judges": n_judge * (gen(opts.seconds, opts.control_steps) + scale * JUDGE_CLIP_S * opts.seconds / 10)
        + scale * (opts.clips * (JUDGE_CLIP_S + SCORE_S) * opts.seconds / 10 + JUDGE_WARMUP_S),
        "seams": opts.seam_clips * gen(opts.seam_seconds, opts.control_steps),
        "ablation": 2 * opts.ablation_minutes * 60 + ABLATION_EXTRA_S,
    }
    est = {k: (0.0 if k in opts.skip else v) for k, v in est.items()}
    return {**{k: round(v, 1) for k, v in est.items()}, "total": round(sum(est.values()), 1)}


# ------------------------------------------------------------------------------------------ context
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info(pipe: Any) -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "pipeline_threads": pipe.threads,
        "device": pipe.device,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "software": __version__,
    }


def git_info() -> dict[str, Any] | None:
    """Commit of the source tree this package runs from (None outside a git checkout)."""
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def bundle_info(pipe: Any) -> dict[str, Any]:
    folder = Path(pipe.bundle.info.path)
    return {
        "bytes": sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else None,
        "path": str(pipe.bundle.info.path),
        "hash": pipe.model_hash,
        "short_hash": pipe.short_hash,
        "preset": pipe.bundle.info.preset,
        "random_init": bool(pipe.bundle.meta.get("random_init", False)),
    }


def sanitize(x: Any) -> Any:
    """JSON-safe copy: non-finite floats -> None, tuples -> lists, private "_" keys dropped."""
    if isinstance(x, dict):
        return {str(k): sanitize(v) for k, v in x.items() if not str(k).startswith("_")}
    if isinstance(x, list | tuple):
        return [sanitize(v) for v in x]
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Path):
        return str(x)
    return x


# ---------------------------------------------------------------------------------------- the suite
def _ablation(
    corpus: Path, upstream: Path, opts: SuiteOptions, threads: int | None, log: Log, run: Callable | None
) -> dict[str, Any]:
    from melody_core.eval.ablation_arch import ArchAblationOptions, run_arch_ablation

    work = Path(opts.ablation_work) if opts.ablation_work else default_ablation_work()
    if not opts.reuse_ablation:  # every number from this run: remove earlier arm runs (not the caches)
        for arm in ("dpd", "unet1d"):
            if (work / arm / ABLATION_MARKER).is_file():
                shutil.rmtree(work / arm)
    aopts = ArchAblationOptions(minutes_per_arm=opts.ablation_minutes, seed=opts.seed, threads=threads)
    result = (run or run_arch_ablation)(corpus, upstream, work, aopts, log)
    return {**result, "work_dir": str(work), "reused": opts.reuse_ablation}


def run_suite(
    pipe: Any,
    corpus: str | Path,
    out: str | Path,
    opts: SuiteOptions | None = None,
    log: Log = print,
    *,
    embedder: Any = None,
    ablation: Callable | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Run every section (module docstring) with a loaded `MelodyPipeline`; write results.json,
    README.md and the plots into `out`; return the results. `embedder`: a musicnn-like embedder
    (default `MusicnnEmbedder.load`); `ablation`: stand-in for `run_arch_ablation` (same signature)."""
    opts = opts or SuiteOptions()
    root, out = Path(corpus), Path(out)
    t_start = time.perf_counter()
    results: dict[str, Any] = {
        "format": RESULTS_FORMAT, "complete": False,
        "command": command or f"melody eval all --bundle {pipe.bundle.info.path} --data {root}",
        "settings": opts.to_dict(), "bundle": bundle_info(pipe), "machine": machine_info(pipe),
        "git": git_info(), "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "timings_s": {},
        "skipped_sections": sorted(opts.skip),
    }  # fmt: skip
    results["machine"]["load_avg_start"] = gen.load_avg()

    def section(name: str, fn: Callable[[], Any], fatal: bool = False) -> Any:
        if name in opts.skip:
            return None
        log(f"== {name} (estimated {results['estimate_s'].get(name, 0) / 60:.1f} min)")
        t0 = time.perf_counter()
        try:
            value = fn()
        except (ValueError, RuntimeError, OSError) as exc:
            if fatal:
                raise
            log(f"warning: section {name} failed: {exc}")
            value = {"error": f"{type(exc).__name__}: {exc}"}
        results["timings_s"][name] = round(time.perf_counter() - t0, 2)
        results[name] = value
        write_json(out / "results.json", sanitize(results))
        return value

    if opts.baseline:  # a bad baseline fails before any work
        results["baseline"] = read_baseline(opts.baseline)
    out.mkdir(parents=True, exist_ok=True)
    clips, data = load_reference(root, opts.clips, opts.seconds, log)  # bad corpus: fail before any work
    templates, labels = family_templates(root), family_labels(root)
    gen.generate(pipe, "warm up", opts.seed, opts.seconds, CALIBRATION_STEPS)  # lazy inits, off the clock
    _, _, calib = gen.generate(pipe, "calibration", opts.seed, opts.seconds, CALIBRATION_STEPS)
    scale = calib / generation_cost(pipe.models.layout, opts.seconds, CALIBRATION_STEPS)
    results["estimate_s"] = estimate_seconds(pipe.models.layout, opts, len(templates), len(templates), scale)
    results["calibration"] = {"generation_s": round(calib, 3), "steps": CALIBRATION_STEPS,
                              "speed_vs_reference_cpu": round(1 / scale, 3)}
    log(f"estimated wall time: {f_min(results['estimate_s']['total'])} (this machine generates at "
        f"{1 / scale:.2f}x the modelled reference speed)")
    if results["estimate_s"]["total"] > HOUR_S:
        log("warning: that is over an hour; fewer --clips or --skip ablation shorten it")
    if embedder is None:
        from melody_core.eval.musicnn import MusicnnEmbedder

        embedder = MusicnnEmbedder.load(device=opts.device)

    results["data"] = {"corpus": str(root), "split": "valid", **data, "families": [f for f, _ in templates]}
    ref = section("reference", lambda: gen.measure_reference(pipe, clips, embedder, log), fatal=True)
    section("reconstruction", lambda: gen.measure_reconstruction(pipe, clips, opts.seconds, log))
    reference_patches = torch.cat(ref["_patches"])
    prompts = [c.caption for c in clips if c.caption]
    section("grid", lambda: gen.measure_grid(pipe, embedder, reference_patches, prompts, opts, log))
    section("tempo", lambda: control.measure_tempo(pipe, templates, clips, opts, log))
    section("instrument", lambda: control.measure_instrument(pipe, templates, labels, clips, opts, log))
    section("pair", lambda: control.measure_pair(pipe, root, clips, opts, log))
    section("judges", lambda: judges.measure_judges(pipe, clips, embedder, opts, log))
    section("seams", lambda: gen.measure_seams(pipe, prompts[: opts.seam_clips], opts, log))
    section(
        "ablation", lambda: _ablation(root, Path(pipe.bundle.info.path), opts, pipe.threads, log, ablation)
    )
    results["machine"]["load_avg_end"] = gen.load_avg()
    results["timings_s"]["total"] = round(time.perf_counter() - t_start, 2)
    results["complete"] = True
    results["targets"] = targets(sanitize(results))
    write_json(out / "results.json", sanitize(results))
    clean = json.loads((out / "results.json").read_text(encoding="utf-8"))
    write_report(out, clean)  # from results.json alone
    log(f"wrote {out / 'results.json'} and {out / 'README.md'} ({f_min(results['timings_s']['total'])})")
    return clean
