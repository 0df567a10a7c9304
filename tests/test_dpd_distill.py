"""Progressive-distillation target (Salimans & Ho 2022 in the angle parameterisation, Eq. 12)."""

import math

import torch

from melody_core.diffusion import ddim_step, noise
from melody_core.train.dpd_distill import distill_settings, progressive_target


def test_two_exact_teacher_steps_give_the_exact_velocity() -> None:
    """For data that is one point z0, the oracle v(z, delta) = (cos delta z - z0) / sin delta makes DDIM
    exact, so one student step with the target lands where two teacher steps land, and the target is the
    oracle's v at the start angle; kept frames stay clean."""
    torch.manual_seed(0)
    z0 = torch.randn(3, 20, 4)

    def oracle(z: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        d = delta.unsqueeze(-1).double()
        v = (torch.cos(d) * z - z0) / torch.sin(d).clamp(min=1e-12)
        return torch.where(d > 0, v, torch.zeros_like(v))

    d_hi = torch.tensor([1.5, 0.9, 0.3], dtype=torch.float64)
    d_lo = torch.tensor([1.0, 0.0, 0.1], dtype=torch.float64)
    keep = torch.zeros(3, 20, dtype=torch.bool)
    keep[1, :10] = True  # a continuation-style row
    z = torch.where(keep.unsqueeze(-1), z0, noise(z0.double(), torch.randn(3, 20, 4).double(), d_hi)).double()
    target = progressive_target(oracle, z, keep, d_hi, d_lo)
    gen = ~keep.unsqueeze(-1)
    expect = oracle(z, d_hi.view(-1, 1).expand(-1, 20))
    assert torch.allclose(target[gen.expand_as(target)], expect[gen.expand_as(expect)], atol=1e-9)
    landed = ddim_step(z, target, d_hi - d_lo)
    assert torch.allclose(landed[1, 10:], z0[1, 10:].double(), atol=1e-9)  # row 1 ends at angle 0: clean data


def test_a_wrong_teacher_moves_the_target() -> None:
    z = torch.randn(1, 10, 4)
    keep = torch.zeros(1, 10, dtype=torch.bool)
    d_hi, d_lo = torch.tensor([1.2]), torch.tensor([0.4])
    a = progressive_target(lambda zt, d: zt, z, keep, d_hi, d_lo)
    b = progressive_target(lambda zt, d: 2 * zt, z, keep, d_hi, d_lo)
    assert (a - b).abs().max() > 1e-3 and torch.isfinite(a).all()


def test_settings_are_checked() -> None:
    assert distill_settings({"phase": "progressive", "teacher_steps": 16, "rounds": 2})["teacher_steps"] == 16
    for bad in ({"phase": "x"}, {"rho": [3, 1]}, {"phase": "progressive", "teacher_steps": 6, "rounds": 2}):
        try:
            distill_settings(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad}")
    assert math.isclose(distill_settings({})["rho"][1], 5.0)
