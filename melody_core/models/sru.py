"""Simple Recurrent Unit (SRU, Lei et al. 2018) in pure PyTorch: the DPD fine path (§4.2.3).

Same maths, weight layout and parameter names as the PyPI package `sru` 2.6.0 (`sru.SRU`), so a
state dict can be copied across (`load_from_sru_package`) and the outputs and gradients agree to
float32 rounding (tests/test_sru.py). Per layer and direction, with U = x W (one matmul for all
time steps) split into (u0, u1, u2[, u3]):

    f_t = sigmoid(u1_t + b_f + w_f * c_{t-1})        forget gate
    r_t = sigmoid(u2_t + b_r + w_r * c_{t-1})        highway (reset) gate
    c_t = u0_t + f_t * (c_{t-1} - u0_t)              internal state
    h_t = x'_t + r_t * (c_t - x'_t)                  x' = x (or x * scale_x) if k = 3, else u3

Why not the package: it compiles a C++ extension at import (30-40 s, needs a compiler, breaks a
frozen app) and on CPU with autograd it runs a per-element Python loop. Speed here *(our choice)*:
- one matmul gives U for every step, both directions and all gates (biases folded in); both
  directions advance in the same time loop, reading U and writing one state buffer in place
  (strided views, no flipped copies);
- only the forget-gate recurrence is sequential (3 tensor ops per step); the highway gate and h
  are computed for all steps at once afterwards, since they only need c_{t-1}, which is known;
- a custom autograd function stores only c and runs the backward recurrence as one fused op per
  step (the gradient of c is a linear recurrence once c is known), not a per-step autograd graph;
- without autograd (`torch.no_grad` / `inference_mode`) the layers skip the autograd function and
  advance both directions with the same 3 ops per step (strided views pairing time t of direction 0
  with time T-1-t of direction 1), updating the gates in place: same values, ~15% less loop time.
No TorchScript: `torch.jit.script` is deprecated in torch 2.13 and needs the .py sources, which a
frozen (PyInstaller) app does not ship.

Not supported from the package: `use_tanh`, `v1`, `custom_m`, `mask_pad`/PackedSequence,
`rnn_dropout`, `nn_rnn_compatible_return`, `proj_input_to_hidden_first` (all deprecated or unused).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


def _state_views(cs: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Views of the state buffer `cs` (see `_forget_recurrence`) -> (c_t, c_{t-1}), each (nd, T, N, d).

    Direction 0 keeps c_t at row t + 1 and its initial state at row 0; direction 1 runs backwards in
    time, keeping c_t at row t + 1 and its initial state at row T + 1. So c_t is rows 1..T for both,
    and c_{t-1} (the previous state in each direction's own order) is row t for direction 0 and row
    t + 2 for direction 1: a strided view whose direction stride skips two extra rows.
    """
    c_t = cs[:, 1 : steps + 1]
    if cs.shape[0] == 1:
        return c_t, cs[:, :steps]
    sdir, st, sn, _ = cs.stride()
    c_prev = cs.as_strided((2, steps, *cs.shape[2:]), (sdir + 2 * st, st, sn, 1), cs.storage_offset())
    return c_t, c_prev


def _forget_recurrence(u0: torch.Tensor, u1: torch.Tensor, w: torch.Tensor, c0: torch.Tensor) -> torch.Tensor:
    """c_t = u0_t + f_t * (c_{t-1} - u0_t), f_t = sigmoid(u1_t + w * c_{t-1}), per direction (no autograd).

    u0, u1: (nd, T, N, d), each direction contiguous (forget bias already in u1); w: (nd, d);
    c0: (nd, N, d) -> cs: (nd, T + nd, N, d), the state buffer read through `_state_views`.
    Direction 1 runs from t = T-1 down to 0. Both directions advance in the same Python loop on
    contiguous (N, d) slices, 3 tensor ops each per step; nothing is flipped or copied.
    """
    nd, steps = u0.shape[:2]
    cs = u0.new_empty((nd, steps + nd, *u0.shape[2:]))  # rows: [init0] c_0 .. c_{T-1} [init1]
    cs[0, 0] = c0[0]
    rows, a0, a1 = cs[0].unbind(0), u0[0].unbind(0), u1[0].unbind(0)
    if nd == 2:
        cs[1, steps + 1] = c0[1]
        rows_b, b0, b1 = cs[1].unbind(0), u0[1].unbind(0), u1[1].unbind(0)
    for t in range(steps):
        f = torch.addcmul(a1[t], rows[t], w[0]).sigmoid_()
        torch.lerp(a0[t], rows[t], f, out=rows[t + 1])  # u0 + f * (c_prev - u0)
        if nd == 2:
            r = steps - 1 - t  # the backward direction's time
            f = torch.addcmul(b1[r], rows_b[r + 2], w[1]).sigmoid_()
            torch.lerp(b0[r], rows_b[r + 2], f, out=rows_b[r + 1])
    return cs


def _reverse_recurrence(g: torch.Tensor, m: torch.Tensor) -> None:
    """In place: g_t += m_{t+1} g_{t+1} (direction 0, backwards in time) / m_{t-1} g_{t-1} (direction 1)."""
    nd, steps = g.shape[:2]
    g0, m0 = g[0].unbind(0), m[0].unbind(0)
    if nd == 2:
        g1, m1 = g[1].unbind(0), m[1].unbind(0)
    for t in range(steps - 2, -1, -1):
        g0[t].addcmul_(g0[t + 1], m0[t + 1])
        if nd == 2:
            r = steps - 1 - t
            g1[r].addcmul_(g1[r - 1], m1[r - 1])


def _matrices(weight: torch.Tensor, nd: int, d: int, k: int) -> torch.Tensor:
    """Package layout (d_in, nd * d * k) -> (d_in, nd, k, d) view: matrix j of direction i is [:, i, j]."""
    return weight.view(-1, nd, d, k).transpose(2, 3)


class _SRUFunction(torch.autograd.Function):
    """One SRU layer after its input projection, with a hand-written backward.

    x: (T*N, d_in) matmul input; skip_src: (T, N, nd*d) highway input when k = 3 (else None);
    weight (d_in, nd*d*k), weight_c and bias (2*nd*d) in the package layout; c0: (nd, N, d);
    mask: (nd, 1, N, d) dropout mask or None -> h: (T, N, nd*d), c_last: (N, nd*d).
    The backward recomputes the forget gates from the saved states and runs the gradient of c as a
    linear recurrence (one fused op per step and direction): no per-step autograd graph.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        skip_src: torch.Tensor | None,
        weight: torch.Tensor,
        weight_c: torch.Tensor,
        bias: torch.Tensor,
        c0: torch.Tensor,
        mask: torch.Tensor | None,
        shape: tuple[int, int, int, int, int],
        scale_x: float,
        has_skip: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        steps, n, nd, d, k = shape
        w3 = _matrices(weight, nd, d, k).permute(1, 2, 0, 3).reshape(nd * k, -1, d)  # (nd*k, d_in, d)
        u = torch.matmul(x, w3).view(nd, k, steps, n, d)  # U for all steps: one block per (dir, matrix)
        bias_f, bias_r = bias.view(2, nd, 1, 1, d)
        w_f, w_r = weight_c.view(2, nd, 1, 1, d)
        u[:, 1] += bias_f
        cs = _forget_recurrence(u[:, 0], u[:, 1], w_f.view(nd, d), c0)
        c, c_prev = _state_views(cs, steps)  # (nd, T, N, d) each
        # highway gate r_t for all steps at once (it only needs c_{t-1}); stored in place of u2
        r = u[:, 2].add_(bias_r).addcmul_(c_prev, w_r).sigmoid_()
        gate = r if mask is None else r * mask
        h = x.new_empty(steps, n, nd, d)
        h_view = h.permute(2, 0, 1, 3)  # (nd, T, N, d) view of the output
        if has_skip:
            torch.lerp(_skip(u, skip_src, shape, scale_x), c, gate, out=h_view)  # x' + r (c - x')
        else:
            torch.mul(c, gate, out=h_view)
        c_last = torch.stack([c[0, -1]] + ([c[1, 0]] if nd == 2 else []), dim=1)  # (N, nd, d)
        ctx.save_for_backward(x, skip_src, weight, weight_c, u, cs, mask)
        ctx.config = (shape, scale_x, has_skip)
        return h.view(steps, n, nd * d), c_last.view(n, nd * d)

    @staticmethod
    def backward(ctx: Any, grad_h: torch.Tensor, grad_last: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, skip_src, weight, weight_c, u, cs, mask = ctx.saved_tensors
        (steps, n, nd, d, k), scale_x, has_skip = ctx.config
        w_f, w_r = weight_c.view(2, nd, 1, 1, d)
        u0, u1, r = u[:, 0], u[:, 1], u[:, 2]
        c, c_prev = _state_views(cs, steps)
        gh = grad_h.reshape(steps, n, nd, d).permute(2, 0, 1, 3)  # (nd, T, N, d)
        gu = x.new_empty(steps, n, nd, k, d)  # dL/dU, laid out for one matmul with the weight
        gu_j = gu.permute(2, 3, 0, 1, 4)  # (nd, k, T, N, d) view
        gate = r if mask is None else r * mask
        g_c = gh * gate  # dL/dc_t through h_t
        grad_skip_src = None
        if has_skip:
            skip = _skip(u, skip_src, shape=(steps, n, nd, d, k), scale_x=scale_x)
            g_gate = gh * (c - skip)
            grad_skip = gh * (1.0 - gate)
            if k == 4:
                gu_j[:, 3] = grad_skip
            else:
                grad_skip_src = grad_skip.permute(1, 2, 0, 3).reshape(steps, n, nd * d)
                grad_skip_src = grad_skip_src * scale_x if scale_x != 1.0 else grad_skip_src
        else:
            g_gate = gh * c
        g_r = g_gate if mask is None else g_gate * mask
        g_pre = g_r * r * (1.0 - r)  # dL/d(pre-activation of r) = dL/du2
        gu_j[:, 2] = g_pre
        grad_b_r, grad_w_r = g_pre.sum(dim=(1, 2)), (g_pre * c_prev).sum(dim=(1, 2))
        e = g_pre * w_r  # dL/dc_{t-1} through r_t: move it onto the state it read
        grad_c0 = [e[0, 0]]
        g_c[0, :-1] += e[0, 1:]
        g_c[0, -1] += grad_last.view(n, nd, d)[:, 0]
        if nd == 2:
            grad_c0.append(e[1, -1])
            g_c[1, 1:] += e[1, :-1]
            g_c[1, 0] += grad_last.view(n, nd, d)[:, 1]
        f = torch.addcmul(u1, c_prev, w_f).sigmoid_()  # forget gates, recomputed
        a = (c_prev - u0) * f * (1.0 - f)  # dc_t/du1_t
        m = torch.addcmul(f, a, w_f)  # dc_t/dc_{t-1}
        _reverse_recurrence(g_c, m)  # g_c: total dL/dc_t
        grad_c0[0] = torch.addcmul(grad_c0[0], g_c[0, 0], m[0, 0])
        if nd == 2:
            grad_c0[1] = torch.addcmul(grad_c0[1], g_c[1, -1], m[1, -1])
        torch.mul(g_c, 1.0 - f, out=gu_j[:, 0])
        g_u1 = g_c * a
        gu_j[:, 1] = g_u1
        grad_b_f, grad_w_f = g_u1.sum(dim=(1, 2)), (g_u1 * c_prev).sum(dim=(1, 2))
        gu_flat = gu.view(steps * n, nd * k * d)
        w_cols = _matrices(weight, nd, d, k).reshape(-1, nd * k * d)  # columns in (nd, k, d) order
        grad_x = gu_flat @ w_cols.t()
        grad_w = (x.t() @ gu_flat).view(-1, nd, k, d).transpose(2, 3).reshape(weight.shape)
        grad_weight_c = torch.stack([grad_w_f, grad_w_r]).view(-1)
        grad_bias = torch.stack([grad_b_f, grad_b_r]).view(-1)
        grad_c0_t = torch.stack(grad_c0)
        return grad_x, grad_skip_src, grad_w, grad_weight_c, grad_bias, grad_c0_t, None, None, None, None


def _sru_inference(
    x: torch.Tensor,
    skip_src: torch.Tensor | None,
    weight: torch.Tensor,
    weight_c: torch.Tensor,
    bias: torch.Tensor,
    c0: torch.Tensor,
    mask: torch.Tensor | None,
    shape: tuple[int, int, int, int, int],
    scale_x: float,
    has_skip: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`_SRUFunction.forward` without autograd: same arguments, results and maths, less overhead.

    The forget recurrence advances both directions with one set of ops per step
    (`_forget_recurrence_merged`); no autograd graph, nothing saved, gates updated in place.
    """
    steps, n, nd, d, k = shape
    w3 = _matrices(weight, nd, d, k).permute(1, 2, 0, 3).reshape(nd * k, -1, d)  # (nd*k, d_in, d)
    u = torch.matmul(x, w3).view(nd, k, steps, n, d)  # U for all steps: one block per (dir, matrix)
    bias_fr, w_fr = bias.view(2, nd, 1, 1, d).transpose(0, 1), weight_c.view(2, nd, 1, 1, d).transpose(0, 1)
    u[:, 1:3] += bias_fr  # forget and reset biases, (nd, 2, 1, 1, d)
    cs = _forget_recurrence_merged(u[:, 0], u[:, 1], w_fr[:, 0].reshape(nd, 1, d), c0)
    c, c_prev = _state_views(cs, steps)  # (nd, T, N, d) each
    r = u[:, 2].addcmul_(c_prev, w_fr[:, 1]).sigmoid_()  # highway gate for all steps at once, in place
    gate = r if mask is None else r.mul_(mask)
    h = x.new_empty(steps, n, nd, d)
    h_view = h.permute(2, 0, 1, 3)  # (nd, T, N, d) view of the output
    if has_skip:
        torch.lerp(_skip(u, skip_src, shape, scale_x), c, gate, out=h_view)  # x' + r (c - x')
    else:
        torch.mul(c, gate, out=h_view)
    c_last = torch.stack([c[0, -1]] + ([c[1, 0]] if nd == 2 else []), dim=1)  # (N, nd, d)
    return h.view(steps, n, nd * d), c_last.view(n, nd * d)


def _forget_recurrence_merged(
    u0: torch.Tensor, u1: torch.Tensor, w: torch.Tensor, c0: torch.Tensor
) -> torch.Tensor:
    """`_forget_recurrence` with both directions in the same ops: at step t, direction 0 is at time t
    and direction 1 at time T-1-t. Their (N, d) slices are one strided view (nd, N, d) because the
    direction stride of u0/u1 (>= T*N*d) outweighs any time offset, so it stays positive."""
    nd, steps = u0.shape[:2]
    cs = u0.new_empty((nd, steps + nd, *u0.shape[2:]))  # rows: [init0] c_0 .. c_{T-1} [init1]
    cs[0, 0] = c0[0]
    if nd == 1:
        rows, a0, a1 = cs[0].unbind(0), u0[0].unbind(0), u1[0].unbind(0)
        for t in range(steps):
            f = torch.addcmul(a1[t], rows[t], w[0]).sigmoid_()
            torch.lerp(a0[t], rows[t], f, out=rows[t + 1])
        return cs
    cs[1, steps + 1] = c0[1]
    size, (su_dir, su_t), (sc_dir, sc_t) = (2, *u0.shape[2:]), u0.stride()[:2], cs.stride()[:2]
    inner = u0.stride()[2:]
    assert u1.stride() == u0.stride() and cs.stride()[2:] == inner and su_dir > (steps - 1) * su_t
    c_prev = cs.as_strided(size, (sc_dir + (steps + 1) * sc_t, *inner), cs.storage_offset())  # initial states
    f = u0.new_empty(size)  # forget gates of one step, reused (no allocation per step)
    off_a0, off_a1, off_c = u0.storage_offset(), u1.storage_offset(), cs.storage_offset()
    for t in range(steps):
        back = steps - 1 - 2 * t  # time offset of direction 1 relative to direction 0
        strides = (su_dir + back * su_t, *inner)
        a0 = u0.as_strided(size, strides, off_a0 + t * su_t)
        a1 = u1.as_strided(size, strides, off_a1 + t * su_t)
        c_next = cs.as_strided(size, (sc_dir + back * sc_t, *inner), off_c + (t + 1) * sc_t)
        torch.addcmul(a1, c_prev, w, out=f).sigmoid_()
        torch.lerp(a0, c_prev, f, out=c_next)  # c_t = u0 + f (c_{t-1} - u0)
        c_prev = c_next  # direction 0 reads row t + 1, direction 1 row T - t: where step t wrote
    return cs


def _skip(
    u: torch.Tensor, skip_src: torch.Tensor | None, shape: tuple[int, ...], scale_x: float
) -> torch.Tensor:
    """Highway input x' as (nd, T, N, d): u3 when k = 4, else the layer input (times scale_x)."""
    steps, n, nd, d, k = shape
    if k == 4:
        return u[:, 3]
    assert skip_src is not None
    skip = skip_src.reshape(steps, n, nd, d).permute(2, 0, 1, 3)  # (nd, T, N, d) view
    return skip * scale_x if scale_x != 1.0 else skip


class SRULayer(nn.Module):
    """One (bi)directional SRU layer; parameters named and shaped as `sru.SRUCell` 2.6.0.

    weight: (input_size[or projection_size], n_dir * hidden * k) viewed as (., n_dir, hidden, k);
    weight_c, bias: (2 * n_dir * hidden) viewed as (2 [forget, reset], n_dir, hidden).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bidirectional: bool = True,
        dropout: float = 0.0,
        highway_bias: float = 0.0,
        has_skip_term: bool = True,
        rescale: bool = False,
        layer_norm: bool = False,
        normalize_after: bool = False,
        projection_size: int = 0,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.n_dir = 2 if bidirectional else 1
        self.output_size = hidden_size * self.n_dir
        self.dropout = dropout
        self.highway_bias = highway_bias
        self.has_skip_term = has_skip_term
        self.rescale = rescale
        self.normalize_after = normalize_after
        self.num_matrices = 4 if has_skip_term and input_size != self.output_size else 3
        use_proj = 0 < projection_size < min(input_size, self.output_size)
        self.projection_size = projection_size if use_proj else 0
        d_in = self.projection_size or input_size
        self.weight_proj = nn.Parameter(torch.empty(input_size, projection_size)) if use_proj else None
        self.weight = nn.Parameter(torch.empty(d_in, self.output_size * self.num_matrices))
        self.weight_c = nn.Parameter(torch.empty(2 * self.output_size))
        self.bias = nn.Parameter(torch.empty(2 * self.output_size))
        # highway rescaling constant (the package keeps it as a buffer; it is a function of the config)
        self.scale_x = math.sqrt(1 + math.exp(highway_bias) * 2) if rescale and has_skip_term else 1.0
        self.layer_norm = None
        if layer_norm:
            self.layer_norm = nn.LayerNorm(self.output_size if normalize_after else input_size)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The package's init: Var[w] = 1/d_in, gates and weight_c scaled by sqrt(0.5)."""
        self.bias.zero_()
        self.bias[self.output_size :].fill_(self.highway_bias)
        d = self.weight.shape[0]
        self.weight.uniform_(-math.sqrt(3.0 / d), math.sqrt(3.0 / d))
        if self.weight_proj is not None:
            r = math.sqrt(3.0 / self.weight_proj.shape[0])
            self.weight_proj.uniform_(-r, r)
        w = self.weight.view(d, self.n_dir, self.hidden_size, self.num_matrices)
        if self.dropout > 0:
            w[..., 0].mul_(math.sqrt(1 - self.dropout))
        if self.layer_norm is not None:
            w.mul_(0.1)
        if self.rescale and self.has_skip_term and self.num_matrices == 4:
            w[..., 3].mul_(self.scale_x)
        self.weight_c.uniform_(-math.sqrt(3.0), math.sqrt(3.0)).mul_(math.sqrt(0.5))
        w[..., 1].mul_(math.sqrt(0.5))
        w[..., 2].mul_(math.sqrt(0.5))

    def forward(self, x: torch.Tensor, c0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (T, N, input_size), c0: (N, output_size) or None -> h: (T, N, output_size), c: (N, output)."""
        steps, n, _ = x.shape
        nd, d, k = self.n_dir, self.hidden_size, self.num_matrices
        residual = x
        if self.layer_norm is not None and not self.normalize_after:
            x = self.layer_norm(x)
        flat = x.reshape(steps * n, self.input_size)  # (T*N, d_in)
        if self.weight_proj is not None:
            flat = flat @ self.weight_proj
        c_init = x.new_zeros(nd, n, d) if c0 is None else c0.reshape(n, nd, d).transpose(0, 1)  # (nd, N, d)
        mask = None
        if self.training and self.dropout > 0:  # the package's dropout mask on the gated (non-skip) part
            keep = 1.0 - self.dropout
            mask = torch.empty(n, nd, d, device=x.device, dtype=x.dtype).bernoulli_(keep) / keep
            mask = mask.transpose(0, 1).unsqueeze(1)  # (nd, 1, N, d)
        skip_src = residual if self.has_skip_term and k == 3 else None
        args = (
            flat, skip_src, self.weight, self.weight_c, self.bias, c_init, mask,
            (steps, n, nd, d, k), self.scale_x if self.rescale else 1.0, self.has_skip_term,
        )  # fmt: skip
        h, c_last = _SRUFunction.apply(*args) if torch.is_grad_enabled() else _sru_inference(*args)
        if self.layer_norm is not None and self.normalize_after:
            h = self.layer_norm(h)
        return h, c_last


class SRU(nn.Module):
    """Stacked SRU layers (as `sru.SRU` 2.6.0; state dict names `layers.{i}.*` vs `rnn_lst.{i}.*`).

    forward(x: (T, N, input_size), c0: (num_layers, N, output_size) | None)
      -> h: (T, N, output_size), c: (num_layers, N, output_size);  output_size = hidden * n_dir.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 2,
        bidirectional: bool = False,
        dropout: float = 0.0,
        projection_size: int = 0,
        layer_norm: bool = False,
        highway_bias: float = 0.0,
        has_skip_term: bool = True,
        rescale: bool = False,
        normalize_after: bool = False,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.output_size = hidden_size * (2 if bidirectional else 1)
        self.layers = nn.ModuleList(
            SRULayer(
                input_size if i == 0 else self.output_size,
                hidden_size,
                bidirectional=bidirectional,
                dropout=dropout if i + 1 != num_layers else 0.0,  # as the package: none after the last
                highway_bias=highway_bias,
                has_skip_term=has_skip_term,
                rescale=rescale,
                layer_norm=layer_norm,
                normalize_after=normalize_after,
                projection_size=projection_size,
            )
            for i in range(num_layers)
        )

    def forward(self, x: torch.Tensor, c0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 3:
            raise ValueError(f"SRU expects (length, batch, features), got shape {tuple(x.shape)}")
        if torch.is_autocast_enabled(x.device.type):
            # the recurrence is elementwise and precision-sensitive: run it in float32 (its custom
            # autograd function needs one dtype for activations and weights)
            with torch.autocast(x.device.type, enabled=False):
                return self._run(x.float(), None if c0 is None else c0.float())
        return self._run(x, c0)

    def _run(self, x: torch.Tensor, c0: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        states = []
        for i, layer in enumerate(self.layers):
            x, c = layer(x, None if c0 is None else c0[i])
            states.append(c)
        return x, torch.stack(states)  # (T, N, out), (num_layers, N, out)


def load_from_sru_package(dst: SRU, src: nn.Module) -> None:
    """Copy the weights of a `sru.SRU` (PyPI package 2.6.0) into `dst` (same sizes and options)."""
    state = {}
    for name, value in src.state_dict().items():
        if name.endswith("scale_x"):  # a config constant here, check it instead of copying
            layer = dst.layers[int(name.split(".")[1])]
            if not math.isclose(float(value), layer.scale_x, rel_tol=1e-6):
                raise ValueError(f"{name}: package scale {float(value)} != {layer.scale_x} (rescale?)")
            continue
        state[name.replace("rnn_lst.", "layers.", 1)] = value
    dst.load_state_dict(state)
