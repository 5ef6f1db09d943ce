"""Self-referential Titans (Eq. 83–90), and with static projections the Titans LMM baseline.

Per head (width d_h), after a short causal convolution of the input x_t:

    q_t = normalize(W_q x_t)                                   static anchor (Eq. 83)
    k_t = normalize(M_k(x_t))   v_t = M_v(x_t)                 adaptive projections
    η_t = η_max σ(w_η·M_η(x_t) + b_η)   α_t = σ(w_α·M_α(x_t) + b_α)
    v̂_□ = M_□(v_t)                                             self-generated values (Eq. 84)
    M_□ ← DGD step on ½‖M_□(k_t) − v̂_□‖² with α_t, η_t         for □ ∈ {k, v, η, α, mem} (Eq. 88)
    o_t = M_mem(q_t)

Why the memories keep what they write: with self-generated values the only write signal of a
residual memory M(x) = x + f(x) is M(k) − M(v) = (k − v) + f(k) − f(v). If M_k and M_v started near
the identity they would map x to k ≈ v, every error would vanish and only the decay would act, so
the memories' layers start at fan-in scale (f(x) as large as x: k and v differ from the first
token). α_t's bias starts each head at its own horizon (`titans.decay_horizon`), and the decay acts
on M − M_0 (`titans.decay_to`), so an idle memory returns to its meta-learned state, not to zero.

Chunk-wise (Eq. 90): everything a chunk generates — k, v, η, α, v̂ and the per-token gradients — is
evaluated at the chunk-start memories; the weights then evolve token by token with those fixed
gradients and o_t reads the causally evolved M_mem,t-1. `impl="reference"` runs this as a literal
token loop (C = 1 is Eq. 88 exactly); `impl="chunked"` computes each chunk in parallel with
`hope.memory.chunked` and must agree with the reference.

With `self_modifying=False`, k, v, η, α come from static linear projections of x and only M_mem
learns in context; with `update_rule="momentum"` that is Titans' long-term memory (LMM).
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from hope.checks import check_shape
from hope.config import ModelConfig
from hope.layers.conv import ShortConv
from hope.memory import core
from hope.memory.scan import update_segment
from hope.ops import warn_once
from hope.ops.compiling import compiled as compile_piece
from hope.ops.titans.fused import KernelTooLarge, fused_segment, step_unsupported_reason, unsupported_reason

# The main memory comes first so that its slice is [:, 0] whether or not the projections adapt.
ADAPTIVE = ("mem", "k", "v", "eta", "alpha")


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def decay_bias(horizon: tuple[float, float], n_heads: int) -> torch.Tensor:
    """logit(α) per head for α = 1 − 1/τ, the horizons τ spaced log-uniformly over `horizon`."""
    lo, hi = (math.log(h) for h in horizon)
    log_tau = torch.linspace(lo, hi, n_heads, dtype=torch.float64) if n_heads > 1 else torch.tensor([hi])
    return torch.log(torch.exp(log_tau) - 1.0).float()  # logit(1 − 1/τ) = log(τ − 1)


class SelfReferentialTitans(nn.Module):
    """Weights of all memories of a layer share one shape, so they are stacked on a component axis:
    each memory layer's weights are one tensor (B, P, H, out, in), P = len(components), and every
    equation runs once for all memories (one kernel where the naive code would launch five)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        titans = config.titans
        self.config, self.titans = config, titans
        self.n_heads, self.head_dim = config.n_heads, config.head_dim
        d, h, dh = config.d_model, config.n_heads, config.head_dim
        depth = titans.memory_depth if titans.memory == "mlp" else 1
        self.spec = core.MemorySpec(
            titans.memory,
            dh,
            dh,
            hidden=max(1, round(titans.hidden_mult * dh)),
            depth=depth,
            activation=titans.activation,
        )
        self.components = ADAPTIVE if titans.self_modifying else ("mem",)
        self.q_proj = nn.Linear(d, d, bias=False)
        self.conv = ShortConv(d, titans.conv_size) if titans.conv_size > 0 else None
        self.o_proj = nn.Linear(d, d, bias=False)
        # Meta-learned initial memories M_□,0: the only parameters of the in-context learners.
        # Every layer at fan-in scale, the output layer too: a near-identity start makes k ≈ v (module doc).
        n_comp = len(self.components)
        start = core.init_weights(self.spec, (n_comp, h), 1.0 / math.sqrt(self.spec.shapes[-1][1]))
        learned = titans.init == "learned"  # "zero": M_0 = 0 for every sequence, as in linear attention
        self.init_weights = nn.ParameterList(
            nn.Parameter(w if learned else torch.zeros_like(w), requires_grad=learned) for w in start
        )
        eta_bias = torch.full((h,), _logit(titans.eta_init / titans.eta_max))
        alpha_bias = decay_bias(titans.decay_horizon, h)
        if titans.self_modifying:
            # Small random read-outs: zero ones would leave M_η and M_α without gradient at init.
            self.eta_readout = nn.Parameter(torch.randn(h, dh) * config.init_std)
            self.eta_bias = nn.Parameter(eta_bias)
            self.alpha_readout = nn.Parameter(torch.randn(h, dh) * config.init_std)
            self.alpha_bias = nn.Parameter(alpha_bias)
        else:
            self.k_proj = nn.Linear(d, d, bias=False)
            self.v_proj = nn.Linear(d, d, bias=False)
            if titans.learn_eta:
                self.eta_proj = self._readout(d, eta_bias)
            if titans.decay:
                self.alpha_proj = self._readout(d, alpha_bias)
        if titans.update_rule == "momentum":
            self.beta_proj = self._readout(d, torch.full((h,), _logit(titans.momentum_init)))
        # Surprise pass rate of the last forward (detached), for logging.
        self.register_buffer("gate_pass_rate", torch.ones(()), persistent=False)
        # Set to a list to collect every token's surprise ‖∇ℓ‖ (B, H, n) per segment (hope.analysis).
        self.surprise_trace: list[torch.Tensor] | None = None

    @staticmethod
    def _readout(d: int, bias: torch.Tensor) -> nn.Linear:
        layer = nn.Linear(d, bias.shape[0])
        nn.init.zeros_(layer.weight)
        with torch.no_grad():
            layer.bias.copy_(bias)
        return layer

    # ---- state ---------------------------------------------------------------------------------
    def component(self, weights: core.Weights, name: str) -> core.Weights:
        """One memory's layer weights (B, H, out, in) out of the stacked (B, P, H, out, in)."""
        i = self.components.index(name)
        return [w[:, i] for w in weights]

    def init_state(self, batch_size: int) -> dict:
        ref = self.q_proj.weight
        weights = [w.expand(batch_size, *w.shape) for w in self.init_weights]
        momentum = [torch.zeros_like(w) for w in weights] if self.titans.update_rule == "momentum" else None
        window = self.titans.surprise.window
        return {
            "pos": 0,
            "weights": weights,
            "anchor": None,
            "momentum": momentum,
            "conv": None if self.conv is None else self.conv.init_state(batch_size, ref.device, ref.dtype),
            "surprise_hist": torch.zeros(
                batch_size, self.n_heads, window, device=ref.device, dtype=ref.dtype
            ),
            "surprise_count": 0,
        }

    # ---- pieces of the equations -----------------------------------------------------------------
    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.n_heads, self.head_dim).transpose(1, 2)

    def _static(self, xc: torch.Tensor) -> tuple:
        """What no memory generates, per token of xc (B, n, D): (q, x̂, k, v, η, log α, log β).

        Self-modifying: q and x̂ (k, v, η, α come from the memories, Eq. 88); else q, k, v, η, log α
        (static projections, Eq. 83); log β with the momentum rule; None where a slot does not apply.
        The Triton path computes them for a whole sequence, so its backward differentiates the
        projections once, not chunk by chunk."""
        titans = self.titans
        q = core.normalize(self._heads(self.q_proj(xc)))
        log_beta = (
            F.logsigmoid(self.beta_proj(xc).transpose(1, 2)) if titans.update_rule == "momentum" else None
        )
        if titans.self_modifying:
            # memories live on the unit sphere, like their keys
            return q, core.normalize(self._heads(xc)), None, None, None, None, log_beta
        k = core.normalize(self._heads(self.k_proj(xc)))
        v = self._heads(self.v_proj(xc))
        ones = torch.ones_like(k[..., 0])
        eta = titans.eta_max * (
            torch.sigmoid(self.eta_proj(xc).transpose(1, 2)) if titans.learn_eta else ones
        )
        log_alpha = F.logsigmoid(self.alpha_proj(xc).transpose(1, 2)) if titans.decay else 0.0 * ones
        return q, None, k, v, eta, log_alpha, log_beta

    def _project(self, anchor: core.Weights, xc: torch.Tensor | None, static: tuple | None = None):
        """q, k, v, η, log α, log β for tokens xc (B, n, D), generated by the chunk-start memories;
        `static` (`_static(xc)`, or a chunk of it) replaces xc."""
        q, xh, k, v, eta, log_alpha, log_beta = self._static(xc) if static is None else static
        if self.titans.self_modifying:
            # M_k, M_v, M_η, M_α read x_t in one batched call (components 1..4).
            gen = core.read(self.spec, [w[:, 1:] for w in anchor], xh[:, None])
            k, v = core.normalize(gen[:, 0]), gen[:, 1]
            eta_logit = (gen[:, 2] * self.eta_readout[:, None]).sum(-1) + self.eta_bias[:, None]
            alpha_logit = (gen[:, 3] * self.alpha_readout[:, None]).sum(-1) + self.alpha_bias[:, None]
            eta = self.titans.eta_max * torch.sigmoid(eta_logit)
            log_alpha = F.logsigmoid(alpha_logit)
        return q, k, v, eta, log_alpha, log_beta

    def _gradients(self, anchor: core.Weights, k: torch.Tensor, v: torch.Tensor):
        """For every component, the layer inputs u_i and errors g_i of ∇ℓ(M_□; k_t, v̂_□,t) at the anchor."""
        k, v = k[:, None], v[:, None]  # broadcast over the component axis
        target = core.read(self.spec, anchor, v) if self.titans.self_generated_values else v
        out, cache = core.forward(self.spec, anchor, k)
        return core.backward(
            self.spec, anchor, cache, core.objective_error(self.titans.objective, out, target)
        )

    def _gate(self, surprise: torch.Tensor, hist: torch.Tensor, count: int):
        """Surprise gate (B, H, n) in {0, 1}; relative mode z-scores against the previous `window` tokens."""
        sc = self.titans.surprise
        surprise = surprise.detach()
        if self.surprise_trace is not None:
            self.surprise_trace.append(surprise)
        if sc.mode == "none":
            return None, hist, count
        n, window = surprise.shape[-1], sc.window
        full = torch.cat([hist, surprise.to(hist.dtype)], dim=-1)
        # count is an int, or a 0-d tensor when decoding on static buffers (no host sync)
        new_count = torch.clamp(count + n, max=window) if torch.is_tensor(count) else min(count + n, window)
        new_hist = full[..., -window:]
        if sc.mode == "absolute":
            return (surprise > sc.threshold).to(surprise.dtype), new_hist, new_count
        past = full.unfold(-1, window, 1)[..., :n, :]  # token j sees the `window` values before it
        valid = torch.clamp(count + torch.arange(n, device=full.device), max=window)
        slot = torch.arange(window, device=full.device)
        mask = (slot[None, :] >= window - valid[:, None]).to(full.dtype)  # (n, window)
        n_valid = mask.sum(-1).clamp(min=1)
        mean = (past * mask).sum(-1) / n_valid
        std = torch.sqrt((((past - mean[..., None]) * mask) ** 2).sum(-1) / n_valid)
        z = (surprise - mean) / (std + 1e-6)
        gate = (z > sc.threshold) | (valid < 2)
        return gate.to(surprise.dtype), new_hist, new_count

    # ---- forward -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, state: dict | None = None, impl: str | None = None):
        """x (B, T, D) → (y (B, T, D), new state), on the path `model.impl` names (`impl` overrides it)."""
        impl = impl or self.config.impl
        if state is None:
            state = self.init_state(x.shape[0])
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.to(self.q_proj.weight.dtype)
            xc, conv_tail = (x, None) if self.conv is None else self.conv(x, state["conv"])
            run = partial(
                self._loop, xc, state, parallel=impl != "reference", compiled=impl == "auto" and x.is_cuda
            )
            try:
                o, new = run(fused=self._use_triton(impl, x))
            except KernelTooLarge:  # the loop is pure: run it again, on the path the refusal names
                o, new = run(fused=self._use_triton(impl, x))  # now refused with the reason
            new["conv"] = conv_tail
            y = self.o_proj(o.transpose(1, 2).reshape(x.shape))
        return y, new

    def _use_triton(
        self,
        impl: str,
        x: torch.Tensor,
        why_not=unsupported_reason,
        fallback: str = "the compiled chunked path",
    ) -> bool:
        """impl="triton" runs the kernel or fails naming why; "auto" takes it on CUDA where it can."""
        if impl not in ("triton", "auto") or (impl == "auto" and not x.is_cuda):
            return False
        reason = why_not(self, x)
        if reason is None:
            return True
        if impl == "triton":
            raise ValueError(f"impl='triton' cannot run this layer: {reason}")
        warn_once(f"impl='auto' uses {fallback} instead of Triton: {reason}")
        return False

    def _segment(self, xc, weights, momentum, anchor, hist, count, parallel: bool, gate=None, static=None):
        """Tokens xc that share one chunk-start anchor; parallel (chunked) or one token (reference).

        A given `gate` (B, H, n) replaces the surprise gate (the Triton path's backward recomputes a
        chunk with the gate its forward took); a given `static` (`_static` of the tokens) replaces xc."""
        q, k, v, eta, log_alpha, log_beta = self._project(anchor, xc, static)
        inputs, errors = self._gradients(anchor, k, v)
        if gate is None:
            gate, hist, count = self._gate(
                core.grad_norm([u[:, 0] for u in inputs], [g[:, 0] for g in errors]), hist, count
            )
        errors = core.clip_errors(errors, self.titans.error_clip)
        if gate is not None:
            eta, log_alpha = eta * gate, log_alpha * gate
        # α, η, β are shared by all memories of the layer: broadcast them over the component axis.
        eta, log_alpha = eta[:, None], log_alpha[:, None]
        log_beta = None if log_beta is None else log_beta[:, None]
        # all memories are read at q in one batched update; only M_mem's read (component 0) is the output
        queries = q[:, None].expand(-1, len(self.components), -1, -1, -1)
        o, weights, momentum = update_segment(
            self.spec,
            self.titans.update_rule,
            weights,
            momentum,
            anchor,
            inputs,
            errors,
            log_alpha,
            eta,
            log_beta,
            queries,
            self.titans.retrieval,
            parallel,
            base=list(self.init_weights) if self.titans.decay_to == "init" else None,
        )
        o = o[:, 0]
        rate = o.new_ones(()) if gate is None else gate.mean()
        return o, weights, momentum, hist, count, rate

    # ---- one-token decoding on static buffers (hope.models.decode) -------------------------------
    def static_state(self, state: dict | None, batch_size: int, max_len: int, dtype: torch.dtype) -> dict:
        """`state` (None: the initial one) copied into fixed buffers that `decode_step` updates in place;
        the position and the surprise count become 0-d tensors, the anchor a buffer of its own."""
        fresh = self.init_state(batch_size)
        state = fresh if state is None else state
        device = self.q_proj.weight.device

        def buffers(name, given, like):
            out = []
            for i, (g, w) in enumerate(zip(given, like)):
                check_shape(f"titans state[{name!r}][{i}]", g, w.shape)
                out.append(g.detach().clone().contiguous())
            return out

        anchor = state["anchor"] if state["anchor"] is not None else state["weights"]
        check_shape("titans state['surprise_hist']", state["surprise_hist"], fresh["surprise_hist"].shape)
        static = {
            "pos": torch.tensor(state["pos"], device=device),
            "weights": buffers("weights", state["weights"], fresh["weights"]),
            "anchor": buffers("anchor", anchor, fresh["weights"]),
            "momentum": None
            if fresh["momentum"] is None
            else buffers("momentum", state["momentum"], fresh["momentum"]),
            "conv": None,
            "surprise_hist": state["surprise_hist"].detach().clone(),
            "surprise_count": torch.tensor(state["surprise_count"], device=device),
        }
        if self.conv is not None:
            empty = self.conv.init_state(batch_size, device, self.q_proj.weight.dtype)
            tail = state["conv"] if state["conv"] is not None else empty
            static["conv"] = buffers("conv", [tail], [empty])[0]
        return static

    def decode_step(self, x: torch.Tensor, state: dict) -> torch.Tensor:
        """One token x (B, 1, D) on `static_state` buffers, updated in place: Eq. 88 exactly (the
        reference path), with the anchor switch at chunk boundaries and the gate decided on the device;
        with `impl` triton (auto on CUDA) one launch of `ops.titans.fused_recurrent` does the same."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.to(self.q_proj.weight.dtype)
            if self.conv is not None:
                x, tail = self.conv(x, state["conv"])
                state["conv"].copy_(tail)
            if self._use_triton(self.config.impl, x, step_unsupported_reason, "the PyTorch step"):
                from hope.ops.titans.fused_recurrent import decode_step_fused  # imports Triton

                o = decode_step_fused(self, x, state)
                state["pos"].add_(1)
                return self.o_proj(o.transpose(1, 2).reshape(x.shape))
            at_boundary = state["pos"] % self.titans.chunk_size == 0
            for anchor, w in zip(state["anchor"], state["weights"]):
                anchor.copy_(torch.where(at_boundary, w, anchor))
            o, weights, momentum, hist, count, _ = self._segment(
                x,
                state["weights"],
                state["momentum"],
                state["anchor"],
                state["surprise_hist"],
                state["surprise_count"],
                parallel=False,
            )
            for buffer, new in zip(state["weights"] + (state["momentum"] or []), weights + (momentum or [])):
                buffer.copy_(new)
            state["surprise_hist"].copy_(hist)
            state["surprise_count"].copy_(count)
            state["pos"].add_(1)
            return self.o_proj(o.transpose(1, 2).reshape(x.shape))

    def chunk_step(self, compiled: bool):
        """`_segment`, compiled once for every layer when asked (the Triton path recomputes with it)."""
        return partial(compile_piece(SelfReferentialTitans._segment), self) if compiled else self._segment

    def _loop(self, xc, state, parallel: bool, compiled: bool = False, fused: bool = False):
        chunk = self.titans.chunk_size
        segment = self.chunk_step(compiled)
        pos, weights, momentum = state["pos"], state["weights"], state["momentum"]
        anchor = state["anchor"] if state["anchor"] is not None else weights
        hist, count = state["surprise_hist"], state["surprise_count"]
        outs, rates, t, total = [], [], 0, xc.shape[1]
        while t < total:
            if (pos + t) % chunk == 0:
                anchor = weights
                if fused and total - t >= chunk:  # every whole chunk left, in one kernel launch
                    n = (total - t) // chunk * chunk
                    o, weights, momentum, hist, count, rate = fused_segment(
                        self, xc[:, t : t + n], weights, momentum, hist, count
                    )
                    outs.append(o)
                    rates.append(rate.to(self.gate_pass_rate) * n)
                    t += n
                    anchor = weights
                    continue
            step = (chunk - (pos + t) % chunk) if parallel else 1
            piece = xc[:, t : t + step]
            args = (piece, weights, momentum, anchor, hist, count, parallel)
            if self.titans.checkpoint_chunks and torch.is_grad_enabled():
                o, weights, momentum, hist, count, rate = checkpoint(segment, *args, use_reentrant=False)
            else:
                o, weights, momentum, hist, count, rate = segment(*args)
            outs.append(o)
            rates.append(rate.to(self.gate_pass_rate) * piece.shape[1])
            t += piece.shape[1]
        self.gate_pass_rate = (torch.stack(rates).sum() / max(total, 1)).detach()
        end = pos + total
        return torch.cat(outs, dim=2), {
            "pos": end,
            "weights": weights,
            "momentum": momentum,
            "anchor": None if end % chunk == 0 else anchor,
            "surprise_hist": hist,
            "surprise_count": count,
        }
