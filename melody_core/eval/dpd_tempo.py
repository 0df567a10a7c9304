"""Does the DPD need a BPM control too? (issue 16) Tempo of the DPD's audio rendered from a clip's
own semantic tokens, against the tempo of the clip itself.

For each labelled clip (attribute `bpm`; the first clip of each work) of a corpus's valid split:
the first `seconds` (whole tokens) go through
the bundle's SSL + k-means (`generation.jobs.analyse_segment`, the continue / inpaint analysis),
and the DPD regenerates every latent frame from those tokens alone (LM off: all tokens given,
no latent kept; the inpainting window plan over the whole clip; conditioning = the clip's own
MuLan audio codes, unused by the DPD), then the VAE decodes it. The project's estimator
(`eval.tempo.estimate_bpm`) reads the tempo of the original, of its VAE round trip (posterior mean
decoded: what the VAE alone loses) and of the render; a hit is within
+-4 % of the label (`tempo_error` accuracy1; accuracy2 also accepts half / double).

If the renders hit about as often as the originals, the tempo is carried by the tokens and a DPD
that follows its tokens needs no BPM token: the tempo is decided upstream, by the LM (which has
the control). Run: `python -m melody_core.eval.dpd_tempo CORPUS [--bundle DIR] [--clips 24]`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np
import torch

from melody_core import LATENT_HOP, SAMPLE_RATE, TOKEN_SAMPLES
from melody_core.data.corpus import read_corpus
from melody_core.eval.tempo import estimate_bpm, tempo_error


def render_from_tokens(pipe, wav: np.ndarray, steps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(the DPD + VAE render of `wav`'s own semantic tokens (module docstring), the VAE round trip
    of `wav`), both of `wav`'s whole tokens."""
    from melody_core.generation.decode import decode_range
    from melody_core.generation.engine import Stats, Timeline
    from melody_core.generation.jobs import _engine, analyse_segment
    from melody_core.generation.plan import inpaint_windows
    from melody_core.generation.types import GenerationSettings

    models = pipe.models
    n = len(wav) // TOKEN_SAMPLES * TOKEN_SAMPLES
    stats = Stats()
    z, tokens = analyse_segment(models, wav, 0, n, stats)  # (1, frames, D), (1, n_tokens)
    frames = z.shape[1]
    vae_only = decode_range(models.vae, z, 0, frames, frames, models.latent_scale)  # (1, frames * hop)
    timeline = Timeline(models.dpd.config.d_latent, models.device, z, tokens)
    with torch.inference_mode():
        timeline.known[:frames] = False
    s = GenerationSettings(steps=steps, seed=seed, lm_guidance=1.0)
    windows = inpaint_windows(models.layout, 0, frames, frames, steps, models.layout.chunk_steps(steps, None))
    style = torch.from_numpy(np.ascontiguousarray(wav[: models.mulan_clip_samples]))
    prefix = models.condition(None, style, 1.0)
    n_tok = tokens.shape[1]
    engine = _engine(models, s, timeline, windows, n_tok, n_tok, prefix, None, stats, False)  # LM off
    for _ in engine.run():
        pass
    audio = decode_range(models.vae, timeline.z, 0, frames, frames, models.latent_scale)  # (1, frames * hop)
    assert frames * LATENT_HOP == n
    return audio[0].float().cpu().numpy(), vae_only[0].float().cpu().numpy()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("corpus")
    p.add_argument("--bundle", default=None)
    p.add_argument("--clips", type=int, default=24)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--split", default="valid")
    args = p.parse_args(argv)
    from melody_core.audio import load_audio
    from melody_core.generation.pipeline import MelodyPipeline

    pipe = MelodyPipeline.load(args.bundle, device="cpu", threads=1)
    records = [r for r in read_corpus(args.corpus, args.split) if r.attributes.get("bpm")]
    by_work: dict[str, object] = {}
    for r in sorted(records, key=lambda r: r.id):  # one clip per work (its clips share the tempo)
        by_work.setdefault(str(r.attributes.get("work", r.id)), r)
    records = list(by_work.values())[: args.clips]
    rows = []
    for i, rec in enumerate(records):
        wav = load_audio(f"{args.corpus}/{rec.path}").numpy()[: round(args.seconds * SAMPLE_RATE)]
        render, vae_only = render_from_tokens(pipe, wav, args.steps, seed=i)
        bpm = float(rec.attributes["bpm"])
        orig_est = estimate_bpm(torch.from_numpy(wav[: len(render)]), SAMPLE_RATE)
        rend_est = estimate_bpm(torch.from_numpy(render), SAMPLE_RATE)
        vae_est = estimate_bpm(torch.from_numpy(vae_only), SAMPLE_RATE)
        row = {"id": rec.id, "genre": rec.attributes.get("genre"), "bpm": bpm, "original": orig_est,
               "render": rend_est, "vae": vae_est, "vae_ok": tempo_error(vae_est, bpm)["accuracy1"],
               "orig_ok": tempo_error(orig_est, bpm)["accuracy1"],
               "render_ok": tempo_error(rend_est, bpm)["accuracy1"],
               "orig_ok2": tempo_error(orig_est, bpm)["accuracy2"],
               "render_ok2": tempo_error(rend_est, bpm)["accuracy2"],
               "render_vs_orig": (not math.isnan(orig_est)) and tempo_error(rend_est, orig_est)["accuracy1"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    n = len(rows)
    summary = {k: sum(bool(r[k]) for r in rows) / max(n, 1)
               for k in ("orig_ok", "vae_ok", "render_ok", "orig_ok2", "render_ok2", "render_vs_orig")}
    print(json.dumps({"clips": n, "steps": args.steps, "seconds": args.seconds, "bundle": pipe.short_hash,
                      **summary}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
