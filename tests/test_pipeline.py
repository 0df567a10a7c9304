"""MelodyPipeline on a shrunken random tiny bundle: streaming == generate, determinism, continuation,
inpainting, cancellation, prompt automation, errors, metadata.

The bundle's DPD window is 400 frames (1.6 s, M = 4 -> hop 100 frames) so a few seconds of audio
already span several continuation windows.
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch
from micro_bundle import MICRO_OVERRIDES

from melody_core import SAMPLE_RATE
from melody_core.audio.tags import file_metadata, parse_file_metadata
from melody_core.checkpoint import load_bundle, random_bundle
from melody_core.generation.engine import Stats
from melody_core.generation.jobs import INPAINT_CROSSFADE_S, analyse_segment
from melody_core.generation.models import ModelSet
from melody_core.generation.pipeline import DEFAULT_LM_GUIDANCE, MelodyPipeline
from melody_core.generation.types import (
    AudioChunk,
    GenerationCancelled,
    GenerationSettings,
    PipelineError,
    Progress,
    StreamControl,
    StreamFinished,
)

OVERRIDES = MICRO_OVERRIDES
FAST = {"steps": 3, "seed": 7}


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("bundle") / "tiny"
    random_bundle(path, "tiny", overrides=OVERRIDES)
    return path


@pytest.fixture(scope="module")
def pipe(bundle_dir) -> MelodyPipeline:
    return MelodyPipeline.load(bundle_dir, device="cpu", threads=2)


def _chunks(events) -> tuple[np.ndarray, list, StreamFinished]:
    events = list(events)
    chunks = [e for e in events if isinstance(e, AudioChunk)]
    assert isinstance(events[-1], StreamFinished)
    starts = np.cumsum([0] + [len(c.pcm) for c in chunks[:-1]])
    assert [c.start_sample for c in chunks] == list(starts)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    audio = np.concatenate([c.pcm for c in chunks]) if chunks else np.zeros(0, np.float32)
    return audio, events, events[-1]


def _clip(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 330 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize("start", ["window", "progressive"])
def test_stream_equals_generate(pipe: MelodyPipeline, start: str) -> None:
    s = GenerationSettings(prompt="calm piano", seconds=2.9, start=start, **FAST)
    result = pipe.generate(s)
    assert result.audio.shape == (round(2.9 * SAMPLE_RATE),) and result.audio.dtype == np.float32
    assert result.metadata["windows"] > 2  # first window + continuation windows
    audio, events, finished = _chunks(pipe.stream(s))
    assert len([e for e in events if isinstance(e, AudioChunk)]) > 2
    assert not finished.cancelled
    assert audio.shape == result.audio.shape
    assert np.abs(audio - result.audio).max() <= 1e-4
    np.testing.assert_array_equal(finished.result.audio, audio)
    assert finished.result.metadata["nfe"] == result.metadata["nfe"]


def test_determinism_and_seed(pipe: MelodyPipeline) -> None:
    torch.manual_seed(123)
    a = pipe.generate(GenerationSettings(prompt="strings", seconds=1.0, **FAST))
    torch.manual_seed(456)  # the global RNG must not matter
    b = pipe.generate(GenerationSettings(prompt="strings", seconds=1.0, **FAST))
    np.testing.assert_array_equal(a.audio, b.audio)
    c = pipe.generate(GenerationSettings(prompt="strings", seconds=1.0, steps=3, seed=8))
    assert not np.array_equal(a.audio, c.audio)
    d = pipe.generate(GenerationSettings(prompt="strings", seconds=1.0, steps=3))  # random seed, recorded
    assert isinstance(d.metadata["seed"], int)
    e = pipe.generate(GenerationSettings(prompt="strings", seconds=1.0, steps=3, seed=d.metadata["seed"]))
    np.testing.assert_array_equal(d.audio, e.audio)


def test_metadata(pipe: MelodyPipeline) -> None:
    s = GenerationSettings(prompt="a jazz trio", seconds=1.0, guidance=1.5, temperature=0.9, top_k=5, **FAST)
    r = pipe.generate(s)
    m = r.metadata
    assert m["prompt"] == "a jazz trio" and m["seed"] == 7 and m["model_hash"] == pipe.model_hash
    assert m["settings"]["guidance"] == 1.5 and m["settings"]["top_k"] == 5 and m["settings"]["steps"] == 3
    assert m["nfe"] == m["nfe_lm"] + m["nfe_dpd"] and m["nfe_lm"] == 25 and m["nfe_dpd"] == 3
    assert m["dpd_network_rows"] == 2 * m["nfe_dpd"]  # CFG: cond + uncond rows in one batch
    tags = file_metadata(m)
    assert all(isinstance(v, str) for v in tags.values())
    back = parse_file_metadata(tags)
    assert back["seed"] == 7 and back["prompt"] == "a jazz trio" and back["nfe"] == m["nfe"]
    assert back["settings"] == {k: v for k, v in m["settings"].items() if k != "prompt"}
    assert back["model_hash"] == pipe.model_hash and back["mode"] == "generate"


def test_continue_keeps_prefix(pipe: MelodyPipeline) -> None:
    src = _clip(2.3457)  # not a multiple of the 96-sample hop or the 960-sample token
    r = pipe.continue_(src, GenerationSettings(seconds=1.5, **FAST))
    assert r.audio.shape == (len(src) + round(1.5 * SAMPLE_RATE),)
    np.testing.assert_array_equal(r.audio[: len(src)], src)  # bit-identical prefix
    assert np.abs(r.audio[len(src) :]).max() > 0
    assert r.metadata["mode"] == "continue" and r.metadata["source_samples"] == len(src)
    new, _, finished = _chunks(pipe.stream(GenerationSettings(seconds=1.5, **FAST), continue_from=src))
    assert np.abs(new - r.audio[len(src) :]).max() <= 1e-4
    again = pipe.continue_(src, GenerationSettings(seconds=1.5, **FAST))
    np.testing.assert_array_equal(again.audio, r.audio)


@pytest.mark.parametrize("region", [(1.0, 1.4), (0.0, 0.3), (2.6, 3.0), (0.5, 2.6)])
def test_inpaint_keeps_outside(pipe: MelodyPipeline, region: tuple[float, float]) -> None:
    src = _clip(3.0, seed=1)
    r = pipe.inpaint(src, *region, GenerationSettings(prompt="drums", **FAST))
    assert r.audio.shape == src.shape
    a, b = (round(x * SAMPLE_RATE) for x in region)
    fade = round(INPAINT_CROSSFADE_S * SAMPLE_RATE)
    np.testing.assert_array_equal(r.audio[: max(0, a - fade)], src[: max(0, a - fade)])
    np.testing.assert_array_equal(r.audio[b + fade :], src[b + fade :])
    assert np.abs(r.audio[a:b] - src[a:b]).mean() > 1e-3  # the region was regenerated
    assert r.metadata["region_s"] == [a / SAMPLE_RATE, b / SAMPLE_RATE]


def test_stream_inpaint_equals_inpaint_and_cancels(pipe: MelodyPipeline) -> None:
    src = _clip(2.0, seed=4)
    s = GenerationSettings(prompt="drums", **FAST)
    events = list(pipe.stream_inpaint(src, 0.5, 1.0, s))
    assert all(isinstance(e, Progress) for e in events[:-1]) and {"lm", "dpd", "decode"} <= {
        e.stage for e in events[:-1]}
    finished = events[-1]
    assert isinstance(finished, StreamFinished) and not finished.cancelled
    np.testing.assert_array_equal(finished.result.audio, pipe.inpaint(src, 0.5, 1.0, s).audio)
    control = StreamControl()
    for event in pipe.stream_inpaint(src, 0.5, 1.0, s, control):
        if isinstance(event, Progress) and event.stage == "dpd":
            control.cancel()
    assert isinstance(event, StreamFinished) and event.cancelled
    np.testing.assert_array_equal(event.result.audio, src)  # nothing changed


def test_long_region_uses_several_windows(pipe: MelodyPipeline) -> None:
    r = pipe.inpaint(_clip(3.0, seed=2), 0.5, 2.6, GenerationSettings(**FAST))
    assert r.metadata["windows"] >= 2


def test_cancel_within_one_step(pipe: MelodyPipeline) -> None:
    control = StreamControl()
    events = []
    for event in pipe.stream(GenerationSettings(prompt="x", seconds=3.0, steps=5, seed=1), control):
        events.append(event)
        if isinstance(event, Progress) and event.stage == "dpd" and event.done == 2:
            control.cancel()
    at = next(i for i, e in enumerate(events) if isinstance(e, Progress) and e.stage == "dpd" and e.done == 2)
    after = events[at + 1 :]
    assert len(after) == 1 and isinstance(after[0], StreamFinished) and after[0].cancelled
    assert after[0].result.metadata["nfe_dpd"] == 2
    # between LM tokens too
    control = StreamControl()
    events = []
    for event in pipe.stream(GenerationSettings(prompt="x", seconds=3.0, seed=1), control):
        events.append(event)
        if isinstance(event, Progress) and event.stage == "lm":
            control.cancel()
    assert isinstance(events[-1], StreamFinished) and events[-1].cancelled
    assert not any(isinstance(e, Progress) and e.stage == "dpd" for e in events)
    assert events[-1].result.metadata["nfe_lm"] <= 25


def test_cancel_from_another_thread(pipe: MelodyPipeline) -> None:
    control = StreamControl()
    timer = threading.Timer(0.05, control.cancel)
    timer.start()
    with pytest.raises(GenerationCancelled):
        pipe.generate(GenerationSettings(prompt="x", seconds=60.0, steps=50, seed=1), control)
    timer.cancel()


def test_prompt_automation_and_endless(pipe: MelodyPipeline) -> None:
    # a low temperature lets the (random, nearly flat) LM's tokens follow its prefix
    s = GenerationSettings(prompt="calm piano", seconds=4.0, temperature=0.05, **FAST)
    base, _, _ = _chunks(pipe.stream(s))
    control = StreamControl()
    events = []
    for event in pipe.stream(s, control):
        events.append(event)
        if isinstance(event, Progress) and event.chunk_index == 2 and event.stage == "lm":
            control.set_prompt("loud techno")
    audio, _, finished = _chunks(events)
    changes = finished.result.metadata["prompt_changes"]
    assert len(changes) == 1 and changes[0]["prompt"] == "loud techno" and changes[0]["window"] == 3
    cut = (changes[0]["from_frame"] - pipe.models.vae.context_frames) * 96  # untouched by the new frames
    assert cut > 0
    np.testing.assert_allclose(audio[:cut], base[:cut], rtol=0, atol=1e-6)
    assert not np.allclose(audio, base)
    # endless: runs until stop_after_current()
    control = StreamControl()
    n_chunks = 0
    for event in pipe.stream(GenerationSettings(prompt="x", **FAST), control, endless=True):
        if isinstance(event, AudioChunk):
            n_chunks += 1
            if n_chunks == 6:
                control.stop_after_current()
        if isinstance(event, StreamFinished):
            assert not event.cancelled and event.result.seconds > 2.0


@pytest.mark.parametrize(
    "call",
    [
        lambda p: p.generate(GenerationSettings(prompt="", seconds=1.0)),
        lambda p: p.generate(GenerationSettings(prompt=None, seconds=1.0)),
        lambda p: p.generate(GenerationSettings(prompt="x", seconds=0.0)),
        lambda p: p.generate(GenerationSettings(prompt="x", seconds=1e6)),
        lambda p: p.generate(GenerationSettings(prompt="x", seconds=float("nan"))),
        lambda p: p.generate(GenerationSettings(prompt="x", steps=0)),
        lambda p: p.generate(GenerationSettings(prompt="x", guidance=-1.0)),
        lambda p: p.generate(GenerationSettings(prompt="x", lm_guidance=-1.0)),
        lambda p: p.generate(GenerationSettings(prompt="x", lm_guidance=float("inf"))),
        lambda p: p.generate(GenerationSettings(prompt="x", schedule="cosine")),
        lambda p: p.generate("x"),  # settings enter as a GenerationSettings only
        lambda p: p.generate(GenerationSettings(prompt="", style_audio_path="/no/such/file.wav")),
        lambda p: p.stream(GenerationSettings(prompt="  ")),
        lambda p: p.inpaint(_clip(2.0), 1.5, 2.5, GenerationSettings()),
        lambda p: p.inpaint(_clip(2.0), 1.0, 1.0, GenerationSettings()),
        lambda p: p.inpaint(_clip(2.0), -0.1, 1.0, GenerationSettings()),
        lambda p: p.continue_(np.zeros(10, np.float32), GenerationSettings(seconds=1.0)),
        lambda p: p.continue_(np.full(24000, np.nan, np.float32), GenerationSettings(seconds=1.0)),
        lambda p: p.continue_(_clip(1.0), GenerationSettings(seconds=5000.0)),
    ],
)
def test_bad_input(pipe: MelodyPipeline, call) -> None:
    with pytest.raises(PipelineError) as info:
        call(pipe)
    assert "\n" not in str(info.value) and str(info.value)


def test_lm_guidance_default_and_bundles_without_null_prefix(pipe: MelodyPipeline, tmp_path) -> None:
    assert pipe.models.lm.config.prefix_dropout > 0
    default = pipe.generate(GenerationSettings(prompt="x", seconds=1.0, **FAST))
    assert default.metadata["settings"]["lm_guidance"] == DEFAULT_LM_GUIDANCE != 1.0
    same = pipe.generate(GenerationSettings(prompt="x", seconds=1.0, lm_guidance=DEFAULT_LM_GUIDANCE, **FAST))
    plain = pipe.generate(GenerationSettings(prompt="x", seconds=1.0, lm_guidance=1.0, **FAST))
    # the random LM's prefix is weak: a strong guidance is needed to change the tokens
    strong = pipe.generate(GenerationSettings(prompt="x", seconds=1.0, lm_guidance=10.0, **FAST))
    np.testing.assert_array_equal(same.audio, default.audio)
    assert plain.metadata["settings"]["lm_guidance"] == 1.0 and not np.array_equal(plain.audio, strong.audio)
    old = tmp_path / "old"
    lm = {**OVERRIDES["lm"], "prefix_dropout": 0.0}
    random_bundle(old, "tiny", overrides={**OVERRIDES, "lm": lm})
    old_pipe = MelodyPipeline.load(old, device="cpu", threads=1)
    old_default = old_pipe.generate(GenerationSettings(prompt="x", seconds=1.0, **FAST))
    assert old_default.metadata["settings"]["lm_guidance"] == 1.0
    with pytest.raises(PipelineError, match="without the null prefix"):
        old_pipe.generate(GenerationSettings(prompt="x", seconds=1.0, lm_guidance=2.0, **FAST))


def test_unreadable_audio_and_bundles(pipe: MelodyPipeline, tmp_path, monkeypatch) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF0000WAVEjunk" * 10)
    with pytest.raises(PipelineError):
        pipe.continue_(str(bad), GenerationSettings(seconds=1.0))
    with pytest.raises(PipelineError):
        MelodyPipeline.load(tmp_path / "missing")
    monkeypatch.setenv("MELODY_BUNDLE", str(tmp_path / "nowhere"))
    with pytest.raises(PipelineError, match="no bundled model"):
        MelodyPipeline.load(None)


def test_style_audio_and_latent_scale(pipe: MelodyPipeline, bundle_dir) -> None:
    clip = _clip(1.2)
    a = pipe.generate(GenerationSettings(prompt="", seconds=1.0, **FAST), style_audio=clip)
    b = pipe.generate(GenerationSettings(prompt="piano", style_weight=0.8, seconds=1.0, **FAST),
                      style_audio=clip)
    assert a.audio.shape == b.audio.shape == (SAMPLE_RATE,)
    bundle = load_bundle(bundle_dir)
    bundle.meta["latent_scale"] = 2.0
    scaled = MelodyPipeline(bundle, ModelSet.from_bundle(bundle, 1), 2)
    assert scaled.models.latent_scale == 2.0
    z1, t1 = analyse_segment(pipe.models, clip, 0, len(clip), Stats())
    z2, t2 = analyse_segment(scaled.models, clip, 0, len(clip), Stats())
    torch.testing.assert_close(z2, 2.0 * z1)
    assert torch.equal(t1, t2)
    r = scaled.continue_(clip, GenerationSettings(seconds=1.0, **FAST))
    np.testing.assert_array_equal(r.audio[: len(clip)], clip)


def test_app_engine_protocol(pipe: MelodyPipeline) -> None:
    """The calling convention of app/engine.py's `Engine` protocol (positional settings + control)."""
    assert isinstance(pipe.model_hash, str) and pipe.device == "cpu" and pipe.sample_rate == SAMPLE_RATE
    s = GenerationSettings(prompt="harp", seconds=1.0, steps=2, seed=3)
    control = StreamControl()
    *_, finished = pipe.stream(s, control, False, None)
    assert isinstance(finished, StreamFinished) and finished.result.seconds == 1.0
    src = finished.result.audio
    cont = pipe.continue_(src, dataclasses.replace(s, seconds=0.5), control)
    assert len(cont.audio) == len(src) + SAMPLE_RATE // 2
    inp = pipe.inpaint(src, 0.2, 0.6, s, control)
    assert inp.audio.shape == src.shape
    result = pipe.generate(s)
    np.testing.assert_allclose(result.audio, src, atol=1e-4)


def test_bundle_with_log_mel_tokenizer_continues(tmp_path) -> None:
    """A k-means fit on the first-iteration log-mel features (`layer` -1, the tiny bundle's tokenizer)
    drives continuation's token extraction."""
    overrides = {**OVERRIDES, "kmeans": {"dim": 128, "layer": -1}}
    random_bundle(tmp_path / "mel", "tiny", overrides=overrides)
    mel_pipe = MelodyPipeline.load(tmp_path / "mel", device="cpu", threads=2)
    src = _clip(1.5)
    r = mel_pipe.continue_(src, GenerationSettings(seconds=1.0, **FAST))
    np.testing.assert_array_equal(r.audio[: len(src)], src)
    assert np.isfinite(r.audio).all() and np.abs(r.audio[len(src):]).max() > 0


def test_load_on_cpu_tunes_malloc(bundle_dir, monkeypatch) -> None:
    """Library callers get the allocator settings the CLI and app apply (no page faults per DPD step)."""
    import melody_core.runtime as runtime

    calls = []
    monkeypatch.setattr(runtime, "tune_malloc", lambda: calls.append(1) or True)
    MelodyPipeline.load(bundle_dir, device="cpu", threads=1)
    assert calls == [1]
