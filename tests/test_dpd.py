import hashlib
import math

import pytest
import torch

from melody_core import FRAMES_PER_TOKEN
from melody_core.models.dpd import (
    AngleEncoder,
    DPDConfig,
    DualPathDiffusion,
    patchify,
    split_cfg_rows,
    token_times,
    unpatchify,
)
from melody_core.modules import RotaryEmbedding, apply_rope, overlap_add, segment
from melody_core.modules.rope import apply_rope_interleaved, interleave_rope_rows, rope_phasors
from melody_core.modules.segmentation import overlap_add_time_major, pad_for_segments, segment_view

PAPER_PARAMS = 296.6e6  # §5.1
TOL = 1e-5  # the fast forward against the reference (float32 rounding only)
# state dicts of the implementation the first models were trained with: names, shapes, dtypes
STATE_DICT_SHA256 = {
    "tiny": (63, "1cfbc34371df44a44b3ba65b08654b40e6d050fde9a8507ff9f7ff82a974bfba"),
    "paper": (211, "1b89e34d705161ac040d8e7f4cb935bd4ea511f53305bbbcf33727bbc01b98ef"),
}


def _small() -> DPDConfig:
    return DPDConfig(d_hid=32, n_blocks=2, n_heads=2, segment_size=16, vocab_size=50, sru_hidden=16)


def _inputs(cfg: DPDConfig, b: int, length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    z = torch.randn(b, length, cfg.d_latent)
    delta = torch.rand(b, length) * (math.pi / 2)
    tokens = torch.randint(0, cfg.vocab_size, (b, math.ceil(length / FRAMES_PER_TOKEN)))
    return z, delta, tokens


@pytest.mark.parametrize("length", [1, 37, 250, 2500])
def test_tiny_shapes_any_length(length: int) -> None:
    cfg = DPDConfig.tiny()
    model = DualPathDiffusion(cfg).eval()
    z, delta, tokens = _inputs(cfg, 2, length)
    with torch.no_grad():
        v = model(z, delta, tokens, torch.tensor([False, True]))
    assert v.shape == (2, length, cfg.d_latent)
    assert torch.isfinite(v).all()


def test_forward_backward_finite_grads() -> None:
    cfg = _small()
    model = DualPathDiffusion(cfg)
    for block in model.blocks:  # FiLM starts as the identity (zero init): give it weights to pass grads
        torch.nn.init.normal_(block.fine.film.proj.weight, std=0.02)
    z, delta, tokens = _inputs(cfg, 3, 70)
    v = model(z, delta, tokens, torch.tensor([False, True, False]))
    (v - z).pow(2).mean().backward()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    # every part of the network is reached: embeddings, angle vectors, the CFG null vector, each block
    for name in ("token_embedding.weight", "angle.e_start", "angle.e_end", "null_cond", "w_in.weight"):
        assert model.get_parameter(name).grad.abs().sum() > 0, name
    for i in range(cfg.n_blocks):
        for part in ("coarse.self_attn.q.weight", "coarse.cross_attn.kv.weight", "fine.sru.layers.0.weight"):
            assert model.get_parameter(f"blocks.{i}.{part}").grad.abs().sum() > 0, f"blocks.{i}.{part}"


def test_cfg_rows() -> None:
    """Uncond rows differ from cond rows, ignore the tokens, and match tokens=None."""
    cfg = _small()
    model = DualPathDiffusion(cfg).eval()
    z, delta, tokens = _inputs(cfg, 1, 90)
    other = torch.randint(0, cfg.vocab_size, tokens.shape)
    z2, delta2 = z.expand(2, -1, -1), delta.expand(2, -1)
    with torch.no_grad():
        v = model(z2, delta2, torch.cat([tokens, tokens]), torch.tensor([False, True]))
        v_other = model(z2, delta2, torch.cat([other, other]), torch.tensor([False, True]))
        v_none = model(z, delta, None)
        v_empty = model(z, delta, tokens[:, :0])
    assert (v[0] - v[1]).abs().max() > 1e-3  # conditional != unconditional
    torch.testing.assert_close(v_other[1], v[1])  # unconditional row does not see the tokens
    assert (v_other[0] - v[0]).abs().max() > 1e-3  # conditional row does
    torch.testing.assert_close(v_none[0], v[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(v_empty, v_none)


def test_mixed_batch_equals_rows_alone() -> None:
    cfg = _small()
    model = DualPathDiffusion(cfg).eval()
    z, delta, tokens = _inputs(cfg, 3, 64)
    uncond = torch.tensor([True, False, False])
    with torch.no_grad():
        v = model(z, delta, tokens, uncond)
        rows = [slice(i, i + 1) for i in range(3)]
        alone = [model(z[r], delta[r], tokens[r], uncond[r]) for r in rows]
    torch.testing.assert_close(v, torch.cat(alone), atol=1e-5, rtol=1e-5)


def test_token_count_mismatch() -> None:
    """ceil(L/10) tokens cover the window; fewer or more are accepted (placed by index)."""
    cfg = _small()
    model = DualPathDiffusion(cfg).eval()
    z, delta, tokens = _inputs(cfg, 2, 95)  # 10 tokens
    assert tokens.shape[1] == 10
    with torch.no_grad():
        v = model(z, delta, tokens)
        v_short = model(z, delta, tokens[:, :4])
        v_long = model(z, delta, torch.cat([tokens, tokens], 1))
    for out in (v_short, v_long):
        assert out.shape == v.shape and torch.isfinite(out).all()
        assert (out - v).abs().max() > 1e-4
    with pytest.raises(ValueError):
        model(z, delta, tokens[:1])  # row count mismatch
    with pytest.raises(ValueError):
        model(z, delta[:, :-1], tokens)  # angle vector must be (B, L)


def test_eval_is_deterministic() -> None:
    cfg = _small()
    model = DualPathDiffusion(cfg).eval()
    z, delta, tokens = _inputs(cfg, 2, 123)
    with torch.no_grad():
        a = model(z, delta, tokens, torch.tensor([False, True]))
        b = model(z, delta, tokens, torch.tensor([False, True]))
    assert torch.equal(a, b)


def test_angle_encoding_is_eq11() -> None:
    enc = AngleEncoder(256, 32)
    delta = torch.rand(2, 9) * (math.pi / 2)
    d = delta.unsqueeze(-1)
    ref = enc.mlp(torch.sin(d) * enc.e_start + torch.cos(d) * enc.e_end)
    torch.testing.assert_close(enc(delta), ref, atol=1e-5, rtol=1e-5)


def test_paper_parameter_count_on_meta() -> None:
    with torch.device("meta"):
        model = DualPathDiffusion(DPDConfig.paper())
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - PAPER_PARAMS) / PAPER_PARAMS < 0.10, n
    cfg = DPDConfig.paper()
    assert (cfg.d_hid, cfg.n_blocks, cfg.segment_size, cfg.vocab_size) == (768, 8, 64, 1024)


def test_config_round_trip() -> None:
    for name in ("tiny", "paper"):
        cfg = DPDConfig.preset(name)
        assert DPDConfig.from_dict(cfg.to_dict()) == cfg


def test_rejects_bad_config() -> None:
    with pytest.raises(ValueError):
        DualPathDiffusion(DPDConfig(d_hid=30, n_heads=2))  # head dim 15 is odd (RoPE)
    with pytest.raises(ValueError):
        DualPathDiffusion(DPDConfig(segment_size=15))


# --- the fast forward against a frozen reference ---------------------------------------------------


def reference_forward(
    model: DualPathDiffusion,
    z: torch.Tensor,
    delta: torch.Tensor,
    tokens: torch.Tensor | None = None,
    uncond: torch.Tensor | None = None,
    guidance: float | None = None,
) -> torch.Tensor:
    """The DPD forward as first implemented (the maths trained models use), written on the
    sub-modules' own forward methods: `Attention` (RoPE via `apply_rope`), `RMSNorm`, `FeedForward`,
    `FiLM`, `SRU` (autograd path, tested against the PyPI package) and `segment`/`overlap_add`.
    The fast path of `DualPathDiffusion.forward` must reproduce it to float32 rounding."""
    cfg = model.config
    k, d, p = cfg.segment_size, cfg.d_hid, cfg.patch
    b, length, d_lat = z.shape
    if p > 1:  # position n = frames nP .. nP + P - 1, frame-major; its angle: the largest of them
        z = torch.cat([z[:, i::p] for i in range(p)], dim=-1)  # (B, L/P, P*D)
        delta = torch.stack([delta[:, i::p] for i in range(p)], dim=-1).amax(dim=-1)  # (B, L/P)
    e_delta = model.angle(delta)
    x = segment(model.norm_in(model.w_in(z) + e_delta), k).permute(2, 0, 1, 3).contiguous()  # (K, B, S, d)
    s = x.shape[2]
    cond_rows, uncond_rows = split_cfg_rows(tokens, uncond, b, z.device)
    pooled, e_st, token_pos = model.null_cond.expand(b, d), None, None
    if cond_rows is not None:
        assert tokens is not None
        e_st = model.token_mlp(model.token_embedding(tokens[cond_rows]))
        pooled = pooled.index_copy(0, cond_rows, e_st.mean(dim=1))
        token_pos = token_times(tokens.shape[1], z.device)
    if model.guidance is not None:
        pooled = pooled + model.guidance(torch.full((b,), 1.0 if guidance is None else guidance))
    film = segment(e_delta + pooled.unsqueeze(1), k).permute(2, 0, 1, 3).reshape(k, b * s, d)
    seg_pos = torch.arange(s, dtype=torch.float32) * (k // 2)
    frame_pos = ((seg_pos - k // 2) + torch.arange(k, dtype=torch.float32).unsqueeze(1)).reshape(-1)
    seg_pos, frame_pos = seg_pos * p + (p - 1) / 2, frame_pos * p + (p - 1) / 2  # frame times
    for block in model.blocks:
        c, f = block.coarse, block.fine
        key_pos = seg_pos if model.config.self_attn_key_centres else None  # None: keys at 0..S-1
        x = x + c.self_attn(c.norm_self(x).view(k * b, s, d), q_pos=seg_pos, k_pos=key_pos).view(k, b, s, d)
        h = c.norm_cross(x)
        out = torch.zeros_like(h)
        if cond_rows is not None:
            q = h[:, cond_rows].permute(1, 0, 2, 3).reshape(len(cond_rows), k * s, d)
            y = c.cross_attn(q, context=e_st, q_pos=frame_pos, k_pos=token_pos)
            out = out.index_copy(1, cond_rows, y.view(-1, k, s, d).permute(1, 0, 2, 3))
        if uncond_rows is not None:
            y = c.cross_attn(h[:, uncond_rows].reshape(-1, s, d), q_pos=seg_pos, k_pos=key_pos)
            out = out.index_copy(1, uncond_rows, y.view(k, -1, s, d))
        x = x + out
        x = x + c.ffn(c.norm_ffn(x))
        y, _ = f.sru(f.norm(x).view(k, b * s, d))
        x = x + f.film(f.proj(y), film).view(k, b, s, d)
        if f.ffn is not None:
            x = x + f.ffn(f.norm_ffn(x))
    v = model.w_out(model.norm_out(overlap_add(x.permute(1, 2, 0, 3), length // p)))  # (B, L/P, P*D)
    out = v.new_empty(b, length, d_lat)
    for i in range(p):
        out[:, i::p] = v[..., i * d_lat : (i + 1) * d_lat]
    return out


def _perturbed(cfg: DPDConfig) -> DualPathDiffusion:
    """A model away from its init (FiLM starts as the identity), so that every weight matters."""
    torch.manual_seed(0)
    model = DualPathDiffusion(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def _reference(model: DualPathDiffusion, *args: torch.Tensor | None) -> torch.Tensor:
    with torch.enable_grad():  # the SRU's autograd path, whatever the caller's mode
        return reference_forward(model, *args).detach()


@pytest.mark.parametrize("mode", ["inference", "no_grad"])
def test_tiny_cfg_batch_matches_reference(mode: str) -> None:
    """The benchmark case: tiny preset, B = 2 CFG rows [cond, uncond], L = 2500, 250 tokens."""
    model = _perturbed(DPDConfig.tiny()).eval()
    z, delta, tokens = _inputs(model.config, 2, 2500)
    uncond = torch.tensor([False, True])
    ref = _reference(model, z, delta, tokens, uncond)
    with torch.inference_mode() if mode == "inference" else torch.no_grad():
        v = model(z, delta, tokens, uncond)
    torch.testing.assert_close(v, ref, atol=TOL, rtol=TOL)


_SMALL_VARIANTS = {
    "base": {},
    "fine_ffn": {"fine_ffn_mult": 2},
    "sru_proj": {"sru_hidden": 24},  # SRU output 48 != d_hid 32: projection layer
    "patch2": {"patch": 2},  # positions of 2 frames (CPU preset v2)
    "patch10": {"patch": 10, "segment_size": 4},  # one position per semantic token
    "patch5_guidance": {"patch": 5, "guidance_embed": True},  # rho as a FiLM input (guidance distillation)
}


@pytest.mark.parametrize("variant", sorted(_SMALL_VARIANTS))
@pytest.mark.parametrize(
    "uncond",
    [[False, True, False], [True, False, False], [False, False, False], [True, True, True], None],
    ids=["rows-gathered", "rows-sliced", "all-cond", "all-uncond", "no-flags"],
)
def test_row_layouts_match_reference(variant: str, uncond: list[bool] | None) -> None:
    """CFG rows given as slices (consecutive) and as gathers (not), and the all-/no-condition cases."""
    cfg = DPDConfig(**{**_small().to_dict(), **_SMALL_VARIANTS[variant]})
    model = _perturbed(cfg).eval()
    z, delta, tokens = _inputs(cfg, 3, 70)
    flags = None if uncond is None else torch.tensor(uncond)
    with torch.no_grad():
        for toks in (tokens, None):
            torch.testing.assert_close(model(z, delta, toks, flags), _reference(model, z, delta, toks, flags),
                                       atol=TOL, rtol=TOL)  # fmt: skip


def test_training_path_matches_reference() -> None:
    """With autograd (training): outputs, every parameter's gradient, and dropout draws match."""
    cfg = DPDConfig(**{**_small().to_dict(), "dropout": 0.2, "sru_hidden": 24})
    model = _perturbed(cfg).train()
    z, delta, tokens = _inputs(cfg, 3, 70)
    uncond = torch.tensor([False, True, False])
    weight = torch.randn(3, 70, cfg.d_latent)
    params = [p for p in model.parameters() if p.requires_grad]
    results = []
    for forward in (model, lambda *a: reference_forward(model, *a)):
        torch.manual_seed(5)  # the same dropout masks in both
        v = forward(z, delta, tokens, uncond)
        results.append((v.detach(), torch.autograd.grad((v * weight).sum(), params)))
    (v, grads), (v_ref, grads_ref) = results
    torch.testing.assert_close(v, v_ref, atol=TOL, rtol=TOL)
    for (name, _), g, g_ref in zip(
        [np for np in model.named_parameters() if np[1].requires_grad], grads, grads_ref
    ):
        torch.testing.assert_close(g, g_ref, atol=TOL * g_ref.abs().max().item(), rtol=TOL, msg=name)


def test_state_dict_unchanged() -> None:
    """Parameter names, shapes and dtypes are those of the first trained checkpoints."""
    for preset, (count, digest) in STATE_DICT_SHA256.items():
        with torch.device("meta"):
            state = DualPathDiffusion(DPDConfig.preset(preset)).state_dict()
        lines = "\n".join(f"{n} {tuple(t.shape)} {t.dtype}" for n, t in state.items())
        assert (len(state), hashlib.sha256(lines.encode()).hexdigest()) == (count, digest), preset


def test_autocast_bf16_runs() -> None:
    """bf16 autocast (pipeline precision option): RoPE rotates in float32, output close to fp32."""
    model = _perturbed(_small()).eval()
    z, delta, tokens = _inputs(model.config, 2, 70)
    with torch.inference_mode():
        v = model(z, delta, tokens, torch.tensor([False, True]))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            v_bf16 = model(z, delta, tokens, torch.tensor([False, True])).float()
    assert torch.isfinite(v_bf16).all()
    assert (v_bf16 - v).abs().max() < 0.1 * v.abs().max()


def test_interleaved_rope_equals_apply_rope() -> None:
    """Interleaved pairs + complex phasors give the rotation of `apply_rope`, and the same scores."""
    torch.manual_seed(0)
    heads, hd, t = 2, 8, 11
    rope = RotaryEmbedding(hd)
    pos = torch.rand(t) * 3000  # fractional, large (frame times)
    x = torch.randn(3, t, heads * hd)
    w = torch.randn(heads * hd, heads * hd)
    ref = apply_rope((x @ w.t()).view(3, t, heads, hd).transpose(1, 2), *rope(pos))  # (3, H, T, hd)
    fast = (x @ interleave_rope_rows(w, heads).t()).view(3, t, heads, hd)
    phasors = rope_phasors(rope, pos).unsqueeze(1).expand(-1, heads, -1, -1)  # (T, H, hd/2, 2)
    for inplace in (False, True):
        got = apply_rope_interleaved(fast.clone(), phasors, inplace).transpose(1, 2)  # (3, H, T, hd)
        pairs = ref.view(3, heads, t, 2, hd // 2).transpose(-1, -2).reshape(ref.shape)  # same pair order
        torch.testing.assert_close(got, pairs, atol=1e-5, rtol=1e-5)
    other = apply_rope_interleaved(fast.to("meta"), phasors.to("meta"))  # real-arithmetic fallback runs
    assert other.shape == fast.shape


def test_time_major_segmentation_equals_segment() -> None:
    for length, k in ((1, 4), (37, 8), (250, 64), (2500, 64)):
        x = torch.randn(2, length, 3)
        segs = segment(x, k)  # (B, S, K, D)
        view = segment_view(pad_for_segments(x, k), k)  # (K, B, S, D)
        assert torch.equal(view.permute(1, 2, 0, 3), segs)
        assert torch.equal(overlap_add_time_major(view, length), overlap_add(segs, length))


@pytest.mark.parametrize("centres", [False, True])
def test_self_attention_key_positions_follow_the_config(centres: bool) -> None:
    cfg = DPDConfig.tiny()
    cfg.self_attn_key_centres = centres
    model = DualPathDiffusion(cfg).eval()
    z, delta = torch.randn(2, 300, 16), torch.rand(2, 300)
    tokens = torch.randint(0, cfg.vocab_size, (2, 30))
    uncond = torch.tensor([False, True])
    with torch.no_grad():
        want = reference_forward(model, z, delta, tokens, uncond)
        torch.testing.assert_close(model(z, delta, tokens, uncond), want, atol=1e-5, rtol=1e-5)
    flipped = {**cfg.to_dict(), "self_attn_key_centres": not centres}
    other = DualPathDiffusion(DPDConfig.from_dict(flipped)).eval()
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert not torch.allclose(model(z, delta, tokens, uncond), other(z, delta, tokens, uncond), atol=1e-4)


def test_configs_without_the_key_position_field_keep_the_legacy_positions() -> None:
    legacy = {k: v for k, v in DPDConfig.tiny().to_dict().items() if k != "self_attn_key_centres"}
    assert DPDConfig.from_dict(legacy).self_attn_key_centres is False
    assert DPDConfig.tiny().self_attn_key_centres and DPDConfig.paper().self_attn_key_centres


# --- patches (P latent frames per position) and the guidance input -----------------------------------


PAPER_PARAM_COUNT = 286_121_232  # DPDConfig.paper() before patches / guidance input (exact)


def test_paper_and_tiny_parameter_counts_unchanged() -> None:
    counts = {}
    for name in ("tiny", "paper"):
        with torch.device("meta"):
            counts[name] = sum(p.numel() for p in DualPathDiffusion(DPDConfig.preset(name)).parameters())
    assert counts == {"tiny": 214_224, "paper": PAPER_PARAM_COUNT}
    assert (DPDConfig.paper().patch, DPDConfig.paper().guidance_embed) == (1, False)


@pytest.mark.parametrize("patch", [1, 2, 5, 10])
def test_patch_round_trip_is_exact(patch: int) -> None:
    z = torch.randn(3, 60, 16)
    delta = torch.rand(3, 60)
    z_pos, d_pos = patchify(z, delta, patch)
    assert z_pos.shape == (3, 60 // patch, patch * 16) and d_pos.shape == (3, 60 // patch)
    assert torch.equal(unpatchify(z_pos, 16), z)  # positions -> frames: bit-identical
    n = 4  # position n holds frames nP .. nP + P - 1, frame-major, and their largest angle
    assert torch.equal(z_pos[:, n], z[:, n * patch : (n + 1) * patch].reshape(3, -1))
    assert torch.equal(d_pos[:, n], delta[:, n * patch : (n + 1) * patch].amax(dim=1))


def test_patch_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="patch"):
        DualPathDiffusion(DPDConfig(**{**_small().to_dict(), "patch": 3}))  # does not divide a token
    model = DualPathDiffusion(DPDConfig(**{**_small().to_dict(), "patch": 5}))
    z, delta, tokens = _inputs(model.config, 1, 72)
    with pytest.raises(ValueError, match="multiple of the patch"):
        model(z, delta, tokens)


def test_patched_training_path_matches_reference() -> None:
    """P = 5 with autograd: the same outputs and gradients as the module-by-module reference."""
    cfg = DPDConfig(**{**_small().to_dict(), "patch": 5, "guidance_embed": True})
    model = _perturbed(cfg).train()
    z, delta, tokens = _inputs(cfg, 2, 80)
    params = [p for p in model.parameters() if p.requires_grad]
    results = []
    for forward in (model, lambda *a: reference_forward(model, *a)):
        v = forward(z, delta, tokens, torch.tensor([False, True]))
        results.append((v.detach(), torch.autograd.grad(v.square().sum(), params)))
    (v, grads), (v_ref, grads_ref) = results
    torch.testing.assert_close(v, v_ref, atol=TOL, rtol=TOL)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, atol=TOL * g_ref.abs().max().item(), rtol=TOL)


def test_guidance_input_changes_the_output() -> None:
    cfg = DPDConfig(**{**_small().to_dict(), "patch": 2, "guidance_embed": True})
    model = _perturbed(cfg).eval()
    z, delta, tokens = _inputs(cfg, 2, 40)
    with torch.no_grad():
        v1, v3 = model(z, delta, tokens, guidance=1.0), model(z, delta, tokens, guidance=3.0)
        assert (v1 - v3).abs().max() > 1e-3  # rho is an input
        torch.testing.assert_close(model(z, delta, tokens), v1)  # None = rho 1
        rows = model(z, delta, tokens, guidance=torch.tensor([1.0, 3.0]))  # one rho per row
        torch.testing.assert_close(rows, torch.stack([v1[0], v3[1]]), atol=TOL, rtol=TOL)
        ctx = model.prepare(tokens, None, 2, 40, guidance=3.0)
        torch.testing.assert_close(model(z, delta, context=ctx), v3, atol=TOL, rtol=TOL)
        ref = _reference(model, z, delta, tokens, None, 3.0)
        torch.testing.assert_close(model(z, delta, tokens, guidance=3.0), ref, atol=TOL, rtol=TOL)
    fresh = DualPathDiffusion(cfg)  # E_rho starts at 0: a student initialised from its teacher = the teacher
    with torch.no_grad():
        assert torch.equal(fresh(z, delta, tokens, guidance=1.0), fresh(z, delta, tokens, guidance=5.0))
    plain = DualPathDiffusion(_small())
    with pytest.raises(ValueError, match="no guidance input"):
        plain(z, delta, tokens, guidance=2.0)
