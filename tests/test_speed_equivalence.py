"""The speed paths of issue 4 against the paths they replaced: same outputs to float rounding (1e-5).

- DPD: a forward with a prepared `DPDContext` (per window), with CFG twins (shared input stage) and
  with sampler-like angle vectors (E_delta / FiLM on runs of equal angles) == the module-by-module
  reference of tests/test_dpd.py, for legacy and centred self-attention keys.
- Engine: `GuidedVelocity` with the per-window context (`prepare=pipe.models.dpd_prepare`) == without it
  (values and NFE / row counters), and a whole continuation with it == without it.
- Semantic LM: the norm-column decode path gives the full forward's logits and the same sampled
  tokens; the SRU's reused forget-gate buffer gives bit-identical states.
- Runtime / bench: malloc tuning honours the opt-outs; the FLOP counter counts what it says.
"""

from __future__ import annotations

import math
import types

import pytest
import torch
import torch.nn.functional as F
from test_dpd import _perturbed, _small, reference_forward

from melody_core.diffusion import GuidedVelocity, linear_schedule, sample_continuation
from melody_core.eval.bench import FlopCounter
from melody_core.generation.models import ModelSet
from melody_core.models import sru
from melody_core.models.dpd import DPDConfig, DualPathDiffusion
from melody_core.models.sampling import sample_next
from melody_core.models.semantic_lm import LMConfig, SemanticLM
from melody_core.runtime import MALLOC_OPT_OUT, tune_malloc

TOL = 1e-5
LENGTH = 300  # frames: 30 tokens, S = 39 segments of K = 16


def _reference(model: DualPathDiffusion, *args: torch.Tensor | None) -> torch.Tensor:
    with torch.enable_grad():  # the SRU's autograd path, as in tests/test_dpd.py
        return reference_forward(model, *args).detach()


def _sampler_angles(kind: str, b: int, length: int) -> torch.Tensor:
    """Angle vectors as the samplers build them: delta_t everywhere, or 0 on kept frames."""
    delta = torch.full((b, length), 0.9)
    if kind == "continuation":
        delta[:, : length // 2] = 0.0
    elif kind == "inpaint":
        delta[:, : length // 3] = 0.0
        delta[:, 2 * length // 3 :] = 0.0
    elif kind == "rows":  # different angles per row
        delta[1:] = 0.4
    return delta


def _model(centres: bool, **overrides: object) -> DualPathDiffusion:
    cfg = DPDConfig(**{**_small().to_dict(), "self_attn_key_centres": centres, **overrides})
    return _perturbed(cfg).eval()


@pytest.mark.parametrize("centres", [False, True])
@pytest.mark.parametrize("kind", ["constant", "continuation", "inpaint", "rows"])
def test_dpd_context_and_sampler_angles_match_reference(centres: bool, kind: str) -> None:
    model = _model(centres)
    torch.manual_seed(1)
    z = torch.randn(2, LENGTH, 16)
    delta = _sampler_angles(kind, 2, LENGTH)
    tokens = torch.randint(0, model.config.vocab_size, (2, LENGTH // 10))
    uncond = torch.tensor([False, True])
    ref = _reference(model, z, delta, tokens, uncond)
    with torch.inference_mode():
        plain = model(z, delta, tokens, uncond)
        context = model.prepare(tokens, uncond, 2, LENGTH)
        prepared = model(z, delta, context=context)
    torch.testing.assert_close(plain, ref, atol=TOL, rtol=TOL)
    torch.testing.assert_close(prepared, ref, atol=TOL, rtol=TOL)


@pytest.mark.parametrize("centres", [False, True])
@pytest.mark.parametrize("b", [1, 2])
def test_dpd_cfg_twins_match_the_batched_cfg_forward(centres: bool, b: int) -> None:
    """z, delta given once for each cond/uncond pair: rows [cond; uncond] as `GuidedVelocity` batches."""
    model = _model(centres, fine_ffn_mult=2)
    torch.manual_seed(2)
    z, delta = torch.randn(b, LENGTH, 16), _sampler_angles("continuation", b, LENGTH)
    tokens = torch.randint(0, model.config.vocab_size, (b, LENGTH // 10))
    tokens2, uncond = torch.cat([tokens, tokens]), torch.arange(2 * b) >= b
    ref = _reference(model, torch.cat([z, z]), torch.cat([delta, delta]), tokens2, uncond)
    with torch.inference_mode():
        context = model.prepare(tokens2, uncond, 2 * b, LENGTH, shared_input=True)
        v = model(z, delta, context=context)
    assert v.shape == (2 * b, LENGTH, 16)
    torch.testing.assert_close(v, ref, atol=TOL, rtol=TOL)


def test_dpd_context_is_reused_across_steps_and_checked() -> None:
    model = _model(True, sru_hidden=24)  # SRU output 48 != d_hid 32: projection layer
    tokens = torch.randint(0, model.config.vocab_size, (3, 30))
    uncond = torch.tensor([True, False, False])  # rows gathered, not sliced
    with torch.inference_mode():
        context = model.prepare(tokens, uncond, 3, LENGTH)
        for step, angle in enumerate((1.4, 0.8, 0.1)):
            torch.manual_seed(step)
            z, delta = torch.randn(3, LENGTH, 16), torch.full((3, LENGTH), angle)
            torch.testing.assert_close(model(z, delta, context=context), model(z, delta, tokens, uncond),
                                       atol=TOL, rtol=TOL)  # fmt: skip
        with pytest.raises(ValueError):
            model(torch.randn(3, LENGTH + 10, 16), torch.zeros(3, LENGTH + 10), context=context)
        with pytest.raises(ValueError):
            model.prepare(tokens, uncond, 3, LENGTH, shared_input=True)  # odd rows cannot be twins


@pytest.mark.parametrize("tokens_given", [False, True])
def test_dpd_unconditional_contexts(tokens_given: bool) -> None:
    """No tokens (all rows unconditional) and all-uncond flags, through contexts and twins."""
    model = _model(True)
    torch.manual_seed(3)
    z, delta = torch.randn(1, LENGTH, 16), _sampler_angles("inpaint", 1, LENGTH)
    tokens = torch.randint(0, model.config.vocab_size, (2, 30)) if tokens_given else None
    uncond = torch.tensor([True, True]) if tokens_given else None
    ref = _reference(model, torch.cat([z, z]), torch.cat([delta, delta]), tokens, uncond)
    with torch.inference_mode():
        v = model(z, delta, context=model.prepare(tokens, uncond, 2, LENGTH, shared_input=True))
    torch.testing.assert_close(v, ref, atol=TOL, rtol=TOL)


def test_dpd_bundled_tiny_case_matches_reference() -> None:
    """The benchmark case: bundled tiny config (legacy self-attention keys), L = 2500, 250 tokens,
    CFG twins with a prepared context, one angle for every frame (a fresh sampler step)."""
    cfg = DPDConfig(**{**DPDConfig.tiny().to_dict(), "self_attn_key_centres": False})
    model = _perturbed(cfg).eval()
    torch.manual_seed(4)
    z, delta = torch.randn(1, 2500, 16), torch.full((1, 2500), 1.2)
    tokens = torch.randint(0, cfg.vocab_size, (1, 250))
    tokens2, uncond = torch.cat([tokens, tokens]), torch.tensor([False, True])
    ref = _reference(model, torch.cat([z, z]), torch.cat([delta, delta]), tokens2, uncond)
    with torch.inference_mode():
        v = model(z, delta, context=model.prepare(tokens2, uncond, 2, 2500, shared_input=True))
    torch.testing.assert_close(v, ref, atol=TOL, rtol=TOL)


# --- engine ---------------------------------------------------------------------------------------


def _pipeline_like(model: DualPathDiffusion, compiled: bool = False) -> types.SimpleNamespace:
    """A pipeline whose `models` has the attributes `ModelSet.dpd_forward` / `dpd_prepare` use, with
    those real methods."""
    net = (lambda *a, **kw: model(*a, **kw)) if compiled else model  # a wrapper: like torch.compile
    models = types.SimpleNamespace(dpd=model, dpd_net=net, precision="fp32", device=torch.device("cpu"))
    models.dpd_forward = types.MethodType(ModelSet.dpd_forward, models)
    models.dpd_prepare = types.MethodType(ModelSet.dpd_prepare, models)
    return types.SimpleNamespace(models=models)


@pytest.mark.parametrize("scale", [2.5, 1.0, 0.0, None])
@pytest.mark.parametrize("compiled", [False, True])
def test_prepared_guidance_equals_plain_guidance(scale: float | None, compiled: bool) -> None:
    model = _model(False)
    pipe = _pipeline_like(model, compiled)
    torch.manual_seed(5)
    z, delta = torch.randn(1, LENGTH, 16), _sampler_angles("continuation", 1, LENGTH)
    tokens = None if scale is None else torch.randint(0, model.config.vocab_size, (1, 30))
    with torch.inference_mode():
        rho = 2.5 if scale is None else scale
        fast = GuidedVelocity(pipe.models.dpd_forward, tokens, rho, prepare=pipe.models.dpd_prepare)
        slow = GuidedVelocity(pipe.models.dpd_forward, tokens, rho)
        for _ in range(2):
            torch.testing.assert_close(fast(z, delta), slow(z, delta), atol=TOL, rtol=TOL)
    counters = ("nfe", "network_calls", "network_rows")
    assert [getattr(fast, c) for c in counters] == [getattr(slow, c) for c in counters]


def test_continuation_with_prepared_guidance_equals_plain() -> None:
    model = _model(True)
    pipe = _pipeline_like(model)
    torch.manual_seed(6)
    known, new = torch.randn(1, 200, 16), torch.randn(1, LENGTH - 200, 16)
    tokens = torch.randint(0, model.config.vocab_size, (1, 30))
    with torch.inference_mode():
        slow = GuidedVelocity(pipe.models.dpd_forward, tokens)
        ref, _ = sample_continuation(slow, known, new, linear_schedule(4))
        fast = GuidedVelocity(pipe.models.dpd_forward, tokens, prepare=pipe.models.dpd_prepare)
        z, _ = sample_continuation(fast, known, new, linear_schedule(4))
    assert torch.equal(z[:, :200], known)
    torch.testing.assert_close(z, ref, atol=TOL, rtol=TOL)


# --- semantic LM and SRU --------------------------------------------------------------------------


def _lm() -> SemanticLM:
    torch.manual_seed(7)
    cfg = LMConfig(vocab_size=64, prefix_codebook_size=32, d_model=64, n_layers=2, n_heads=4, ffn_hidden=96)
    lm = SemanticLM(cfg).eval()
    with torch.no_grad():
        for p in lm.parameters():
            p.add_(0.05 * torch.randn_like(p))  # gains away from 1, so the folded gains matter
    return lm


def test_lm_norm_column_decode_samples_the_full_forward_tokens() -> None:
    """Tokens sampled on the decode path == tokens sampled from full-forward logits, same seed."""
    lm = _lm()
    prefix = torch.randint(0, 32, (2, 12))
    with torch.inference_mode():
        fast = lm.generate(prefix, 40, generator=torch.Generator().manual_seed(8))
        gen, tokens = torch.Generator().manual_seed(8), prefix.new_zeros(2, 0)
        for _ in range(40):
            x = torch.cat([tokens, tokens.new_zeros(2, 1)], dim=1)
            logits = lm(prefix, x)[:, tokens.shape[1]]  # (B, V): the distribution of the next token
            tokens = torch.cat([tokens, sample_next(logits, generator=gen).unsqueeze(1)], dim=1)
        state = lm.start(prefix)
        for j in range(40):
            step_logits = lm(prefix, torch.cat([fast[:, :j], fast.new_zeros(2, 1)], dim=1))[:, j]
            torch.testing.assert_close(state.logits, step_logits, atol=TOL, rtol=TOL)
            lm.step(state, fast[:, j])
    assert torch.equal(fast, tokens)
    cache = state.cache
    c = math.sqrt(lm.config.d_model * lm.config.norm_eps)
    assert torch.all(cache.embedding[:, -1] == torch.tensor(c, dtype=torch.float32))
    for w in cache.layers:  # the norm column is never read and never updated
        assert not (w.qkv[-1].any() or w.w13[-1].any() or w.out[:, -1].any() or w.w2[:, -1].any())


def test_sru_merged_recurrence_with_a_reused_gate_buffer() -> None:
    """The no-autograd loop (one forget-gate buffer for all steps) gives the per-direction loop's
    states (c_1..c_T of both directions; the two boundary rows hold the initial states / nothing)."""
    torch.manual_seed(9)
    u0, u1 = torch.randn(2, 12, 5, 8), torch.randn(2, 12, 5, 8)
    w, c0 = torch.randn(2, 1, 8), torch.randn(2, 5, 8)
    with torch.no_grad():
        merged = sru._state_views(sru._forget_recurrence_merged(u0, u1, w, c0), 12)[0]
        plain = sru._state_views(sru._forget_recurrence(u0, u1, w.view(2, 8), c0), 12)[0]
    torch.testing.assert_close(merged, plain, atol=1e-6, rtol=1e-6)


# --- runtime and bench ----------------------------------------------------------------------------


def test_malloc_tuning_honours_opt_outs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MALLOC_OPT_OUT, "0")
    assert tune_malloc() is False
    monkeypatch.delenv(MALLOC_OPT_OUT)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")  # the user configures malloc: leave it alone
    assert tune_malloc() is False
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert tune_malloc() is True  # Linux + glibc (the test machine)


def test_flop_counter() -> None:
    a, b = torch.randn(7, 5), torch.randn(5, 3)
    q, k = torch.randn(2, 3, 11, 8), torch.randn(2, 3, 13, 8)
    with torch.inference_mode(), FlopCounter() as counter:
        a @ b  # 2 * 7 * 5 * 3
        F.linear(torch.randn(4, 6, 5), torch.randn(9, 5))  # 2 * 24 * 5 * 9
        torch.randn(7, 3).addmm_(a, b)  # 2 * 7 * 5 * 3
        F.scaled_dot_product_attention(q, k, k)  # 2 matmuls of 2 * 11 * 13 * 8 per (batch, head)
    assert counter.flops == 2 * 105 + 2 * 24 * 45 + 2 * 105 + 2 * 6 * 2 * 11 * 13 * 8
