"""The three measurements of "Dissecting HOPE" (reference 003, §4.2–4.4) on any model and batch.

- `selfmod_drift`: ‖θ_fast − θ_meta‖ / ‖θ_meta‖ per layer and memory after a sequence — how far the
  in-context (fast) weights move from their meta-learned initial state (the study's Fig. 2b).
- `cms_level_similarity`: cosine similarity between the contributions of consecutive CMS levels on
  the same inputs — the study's redundancy measure (≈ 0.77 in its runs, Fig. 1c).
- `surprise_profile`: the distribution of per-token surprise ‖∇ℓ‖ and the gate's pass rate per layer
  (Fig. 3) — whether a surprise gate can select anything at the model's loss scale.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from hope.layers.cms import ContinuumMemory
from hope.layers.self_ref_titans import SelfReferentialTitans


@torch.no_grad()
def selfmod_drift(model, ids: torch.Tensor) -> list[dict[str, float]]:
    """Per Titans layer, each memory's relative drift after reading `ids`, averaged over the batch."""
    _, state = model(ids)
    out = []
    for block, st in zip(model.blocks, state["blocks"]):
        if not isinstance(block.mixer, SelfReferentialTitans):
            continue
        layer, final = block.mixer, st["mixer"]["weights"]
        initial = layer.init_state(ids.shape[0])["weights"]
        drift = {}
        for i, comp in enumerate(layer.components):
            diff = sum(((w[:, i] - w0[:, i]) ** 2).flatten(1).sum(-1) for w, w0 in zip(final, initial))
            base = sum((w0[:, i] ** 2).flatten(1).sum(-1) for w0 in initial)
            drift[comp] = float((diff.sqrt() / base.sqrt()).mean())
        out.append(drift)
    return out


@torch.no_grad()
def cms_level_similarity(model, ids: torch.Tensor) -> list[list[float]]:
    """Per CMS layer, cos(level ℓ's contribution, level ℓ+1's) at the slow weights, mean over tokens."""
    inputs = {}

    def keep_input(mod, args, out) -> None:  # returns None: a hook's return value would replace the output
        inputs.setdefault(mod, args[0])

    hooks = [
        b.ffn.register_forward_hook(keep_input) for b in model.blocks if isinstance(b.ffn, ContinuumMemory)
    ]
    try:
        model(ids)
    finally:
        for h in hooks:
            h.remove()
    out = []
    for memory, x in inputs.items():
        contributions, z = [], x
        for level in range(len(memory.chunk_sizes)):
            y = memory.read_level(memory.slow_weights(level), z if memory.cms.variant != "independent" else x)
            contributions.append(y - (z if memory.cms.variant != "independent" else x))
            z = y if memory.cms.variant != "independent" else z
        out.append(
            [float(F.cosine_similarity(a, b, dim=-1).mean()) for a, b in itertools.pairwise(contributions)]
        )
    return out


@torch.no_grad()
def surprise_profile(model, ids: torch.Tensor, quantiles=(0.1, 0.5, 0.9)) -> list[dict[str, float]]:
    """Per Titans layer: mean and quantiles of the per-token surprise ‖∇ℓ‖, and the gate pass rate."""
    layers = [b.mixer for b in model.blocks if isinstance(b.mixer, SelfReferentialTitans)]
    for layer in layers:
        layer.surprise_trace = []
    try:
        model(ids)
        out = []
        for layer in layers:
            values = torch.cat([s.flatten() for s in layer.surprise_trace]).float()
            stats = {"mean": float(values.mean()), "pass_rate": float(layer.gate_pass_rate)}
            stats.update({f"q{round(q * 100)}": float(values.quantile(q)) for q in quantiles})
            out.append(stats)
        return out
    finally:
        for layer in layers:
            layer.surprise_trace = None
