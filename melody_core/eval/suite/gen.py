"""Generation sections of `melody eval all` (`melody_core.eval.suite`): the reference set's own
scores, the steps x schedule grid (Table 2 and the angle-schedule ablation) and continuation seams.

Timing *(our choice, as Table 2)*: the speed of a grid cell is the audio samples generated per wall
second of `MelodyPipeline.generate` (conditioning, LM, DPD and VAE decode, with the pipeline's own
threads), summed over the cell's clips — "× real time" is that rate over 24 kHz. Embedding and
scoring are timed separately and not counted. The 1-minute load average is recorded at the start
and end of every cell so a busy machine shows up next to its numbers.

FAD uncertainty *(our choice)*: the standard deviation of the FAD over `FAD_BOOTSTRAP` bootstrap
resamples of the generated clips (each clip's embedding patches kept together, the reference set
fixed, resamples seeded from the base seed): a difference of FAD between two cells smaller than
about twice the combined deviation is within the noise of the set size.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

from melody_core import LATENT_HOP, SAMPLE_RATE
from melody_core.eval.suite.options import Log, SuiteOptions
from melody_core.eval.suite.sets import RefClip, chunk_joins_s, control_positions
from melody_core.generation.pipeline import MelodyPipeline
from melody_core.generation.types import GenerationSettings

FAD_BOOTSTRAP = 20  # bootstrap resamples of the generated clips for the FAD's spread
CONTROL_PERCENTILE = 90  # joins above this percentile of the control ratios are counted (10 % by chance)


def load_avg() -> float | None:
    """1-minute load average (None where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def generate(
    pipe: MelodyPipeline, prompt: str, seed: int, seconds: float, steps: int, schedule: str = "linear"
) -> tuple[np.ndarray, dict[str, Any], float]:
    """(audio (T,), metadata, wall seconds) of one `pipe.generate` call."""
    t0 = time.perf_counter()
    settings = GenerationSettings(prompt=prompt, seed=seed, seconds=seconds, steps=steps, schedule=schedule)
    result = pipe.generate(settings)
    return result.audio, result.metadata, time.perf_counter() - t0


def embed(embedder: Any, wav: np.ndarray | Tensor) -> Tensor:
    """(n_patches, dim) float32 embeddings of one (T,) 24 kHz clip (an empty (0, dim) when too short)."""
    x = torch.as_tensor(np.asarray(wav, dtype=np.float32)) if not isinstance(wav, Tensor) else wav.float()
    out = torch.as_tensor(embedder.embed(x, SAMPLE_RATE)).float().reshape(-1, embedder.dim)
    return out


def fad_with_spread(
    per_clip: list[Tensor], reference: Tensor, seed: int
) -> tuple[float | None, float | None]:
    """(FAD of all generated patches vs the reference patches, bootstrap SD over clips)."""
    from melody_core.eval.metrics import fad

    gen = torch.cat(per_clip) if per_clip else torch.zeros(0, reference.shape[1])
    try:
        value = fad(gen, reference)
    except ValueError:
        return None, None
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(FAD_BOOTSTRAP):
        pick = rng.integers(0, len(per_clip), len(per_clip))
        try:
            boots.append(fad(torch.cat([per_clip[i] for i in pick]), reference))
        except ValueError:
            continue
    return value, (float(np.std(boots, ddof=1)) if len(boots) > 1 else None)


def mcc_summary(pipe: MelodyPipeline, captions: list[str], wavs: list[np.ndarray | Tensor]) -> dict[str, Any]:
    """`metrics.mcc` + its standard error (std / sqrt n)."""
    from melody_core.eval.metrics import mcc

    m = mcc(pipe.models.mulan, captions, [torch.as_tensor(np.asarray(w, dtype=np.float32)) for w in wavs])
    return {**m, "se": m["std"] / math.sqrt(m["n"]) if m["n"] > 0 else None}


# ---------------------------------------------------------------------------------------- reference
def measure_reference(pipe: MelodyPipeline, clips: list[RefClip], embedder: Any, log: Log) -> dict[str, Any]:
    """musicnn patches of the reference clips (kept in the returned "_patches", not serialised) and
    the MCC of each captioned clip with its own caption."""
    patches = [embed(embedder, c.wav) for c in clips]
    captioned = [c for c in clips if c.caption]
    out: dict[str, Any] = {
        "clips": len(clips),
        "embedding": {
            "name": type(embedder).__name__,
            "dim": int(embedder.dim),
            "patches": int(sum(len(p) for p in patches)),
        },
        "mcc": mcc_summary(pipe, [c.caption for c in captioned], [c.wav for c in captioned]),
        "_patches": patches,
    }
    log(
        f"reference: {len(clips)} clips, {out['embedding']['patches']} embedding patches, "
        f"MCC {out['mcc']['mean']:.3f}"
    )
    return out


def measure_reconstruction(
    pipe: MelodyPipeline, clips: list[RefClip], seconds: float, log: Log
) -> dict[str, Any]:
    """VAE encode -> decode of the reference clips' files (`reconstruct.reconstruct_files`, the same
    central crop of at most `seconds`)."""
    from melody_core.eval.reconstruct import reconstruct_files

    rec = reconstruct_files(pipe.models.vae, [c.path for c in clips], max_seconds=seconds)
    rec["per_file"] = [{**f, "path": short_path(f["path"])} for f in rec["per_file"]]
    log(f"reconstruction: mel distance {rec['mel_distance']:.3f}, SI-SDR {rec['si_sdr']:+.2f} dB")
    return rec


def short_path(path: str) -> str:
    """The last two components of a clip path (clips/<name>): short, machine-independent."""
    parts = str(path).replace("\\", "/").split("/")
    return "/".join(parts[-2:])


# --------------------------------------------------------------------------------------------- grid
def grid_cell(
    pipe: MelodyPipeline,
    embedder: Any,
    reference: Tensor,
    prompts: list[str],
    schedule: str,
    steps: int,
    opts: SuiteOptions,
    log: Log,
) -> dict[str, Any]:
    """One (schedule, steps) cell: one clip per prompt (seed = base seed + i)."""
    load0 = load_avg()
    walls, nfe, nfe_dpd, per_clip, wavs, samples = [], [], [], [], [], 0
    embed_s = 0.0
    for i, prompt in enumerate(prompts):
        wav, meta, wall = generate(pipe, prompt, opts.seed + i, opts.seconds, steps, schedule)
        walls.append(wall)
        nfe.append(meta["nfe"])
        nfe_dpd.append(meta["nfe_dpd"])
        samples += len(wav)
        t0 = time.perf_counter()
        per_clip.append(embed(embedder, wav))
        embed_s += time.perf_counter() - t0
        wavs.append(wav)
    t0 = time.perf_counter()
    value, spread = fad_with_spread(per_clip, reference, opts.seed)
    m = mcc_summary(pipe, prompts, wavs)
    speed = samples / sum(walls)
    cell = {
        "schedule": schedule, "steps": steps, "clips": len(prompts), "audio_s": samples / SAMPLE_RATE,
        "generation_s": sum(walls), "median_clip_s": float(np.median(walls)), "speed_hz": speed,
        "realtime": speed / SAMPLE_RATE, "nfe": float(np.mean(nfe)), "nfe_dpd": float(np.mean(nfe_dpd)),
        "fad": value, "fad_boot_sd": spread, "mcc": m, "load_avg": [load0, load_avg()],
        "scoring_s": embed_s + time.perf_counter() - t0,
    }  # fmt: skip
    log(
        f"grid {schedule} {steps} steps: {speed:,.0f} Hz ({cell['realtime']:.2f}x real time), "
        f"FAD {_f(value)}, MCC {m['mean']:.3f}"
    )
    return cell


def measure_grid(
    pipe: MelodyPipeline, embedder: Any, reference: Tensor, prompts: list[str], opts: SuiteOptions, log: Log
) -> dict[str, Any]:
    cells = [
        grid_cell(pipe, embedder, reference, prompts, schedule, steps, opts, log)
        for schedule in opts.schedules
        for steps in opts.steps
    ]
    return {
        "cells": cells,
        "prompts": len(prompts),
        "seconds": opts.seconds,
        "guidance": _default("guidance"),
        "threads": pipe.threads,
        "reference_patches": int(reference.shape[0]),
    }


def _default(name: str) -> Any:
    return getattr(GenerationSettings(), name)


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


# -------------------------------------------------------------------------------------------- seams
def measure_seams(pipe: MelodyPipeline, prompts: list[str], opts: SuiteOptions, log: Log) -> dict[str, Any]:
    """`seam_ratio` at the chunk joins of long generations, and at random non-join positions of the
    same clips (control)."""
    from melody_core.eval.metrics import seam_ratio

    joins, n_windows = chunk_joins_s(pipe.models.layout, opts.seam_seconds, opts.control_steps)
    if not joins:
        return {"error": f"{opts.seam_seconds:g} s fits in one DPD window: no joins"}
    per_clip, join_ratios, control_ratios = [], [], []
    for i, prompt in enumerate(prompts):
        wav, meta, wall = generate(pipe, prompt, opts.seed + i, opts.seam_seconds, opts.control_steps)
        x = torch.from_numpy(np.ascontiguousarray(wav))
        at_joins = seam_ratio(x, SAMPLE_RATE, joins)
        ctrl_pos = control_positions(len(wav) / SAMPLE_RATE, joins, len(joins), opts.seed + i)
        control = seam_ratio(x, SAMPLE_RATE, ctrl_pos) if ctrl_pos else None
        # (the control's "inside" frames exclude the control positions instead of the joins: the
        # median flux of a 30 s clip barely moves when a few 0.1 s neighbourhoods are swapped)
        join_ratios += at_joins["per_join"]
        control_ratios += control["per_join"] if control else []
        per_clip.append(
            {
                "prompt": prompt,
                "seed": opts.seed + i,
                "ratio": at_joins["ratio"],
                "per_join": at_joins["per_join"],
                "control_ratio": control and control["ratio"],
                "control_positions_s": ctrl_pos,
                "windows": meta["windows"],
                "generation_s": wall,
            }
        )
        log(
            f"seams {i + 1}/{len(prompts)}: join ratio {at_joins['ratio']:.2f}, "
            f"control {control['ratio'] if control else float('nan'):.2f}"
        )
    by_join = [float(np.mean([c["per_join"][j] for c in per_clip])) for j in range(len(joins))]
    p90 = float(np.percentile(control_ratios, CONTROL_PERCENTILE)) if control_ratios else None
    return {
        "clips": len(per_clip), "seconds": opts.seam_seconds, "steps": opts.control_steps, "joins_s": joins,
        "windows": n_windows, "window_s": pipe.models.layout.length * LATENT_HOP / SAMPLE_RATE,
        "hop_s": pipe.models.layout.hop * LATENT_HOP / SAMPLE_RATE,
        "ratio_mean": float(np.mean(join_ratios)), "ratio_median": float(np.median(join_ratios)),
        "control_mean": float(np.mean(control_ratios)) if control_ratios else None,
        "control_median": float(np.median(control_ratios)) if control_ratios else None,
        "per_join_mean": by_join, "join_ratios": join_ratios, "control_ratios": control_ratios,
        "control_p90": p90,
        "joins_above_control_p90": None if p90 is None else sum(r > p90 for r in join_ratios),
        "per_clip": per_clip,
    }  # fmt: skip
