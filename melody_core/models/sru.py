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
- both directions run in one time loop: the backward direction's inputs are flipped in time once,
  so step t handles time t forwards and time T-1-t backwards in the same tensor ops;
- only the forget-gate recurrence is sequential (3 tensor ops per step); the highway gate and h
  are computed for all steps at once afterwards, since they only need c_{t-1}, which is known;
- a custom autograd function stores only c and runs the backward recurrence as one fused op per
  step (the gradient of c is a linear recurrence once c is known), not a per-step autograd graph.
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


class _ForgetRecurrence(torch.autograd.Function):
    """c_t = u0_t + sigmoid(u1_t + w * c_{t-1}) * (c_{t-1} - u0_t), t = 1..T along dim 0.

    u0, u1: (T, N, nd, d) (forget bias already in u1); w: (nd, d); c0: (N, nd, d)
    -> c: (T + 1, N, nd, d) with c[0] = c0, so c[:-1] is c_{t-1} and c[1:] is c_t (views, no copies).
    """

    @staticmethod
    def forward(
        ctx: Any, u0: torch.Tensor, u1: torch.Tensor, w: torch.Tensor, c0: torch.Tensor
    ) -> torch.Tensor:
        c = u0.new_empty((u0.shape[0] + 1, *u0.shape[1:]))  # (T + 1, N, nd, d)
        c[0] = c0
        for t in range(u0.shape[0]):
            f = torch.addcmul(u1[t], c[t], w).sigmoid_()
            torch.lerp(u0[t], c[t], f, out=c[t + 1])  # u0 + f * (c_prev - u0)
        ctx.save_for_backward(u0, u1, w, c)
        return c

    @staticmethod
    def backward(ctx: Any, grad_c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        u0, u1, w, c = ctx.saved_tensors
        c_prev = c[:-1]  # (T, N, nd, d): c_{t-1}
        f = torch.addcmul(u1, c_prev, w).sigmoid_()
        a = (c_prev - u0) * f * (1.0 - f)  # d c_t / d u1_t
        m = torch.addcmul(f, a, w)  # d c_t / d c_{t-1}
        g = grad_c[1:].clone()  # total gradient of c_t, accumulated backwards in time
        for t in range(g.shape[0] - 2, -1, -1):
            g[t].addcmul_(g[t + 1], m[t + 1])
        grad_u1 = g * a
        grad_u0 = g * (1.0 - f)
        grad_w = (grad_u1 * c_prev).sum(dim=(0, 1))
        grad_c0 = torch.addcmul(grad_c[0], g[0], m[0])
        return grad_u0, grad_u1, grad_w, grad_c0


def _flip_backward_direction(x: torch.Tensor, time_dim: int) -> torch.Tensor:
    """(..., nd=2, d): flip direction 1 along `time_dim` (time order <-> step order); contiguous copy."""
    return torch.stack([x.select(-2, 0), x.select(-2, 1).flip(time_dim)], dim=-2)


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
        # reorder the weight columns (nd, d, k) -> (k, nd, d) so that each matrix j is one block, and
        # fold the gate biases into the same matmul (zeros for u0 and u3)
        w = self.weight.view(-1, nd, d, k).permute(0, 3, 1, 2).reshape(-1, k * nd * d)
        zeros = self.bias.new_zeros(nd * d)
        bias = torch.cat([zeros, self.bias] + [zeros] * (k - 3))  # (k * nd * d,)
        u = torch.addmm(bias, flat, w).view(steps, n, k, nd, d).permute(2, 0, 1, 3, 4)  # (k, T, N, nd, d)
        u = _flip_backward_direction(u, 1) if nd == 2 else u.contiguous()  # step order, contiguous
        w_f, w_r = self.weight_c.view(2, nd, d)
        c_init = x.new_zeros(n, nd, d) if c0 is None else c0.reshape(n, nd, d)  # (N, nd, d)
        c_all = _ForgetRecurrence.apply(u[0], u[1], w_f, c_init)  # (T + 1, N, nd, d), step order
        c, c_prev = c_all[1:], c_all[:-1]  # c_t, c_{t-1}
        gate = torch.addcmul(u[2], c_prev, w_r).sigmoid_()  # highway gate r_t, all steps at once
        if self.training and self.dropout > 0:  # the package's dropout mask on the gated (non-skip) part
            keep = 1.0 - self.dropout
            mask = torch.empty(n, nd, d, device=x.device, dtype=x.dtype).bernoulli_(keep) / keep
            gate = gate * mask
        if not self.has_skip_term:
            h = c * gate
        else:
            if k == 4:
                skip = u[3]
            else:
                skip = residual.reshape(steps, n, nd, d)  # (T, N, nd, d)
                skip = _flip_backward_direction(skip, 0) if nd == 2 else skip
                if self.rescale:
                    skip = skip * self.scale_x
            h = torch.lerp(skip, c, gate)  # x' + r (c - x')
        c_last = c[-1].reshape(n, nd * d)  # last step of each direction
        if nd == 2:
            h = _flip_backward_direction(h, 0)  # back to time order
        h = h.reshape(steps, n, nd * d)  # (T, N, output_size)
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
