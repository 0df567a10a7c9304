"""ResidualVQ: codes, residual refinement, EMA codebook learning, dead-code re-seeding, determinism."""

import pytest
import torch
import torch.nn.functional as F

from melody_core.models.rvq import ResidualVQ

DIM, N_Q, K = 16, 6, 32


def _data(n: int = 512) -> torch.Tensor:
    return F.normalize(torch.randn(n, DIM), dim=-1)  # unit vectors, like MuLan embeddings


def _trained(steps: int = 40, seed: int = 0) -> tuple[ResidualVQ, torch.Tensor]:
    torch.manual_seed(seed)
    rvq, data = ResidualVQ(DIM, N_Q, K, decay=0.9), _data()
    rvq.train()
    for _ in range(steps):
        rvq(data[torch.randperm(len(data))[:256]])
    return rvq.eval(), data


def test_codes_shape_dtype_range_and_encode_agree() -> None:
    rvq = ResidualVQ(DIM, N_Q, K).eval()
    x = _data(10)
    out = rvq(x)
    assert out.quantized.shape == (10, DIM)
    assert out.codes.shape == (10, N_Q) and out.codes.dtype == torch.int64
    assert int(out.codes.min()) >= 0 and int(out.codes.max()) < K
    assert torch.isfinite(out.commit_loss) and out.commit_loss.dim() == 0
    assert torch.equal(rvq.encode(x), out.codes)
    torch.testing.assert_close(out.quantized, rvq.decode(out.codes))


def test_straight_through_gradient() -> None:
    rvq = ResidualVQ(DIM, N_Q, K).eval()
    x = _data(4).requires_grad_(True)
    rvq(x).quantized.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))


def test_error_decreases_with_more_codebooks() -> None:
    rvq, data = _trained()
    codes = rvq.encode(data)
    errs = [F.mse_loss(rvq.decode(codes[:, :k]), data).item() for k in range(1, N_Q + 1)]
    assert all(b < a for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < 0.5 * errs[0], errs
    assert errs[0] < data.pow(2).mean().item()  # one codebook already beats predicting zero


def test_ema_update_moves_codeword_to_assigned_data() -> None:
    decay, eps, tiny_count = 0.9, 1e-9, 1e-4
    rvq = ResidualVQ(4, n_q=1, codebook_size=2, decay=decay, eps=eps, dead_ratio=0.0).train()
    rvq.codebooks[0] = torch.tensor([[0.0] * 4, [10.0] * 4])
    rvq.cluster_size[0] = tiny_count  # "already trained" (no seeding), with negligible history
    rvq.embed_sum[0] = rvq.codebooks[0] * tiny_count
    far = rvq.codebooks[0, 1].clone()
    a, b = 1.0 + 0.01 * torch.randn(8, 4), 2.0 + 0.01 * torch.randn(8, 4)  # all nearest to code 0
    rvq(a)
    torch.testing.assert_close(rvq.codebooks[0, 0], a.mean(0), atol=1e-3, rtol=0)
    # the unused code stays where it was (no re-seeding with dead_ratio = 0)
    torch.testing.assert_close(rvq.codebooks[0, 1], far, atol=1e-3, rtol=0)
    rvq(b)  # EMA sums (1-d)(d sum_a + sum_b) over counts (1-d)(d + 1) 8
    expected = (decay * a.sum(0) + b.sum(0)) / ((decay + 1) * 8)
    torch.testing.assert_close(rvq.codebooks[0, 0], expected, atol=1e-3, rtol=0)


def test_dead_codes_are_reseeded_from_the_batch() -> None:
    rvq = ResidualVQ(DIM, n_q=1, codebook_size=8, decay=0.5).train()
    data = _data(64)
    rvq(data)  # counts start at 0: every code is dead and is seeded with a batch vector
    dist = torch.cdist(rvq.codebooks[0], data).min(dim=1).values  # (K,)
    assert float(dist.max()) < 1e-3
    rvq.codebooks[0, 3] = 100.0  # a code nobody picks: its usage decays and it is re-seeded
    for _ in range(6):
        rvq(data)
    assert float(torch.cdist(rvq.codebooks[0, 3:4], data).min()) < 1.0


def test_deterministic_and_state_dict_reproduces() -> None:
    a, data = _trained(steps=10, seed=3)
    b, _ = _trained(steps=10, seed=3)
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == {"codebooks", "cluster_size", "embed_sum"}
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    fresh = ResidualVQ(DIM, N_Q, K).eval()
    fresh.load_state_dict(sa)
    assert torch.equal(fresh.encode(data), a.encode(data))


def test_eval_mode_does_not_update() -> None:
    rvq = ResidualVQ(DIM, N_Q, K).eval()
    before = {k: v.clone() for k, v in rvq.state_dict().items()}
    rvq(_data(32))
    assert all(torch.equal(before[k], v) for k, v in rvq.state_dict().items())


def test_decode_rejects_bad_codes() -> None:
    rvq = ResidualVQ(DIM, N_Q, K)
    with pytest.raises(ValueError):
        rvq.decode(torch.zeros(2, N_Q + 1, dtype=torch.long))
    with pytest.raises(ValueError):
        rvq.decode(torch.full((2, N_Q), K, dtype=torch.long))
    with pytest.raises(ValueError):
        rvq.encode(torch.zeros(2, DIM + 1))


def test_meta_construction() -> None:
    with torch.device("meta"):
        rvq = ResidualVQ(128, 12, 1024)
    assert rvq.codebooks.shape == (12, 1024, 128) and rvq.codebooks.is_meta
