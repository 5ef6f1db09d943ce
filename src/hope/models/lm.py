"""The language model: embedding → blocks → RMSNorm → LM head, streamed with an explicit state.

`logits, state = model(ids, state)`: feeding a sequence in pieces gives the same logits and final
state as feeding it whole. The state holds every in-context weight (memories, CMS fast weights),
conv tails and KV caches; nothing mutates a parameter during a forward pass. A block state of None
stands for the block's initial state, which the block builds in its own forward (`model(ids)` starts
that way; `model.init_state(batch)` gives the same state in full).

With `cms.error="lm"` the CMS levels learn from the model's own next-token loss: the model runs
segment by segment (the smallest CMS chunk size S), through all layers, and after each complete
segment takes the gradient of that segment's loss (its S−1 in-segment next-token pairs, summed)
with respect to every level's fast weights (first-order by default: the step is a constant to the
outer gradient). A piece that ends inside a segment leaves that segment pending: the state keeps the
block states of the last boundary and the pending token ids, and the next call recomputes the
segment from there, so a boundary inside a later piece is handled exactly as in one long call.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from hope.config import ModelConfig
from hope.layers.cms import ContinuumMemory
from hope.models.blocks import Block


def _detach(tree):
    if isinstance(tree, torch.Tensor):
        return tree.detach()
    if isinstance(tree, dict):
        return {k: _detach(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_detach(v) for v in tree)
    return tree


class LanguageModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        nn.init.normal_(self.embed.weight, std=config.init_std)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.head.weight = self.embed.weight
        self.learns_from_lm_loss = config.uses_cms and config.cms.error == "lm"

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def init_state(self, batch_size: int) -> dict:
        """The initial state of `batch_size` sequences, in full. Under FSDP2 pass no state instead: a
        block's parameters are gathered only inside its forward."""
        return {"pos": 0, "blocks": [b.init_state(batch_size) for b in self.blocks], "pending": None}

    def idle_cms_levels(self, seq_len: int) -> list[int]:
        """CMS levels (indices) that learn in context but take no step a `seq_len`-token sequence reads.

        Level ℓ steps after every C_ℓ-th token and only later tokens read the result, so with
        C_ℓ >= seq_len it is a fixed MLP for the whole sequence.
        """
        if not self.config.uses_cms or self.config.cms.error == "none":
            return []
        return [i for i, c in enumerate(self.config.cms.chunk_sizes) if c >= seq_len]

    def unused_parameters(self, seq_len: int) -> list[str]:
        """Parameters a loss on `seq_len`-token sequences gives no gradient: with the `local` CMS error,
        the key/value read-outs of idle levels, whose only effect is on steps that no token reads."""
        if self.config.cms.error != "local":
            return []
        return [
            f"blocks.{b}.ffn.{readout}.{i}"
            for b in range(len(self.blocks))
            for readout in ("key_readout", "value_readout")
            for i in self.idle_cms_levels(seq_len)
        ]

    def surprise_pass_rate(self) -> float | None:
        """Mean fraction of tokens whose memory update passed the surprise gate in the last forward."""
        rates = [b.mixer.gate_pass_rate for b in self.blocks if hasattr(b.mixer, "gate_pass_rate")]
        return float(torch.stack(rates).mean()) if rates else None

    def _run(self, ids: torch.Tensor, blocks: list) -> tuple[torch.Tensor, list]:
        h = self.embed(ids)
        new = []
        for block, st in zip(self.blocks, blocks):
            h, st = block(h, st)
            new.append(st)
        return self.head(self.norm(h)), new

    def _check_ids(self, ids: torch.Tensor) -> None:
        """Ids must lie in [0, vocab_size). On the host the check is exact; on an accelerator it is an
        asynchronous device assert, so a training step never waits for the GPU (nor breaks a graph)."""
        vocab = self.config.vocab_size
        if ids.device.type != "cpu":
            torch._assert_async(
                ((ids >= 0) & (ids < vocab)).all(), f"input_ids must lie in [0, vocab_size={vocab})"
            )
        elif ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
            raise ValueError(
                f"input_ids must lie in [0, vocab_size={vocab}), got values in [{int(ids.min())}, {int(ids.max())}]"
            )

    def forward(self, input_ids: torch.Tensor, state: dict | None = None) -> tuple[torch.Tensor, dict]:
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.long, torch.int, torch.int32):
            raise ValueError(
                f"input_ids must be a (batch, time) integer tensor, got shape "
                f"{tuple(input_ids.shape)} and dtype {input_ids.dtype}"
            )
        self._check_ids(input_ids)
        if state is None:
            state = {"pos": 0, "blocks": [None] * len(self.blocks), "pending": None}
        if not self.learns_from_lm_loss:
            logits, blocks = self._run(input_ids, state["blocks"])
            return logits, {"pos": state["pos"] + input_ids.shape[1], "blocks": blocks, "pending": None}
        return self._forward_segments(input_ids, state)

    # ---- one-token decoding on static buffers (hope.models.decode) -------------------------------
    def static_state(
        self,
        state: dict | None,
        batch_size: int,
        max_len: int,
        dtype: torch.dtype | None = None,
        read_dtype: torch.dtype | None = None,
    ) -> dict:
        """`state` (None: the start of a stream) as fixed buffers for `decode_step`: attention caches of
        `max_len` positions in `dtype` (default: the parameters'), every memory a buffer of its own;
        `read_dtype` (autocast's): the CMS levels are read from copies of their fast weights in it."""
        dtype = dtype or self.embed.weight.dtype
        if state is None:
            state = {"pos": 0, "blocks": [None] * len(self.blocks), "pending": None}
        if len(state["blocks"]) != len(self.blocks):
            raise ValueError(
                f"the state has {len(state['blocks'])} blocks, this model {len(self.blocks)}: it comes from another model"
            )
        if state["pending"] is not None:
            raise ValueError(
                "the state ends inside a cms.error='lm' segment, which decode_step cannot continue"
            )
        blocks = [
            b.static_state(s, batch_size, max_len, dtype, read_dtype)
            for b, s in zip(self.blocks, state["blocks"])
        ]
        return {"pos": torch.tensor(state["pos"], device=self.embed.weight.device), "blocks": blocks}

    def level_steps(self, pos: int) -> tuple[bool, ...]:
        """Which CMS levels step with the token at stream position `pos` (every block's levels share
        their periods); () for a model whose feed-forward does not learn in context."""
        return self.blocks[0].ffn.level_steps(pos)

    def decode_step(self, ids: torch.Tensor, state: dict, steps: tuple[bool, ...]) -> torch.Tensor:
        """Logits (B, 1, V) of one token per sequence, ids (B, 1), on `static_state` buffers updated in
        place: the same numbers as `forward` on that token, with static shapes and no host sync.
        `steps` is `level_steps(pos)` of the token: the host knows the position, the device need not."""
        h = self.embed(ids)
        for block, block_state in zip(self.blocks, state["blocks"]):
            h = block.decode_step(h, block_state, steps)
        state["pos"].add_(1)
        return self.head(self.norm(h))

    # ---- CMS learning from the LM loss -------------------------------------------------------------
    def _forward_segments(self, ids: torch.Tensor, state: dict):
        seg_len = min(self.config.cms.chunk_sizes)
        pending = state["pending"] if state["pending"] is not None else ids[:, :0]
        skip = pending.shape[1]
        all_ids = torch.cat([pending, ids], dim=1)
        pos = state["pos"] - skip  # the last segment boundary
        blocks, outs, t = state["blocks"], [], 0
        pending = None
        while t < all_ids.shape[1]:
            n = min(seg_len - (pos + t) % seg_len, all_ids.shape[1] - t)
            seg = all_ids[:, t : t + n]
            complete = (pos + t + n) % seg_len == 0
            logits, seg_blocks = self._segment(seg, blocks, complete)
            outs.append(logits)
            if complete:
                blocks = seg_blocks
            else:
                pending = seg
            t += n
        logits = torch.cat(outs, dim=1)[:, skip:]
        return logits, {"pos": state["pos"] + ids.shape[1], "blocks": blocks, "pending": pending}

    def _segment(self, seg: torch.Tensor, blocks: list, complete: bool):
        outer_grad = torch.is_grad_enabled()
        second_order = self.config.cms.second_order and outer_grad
        with torch.enable_grad():
            if not outer_grad:  # fast weights still need a graph for their own gradient
                blocks = [
                    b
                    if b is None  # an initial state, built under enable_grad inside the block
                    else {
                        **b,
                        "ffn": {
                            **b["ffn"],
                            "fast": [[w.detach().requires_grad_() for w in lvl] for lvl in b["ffn"]["fast"]],
                        },
                    }
                    for b in blocks
                ]
            logits, new_blocks = self._run(seg, blocks)
            if complete:
                # Inside a segment the CMS passes its fast weights through untouched, so the new block
                # states hold the very tensors the segment read (also where the block built them).
                handles = [w for b in new_blocks for lvl in b["ffn"]["fast"] for w in lvl]
                if seg.shape[1] > 1:
                    loss = F.cross_entropy(
                        logits[:, :-1].flatten(0, 1).float(), seg[:, 1:].flatten(), reduction="sum"
                    )
                    grads = torch.autograd.grad(
                        loss, handles, retain_graph=outer_grad, create_graph=second_order, allow_unused=True
                    )
                    grads = [
                        torch.zeros_like(h) if g is None else (g if second_order else g.detach())
                        for g, h in zip(grads, handles)
                    ]
                else:
                    grads = [torch.zeros_like(h) for h in handles]
                it = iter(grads)
                for block, st in zip(self.blocks, new_blocks):
                    cms: ContinuumMemory = block.ffn
                    level_grads = [[next(it) for _ in lvl] for lvl in st["ffn"]["fast"]]
                    st["ffn"] = cms.absorb(st["ffn"], level_grads, seg.shape[1])
        if not outer_grad:
            logits, new_blocks = logits.detach(), _detach(new_blocks)
        return logits, new_blocks


def build_model(config: ModelConfig) -> LanguageModel:
    """The model a config describes (every preset is a `LanguageModel`)."""
    return LanguageModel(config)


def count_parameters(config: ModelConfig) -> int:
    """Parameter count without allocating memory (built on the meta device)."""
    with torch.device("meta"):
        return build_model(config).num_parameters()


def match_width(config: ModelConfig, goal: int) -> ModelConfig:
    """`config` at the width (a multiple of 2·n_heads, up to 8× its own) whose parameter count is
    closest to `goal`. Counts grow with the width, so a bisection finds it."""
    step = 2 * config.n_heads
    lo, hi = 1, 8 * config.d_model // step
    while lo < hi:
        mid = (lo + hi) // 2
        if count_parameters(dataclasses.replace(config, d_model=mid * step)) < goal:
            lo = mid + 1
        else:
            hi = mid
    candidates = [dataclasses.replace(config, d_model=k * step) for k in {max(1, lo - 1), lo}]
    return min(candidates, key=lambda c: (abs(count_parameters(c) - goal), c.d_model))


def matched_transformer(target: ModelConfig, tolerance: float = 0.05, **overrides) -> ModelConfig:
    """A `transformer` config whose parameter count is within ±tolerance of `target`'s.

    Keeps the target's depth, heads and vocabulary and matches the width, then, if no width fits,
    tries the other depths as well.
    """
    goal = count_parameters(target)
    chosen = ("n_layers", "n_heads", "d_model")  # the matcher's to choose; other overrides apply
    base = {"vocab_size": target.vocab_size, "tie_embeddings": target.tie_embeddings}
    base.update({key: value for key, value in overrides.items() if key not in chosen})
    best = None
    for n_layers in [target.n_layers] + [
        n for n in range(1, 4 * target.n_layers + 1) if n != target.n_layers
    ]:
        start = ModelConfig.preset(
            "transformer", n_layers=n_layers, n_heads=target.n_heads, d_model=target.d_model, **base
        )
        cfg = match_width(start, goal)
        gap = abs(count_parameters(cfg) - goal) / goal
        if best is None or gap < best[0]:
            best = (gap, cfg)
        if best[0] <= tolerance:
            return best[1]
    raise ValueError(f"no transformer within ±{tolerance:.0%} of {goal} parameters (closest {best[0]:.1%})")
