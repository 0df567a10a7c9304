"""The in-house SRU against the PyPI package `sru` 2.6.0 (same weights -> same outputs and gradients)."""

import warnings

import pytest
import torch

from melody_core.models.sru import SRU, load_from_sru_package

with warnings.catch_warnings():  # the package (a dev dependency) compiles its CPU kernel at import
    warnings.simplefilter("ignore")
    import sru as sru_pkg

TOL = 1e-5


def _run(model: torch.nn.Module, x: torch.Tensor, c0: torch.Tensor, wh: torch.Tensor, wc: torch.Tensor):
    x = x.clone().requires_grad_(True)
    c0 = c0.clone().requires_grad_(True)
    model.zero_grad()
    with warnings.catch_warnings():  # the package warns when its CPU path runs with autograd
        warnings.simplefilter("ignore")
        h, c = model(x, c0)
    ((h * wh).sum() + (c * wc).sum()).backward()
    grads = {n.replace("rnn_lst.", "layers."): p.grad.clone() for n, p in model.named_parameters()}
    return h.detach(), c.detach(), x.grad, c0.grad, grads


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(input_size=12, hidden_size=8),  # input 12 != output 16: 4 matrices in layer 1
        dict(input_size=32, hidden_size=16),  # input == output: 3 matrices, identity highway
        dict(input_size=16, hidden_size=8, layer_norm=True, highway_bias=-1.0, rescale=True),
    ],
)
def test_matches_package_bidirectional_two_layers(kwargs: dict) -> None:
    ref = sru_pkg.SRU(num_layers=2, bidirectional=True, **kwargs)
    with torch.no_grad():  # move away from the init so every term matters
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    mine = SRU(num_layers=2, bidirectional=True, **kwargs)
    load_from_sru_package(mine, ref)
    steps, batch = 11, 3
    x = torch.randn(steps, batch, kwargs["input_size"])
    c0 = torch.randn(2, batch, mine.output_size)
    wh, wc = torch.randn(steps, batch, mine.output_size), torch.randn(2, batch, mine.output_size)
    h_ref, c_ref, gx_ref, gc0_ref, gw_ref = _run(ref, x, c0, wh, wc)
    h, c, gx, gc0, gw = _run(mine, x, c0, wh, wc)
    torch.testing.assert_close(h, h_ref, atol=TOL, rtol=TOL)
    torch.testing.assert_close(c, c_ref, atol=TOL, rtol=TOL)
    torch.testing.assert_close(gx, gx_ref, atol=TOL, rtol=TOL)
    torch.testing.assert_close(gc0, gc0_ref, atol=TOL, rtol=TOL)
    assert gw.keys() == gw_ref.keys()
    for name in gw:
        torch.testing.assert_close(gw[name], gw_ref[name], atol=TOL, rtol=TOL, msg=name)


def test_matches_package_unidirectional_without_state() -> None:
    ref = sru_pkg.SRU(10, 6, num_layers=3)
    mine = SRU(10, 6, num_layers=3)
    load_from_sru_package(mine, ref)
    x = torch.randn(7, 2, 10)
    with torch.no_grad():
        h_ref, c_ref = ref(x)
        h, c = mine(x)
    torch.testing.assert_close(h, h_ref, atol=TOL, rtol=TOL)
    torch.testing.assert_close(c, c_ref, atol=TOL, rtol=TOL)


@pytest.mark.parametrize("kwargs", [dict(), dict(has_skip_term=False), dict(dropout=0.3)])
def test_gradcheck_float64(kwargs: dict) -> None:
    """The hand-written backward against finite differences, incl. the dropout mask path."""
    model = SRU(3, 2, num_layers=2, bidirectional=True, **kwargs).double().train()
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(2, 2, 4, dtype=torch.float64, requires_grad=True)

    def fn(x: torch.Tensor, c0: torch.Tensor, *params: torch.Tensor):
        torch.manual_seed(1)  # the same dropout mask on every evaluation
        return model(x, c0)

    assert torch.autograd.gradcheck(fn, (x, c0, *model.parameters()), eps=1e-6, atol=1e-6)


def test_state_dict_names_match_package() -> None:
    ref = sru_pkg.SRU(8, 4, num_layers=2, bidirectional=True)
    mine = SRU(8, 4, num_layers=2, bidirectional=True)
    ref_names = {n.replace("rnn_lst.", "layers.") for n in ref.state_dict() if not n.endswith("scale_x")}
    assert set(mine.state_dict()) == ref_names
    with torch.device("meta"):
        meta = SRU(8, 4, num_layers=2, bidirectional=True)
    assert sum(p.numel() for p in meta.parameters()) == sum(p.numel() for p in ref.parameters())


def test_rejects_wrong_rank() -> None:
    with pytest.raises(ValueError):
        SRU(4, 2)(torch.randn(3, 4))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(input_size=12, hidden_size=8),  # 4 matrices (input != output)
        dict(input_size=16, hidden_size=8),  # 3 matrices, identity highway
        dict(input_size=16, hidden_size=8, has_skip_term=False),
        dict(input_size=16, hidden_size=8, rescale=True, highway_bias=-1.0),
        dict(input_size=16, hidden_size=8, layer_norm=True),
        dict(input_size=16, hidden_size=16, projection_size=8),
    ],
)
@pytest.mark.parametrize("bidirectional", [True, False])
def test_inference_path_matches_autograd_path(kwargs: dict, bidirectional: bool) -> None:
    """Without autograd the layers take `_sru_inference` (merged directions); same values, incl. the
    dropout mask drawn in training mode."""
    torch.manual_seed(0)
    model = SRU(num_layers=2, bidirectional=bidirectional, dropout=0.3, **kwargs)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(9, 5, kwargs["input_size"])
    c0 = torch.randn(2, 5, model.output_size)
    for train in (False, True):
        model.train(train)
        for state in (c0, None):
            torch.manual_seed(1)
            h_ref, c_ref = model(x, state)  # autograd path (grad mode is on)
            torch.manual_seed(1)
            with torch.no_grad():
                h, c = model(x, state)
            torch.testing.assert_close(h, h_ref.detach(), atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(c, c_ref.detach(), atol=1e-6, rtol=1e-6)
