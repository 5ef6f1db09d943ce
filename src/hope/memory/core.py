"""The associative-memory core: memories, inner objectives and update rules.

A memory is a function R^d_in → R^d_out whose weights are *activations*: a list of tensors
`W_i` of shape (*batch, out_i, in_i)` (batch is usually (B, H)). Nothing here owns parameters;
the layers pass meta-learned initial weights in and carry the evolved weights in their state.

Everything in this file is the token-by-token reference: it reads like the equations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Weights = list[torch.Tensor]


@dataclass(frozen=True)
class MemorySpec:
    """Shape of a memory: `matrix` (M(x) = W x) or residual MLP (Eq. 89: M(x) = x + W_L σ(… σ(W_1 x)))."""

    kind: str
    d_in: int
    d_out: int
    hidden: int = 0
    depth: int = 2
    activation: str = "gelu"

    def __post_init__(self) -> None:
        if self.kind == "mlp" and self.d_in != self.d_out:
            raise ValueError(f"a residual MLP memory needs d_in == d_out, got {self.d_in} and {self.d_out}")

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """(out, in) of each linear layer, in the order they are applied."""
        if self.kind == "matrix":
            return [(self.d_out, self.d_in)]
        dims = [self.d_in] + [self.hidden] * (self.depth - 1) + [self.d_out]
        return [(dims[i + 1], dims[i]) for i in range(self.depth)]


def init_weights(spec: MemorySpec, leading: tuple[int, ...], std: float, generator=None) -> Weights:
    """Initial weights: fan-in scaled first layers, small output layer (so an MLP starts near identity)."""
    weights = []
    for i, (out, inp) in enumerate(spec.shapes):
        last = i == len(spec.shapes) - 1
        scale = std if (last and spec.kind == "mlp") else 1.0 / math.sqrt(inp)
        weights.append(torch.randn(*leading, out, inp, generator=generator) * scale)
    return weights


def activation(name: str, h: torch.Tensor) -> torch.Tensor:
    return F.gelu(h) if name == "gelu" else F.silu(h)


def activation_grad(name: str, h: torch.Tensor) -> torch.Tensor:
    """σ'(h), written out so that second-order meta-gradients flow through it."""
    if name == "gelu":
        cdf = 0.5 * (1.0 + torch.erf(h / math.sqrt(2.0)))
        pdf = torch.exp(-0.5 * h * h) / math.sqrt(2.0 * math.pi)
        return cdf + h * pdf
    s = torch.sigmoid(h)
    return s * (1.0 + h * (1.0 - s))


def forward(spec: MemorySpec, weights: Weights, x: torch.Tensor):
    """M(x) for x of shape (*batch, n, d_in); returns the output and the cache for `backward`."""
    inputs, pre = [], []
    z = x
    for i, w in enumerate(weights):
        inputs.append(z)
        h = z @ w.transpose(-1, -2)
        if i < len(weights) - 1:
            pre.append(h)
            z = activation(spec.activation, h)
        else:
            z = h
    if spec.kind == "mlp":
        z = z + x
    return z, (inputs, pre)


def read(spec: MemorySpec, weights: Weights, x: torch.Tensor) -> torch.Tensor:
    return forward(spec, weights, x)[0]


def objective_error(objective: str, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """∂ℓ/∂M(k): l2 ℓ = ½‖M(k) − v‖² (delta rule, Eq. 65/93); dot ℓ = −⟨M(k), v⟩ (Hebbian, Eq. 17/92)."""
    return out - target if objective == "l2" else -target


def backward(spec: MemorySpec, weights: Weights, cache, err: torch.Tensor) -> tuple[Weights, Weights]:
    """Per-token layer inputs u_i and output-side errors g_i, so that ∇W_i ℓ = g_i u_iᵀ."""
    inputs, pre = cache
    errors: Weights = [err] * len(weights)
    g = err
    for i in range(len(weights) - 1, -1, -1):
        errors[i] = g
        if i > 0:
            g = (g @ weights[i]) * activation_grad(spec.activation, pre[i - 1])
    return inputs, errors


def clip_errors(errors: Weights, max_norm: float) -> Weights:
    """Scale each per-token error g_i down to ‖g_i‖ ≤ max_norm (0: unchanged)."""
    if max_norm <= 0:
        return errors
    return [g * (max_norm / g.norm(dim=-1, keepdim=True).clamp_min(max_norm)) for g in errors]


def grad_norm(inputs: Weights, errors: Weights) -> torch.Tensor:
    """‖∇θ ℓ‖ over all layers, per token: sqrt(Σ_i ‖g_i‖² ‖u_i‖²) (the Titans surprise)."""
    total = sum((g * g).sum(-1) * (u * u).sum(-1) for u, g in zip(inputs, errors))
    return torch.sqrt(total)


def normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x/‖x‖ along the last axis (exact for unit vectors; eps only guards zeros)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


def step(
    rule: str,
    weights: Weights,
    momentum: Weights | None,
    inputs: Weights,
    errors: Weights,
    alpha: torch.Tensor,
    eta: torch.Tensor,
    beta: torch.Tensor | None = None,
    base: Weights | None = None,
):
    """One token's update of every layer W_i (inputs/errors of shape (*batch, d)), alpha/eta (*batch).

    gd:       W ← α W − η g uᵀ
    momentum: S ← β S − η g uᵀ;  W ← α W + S                    (Titans)
    dgd:      W ← W (α I − η û ûᵀ) − η g ûᵀ,  û = u/‖u‖         (Eq. 57 with normalised inputs)

    DGD's closed form (Eq. 57) holds for unit-norm inputs, so both of its terms see û: the transition
    is then a contraction and the write has the scale of the error, whatever the input's scale.
    With `base` (the meta-learned initial weights W_0) the rule acts on the fast part W − W_0, so decay
    and the delta rule's erasure pull a memory back to W_0 instead of to zero (`titans.decay_to`).
    """
    a, e = alpha[..., None, None], eta[..., None, None]
    new_w, new_s = [], []
    for i, (w, u, g) in enumerate(zip(weights, inputs, errors)):
        w0 = 0.0 if base is None else base[i]
        w = w - w0
        grad = g[..., :, None] * u[..., None, :]
        if rule == "gd":
            w = a * w - e * grad
        elif rule == "dgd":
            uh = normalize(u)
            w = a * w - e * (w @ uh[..., :, None] + g[..., :, None]) * uh[..., None, :]
        else:
            s = beta[..., None, None] * momentum[i] - e * grad
            new_s.append(s)
            w = a * w + s
        new_w.append(w + w0)
    return new_w, (new_s if rule == "momentum" else momentum)
