"""Continuum Memory System (Eq. 70–73): residual MLP levels that learn at their own frequency.

A level is `residual`, M(x) = x + W_2 σ(W_1 x), or `swiglu`, M(x) = x + W_d(silu(W_g x) ⊙ W_u x): the
Transformer++ MLP as a level, so that `hope convert` (§7.3) can start the slowest level as a trained
MLP (`cms.level`).

Level ℓ has slow weights θ_ℓ (parameters, the meta-learned initial state) and per-sequence fast
weights that start at θ_ℓ and, at every C_ℓ-token boundary, take one step on the error accumulated over
the last C_ℓ tokens (Eq. 71). Tokens read the weights of the last completed boundary: causal.
`impl="reference"` walks the sequence as Eq. 71 reads, a segment of the shortest period at a time
with every level; every other impl walks it level by level (`_walk_levels`), the same numbers.

Error signals: `local` — ½‖M_ℓ(k̂) − v̂‖², k̂ = W_k z/‖W_k z‖, v̂ = W_v z/‖W_v z‖ on the level's input z,
computed here; `lm` — the model's own next-token loss, whose gradient the language model computes
segment by segment and hands to `absorb`; `none` — frozen in context (an ordinary MLP).
Variants: `sequential` (MLP^(f_K)(… MLP^(f_1)(x)), Eq. 70), `independent` (levels side by side,
contributions summed), `nested` (Eq. 72–73: when level ℓ+1 steps it restarts from level ℓ's current
fast weights, so the slower level is initialised by the faster one).

`forward` returns the residual branch y − x, so a block adds it to its stream like any MLP; with
K = 1, `level="swiglu"` and `error="none"` this is exactly a Transformer++ MLP.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._pytree import tree_map

from hope.checks import check_shape
from hope.config import ModelConfig
from hope.memory import core
from hope.ops import triton_reason, warn_once
from hope.ops.compiling import compiled


class ContinuumMemory(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        cms = config.cms
        self.cms, self.impl = cms, config.impl
        d = config.d_model
        hidden = max(1, round(cms.expansion * d))
        self.spec = core.MemorySpec("mlp", d, d, hidden=hidden, depth=2, activation=cms.activation)
        self.chunk_sizes = cms.chunk_sizes
        self.segment = min(cms.chunk_sizes)
        if cms.level == "swiglu":
            self.w_gate = nn.ParameterList(
                nn.Parameter(torch.randn(hidden, d) / math.sqrt(d)) for _ in cms.chunk_sizes
            )
        self.w_up = nn.ParameterList(
            nn.Parameter(torch.randn(hidden, d) / math.sqrt(d)) for _ in cms.chunk_sizes
        )
        self.w_down = nn.ParameterList(
            nn.Parameter(torch.randn(d, hidden) * config.init_std / math.sqrt(2 * config.n_layers))
            for _ in cms.chunk_sizes
        )
        if cms.error == "local":
            self.key_readout = nn.ParameterList(
                nn.Parameter(torch.randn(d, d) / math.sqrt(d)) for _ in cms.chunk_sizes
            )
            self.value_readout = nn.ParameterList(
                nn.Parameter(torch.randn(d, d) / math.sqrt(d)) for _ in cms.chunk_sizes
            )

    @property
    def learns_in_context(self) -> bool:
        return self.cms.error != "none"

    def slow_weights(self, i: int) -> list[nn.Parameter]:
        """Level i's meta-learned initial weights, in the order the level applies them."""
        up_down = [self.w_up[i], self.w_down[i]]
        return [self.w_gate[i], *up_down] if self.cms.level == "swiglu" else up_down

    def init_state(self, batch_size: int) -> dict:
        if not self.learns_in_context:
            return {"pos": 0}
        fast = [
            [w.expand(batch_size, -1, -1) for w in self.slow_weights(i)] for i in range(len(self.chunk_sizes))
        ]
        return {"pos": 0, "fast": fast, "pending": [None] * len(self.chunk_sizes)}

    # ---- forward -------------------------------------------------------------------------------
    def read_level(self, w, z: torch.Tensor) -> torch.Tensor:
        """M_ℓ(z) at weights w (Eq. 70's MLP^(f_ℓ)): `slow_weights(ℓ)` or a state's fast weights."""
        return self._forward_level(w, z)[0]

    def _forward_level(self, w, z: torch.Tensor):
        """M_ℓ(z), and the intermediate values its error gradients reuse."""
        if self.cms.level == "residual":
            return core.forward(self.spec, w, z)
        w_gate, w_up, w_down = w
        pre_gate, up = z @ w_gate.transpose(-1, -2), z @ w_up.transpose(-1, -2)
        gate = F.silu(pre_gate)
        hidden = gate * up
        return z + hidden @ w_down.transpose(-1, -2), (pre_gate, up, gate, hidden)

    def _levels(self, x: torch.Tensor, weights, read=None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Apply the levels with the given weights (through `read`, default `read_level`); returns
        y − x and each level's input."""
        read = read or self.read_level
        inputs, z = [], x
        for w in weights:
            inputs.append(z if self.cms.variant != "independent" else x)
            out = read(w, inputs[-1])
            z = out if self.cms.variant != "independent" else z + (out - x)
        return z - x, inputs

    def forward(self, x: torch.Tensor, state: dict | None = None):
        """x (B, T, D) → (y − x, new state). With error `lm`, T must stay inside one segment."""
        if state is None:
            state = self.init_state(x.shape[0])
        if not self.learns_in_context:
            weights = [self.slow_weights(i) for i in range(len(self.chunk_sizes))]
            return self._levels(x, weights)[0], {"pos": state["pos"] + x.shape[1]}
        if self.cms.error == "lm":
            pos = state["pos"]
            if (pos % self.segment) + x.shape[1] > self.segment:
                raise ValueError("cms.error='lm' needs the model to feed one segment at a time")
            return self._levels(x, state["fast"])[0], dict(state)
        if self.impl == "reference":
            return self._walk_segments(x, state)
        return self._walk_levels(x, state)

    def _walk_segments(self, x: torch.Tensor, state: dict):
        """Eq. 71 as it reads (impl="reference"): one segment (the shortest period) at a time, every level
        read and its error summed, then the levels at a boundary step."""
        outs, t = [], 0
        while t < x.shape[1]:
            n = min(self.segment - state["pos"] % self.segment, x.shape[1] - t)
            delta, grads = self._segment(x[:, t : t + n], state["fast"])
            outs.append(delta)
            state = self.absorb(state, grads, n)
            t += n
        return torch.cat(outs, dim=1), state

    def _walk_levels(self, x: torch.Tensor, state: dict):
        """The same numbers level by level: level ℓ walks the whole sequence in its own C_ℓ-token chunks,
        reading and differentiating a chunk at once (its weights are constant there), before level ℓ+1
        reads its output. A slow level costs T / C_ℓ steps instead of T / min C."""
        chunk = self._level_chunk
        if self.impl == "auto" and x.is_cuda:
            # compiled (impl="auto" on CUDA): a piece's few hundred small kernels fuse into a handful
            chunk = partial(compiled(ContinuumMemory._level_chunk), self)
        pos, n_tokens = state["pos"], x.shape[1]
        fast, pending = list(state["fast"]), list(state["pending"])
        z, total, faster = x, None, None
        for i, c in enumerate(self.chunk_sizes):
            z_i = x if self.cms.variant == "independent" else z
            # where the pieces end: the level's chunk boundaries inside the sequence, then its end
            ends = [*range((pos // c + 1) * c, pos + n_tokens, c), pos + n_tokens]
            lengths = [b - a for a, b in zip([pos, *ends], ends)]
            # keys and values hold no fast weight: the whole sequence at once. Split, not sliced, so
            # that the backward joins the pieces' gradients once instead of padding each to full length.
            pieces = zip(*(u.split(lengths, dim=1) for u in (z_i, *self._keys_values(i, z_i))))
            # a level whose step no token here reads must leave its read-outs without a gradient
            # (LanguageModel.unused_parameters), not with a zero one through the joint product
            together = any(end % c == 0 for end in ends[:-1])
            outs, kept = [], [(pos, fast[i])]  # kept: (position, weights from there on)
            for end, (z_p, keys, values) in zip(ends, pieces):
                start = None  # where the level steps from, if this piece ends at its boundary
                if end % c == 0:
                    # nested: restart from the faster level's weights at this very token (Eq. 72-73)
                    start = _at(faster, end) if (self.cms.variant == "nested" and i > 0) else fast[i]
                out, pending[i], stepped = chunk(fast[i], z_p, keys, values, together, pending[i], start, c)
                outs.append(out)
                if stepped is not None:
                    fast[i] = stepped
                    kept.append((end, fast[i]))
            z, faster = torch.cat(outs, dim=1), kept
            if self.cms.variant == "independent":
                total = z - x if total is None else total + (z - x)
        delta = total if self.cms.variant == "independent" else z - x
        return delta, {"pos": pos + n_tokens, "fast": fast, "pending": pending}

    def _level_chunk(self, w, z, keys, values, together: bool, pending, start, chunk: int):
        """`_level_piece`, then Eq. 71's bookkeeping in the same function, so that compiled it fuses: the
        level's error sum `pending` (None: none yet) grows by the piece's gradients; with a `start` (the
        piece ends at the level's `chunk` boundary) the level steps from it. Returns (M(z), the error
        sum or None after a step, the new weights or None)."""
        out, grads = self._level_piece(w, z, keys, values, together)
        pending = self._add_error(w, pending, grads)
        if start is None:
            return out, pending, None
        return out, None, self._take_step(chunk, start, pending)

    def _level_piece(
        self, w, z: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, together: bool = True
    ):
        """A level on tokens z that read the same weights w: M(z) and Σ_t ∇θ ½‖M(k̂_t) − v̂_t‖². `together`:
        the tokens and the keys go through the level in one product a layer."""
        if not together:
            return self.read_level(w, z), self._error_gradients(w, keys, values)
        n = z.shape[1]
        out, cache = self._forward_level(w, torch.cat([z, keys], dim=1))
        at_keys = tree_map(lambda t: t[:, n:], cache)
        return out[:, :n], self._gradients(w, keys, out[:, n:], at_keys, values)

    def _segment(self, piece: torch.Tensor, fast):
        """Tokens that read the same fast weights: the levels' output y − x and their error gradients."""
        delta, inputs = self._levels(piece, fast)
        return delta, self._local_gradients(fast, inputs)

    def _local_gradients(self, weights, inputs):
        """Σ_t ∇θ ½‖M_ℓ(k̂_t) − v̂_t‖² per level, at the level's current fast weights."""
        return [self._level_gradients(i, w, z) for i, (w, z) in enumerate(zip(weights, inputs))]

    def _level_gradients(self, i: int, w, z: torch.Tensor, mask: torch.Tensor | None = None):
        """Level i's Σ_t ∇θ ½‖M_i(k̂_t) − v̂_t‖² over inputs z (B, n, D); `mask` (n,) weights the tokens."""
        return self._error_gradients(w, *self._keys_values(i, z), mask)

    def _keys_values(self, i: int, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Level i's k̂ = W_k z/‖W_k z‖ and v̂ = W_v z/‖W_v z‖: unit norms keep the inner step's scale
        independent of the width."""
        return core.normalize(z @ self.key_readout[i].T), core.normalize(z @ self.value_readout[i].T)

    def _error_gradients(self, w, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None = None):
        """Σ_t ∇θ ½‖M(k̂_t) − v̂_t‖² at weights w; `mask` (n,) weights the tokens."""
        return self._gradients(w, keys, *self._forward_level(w, keys), values, mask)

    def _gradients(self, w, keys, out, cache, values, mask=None) -> list[torch.Tensor]:
        """Σ_t ∇θ ½‖M(k̂_t) − v̂_t‖² in closed form, from out = M(k̂) and its cache (Eq. 71's error)."""
        err = core.objective_error("l2", out, values)
        if mask is not None:
            err = err * mask[:, None]
        if self.cms.level == "residual":
            us, gs = core.backward(self.spec, w, cache, err)
            return [g.transpose(-1, -2) @ u for u, g in zip(us, gs)]
        pre_gate, up, gate, hidden = cache
        d_hidden = err @ w[2]
        d_pre_gate = d_hidden * up * core.activation_grad("silu", pre_gate)
        return [
            d_pre_gate.transpose(-1, -2) @ keys,
            (d_hidden * gate).transpose(-1, -2) @ keys,
            err.transpose(-1, -2) @ hidden,
        ]

    def absorb(self, state: dict, grads, n_tokens: int) -> dict:
        """Add this segment's per-level error gradients; step every level whose C_ℓ boundary is reached (Eq. 71).

        The step is lr times the *mean* error over the chunk (Eq. 71's sum scaled by 1/C_ℓ), so one lr
        suits every level. `lm` gradients arrive detached unless `second_order`; `local` ones are a
        cheap closed form and stay in the graph, which is what trains the key/value read-outs.
        """
        pos = state["pos"] + n_tokens
        fast, pending = list(state["fast"]), list(state["pending"])
        for i, c in enumerate(self.chunk_sizes):
            pending[i] = self._add_error(fast[i], pending[i], grads[i])
            if pos % c == 0:
                start = fast[i - 1] if (self.cms.variant == "nested" and i > 0) else fast[i]
                fast[i], pending[i] = self._take_step(c, start, pending[i]), None
        return {"pos": pos, "fast": fast, "pending": pending}

    @staticmethod
    def _add_error(fast, pending, grads):
        """A level's error sum plus new gradients, kept in the fast weights' dtype (float32 under
        autocast, whose products are bf16)."""
        if pending is None:
            return [g.to(w.dtype) for w, g in zip(fast, grads)]
        return [p + g for p, g in zip(pending, grads)]

    def _take_step(self, chunk: int, start, pending):
        """Eq. 71's step from weights `start` on the error summed over a `chunk`-token chunk."""
        return [w - (self.cms.lr / chunk) * g for w, g in zip(start, pending)]

    # ---- one-token decoding on static buffers (hope.models.decode) -------------------------------
    def level_steps(self, pos: int) -> tuple[bool, ...]:
        """Which levels take their step (Eq. 71) with the token at stream position `pos` (0-based)."""
        return tuple((pos + 1) % c == 0 for c in self.chunk_sizes) if self.learns_in_context else ()

    def static_state(
        self,
        state: dict | None,
        batch_size: int,
        max_len: int,
        dtype: torch.dtype,
        read_dtype: torch.dtype | None = None,
    ) -> dict:
        """`state` (None: the initial one) in fixed buffers that `decode_step` updates in place: the fast
        weights, every level's error sum from the prompt (zeros where none is pending), and room for
        the inputs of one C_ℓ chunk per level with a mark of the slots decoding has filled.

        `read_dtype` (autocast's, when the step runs under it): the levels are read from copies of the
        fast weights in it, refreshed when a level steps, instead of casting every weight every token.
        The numbers are the same; the float32 weights still take the steps."""
        device = self.w_up[0].device
        pos = 0 if state is None else state["pos"]
        if not self.learns_in_context:
            return {"pos": torch.tensor(pos, device=device)}
        if self.cms.error == "lm":
            raise ValueError(
                "cms.error='lm' learns from the model's loss over whole segments, which a one-token step"
                " does not have; decode such a model with model(ids, state)"
            )
        fresh = self.init_state(batch_size)
        state = fresh if state is None else state
        fast, pending = [], []
        for i, (level, like) in enumerate(zip(state["fast"], fresh["fast"])):
            for j, (w, ref) in enumerate(zip(level, like)):
                check_shape(f"cms state['fast'][{i}][{j}]", w, ref.shape)
            fast.append([w.detach().clone().contiguous() for w in level])
            sums = state["pending"][i]
            pending.append(
                [torch.zeros_like(w) for w in fast[-1]]
                if sums is None
                else [g.detach().clone() for g in sums]
            )
        like = fast[0][0]
        d = self.spec.d_in
        copies = read_dtype is not None and read_dtype != like.dtype
        return {
            "pos": torch.tensor(pos, device=device),
            "fast": fast,
            "read": [[w.to(read_dtype) for w in level] for level in fast] if copies else fast,
            "pending": pending,
            "inputs": [like.new_zeros(batch_size, c, d) for c in self.chunk_sizes],
            "filled": [like.new_zeros(c) for c in self.chunk_sizes],
        }

    def decode_step(self, x: torch.Tensor, state: dict, steps: tuple[bool, ...]) -> torch.Tensor:
        """One token x (B, 1, D): read the levels and keep each level's input; the levels that `steps`
        names (`level_steps` of this token) take Eq. 71's step on their chunk's error in one product.

        Summing the chunk's per-token gradients at its end is exact: a level's weights do not change
        inside its chunk. The host decides `steps`, so a step between boundaries does no gradient work
        and `Decoder` keeps one CUDA graph per pattern."""
        if not self.learns_in_context:
            state["pos"].add_(1)
            slow = [self.slow_weights(i) for i in range(len(self.chunk_sizes))]
            return self._levels(x, slow, self._token_reader(x, slow[0]))[0]
        fast, read = state["fast"], state["read"]
        delta, inputs = self._levels(x, read, self._token_reader(x, read[0]))
        for i, (c, stepping) in enumerate(zip(self.chunk_sizes, steps, strict=True)):
            slot = (state["pos"] % c).view(1)
            chunk, filled = state["inputs"][i], state["filled"][i]
            chunk.index_copy_(1, slot, inputs[i].to(chunk.dtype))
            filled.index_fill_(0, slot, 1.0)
            if not stepping:
                continue
            grads = self._level_gradients(i, fast[i], chunk, mask=filled)
            # as in `absorb`: a nested level restarts from the faster level's weights of this very token
            start = fast[i - 1] if (self.cms.variant == "nested" and i > 0) else fast[i]
            for w, r, w_start, sums, g in zip(fast[i], read[i], start, state["pending"][i], grads):
                w.copy_(w_start - (self.cms.lr / c) * (sums + g))
                if r is not w:
                    r.copy_(w)
                sums.zero_()
            filled.zero_()
        state["pos"].add_(1)
        return delta

    def _token_reader(self, x: torch.Tensor, w):
        """How `decode_step` reads a level: with impl "triton" (and "auto" on CUDA where
        `cms_step.ENABLED`) a residual level in two launches of `ops.cms_step`, else `read_level`. `w` is the first level's weights, which
        every level's match in shape and dtype."""
        if self.cms.level != "residual" or self.impl not in ("triton", "auto"):
            return None
        if self.impl == "auto" and not x.is_cuda:
            return None
        reason = triton_reason(x)
        if reason is None:
            from hope.ops import cms_step  # imports Triton

            if self.impl == "auto" and not cms_step.ENABLED:
                return None
            reason = cms_step.why_not(x, *w, self.spec.activation)
        if reason is None:
            return lambda w, z: cms_step.read_level(z, *w, self.spec.activation)
        if self.impl == "triton":
            raise ValueError(f"impl='triton' cannot read this CMS level in one token's step: {reason}")
        warn_once(f"impl='auto' reads the CMS levels with PyTorch's matmuls instead of Triton: {reason}")
        return None


def _at(kept, position: int):
    """The weights in effect after `position` among `kept` [(position, weights), ...], oldest first."""
    return [w for at, w in kept if at <= position][-1]
