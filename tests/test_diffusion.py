"""Angle-parameterised diffusion math and samplers (§4.2, Eq. 2-12)."""

import math

import pytest
import torch

from melody_core import diffusion as dm

HALF_PI = math.pi / 2
B, L, D = 2, 40, 3


def oracle(z0: torch.Tensor) -> dm.VelocityFn:
    """Exact velocity field of a single data point z0: from z0 = cos δ z − sin δ v (§4.2.1)."""

    def v_fn(z: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        d = delta.double().unsqueeze(-1)
        s = torch.sin(d)
        v = (torch.cos(d) * z.double() - z0.double()) / torch.where(s > 0, s, 1.0)
        return torch.where(s > 0, v, 0.0).to(z.dtype)  # at δ = 0 any v gives z0

    return v_fn


class Recorder:
    """Wraps a v_fn and records every angle vector it was called with."""

    def __init__(self, v_fn: dm.VelocityFn) -> None:
        self.v_fn, self.deltas, self.zs = v_fn, [], []

    def __call__(self, z: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        self.deltas.append(delta.clone())
        self.zs.append(z.clone())
        return self.v_fn(z, delta)


# ---------------------------------------------------------------- schedules
@pytest.mark.parametrize("name", ["linear", "uniform"])
def test_schedule_sums_to_half_pi(name: str) -> None:
    for steps in range(1, 51):
        omegas = dm.get_schedule(name, steps)
        assert omegas.shape == (steps,) and bool((omegas > 0).all())
        assert abs(omegas.sum().item() - HALF_PI) <= 1e-6


def test_linear_schedule_values_and_order() -> None:
    omegas = dm.linear_schedule(20)
    t = 7
    assert omegas[t - 1].item() == pytest.approx(math.pi / 120 + 2 * math.pi * t / (3 * 20 * 21))
    assert bool((omegas.diff() > 0).all())  # ω_T largest: big steps first in sampling (t = T..1)
    assert torch.allclose(dm.uniform_schedule(4), torch.full((4,), math.pi / 8, dtype=torch.float64))
    with pytest.raises(ValueError):
        dm.get_schedule("cosine", 10)
    with pytest.raises(ValueError):
        dm.linear_schedule(0)


@pytest.mark.parametrize("name", ["linear", "uniform"])
def test_angles_follow_eq3_and_end_at_zero(name: str) -> None:
    omegas = dm.get_schedule(name, 9)
    deltas = dm.angles_from_schedule(omegas)  # δ_T .. δ_1
    assert deltas[0].item() == HALF_PI
    for k, t in enumerate(range(9, 0, -1)):
        assert deltas[k].item() == pytest.approx(HALF_PI - omegas[t:].sum().item(), abs=1e-12)
    visited = dm.step_angles(omegas)
    assert visited.shape == (10,) and visited[-1].item() == 0.0
    assert bool((visited.diff() < 0).all())
    # step at t uses ω_t: δ_t − δ_{t−1} = ω_t, sampling order t = T..1
    torch.testing.assert_close(-visited.diff(), omegas.flip(0), atol=1e-12, rtol=0)


def test_invalid_schedules_rejected() -> None:
    with pytest.raises(ValueError):
        dm.step_angles([0.5, -0.1])
    with pytest.raises(ValueError):
        dm.step_angles([1.0, 1.0])  # Σω > π/2
    with pytest.raises(ValueError):
        dm.step_angles([])


# ---------------------------------------------------------------- forward process and DDIM step
def test_noise_velocity_and_inverses() -> None:
    z0, eps = torch.randn(B, L, D), torch.randn(B, L, D)
    delta = torch.rand(B, L) * HALF_PI
    z = dm.noise(z0, eps, delta)
    v = dm.velocity_target(z0, eps, delta)
    d = delta.unsqueeze(-1)
    torch.testing.assert_close(z, torch.cos(d) * z0 + torch.sin(d) * eps)
    torch.testing.assert_close(v, torch.cos(d) * eps - torch.sin(d) * z0)
    torch.testing.assert_close(dm.predict_z0(z, v, delta), z0, atol=1e-5, rtol=0)
    torch.testing.assert_close(dm.predict_eps(z, v, delta), eps, atol=1e-5, rtol=0)
    # scalar and per-example (B,) angles broadcast too
    torch.testing.assert_close(dm.noise(z0, eps, 0.3), dm.noise(z0, eps, torch.full((B,), 0.3)))
    with pytest.raises(ValueError):
        dm.noise(z0, eps, torch.zeros(L, B))


@pytest.mark.parametrize("name", ["linear", "uniform"])
@pytest.mark.parametrize("start_t", [1, 4, 13, 20])
def test_ddim_with_true_velocity_recovers_z0_from_schedule_angle(name: str, start_t: int) -> None:
    omegas = dm.get_schedule(name, 20)
    z0, eps = torch.randn(B, L, D), torch.randn(B, L, D)
    remaining = omegas[:start_t]  # ω_1..ω_t: the schedule left when standing at δ_t
    z = dm.noise(z0, eps, remaining.sum().item())
    for delta, omega in zip(dm.step_angles(remaining)[:-1], -dm.step_angles(remaining).diff()):
        z = dm.ddim_step(z, dm.velocity_target(z0, eps, delta.item()), omega.item())
    torch.testing.assert_close(z, z0, atol=1e-5, rtol=0)


def test_ddim_single_step_of_size_delta_lands_on_z0() -> None:
    z0, eps = torch.randn(B, L, D), torch.randn(B, L, D)
    for delta in [1e-3, 0.2, 1.0, HALF_PI]:
        z = dm.noise(z0, eps, delta)
        out = dm.ddim_step(z, dm.velocity_target(z0, eps, delta), delta)
        torch.testing.assert_close(out, z0, atol=1e-5, rtol=0)
    # per-frame ω: frames with ω = 0 are untouched
    delta = torch.rand(B, L) * HALF_PI
    omega = torch.where(torch.arange(L) < 10, 0.0, delta)
    z = dm.noise(z0, eps, delta)
    out = dm.ddim_step(z, dm.velocity_target(z0, eps, delta), omega)
    assert torch.equal(out[:, :10], z[:, :10])
    torch.testing.assert_close(out[:, 10:], z0[:, 10:], atol=1e-5, rtol=0)


def test_ddim_from_arbitrary_delta_recovers_z0() -> None:
    z0, eps = torch.randn(B, L, D), torch.randn(B, L, D)
    for delta in torch.rand(5, generator=torch.Generator().manual_seed(3)).tolist():
        start = delta * HALF_PI
        omegas = dm.linear_schedule(7) * (start / HALF_PI)  # a schedule summing to δ
        out, info = dm.sample(oracle(z0), dm.noise(z0, eps, start), omegas)
        torch.testing.assert_close(out, z0, atol=1e-5, rtol=0)
        assert info.nfe == 7


# ---------------------------------------------------------------- multi-chunk training (Eq. 7-10)
def test_chunk_bounds() -> None:
    assert dm.chunk_bounds(2500, 4) == (0, 625, 1250, 1875, 2500)
    assert dm.chunk_bounds(10, 3) == (0, 3, 6, 10)  # ⌊mL/M⌋
    assert dm.chunk_bounds(2500, 4, grid=10) == (0, 620, 1250, 1870, 2500)
    for length, m, g in [(2500, 4, 1), (2500, 4, 10), (37, 5, 1), (90, 4, 10)]:
        assert dm.new_chunk_length(length, m, g) == g * math.ceil(length // g / m)
    assert dm.new_chunk_length(2500, 4) == math.ceil(2500 / 4)  # §4.2.4 ⌈L/M⌉
    with pytest.raises(ValueError):
        dm.chunk_bounds(5, 6)
    with pytest.raises(ValueError):
        dm.chunk_bounds(25, 2, grid=10)


def test_training_angle_vector_and_example() -> None:
    gen = torch.Generator().manual_seed(1)
    length, m = 43, 4
    deltas = dm.sample_chunk_angles(64, m, gen)
    assert deltas.shape == (64, m) and bool((deltas >= 0).all()) and bool((deltas <= HALF_PI).all())
    vec = dm.angle_vector(deltas, length)
    bounds = dm.chunk_bounds(length, m)
    assert vec.shape == (64, length)
    for i in range(m):
        seg = vec[:, bounds[i] : bounds[i + 1]]
        assert torch.equal(seg, deltas[:, i : i + 1].expand_as(seg))
    z0 = torch.randn(3, length, D)
    ex = dm.multi_chunk_training_example(z0, m, torch.Generator().manual_seed(2))
    assert ex.z_noisy.shape == z0.shape and ex.v_target.shape == z0.shape and ex.delta.shape == (3, length)
    for i in range(m):  # constant within each chunk
        seg = ex.delta[:, bounds[i] : bounds[i + 1]]
        assert torch.equal(seg, seg[:, :1].expand_as(seg))
    # the pair is consistent: z_0 and ε are recoverable (Eq. 2, 5, 9)
    torch.testing.assert_close(dm.predict_z0(ex.z_noisy, ex.v_target, ex.delta), z0, atol=1e-5, rtol=0)
    again = dm.multi_chunk_training_example(z0, m, torch.Generator().manual_seed(2))
    assert torch.equal(again.z_noisy, ex.z_noisy)  # seeded generator -> reproducible


def test_continuation_angle_vector() -> None:
    mask = dm.continuation_mask(2, 30, 10)
    vec = dm.masked_angle_vector(mask, 0.7)
    assert torch.equal(vec[:, :30], torch.zeros(2, 30))
    assert torch.allclose(vec[:, 30:], torch.full((2, 10), 0.7))
    assert dm.continuation_steps(20, 4) == 5 and dm.continuation_steps(10, 4) == 3


# ---------------------------------------------------------------- classifier-free guidance
class FakeDPD:
    """DPD contract; cond rows return z + 1, uncond rows z − 1 (so CFG is easy to check)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, torch.Tensor | None]] = []

    def __call__(self, z, delta, tokens, uncond):
        assert delta.shape == z.shape[:2] and (tokens is None or tokens.shape[0] == z.shape[0])
        self.calls.append((z.shape[0], None if uncond is None else uncond.clone()))
        flag = torch.zeros(z.shape[0], dtype=torch.bool) if uncond is None else uncond
        return z + torch.where(flag, -1.0, 1.0).view(-1, 1, 1)


def test_cfg_mix_formula() -> None:
    vc, vu = torch.randn(B, L, D), torch.randn(B, L, D)
    assert torch.equal(dm.cfg_mix(vc, vu, 1.0), vc)
    assert torch.equal(dm.cfg_mix(vc, vu, 0.0), vu)
    torch.testing.assert_close(dm.cfg_mix(vc, vu, 2.5), vu + 2.5 * (vc - vu))
    assert dm.CFG_SCALE == 2.5


def test_guided_velocity_one_batched_call_per_step() -> None:
    model, tokens = FakeDPD(), torch.randint(0, 8, (B, 5))
    v_fn = dm.GuidedVelocity(model, tokens, 2.5)
    z = torch.randn(B, L, D)
    v = v_fn(z, torch.full((B, L), 0.5))
    torch.testing.assert_close(v, 2.5 * (z + 1) - 1.5 * (z - 1))
    assert len(model.calls) == 1 and model.calls[0][0] == 2 * B
    assert model.calls[0][1].tolist() == [False] * B + [True] * B
    out, info = dm.sample(v_fn, torch.randn(B, L, D), dm.linear_schedule(6))
    assert info.nfe == 6 and v_fn.nfe == 7 and v_fn.network_calls == 7 and len(model.calls) == 7
    assert v_fn.network_rows == 7 * 2 * B
    for scale, rows, flag in [(1.0, B, None), (0.0, B, [True] * B)]:
        model = FakeDPD()
        v = dm.GuidedVelocity(model, tokens, scale)(z, torch.zeros(B, L))
        assert model.calls[0][0] == rows
        assert (model.calls[0][1] is None) if flag is None else model.calls[0][1].tolist() == flag
        torch.testing.assert_close(v, z + 1 if scale == 1 else z - 1)


# ---------------------------------------------------------------- samplers
@pytest.mark.parametrize("name", ["linear", "uniform"])
@pytest.mark.parametrize("steps", [1, 5, 20])
def test_sample_with_oracle_recovers_z0(name: str, steps: int) -> None:
    z0 = torch.randn(B, L, D)
    rec = Recorder(oracle(z0))
    out, info = dm.sample(rec, torch.randn(B, L, D), dm.get_schedule(name, steps))
    torch.testing.assert_close(out, z0, atol=1e-5, rtol=0)
    assert info.nfe == steps == len(rec.deltas)
    assert torch.equal(rec.deltas[0], torch.full((B, L), HALF_PI))
    expected = dm.step_angles(dm.get_schedule(name, steps))[:-1].float()
    torch.testing.assert_close(torch.stack([d[0, 0] for d in rec.deltas]), expected)


def test_continuation_keeps_frames_and_generates_new_chunk() -> None:
    z0 = torch.randn(B, L, D)
    keep, new = 30, 10
    z_known = z0[:, :keep].clone()
    rec = Recorder(oracle(z0))
    schedule = dm.linear_schedule(dm.continuation_steps(20, 4))
    out, info = dm.sample_continuation(rec, z_known, torch.randn(B, new, D), schedule)
    assert out.shape == (B, keep + new, D) and info.nfe == 5
    assert torch.equal(out[:, :keep], z_known)  # bit-identical
    torch.testing.assert_close(out[:, keep:], z0[:, keep:], atol=1e-5, rtol=0)
    for d in rec.deltas:  # δ_new = [0]^keep ⊕ [δ_t]^new
        assert torch.equal(d[:, :keep], torch.zeros(B, keep)) and bool((d[:, keep:] > 0).all())
    # garbage velocities on kept frames cannot leak into them
    nan_v = lambda z, d: torch.where(d.unsqueeze(-1) == 0, float("nan"), z)  # noqa: E731
    out, _ = dm.sample_continuation(nan_v, z_known, torch.randn(B, new, D), schedule)
    assert torch.equal(out[:, :keep], z_known)


def test_inpaint_keeps_frames_bit_identical() -> None:
    z0 = torch.randn(B, L, D)
    keep_mask = torch.ones(B, L, dtype=torch.bool)
    keep_mask[0, 10:20] = False
    keep_mask[1, 25:] = False
    z_known = z0 + 0.0
    z_known[~keep_mask] = 99.0  # frames to regenerate carry junk
    rec = Recorder(oracle(z0))
    out, info = dm.sample_inpaint(rec, z_known, keep_mask, torch.randn(B, L, D), dm.linear_schedule(8))
    assert info.nfe == 8
    assert torch.equal(out[keep_mask], z_known[keep_mask])
    torch.testing.assert_close(out[~keep_mask], z0[~keep_mask], atol=1e-5, rtol=0)
    for d in rec.deltas:
        assert bool((d[keep_mask] == 0).all()) and bool((d[~keep_mask] > 0).all())
    with pytest.raises(ValueError):
        dm.sample_inpaint(rec, z_known, keep_mask.float(), torch.randn(B, L, D), dm.linear_schedule(8))


def test_callback_gets_every_step_and_can_cancel() -> None:
    z0 = torch.randn(B, L, D)
    seen: list[dm.SamplerStep] = []
    out, _ = dm.sample(oracle(z0), torch.randn(B, L, D), dm.linear_schedule(6), callback=seen.append)
    assert [s.step for s in seen] == list(range(1, 7)) and all(s.total == 6 for s in seen)
    assert seen[0].delta == HALF_PI and torch.equal(seen[-1].z, out)
    torch.testing.assert_close(seen[2].z0_hat, z0, atol=1e-5, rtol=0)  # oracle preview is exact

    class Cancelled(Exception):
        pass

    def cancel_at_3(step: dm.SamplerStep) -> None:
        if step.step == 3:
            raise Cancelled

    rec = Recorder(oracle(z0))
    with pytest.raises(Cancelled):
        dm.sample(rec, torch.randn(B, L, D), dm.linear_schedule(6), callback=cancel_at_3)
    assert len(rec.deltas) == 3
    rec = Recorder(oracle(z0))
    with pytest.raises(Cancelled):
        dm.sample_continuation(rec, z0[:, :30], torch.randn(B, 10, D), dm.linear_schedule(6), cancel_at_3)
    assert len(rec.deltas) == 3


# ---------------------------------------------------------------- NFE accounting (Table 3)
def test_nfe_formulas_match_table3() -> None:
    assert dm.nfe_melody(10, 20) == 270
    assert dm.nfe_musiclm(10) == 6250
    assert dm.nfe_noise2music() == 2600
    # §5.2: 4.32% of MusicLM and 10.4% / 29.6% of Noise2Music at 10 s / 30 s
    assert dm.nfe_melody(10, 20) / dm.nfe_musiclm(10) == pytest.approx(0.0432, abs=5e-5)
    assert dm.nfe_melody(10, 20) / dm.nfe_noise2music() == pytest.approx(0.104, abs=5e-4)
    assert dm.nfe_melody(30, 20) / dm.nfe_noise2music() == pytest.approx(0.296, abs=5e-4)
    # windowed: 10 s window + 8 continuation chunks of 2.5 s at ⌈20/4⌉ = 5 steps
    assert dm.nfe_melody_windowed(10, 20) == 270
    assert dm.nfe_melody_windowed(30, 20) == 25 * 30 + 20 + 8 * 5
