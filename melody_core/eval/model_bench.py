"""Per-model forward timings of a preset on this machine and a projected 10 s real-time factor.

The projection adds the stages of one 10 s generation (paper pipeline, Fig. 1):
  MuLan text embedding + RVQ  ->  LM: 250 semantic tokens (25 Hz x 10 s), KV-cached
  ->  DPD: `steps` guided evaluations on L = 2500 latent frames (CFG batch of 2 given as twins,
      the network context prepared once: `DualPathDiffusion.prepare`)
  ->  VAE decode of 2500 frames.
Randomly initialised weights: speed does not depend on training.
"""

from __future__ import annotations

import functools
import json
import math
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


# ------------------------------------------------------------------ DPD size table (issue: CPU preset v2)
# (patch P, d_hid, n_blocks, segment K) rows of `melody bench-models --dpd-table`; heads d/64 (at least 2),
# SRU state d/2 per direction (bi-SRU output = d: no projection), coarse FFN 2d. The first row is v1 tiny.
DPD_TABLE: tuple[tuple[int, int, int, int], ...] = (
    (1, 64, 2, 64),
    (2, 64, 2, 32), (2, 128, 2, 32), (2, 128, 4, 32),
    (5, 128, 4, 32), (5, 192, 4, 32), (5, 256, 4, 32),
    (10, 128, 4, 16), (10, 192, 4, 16), (10, 192, 6, 16), (10, 256, 4, 16), (10, 256, 6, 16),
    (10, 320, 4, 16), (10, 384, 4, 16),
)


def table_config(patch: int, d_hid: int, n_blocks: int, segment: int, **fields: object):
    """A `DPDConfig` of one table row (tiny-preset defaults otherwise)."""
    from melody_core.models.dpd import DPDConfig

    base = DPDConfig.tiny().to_dict()
    base.update(patch=patch, d_hid=d_hid, n_blocks=n_blocks, segment_size=segment,
                n_heads=max(2, d_hid // 64), sru_hidden=d_hid // 2, **fields)
    return DPDConfig.from_dict(base)


def dpd_step_flops(cfg, length: int, cond_rows: int, uncond_rows: int, twins: bool) -> float:
    """Matmul + attention FLOPs (2 per multiply-add) of one DPD forward on a window of `length` frames
    (the arithmetic of `DualPathDiffusion`; elementwise work, norms and the SRU recurrence not counted).

    Per network row, N = L/P positions, S = ceil(2N/K) + 1 segments, M = S*K segmented positions (every
    position is in two segments), T = L/10 tokens, d = d_hid, 2h = SRU output:
      input/output  2 N (P D) d x 2
      per block     self-attention 8 M d^2 + 4 K S^2 d
                    cross-attention (conditional rows) 4 M d^2 + 4 M T d; CFG rows: as self-attention
                    FFN 4 m M d^2;  SRU layer i: 2 M d_in (2h) k (k = 3 if d_in = 2h else 4);
                    projection 2 M (2h) d when 2h != d;  fine FFN 4 m' M d^2
    CFG twins (`shared_input`) run the input stage and the first self-attention once per pair.
    """
    from melody_core.modules.segmentation import num_segments

    d, p, k = cfg.d_hid, cfg.patch, cfg.segment_size
    n = length // p
    s = num_segments(n, k)
    m = s * k
    tokens = math.ceil(length / FRAMES_PER_TOKEN)
    self_attn = 8 * m * d * d + 4 * k * s * s * d
    cross = 4 * m * d * d + 4 * m * tokens * d
    two_h = 2 * cfg.sru_hidden
    sru, d_in = 0, d
    for _ in range(cfg.sru_layers):
        sru += 2 * m * d_in * two_h * (3 if d_in == two_h else 4)
        d_in = two_h
    fine = sru + (2 * m * two_h * d if two_h != d else 0) + 4 * cfg.fine_ffn_mult * m * d * d
    common = self_attn + 4 * cfg.ffn_mult * m * d * d + fine
    per_block = cond_rows * (common + cross) + uncond_rows * (common + self_attn)
    io_rows = (cond_rows + uncond_rows) // (2 if twins else 1)
    total = cfg.n_blocks * per_block + io_rows * 4 * n * p * cfg.d_latent * d
    if twins:
        total -= io_rows * self_attn  # the first self-attention of each twin pair runs once
    return float(total)


@dataclass
class DPDTableRow:
    patch: int
    d_hid: int
    n_blocks: int
    segment: int
    params: int
    gflop_cfg: float  # one guided step with CFG (2 rows, twins)
    gflop_distilled: float  # one step of a guidance-distilled model (1 row)
    ms_cfg: float | None  # median wall time of one CFG step (None: not timed)
    cpu_ms_cfg: float | None  # median process CPU time of that step (all threads)
    ms_distilled: float | None  # median wall time of one 1-row step with the guidance input
    cpu_ms_distilled: float | None


def _time_both(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(median wall s, median process CPU s) of `repeats` calls after one warm-up call."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


@torch.inference_mode()
def dpd_table(rows=DPD_TABLE, seconds: float = 10.0, repeats: int = 3,
              max_gflop: float = 20.0) -> list[DPDTableRow]:
    """Params, FLOPs and measured time per step of each (P, d, blocks, K) row on an L = seconds window;
    rows above `max_gflop` per CFG step are not timed."""
    from melody_core.models.dpd import DualPathDiffusion

    length = int(seconds * LATENT_RATE)
    n_tok = length // FRAMES_PER_TOKEN
    out = []
    for patch, d_hid, n_blocks, segment in rows:
        cfg = table_config(patch, d_hid, n_blocks, segment)
        gflop_cfg = dpd_step_flops(cfg, length, 1, 1, twins=True) / 1e9
        gflop_one = dpd_step_flops(cfg, length, 1, 0, twins=False) / 1e9
        torch.manual_seed(0)
        times: list[float | None] = [None] * 4
        if gflop_cfg <= max_gflop:
            model = DualPathDiffusion(cfg).eval()
            z = torch.randn(1, length, cfg.d_latent)
            delta = torch.full((1, length), 0.7)
            tokens = torch.randint(0, cfg.vocab_size, (2, n_tok))
            ctx = model.prepare(tokens, torch.tensor([False, True]), 2, length, shared_input=True)
            times[0:2] = _time_both(functools.partial(model, z, delta, context=ctx), repeats)
            cfg1 = table_config(patch, d_hid, n_blocks, segment, guidance_embed=True)
            student = DualPathDiffusion(cfg1).eval()
            ctx1 = student.prepare(tokens[:1], None, 1, length, guidance=2.5)
            times[2:4] = _time_both(functools.partial(student, z, delta, context=ctx1), repeats)
            params = sum(p.numel() for p in model.parameters())
        else:
            with torch.device("meta"):
                params = sum(p.numel() for p in DualPathDiffusion(cfg).parameters())
        ms = [None if t is None else 1000 * t for t in times]
        out.append(DPDTableRow(patch, d_hid, n_blocks, segment, params, gflop_cfg, gflop_one, *ms))
    return out


def run_dpd_table(repeats: int = 3, threads: int = 2, as_json: bool = False) -> None:
    torch.set_num_threads(threads)
    rows = dpd_table(repeats=repeats)
    if as_json:
        print(json.dumps([r.__dict__ for r in rows], indent=2))
        return

    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.0f}"

    print(f"DPD, 10 s window (L = 2500 frames), torch {torch.__version__}, {threads} thread(s), "
          f"median of {repeats}; wall / process-CPU ms; clip = 10 CFG steps | 4 distilled steps")
    print("| P | d_hid | blocks | K | params | GFLOP/CFG step | GFLOP/1-row step | ms CFG (cpu) "
          "| ms 1-row (cpu) | clip ms CFG x10 | clip ms distilled x4 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        clip_cfg = None if r.ms_cfg is None else 10 * r.ms_cfg
        clip_d = None if r.ms_distilled is None else 4 * r.ms_distilled
        print(f"| {r.patch} | {r.d_hid} | {r.n_blocks} | {r.segment} | {r.params / 1e6:.2f}M | "
              f"{r.gflop_cfg:.2f} | {r.gflop_distilled:.2f} | {f(r.ms_cfg)} ({f(r.cpu_ms_cfg)}) | "
              f"{f(r.ms_distilled)} ({f(r.cpu_ms_distilled)}) | {f(clip_cfg)} | {f(clip_d)} |")
