"""End-to-end speed benchmark of `MelodyPipeline` (`melody bench`).

Measures, on one device (medians of `repeats` runs after a warm-up):
- per stage: MuLan conditioning of a new prompt (text embedding + RVQ), semantic LM tokens for one
  window (KV cache, `lm_threads`), one guided DPD step on a full window (CFG batch of 2), VAE
  decoding of one window;
- end to end: `generate()` of a 10 s clip -> real-time factor (audio seconds / wall seconds);
- streaming: time from `stream()` to its first `AudioChunk`, for the paper's first window
  (`start="window"`) and for the progressive start, and the sustained real-time factor of the
  continuation windows (audio seconds emitted / wall seconds from the first continuation event
  to the end of the stream);
- NFE of the 10 s generation (LM tokens + guided DPD evaluations) next to Table 3's formulas for
  MusicLM, Noise2Music and MeLoDy (and MeLoDy with continuation windows);
- peak resident memory of the process (and peak CUDA memory on a GPU);
- the DPD + VAE real-time factor alone (steps x DPD step + decode), the GPU target's quantity.
`--random-init` builds the models of a preset with random weights in memory (speed does not
depend on training; no multi-GB bundle is written).
"""

from __future__ import annotations

import dataclasses
import resource
import statistics
import sys
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import torch

from melody_core import LATENT_RATE, SAMPLE_RATE
from melody_core._pipeline_engine import num_threads
from melody_core.diffusion import (
    GuidedVelocity,
    nfe_melody,
    nfe_melody_windowed,
    nfe_musiclm,
    nfe_noise2music,
)
from melody_core.pipeline import REQUIRED, MelodyPipeline
from melody_core.pipeline_types import AudioChunk, GenerationSettings, Progress, StreamFinished

BENCH_PROMPT = "a calm piano piece with soft strings"
KB_PER_MB = 1024  # ru_maxrss is in kB on Linux


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
    return MelodyPipeline(fake, n_threads, load_kw.get("lm_threads", 1), load_kw.get("precision", "auto"),
                          load_kw.get("compile", False))


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
    cuda = pipe.torch_device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    base = GenerationSettings(prompt=BENCH_PROMPT, seconds=seconds, seed=1, steps=steps, guidance=guidance)
    frames = round(seconds * LATENT_RATE)
    window = min(frames, pipe.layout.length)
    say("warming up (first calls load the text tower and allocate buffers)")
    pipe.generate(GenerationSettings(prompt="warm up", seconds=min(seconds, 2.0), seed=0, steps=2))

    stages: dict[str, float] = {}
    prompts = iter(f"{BENCH_PROMPT}, take {i}" for i in range(10**6))  # new captions: no cache hits
    stages["mulan_s"] = _median_time(lambda: pipe.condition(next(prompts), None, 0.5), repeats, sync)
    prefix = pipe.condition(BENCH_PROMPT, None, 0.5)
    n_tok = window // 10

    def lm() -> None:
        with num_threads(pipe.lm_threads), torch.inference_mode():
            pipe.lm.generate(prefix, n_tok, generator=torch.Generator(pipe.torch_device).manual_seed(0))

    say(f"timing the stages ({repeats} runs each)")
    stages["lm_window_s"] = _median_time(lm, repeats, sync)
    z = torch.randn(1, window, pipe.dpd.config.d_latent, device=pipe.torch_device)
    delta = torch.full((1, window), 0.7, device=pipe.torch_device)
    tokens = torch.randint(0, pipe.dpd.config.vocab_size, (1, n_tok), device=pipe.torch_device)
    v_fn = GuidedVelocity(pipe.dpd_forward, tokens, guidance)
    with torch.inference_mode():
        v_fn(z, delta)  # compile / autotune outside the timing
        stages["dpd_step_s"] = _median_time(lambda: v_fn(z, delta), repeats, sync)
        decode = lambda: pipe.vae.decode(z / pipe.latent_scale)  # noqa: E731
        stages["vae_decode_window_s"] = _median_time(decode, repeats, sync)

    say(f"end to end: {seconds:g} s clip, {steps} steps")
    results = []

    def gen() -> None:
        results.append(pipe.generate(base))

    e2e = _median_time(gen, repeats, sync)
    meta = results[-1].metadata
    say("streaming")
    long = GenerationSettings(**{**base.to_dict(), "seconds": max(stream_seconds, seconds)})
    stream = _stream_timing(pipe, long)
    prog = _stream_timing(pipe, GenerationSettings(**{**long.to_dict(), "start": "progressive"}))
    window_s = window / LATENT_RATE
    out = {
        "device": pipe.device,
        "threads": pipe.threads,
        "lm_threads": pipe.lm_threads,
        "precision": pipe.precision,
        "model_hash": pipe.model_hash,
        "settings": {"seconds": seconds, "steps": steps, "guidance": guidance, "repeats": repeats,
                     "window_frames": pipe.layout.length, "hop_frames": pipe.layout.hop,
                     "continuation_steps": pipe.layout.chunk_steps(steps), "stream_seconds": long.seconds},
        "stages": stages,
        "end_to_end_seconds": e2e,
        "realtime_factor_10s": seconds / e2e,
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
            "melody_windowed": nfe_melody_windowed(seconds, steps, pipe.layout.length / LATENT_RATE,
                                                   pipe.layout.n_chunks),
        },
        "timings_10s": meta["timings"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KB_PER_MB,
    }
    if cuda:
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _x(value: float | None, fmt: str = ".2f") -> str:
    return "n/a" if value is None else format(value, fmt)


def format_report(r: dict[str, Any]) -> str:
    s, st = r["settings"], r["stages"]
    ref = r["nfe_reference"]
    lines = [
        f"device {r['device']}  threads {r['threads']} (LM {r['lm_threads']})  precision {r['precision']}  "
        f"model {r['model_hash'][:12]}",
        f"window {s['window_frames']} frames, hop {s['hop_frames']}; {s['steps']} steps "
        f"(continuation {s['continuation_steps']}), guidance {s['guidance']}",
        "per stage (median):",
        f"  MuLan text + RVQ           {st['mulan_s'] * 1e3:8.1f} ms",
        f"  LM, one window of tokens   {st['lm_window_s'] * 1e3:8.1f} ms",
        f"  DPD, one guided step       {st['dpd_step_s'] * 1e3:8.1f} ms",
        f"  VAE decode, one window     {st['vae_decode_window_s'] * 1e3:8.1f} ms",
        f"end to end {s['seconds']:g} s clip: {r['end_to_end_seconds']:.2f} s -> "
        f"{r['realtime_factor_10s']:.2f}x real time  (stage split {r['timings_10s']})",
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
        + (f", peak CUDA {r['peak_cuda_mb']:.0f} MB" if "peak_cuda_mb" in r else ""),
    ]
    return "\n".join(lines)


__all__ = ["run_bench", "random_pipeline", "format_report"]
