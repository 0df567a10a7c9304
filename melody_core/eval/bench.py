"""End-to-end speed benchmark of `MelodyPipeline` (`melody bench`).

Measures, on one device (medians of `repeats` runs after a warm-up):
- per stage: MuLan conditioning of a new prompt (text embedding + RVQ), semantic LM tokens for one
  window (KV cache, `lm_threads`), one guided DPD step on a full window as the sampler runs it
  (CFG twins on a context prepared once per window, `dpd_prepare_s`), VAE decoding of one window;
- end to end: `generate()` of a 10 s clip -> real-time factor (audio seconds / wall seconds);
- streaming: time from `stream()` to its first `AudioChunk`, for the paper's first window
  (`start="window"`) and for the progressive start, and the sustained real-time factor of the
  continuation windows (audio seconds emitted / wall seconds from the first continuation event
  to the end of the stream);
- NFE of the 10 s generation (LM tokens + guided DPD evaluations) next to Table 3's formulas for
  MusicLM, Noise2Music and MeLoDy (and MeLoDy with continuation windows);
- peak resident memory of the process (and peak CUDA memory on a GPU);
- the DPD + VAE real-time factor alone (steps x DPD step + decode), the GPU target's quantity;
- the end-to-end real-time factor at 5 steps too (`realtime_factor_10s_by_steps`; the paper's
  Table 2 samples with 5 / 10 / 20 steps), and the load average of the machine while it ran;
- `target_arithmetic`: what the 10x real-time target asks of this machine. FLOPs of one guided DPD
  step (matmuls + attention, counted from the shapes the network actually runs) against the
  GFLOP/s of a plain matmul at the DPD's main size, and the LM's tokens/s:
      lower bound = MuLan + tokens / (tokens/s) + steps x FLOPs / (matmul GFLOP/s) + VAE decode,
  i.e. the time if every DPD FLOP ran at plain-matmul speed and nothing else cost anything; and
  the DPD step time that 10x would need given the measured LM, MuLan and VAE times.
  Example, bundled tiny model on the 2-core dev machine (load ~3 from two trainings and other
  jobs): 3.9 GFLOP per guided step; a (10240 x 64) @ (64 x 192) matmul runs at ~90-100 GFLOP/s, so
  >= 40 ms per step at matmul speed, measured ~105-112 ms (~35 GFLOP/s: the SRU's 64-step loop and
  the 80-long, 32-wide attention heads run far below matmul speed); LM ~1,350 tokens/s. With LM +
  MuLan + VAE at ~0.28 s, 10x for 10 s needs <= ~72 ms per step at 10 steps (not reached: ~6.7x)
  and <= ~143 ms at 5 steps (reached: ~11x).
`--random-init` builds the models of a preset with random weights in memory (speed does not
depend on training; no multi-GB bundle is written).
"""

from __future__ import annotations

import dataclasses
import math
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from melody_core import LATENT_RATE, SAMPLE_RATE
from melody_core.diffusion import (
    GuidedVelocity,
    nfe_melody,
    nfe_melody_windowed,
    nfe_musiclm,
    nfe_noise2music,
)
from melody_core.generation.engine import num_threads
from melody_core.generation.models import ModelSet
from melody_core.generation.pipeline import REQUIRED, MelodyPipeline
from melody_core.generation.types import AudioChunk, GenerationSettings, Progress, StreamFinished
from melody_core.modules.segmentation import num_segments

BENCH_PROMPT = "a calm piano piece with soft strings"
KB_PER_MB = 1024  # ru_maxrss is in kB on Linux
EXTRA_RTF_STEPS = (5,)  # end-to-end real-time factor also at these step counts (paper Table 2: 5/10/20)
TARGET_RTF = 10.0  # the end-to-end target for 10 s on a 2-core CPU
MATMUL_REPEATS = 20  # timed runs of the reference matmul (best is reported)
_GEMM_OPS = ("mm", "bmm", "matmul", "linear")  # out = a @ b: 2 * out.numel() * a.shape[-1] FLOPs
_GEMM_ACC_OPS = ("addmm", "addmm_", "baddbmm", "baddbmm_")  # out = c + a @ b (a = args[1])


class FlopCounter(TorchDispatchMode):
    """FLOPs of the matrix products and scaled-dot-product attentions run inside the block, counted
    from their shapes (elementwise work is not counted). Use under `torch.inference_mode()`, where
    composite ops (linear, matmul, attention) reach the counter whole."""

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name in _GEMM_OPS:
            self.flops += 2 * out.numel() * args[0].shape[-1]
        elif name in _GEMM_ACC_OPS:
            self.flops += 2 * out.numel() * args[1].shape[-1]
        elif name.startswith("scaled_dot_product_attention") or name.startswith("_scaled_dot_product"):
            q, k = args[0], args[1]  # (B, H, Tq, hd), (B, H, Tk, hd): q k^T and p v
            self.flops += 4 * q.numel() * k.shape[-2]
        return out


def matmul_gflops(rows: int, d_in: int, d_out: int, device: torch.device, sync: Callable[[], None]) -> float:
    """Best GFLOP/s of a plain (rows x d_in) @ (d_in x d_out) fp32 matmul on `device`."""
    a = torch.randn(rows, d_in, device=device)
    b = torch.randn(d_in, d_out, device=device)
    out = torch.empty(rows, d_out, device=device)
    torch.mm(a, b, out=out)
    best = math.inf
    for _ in range(MATMUL_REPEATS):
        sync()
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * rows * d_in * d_out / best / 1e9


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _median_time(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def random_pipeline(preset: str, device: str, threads: int | None, hash_text_tower: bool = False,
                    **load_kw: Any) -> MelodyPipeline:
    """A pipeline over randomly initialised models of a preset (generation components only).
    `hash_text_tower`: MuLan's hashed bag-of-words text backbone instead of the pretrained MiniLM
    (no package needed; the MuLan stage time is then not representative)."""
    from melody_core.config import component_classes
    from melody_core.runtime import resolve_device

    dev = torch.device(resolve_device(device))
    n_threads = threads or torch.get_num_threads()
    torch.set_num_threads(n_threads)
    models, configs = {}, {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for name in REQUIRED:
            cfg_cls, model_cls = component_classes(name)
            configs[name] = cfg_cls.preset(preset)
            if name == "mulan" and hash_text_tower:
                configs[name] = dataclasses.replace(configs[name], text_backbone="hash")
            with dev:
                models[name] = model_cls(configs[name]).eval()
    fake = SimpleNamespace(device=dev, model_hash=f"random-{preset}", hash=f"random-{preset}",
                           models=models, configs=configs, meta={"random_init": True})
    model_set = ModelSet.from_bundle(fake, load_kw.get("lm_threads", 1), load_kw.get("precision", "auto"),
                                     load_kw.get("compile", False))
    return MelodyPipeline(fake, model_set, n_threads)


def _stream_timing(pipe: MelodyPipeline, settings: GenerationSettings) -> dict[str, float]:
    """First-chunk latency and sustained real-time factor of one stream."""
    t0 = time.perf_counter()
    first = t_cont = None
    audio_at_cont = produced = 0
    total = 0.0
    for event in pipe.stream(settings):
        now = time.perf_counter() - t0
        if isinstance(event, AudioChunk):
            first = now if first is None else first
            produced += len(event.pcm)
        elif isinstance(event, Progress) and event.chunk_index >= 1 and t_cont is None:
            t_cont, audio_at_cont = now, produced
        elif isinstance(event, StreamFinished):
            total = now
    out = {"first_chunk_seconds": first, "stream_seconds": total}
    if t_cont is not None and total > t_cont:
        out["streaming_realtime_factor"] = (produced - audio_at_cont) / SAMPLE_RATE / (total - t_cont)
    return out


def run_bench(pipe: MelodyPipeline, seconds: float = 10.0, steps: int = 10, guidance: float = 2.5,
              repeats: int = 3, stream_seconds: float = 20.0, log: Callable[[str], None] | None = None
              ) -> dict[str, Any]:
    say = log or (lambda msg: print(msg, file=sys.stderr))
    cuda = pipe.models.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    base = GenerationSettings(prompt=BENCH_PROMPT, seconds=seconds, seed=1, steps=steps, guidance=guidance)
    frames = round(seconds * LATENT_RATE)
    window = min(frames, pipe.models.layout.length)
    load_start = load_average()
    say("warming up (first calls load the text tower and allocate buffers)")
    pipe.generate(GenerationSettings(prompt="warm up", seconds=min(seconds, 2.0), seed=0, steps=2))

    stages: dict[str, float] = {}
    prompts = iter(f"{BENCH_PROMPT}, take {i}" for i in range(10**6))  # new captions: no cache hits
    stages["mulan_s"] = _median_time(lambda: pipe.models.condition(next(prompts), None, 0.5), repeats, sync)
    prefix = pipe.models.condition(BENCH_PROMPT, None, 0.5)
    n_tok = window // 10
    lm_guidance = pipe.lm_guidance(None)

    def lm() -> None:
        with num_threads(pipe.models.lm_threads), torch.inference_mode():
            gen = torch.Generator(pipe.models.device).manual_seed(0)
            pipe.models.lm.generate(prefix, n_tok, generator=gen,
                             guidance=lm_guidance)  # as `generate` runs it (guided: two rows per token)

    say(f"timing the stages ({repeats} runs each)")
    stages["lm_window_s"] = _median_time(lm, repeats, sync)
    z = torch.randn(1, window, pipe.models.dpd.config.d_latent, device=pipe.models.device)
    delta = torch.full((1, window), 0.7, device=pipe.models.device)
    tokens = torch.randint(0, pipe.models.dpd.config.vocab_size, (1, n_tok), device=pipe.models.device)
    with torch.inference_mode():
        models = pipe.models  # the velocity as the engine builds it
        v_fn = GuidedVelocity(models.dpd_forward, tokens, guidance, prepare=models.dpd_prepare)
        rows_tokens, uncond, twins = v_fn.network_inputs(1)
        prepare = lambda: pipe.models.dpd_prepare(rows_tokens, uncond, 2 if twins else 1, window, twins)  # noqa: E731
        stages["dpd_prepare_s"] = _median_time(prepare, repeats, sync)  # once per window
        v_fn(z, delta)  # prepare, compile / autotune outside the timing
        stages["dpd_step_s"] = _median_time(lambda: v_fn(z, delta), repeats, sync)
        with FlopCounter() as counter:
            v_fn(z, delta)
        decode = lambda: pipe.models.vae.decode(z / pipe.models.latent_scale)  # noqa: E731
        stages["vae_decode_window_s"] = _median_time(decode, repeats, sync)

    by_steps: dict[str, float] = {}
    nfe_by_steps: dict[str, tuple[int, int]] = {}  # steps -> (LM tokens, guided DPD steps) of the clip
    results = []

    def gen(settings: GenerationSettings) -> None:
        results.append(pipe.generate(settings))

    for n_steps in sorted({steps, *EXTRA_RTF_STEPS}):
        say(f"end to end: {seconds:g} s clip, {n_steps} steps")
        settings = dataclasses.replace(base, steps=n_steps)
        by_steps[str(n_steps)] = _median_time(lambda s=settings: gen(s), repeats, sync)
        nfe_by_steps[str(n_steps)] = (results[-1].metadata["nfe_lm"], results[-1].metadata["nfe_dpd"])
        if n_steps == steps:
            meta = results[-1].metadata
    e2e = by_steps[str(steps)]
    say("streaming")
    long = GenerationSettings(**{**base.to_dict(), "seconds": max(stream_seconds, seconds)})
    stream = _stream_timing(pipe, long)
    prog = _stream_timing(pipe, GenerationSettings(**{**long.to_dict(), "start": "progressive"}))
    arithmetic = target_arithmetic(pipe, stages, counter.flops, seconds, n_tok, window, nfe_by_steps, sync)
    window_s = window / LATENT_RATE
    out = {
        "device": pipe.device,
        "threads": pipe.threads,
        "lm_threads": pipe.models.lm_threads,
        "precision": pipe.models.precision,
        "model_hash": pipe.model_hash,
        "settings": {"seconds": seconds, "steps": steps, "guidance": guidance, "lm_guidance": lm_guidance,
                     "repeats": repeats,
                     "window_frames": pipe.models.layout.length, "hop_frames": pipe.models.layout.hop,
                     "continuation_steps": pipe.models.layout.chunk_steps(steps),
                     "stream_seconds": long.seconds},
        "stages": stages,
        "end_to_end_seconds": e2e,
        "realtime_factor_10s": seconds / e2e,
        "end_to_end_seconds_by_steps": by_steps,
        "realtime_factor_10s_by_steps": {k: seconds / v for k, v in by_steps.items()},
        "first_chunk_seconds": stream["first_chunk_seconds"],
        "first_chunk_seconds_progressive": prog["first_chunk_seconds"],
        # None when the stream had no continuation window (stream_seconds <= one window)
        "streaming_realtime_factor": stream.get("streaming_realtime_factor"),
        "streaming_realtime_factor_progressive": prog.get("streaming_realtime_factor"),
        "dpd_vae_realtime_factor": window_s / (steps * stages["dpd_step_s"] + stages["vae_decode_window_s"]),
        "nfe": meta["nfe"],
        "nfe_detail": {"lm": meta["nfe_lm"], "dpd": meta["nfe_dpd"],
                       "dpd_network_rows": meta["dpd_network_rows"]},
        "nfe_reference": {
            "musiclm": nfe_musiclm(seconds),
            "noise2music": nfe_noise2music(),
            "melody_table3": nfe_melody(seconds, steps),
            "melody_windowed": nfe_melody_windowed(seconds, steps, pipe.models.layout.length / LATENT_RATE,
                                                   pipe.models.layout.n_chunks),
        },
        "timings_10s": meta["timings"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KB_PER_MB,
        "target_arithmetic": arithmetic,
        "load_average": {"start": load_start, "end": load_average()},
    }
    if cuda:
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def target_arithmetic(pipe: MelodyPipeline, stages: dict[str, float], step_flops: int, seconds: float,
                      n_tok: int, window: int, nfe_by_steps: dict[str, tuple[int, int]],
                      sync: Callable[[], None]) -> dict[str, Any]:
    """What `TARGET_RTF` asks of this machine (see the module docstring): the DPD step's FLOPs against
    a plain matmul at the DPD's main size (rows of the CFG batch's segments x d_hid -> 3 d_hid, the
    fused q|k|v), the LM's tokens/s, and per step count the lower bound on the clip's time and the
    DPD step time the target needs."""
    cfg = pipe.models.dpd.config
    d, k = cfg.d_hid, cfg.segment_size
    rows = 2 * k * num_segments(window, k)  # segment rows of the CFG batch (K x 2 x S)
    gflops = matmul_gflops(rows, d, 3 * d, pipe.models.device, sync)
    step_floor = step_flops / (gflops * 1e9)  # seconds per guided step at plain-matmul speed
    tok_s = n_tok / stages["lm_window_s"]
    vae_s = stages["vae_decode_window_s"] * seconds * LATENT_RATE / window
    by_steps = {}
    for key, (n_lm, n_dpd) in nfe_by_steps.items():
        fixed = stages["mulan_s"] + n_lm / tok_s + vae_s  # everything but the DPD
        bound = fixed + n_dpd * step_floor
        by_steps[key] = {
            "lm_mulan_vae_s": fixed,
            "dpd_steps": n_dpd,
            "lower_bound_s": bound,  # every DPD FLOP at plain-matmul speed, nothing else costs
            "realtime_factor_bound": seconds / bound,
            "dpd_step_needed_s": (seconds / TARGET_RTF - fixed) / n_dpd,  # <= 0: out of reach
        }
    return {
        "target_realtime_factor": TARGET_RTF,
        "dpd_gflop_per_guided_step": step_flops / 1e9,
        "matmul_shape": [rows, d, 3 * d],
        "matmul_gflops": gflops,
        "dpd_step_at_matmul_speed_s": step_floor,
        "dpd_step_measured_s": stages["dpd_step_s"],
        "dpd_achieved_gflops": step_flops / 1e9 / stages["dpd_step_s"],
        "lm_tokens_per_s": tok_s,
        "by_steps": by_steps,
    }


def _x(value: float | None, fmt: str = ".2f") -> str:
    return "n/a" if value is None else format(value, fmt)


def format_report(r: dict[str, Any]) -> str:
    s, st = r["settings"], r["stages"]
    ref = r["nfe_reference"]
    lines = [
        f"device {r['device']}  threads {r['threads']} (LM {r['lm_threads']})  precision {r['precision']}  "
        f"model {r['model_hash'][:12]}",
        f"window {s['window_frames']} frames, hop {s['hop_frames']}; {s['steps']} steps "
        f"(continuation {s['continuation_steps']}), guidance {s['guidance']}, "
        f"LM guidance {s.get('lm_guidance', 1.0)}",
        "per stage (median):",
        f"  MuLan text + RVQ           {st['mulan_s'] * 1e3:8.1f} ms",
        f"  LM, one window of tokens   {st['lm_window_s'] * 1e3:8.1f} ms",
        f"  DPD, one guided step       {st['dpd_step_s'] * 1e3:8.1f} ms  "
        f"(+ {st['dpd_prepare_s'] * 1e3:.1f} ms context per window)",
        f"  VAE decode, one window     {st['vae_decode_window_s'] * 1e3:8.1f} ms",
        f"end to end {s['seconds']:g} s clip: {r['end_to_end_seconds']:.2f} s -> "
        f"{r['realtime_factor_10s']:.2f}x real time  (stage split {r['timings_10s']})",
        "by steps: " + ", ".join(f"{k} steps {v:.2f}x" for k, v in r["realtime_factor_10s_by_steps"].items()),
        f"DPD + VAE only: {r['dpd_vae_realtime_factor']:.2f}x real time",
        f"streaming ({s['stream_seconds']:g} s): first chunk {_x(r['first_chunk_seconds'])} s "
        f"(progressive start {_x(r['first_chunk_seconds_progressive'])} s), sustained "
        f"{_x(r['streaming_realtime_factor'])}x real time "
        f"(progressive {_x(r['streaming_realtime_factor_progressive'])}x)",
        f"NFE for {s['seconds']:g} s: {r['nfe']} "
        f"(LM {r['nfe_detail']['lm']} + DPD {r['nfe_detail']['dpd']}); "
        f"Table 3: MusicLM {ref['musiclm']:.0f}, Noise2Music {ref['noise2music']}, "
        f"MeLoDy {ref['melody_table3']:.0f} (with continuation windows {ref['melody_windowed']:.0f})",
        f"peak RSS {r['peak_rss_mb']:.0f} MB"
        + (f", peak CUDA {r['peak_cuda_mb']:.0f} MB" if "peak_cuda_mb" in r else "")
        + f"; load average {r['load_average']['start']} at the start, {r['load_average']['end']} at the end",
        *_arithmetic_lines(r["target_arithmetic"], s["seconds"]),
    ]
    return "\n".join(lines)


def _arithmetic_lines(a: dict[str, Any], seconds: float) -> list[str]:
    m = a["matmul_shape"]
    lines = [
        f"target {a['target_realtime_factor']:g}x arithmetic: one guided DPD step = "
        f"{a['dpd_gflop_per_guided_step']:.2f} GFLOP (matmuls + attention); plain "
        f"{m[0]}x{m[1]} @ {m[1]}x{m[2]} matmul {a['matmul_gflops']:.0f} GFLOP/s -> "
        f">= {a['dpd_step_at_matmul_speed_s'] * 1e3:.0f} ms per step (measured "
        f"{a['dpd_step_measured_s'] * 1e3:.0f} ms = {a['dpd_achieved_gflops']:.0f} GFLOP/s); "
        f"LM {a['lm_tokens_per_s']:.0f} tokens/s",
    ]
    for k, b in a["by_steps"].items():
        need = b["dpd_step_needed_s"]
        lines.append(
            f"  {k} steps: LM + MuLan + VAE {b['lm_mulan_vae_s']:.2f} s + {b['dpd_steps']} DPD steps "
            f"-> bound >= {b['lower_bound_s']:.2f} s ({b['realtime_factor_bound']:.1f}x) for {seconds:g} s; "
            + (f"{a['target_realtime_factor']:g}x needs <= {need * 1e3:.0f} ms per step" if need > 0
               else f"{a['target_realtime_factor']:g}x is out of reach even with free DPD steps")
        )
    return lines


__all__ = ["run_bench", "random_pipeline", "format_report"]
