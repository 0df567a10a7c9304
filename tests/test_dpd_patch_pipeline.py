"""The pipeline on a tiny random bundle whose DPD sees P = 5 latent frames per position (CPU preset v2):
continuation keeps the given prefix bit-identical, inpainting keeps the outside of the region, and
streaming equals generate. Patching lives inside the network; the pipeline's windows and hops are
whole tokens (10 frames), hence multiples of P."""

from __future__ import annotations

import numpy as np
import pytest
from micro_bundle import MICRO_OVERRIDES

from melody_core import SAMPLE_RATE
from melody_core.checkpoint import random_bundle
from melody_core.generation import AudioChunk, GenerationSettings, StreamFinished
from melody_core.generation.jobs import INPAINT_CROSSFADE_S
from melody_core.generation.pipeline import MelodyPipeline

FAST = {"steps": 3, "seed": 3}
PATCH = 5


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory) -> MelodyPipeline:
    path = tmp_path_factory.mktemp("bundle") / "patched"
    dpd = {**MICRO_OVERRIDES["dpd"], "patch": PATCH, "segment_size": 16}  # 400 frames = 80 positions
    random_bundle(path, "tiny", overrides={**MICRO_OVERRIDES, "dpd": dpd})
    pipe = MelodyPipeline.load(path, device="cpu", threads=2)
    assert pipe.models.dpd.config.patch == PATCH
    return pipe


def _clip(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def test_patched_continuation_keeps_the_prefix(pipe: MelodyPipeline) -> None:
    src = _clip(2.3457, seed=0)  # not a multiple of the latent hop, a token or a patch
    r = pipe.continue_(src, GenerationSettings(seconds=1.5, **FAST))
    assert r.audio.shape == (len(src) + round(1.5 * SAMPLE_RATE),)
    np.testing.assert_array_equal(r.audio[: len(src)], src)  # bit-identical prefix
    assert np.abs(r.audio[len(src) :]).max() > 0


@pytest.mark.parametrize("region", [(1.0, 1.4), (0.0, 0.3), (0.5, 2.6)])
def test_patched_inpainting_keeps_the_outside(pipe: MelodyPipeline, region: tuple[float, float]) -> None:
    src = _clip(3.0, seed=1)
    r = pipe.inpaint(src, *region, GenerationSettings(prompt="drums", **FAST))
    a, b = (round(x * SAMPLE_RATE) for x in region)
    fade = round(INPAINT_CROSSFADE_S * SAMPLE_RATE)
    np.testing.assert_array_equal(r.audio[: max(0, a - fade)], src[: max(0, a - fade)])
    np.testing.assert_array_equal(r.audio[b + fade :], src[b + fade :])
    assert np.abs(r.audio[a:b] - src[a:b]).mean() > 1e-3  # the region was regenerated


@pytest.mark.parametrize("start", ["window", "progressive"])
def test_patched_stream_equals_generate(pipe: MelodyPipeline, start: str) -> None:
    s = GenerationSettings(prompt="calm piano", seconds=2.9, start=start, **FAST)
    result = pipe.generate(s)
    events = list(pipe.stream(s))
    assert isinstance(events[-1], StreamFinished)
    audio = np.concatenate([e.pcm for e in events if isinstance(e, AudioChunk)])
    assert audio.shape == result.audio.shape and np.abs(result.audio).max() > 0
    assert np.abs(audio - result.audio).max() <= 1e-4


def test_guidance_distilled_dpd_runs_one_row_per_step(tmp_path) -> None:
    """A DPD with the guidance input gets rho and one network row per step (no CFG batch), in the
    pipeline and in `diffusion.GuidedVelocity`, with the same velocity."""
    import torch

    from melody_core.diffusion import GuidedVelocity

    dpd = {**MICRO_OVERRIDES["dpd"], "patch": PATCH, "segment_size": 16, "guidance_embed": True}
    random_bundle(tmp_path / "b", "tiny", overrides={**MICRO_OVERRIDES, "dpd": dpd})
    pipe = MelodyPipeline.load(tmp_path / "b", device="cpu", threads=2)
    with torch.no_grad():  # a trained student: E_rho is not zero, FiLM is not the identity
        pipe.models.dpd.guidance.fc2.weight.normal_()
        for block in pipe.models.dpd.blocks:
            block.fine.film.proj.weight.normal_(std=0.1)
    r = pipe.generate(GenerationSettings(prompt="piano", seconds=1.0, guidance=3.0, **FAST))
    assert r.metadata["dpd_network_rows"] == r.metadata["nfe_dpd"] > 0
    z, delta = torch.randn(1, 200, pipe.models.dpd.config.d_latent), torch.full((1, 200), 0.9)
    tokens = torch.randint(0, pipe.models.dpd.config.vocab_size, (1, 20))
    models = pipe.models
    plain = GuidedVelocity(pipe.models.dpd, tokens, 3.0)
    window = GuidedVelocity(models.dpd_forward, tokens, 3.0, prepare=models.dpd_prepare)
    with torch.inference_mode():
        v = plain(z, delta)
        torch.testing.assert_close(window(z, delta), v, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(v, pipe.models.dpd(z, delta, tokens, guidance=3.0))
        assert (v - GuidedVelocity(pipe.models.dpd, tokens, 1.0)(z, delta)).abs().max() > 1e-4  # rho matters
    assert plain.network_rows == window.network_rows == 1
