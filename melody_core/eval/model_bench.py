"""Per-model forward timings of a preset on this machine and a projected 10 s real-time factor.

The projection adds the stages of one 10 s generation (paper pipeline, Fig. 1):
  MuLan text embedding + RVQ  ->  LM: 250 semantic tokens (25 Hz x 10 s), KV-cached
  ->  DPD: `steps` guided evaluations on L = 2500 latent frames (CFG batch of 2 given as twins,
      the network context prepared once: `DualPathDiffusion.prepare`)
  ->  VAE decode of 2500 frames.
Randomly initialised weights: speed does not depend on training.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from melody_core import FRAMES_PER_TOKEN, LATENT_RATE, SAMPLE_RATE
from melody_core.config import component_classes


@dataclass
class Timing:
    name: str
    what: str
    median_s: float
    runs: int


def _time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _build(name: str, preset: str) -> torch.nn.Module:
    cfg_cls, model_cls = component_classes(name)
    torch.manual_seed(0)
    return model_cls(cfg_cls.preset(preset)).eval()


@torch.inference_mode()
def bench_models(preset: str = "tiny", seconds: float = 10.0, steps: int = 10, repeats: int = 5,
                 lm_threads: int = 1) -> tuple[list[Timing], dict[str, float]]:
    """Time each stage; returns (timings, summary with the projected real-time factor)."""
    n_frames = int(seconds * LATENT_RATE)
    n_tokens = n_frames // FRAMES_PER_TOKEN
    timings: list[Timing] = []

    mulan = _build("mulan", preset)
    mulan.embed_text(["warm up the text tower"])
    prompts = iter(f"a calm piano piece number {i}" for i in range(10_000))  # defeat the caption cache
    t = _time(lambda: mulan.conditioning_tokens(mulan.embed_text([next(prompts)])), repeats)
    timings.append(Timing("mulan", "text embedding + RVQ tokens, 1 prompt", t, repeats))

    lm = _build("lm", preset)
    prefix = torch.zeros(1, lm.config.n_prefix, dtype=torch.long)
    threads = torch.get_num_threads()
    torch.set_num_threads(lm_threads)  # batch-1 decoding is per-op bound: one thread is fastest
    t = _time(lambda: lm.generate(prefix, n_tokens, generator=torch.Generator().manual_seed(0)), repeats)
    torch.set_num_threads(threads)
    timings.append(Timing("lm", f"{n_tokens} tokens, KV cache, {lm_threads} thread(s)", t, repeats))

    dpd = _build("dpd", preset)
    z = torch.randn(1, n_frames, dpd.config.d_latent)
    delta = torch.full((1, n_frames), 0.7)
    tokens = torch.randint(0, dpd.config.vocab_size, (2, n_tokens))
    uncond = torch.tensor([False, True])
    context = dpd.prepare(tokens, uncond, 2, n_frames, shared_input=True)  # once per window, as the sampler
    t_dpd = _time(lambda: dpd(z, delta, context=context), repeats)
    timings.append(Timing("dpd", f"1 guided step: CFG twins (2 rows) x L={n_frames}", t_dpd, repeats))

    vae = _build("vae", preset)
    zlat = torch.randn(1, n_frames, vae.config.latent_dim)
    t_vae = _time(lambda: vae.decode(zlat), repeats)
    timings.append(Timing("vae", f"decode {n_frames} frames ({seconds:g} s)", t_vae, repeats))

    ssl = _build("ssl", preset)
    wav = torch.randn(1, int(seconds * SAMPLE_RATE)) * 0.1
    t = _time(lambda: ssl.extract(wav), repeats)
    timings.append(Timing("ssl", f"extract {seconds:g} s (continuation of user audio only)", t, repeats))

    by = {x.name: x.median_s for x in timings}
    total = by["mulan"] + by["lm"] + steps * by["dpd"] + by["vae"]
    summary = {
        "seconds": seconds,
        "steps": steps,
        "threads": threads,
        "projected_total_s": total,
        "projected_realtime_factor": seconds / total,
    }
    return timings, summary


def run_model_bench(preset: str = "tiny", steps: int = 10, repeats: int = 5, threads: int = 0,
                    as_json: bool = False) -> None:
    if threads > 0:
        torch.set_num_threads(threads)
    timings, summary = bench_models(preset=preset, steps=steps, repeats=repeats)
    if as_json:
        print(json.dumps({"timings": [t.__dict__ for t in timings], **summary}, indent=2))
        return
    print(f"preset {preset!r}, torch {torch.__version__}, {summary['threads']} thread(s), "
          f"median of {repeats} runs, random weights")
    for t in timings:
        print(f"  {t.name:<6} {t.median_s * 1000:9.1f} ms   {t.what}")
    print(f"projected 10 s generation ({steps} DPD steps): {summary['projected_total_s']:.3f} s "
          f"= {summary['projected_realtime_factor']:.1f}x real time")
