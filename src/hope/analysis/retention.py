"""Retention probe: does a memory still hold key→value pairs after N tokens of distractor text?

Two streams differ only in the values of a block of `key=value;` pairs (same keys, same lengths):

    A:  k1=v1;k2=v2;…  ─ N distractor tokens ─▶  k1=k2=…      (read-back prompt)
    B:  k1=u1;k2=u2;…  ─ N distractor tokens ─▶  k1=k2=…

Everything after the pairs is identical, so any difference between A and B at the read-back prompt
is information about the values that the model still carries. With δ(N) the difference of a
signal (a layer's mixer output or the logits) at the prompt's `=` positions,

    retention(N) = ⟨δ(N), δ(0)⟩ / (‖δ(0)‖ · max(‖δ(N)‖, ‖δ(0)‖))

is the fraction of the value-specific read-back at N = 0 still there at N, in the same direction:
1 for a memory that forgets nothing, 0 for one that has emptied itself or scrambled what it held.
It lies in [−1, 1]: while δ shrinks it is the projection ⟨δ(N), δ(0)⟩ / ‖δ(0)‖², and where δ grows
(the two streams drift apart) it is their cosine, so growth never counts as remembering more.
`gain` = ‖δ(N)‖ / ‖δ(0)‖ is reported beside it.
Along the stream each Titans memory's size is logged as ‖M_t − M_0‖ / ‖M_0‖ (what it has written)
and ‖M_t‖ / ‖M_0‖ (what is left of its weights), per layer.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

import torch

from hope.layers.self_ref_titans import SelfReferentialTitans

LETTERS = string.ascii_lowercase


@dataclass(frozen=True)
class Streams:
    """Token ids (2, ·): row 0 is stream A, row 1 stream B; `marks` index the prompt's `=` tokens."""

    pairs: torch.Tensor
    prompt: torch.Tensor
    marks: list[int]


def make_streams(tokenizer, n_pairs: int, seed: int = 0, width: int = 4) -> Streams:
    """Seeded pairs with shared keys and different values, and their read-back prompt."""
    rng = random.Random(seed)
    for _ in range(100):
        keys = ["".join(rng.choices(LETTERS, k=width)) for _ in range(n_pairs)]
        values = [["".join(rng.choices(LETTERS, k=width)) for _ in range(n_pairs)] for _ in range(2)]
        rows = [list(tokenizer.encode("".join(f"{k}={v};" for k, v in zip(keys, vals)))) for vals in values]
        if len(rows[0]) == len(rows[1]):  # a BPE may merge letters differently; the byte tokenizer never does
            break
    else:
        raise ValueError("could not draw value sets of equal token length for this tokenizer")
    prompt, marks = [], []
    for k in keys:
        prompt += list(tokenizer.encode(f"{k}="))
        marks.append(len(prompt) - 1)
    pairs = torch.tensor(rows, dtype=torch.long)
    return Streams(pairs, torch.tensor([prompt, prompt], dtype=torch.long), marks)


def _titans_layers(model) -> list[tuple[int, SelfReferentialTitans]]:
    return [(i, b.mixer) for i, b in enumerate(model.blocks) if isinstance(b.mixer, SelfReferentialTitans)]


@torch.no_grad()
def memory_norms(model, state: dict) -> dict[str, list[dict[str, float]]]:
    """Per Titans layer and memory: ‖M − M_0‖/‖M_0‖ ("written") and ‖M‖/‖M_0‖ ("kept"), batch mean."""
    written, kept = [], []
    for i, layer in _titans_layers(model):
        weights = state["blocks"][i]["mixer"]["weights"]
        w_layer, k_layer = {}, {}
        for c, name in enumerate(layer.components):
            w0 = [p[c].float() for p in layer.init_weights]
            base = sum(float((p**2).sum()) for p in w0) ** 0.5
            diff = sum(((w[:, c].float() - p) ** 2).flatten(1).sum(-1) for w, p in zip(weights, w0)).sqrt()
            size = sum((w[:, c].float() ** 2).flatten(1).sum(-1) for w in weights).sqrt()
            w_layer[name], k_layer[name] = float(diff.mean()) / base, float(size.mean()) / base
        written.append(w_layer)
        kept.append(k_layer)
    return {"written": written, "kept": kept}


def retention_score(d: torch.Tensor, d0: torch.Tensor) -> float:
    """⟨δ, δ₀⟩ / (‖δ₀‖ · max(‖δ‖, ‖δ₀‖)): the projection while δ shrinks, the cosine once it grows."""
    scale = d0.norm() * torch.maximum(d.norm(), d0.norm())
    return float((d * d0).sum() / scale.clamp_min(1e-30))


def _read_back(model, state: dict, streams: Streams) -> list[torch.Tensor]:
    """δ = A − B at the prompt's `=` positions: each Titans layer's output, then the logits."""
    captured = {}
    hooks = [
        layer.register_forward_hook(lambda _m, _in, out, i=i: captured.__setitem__(i, out[0]))
        for i, layer in _titans_layers(model)
    ]
    try:
        logits, _ = model(streams.prompt.to(streams.pairs.device), state)
    finally:
        for h in hooks:
            h.remove()
    signals = [captured[i] for i, _ in _titans_layers(model)] + [logits.float().log_softmax(-1)]
    return [(s[0, streams.marks] - s[1, streams.marks]).double() for s in signals]


@torch.no_grad()
def retention_probe(
    model,
    tokenizer,
    distractor: torch.Tensor,
    lengths: list[int],
    n_pairs: int = 16,
    piece: int = 1024,
    seed: int = 0,
) -> dict:
    """Retention and memory norms after each N in `lengths` distractor tokens (1-D `distractor`).

    Returns {"lengths", "retention": {signal: [per N]}, "gain": {signal: [‖δ(N)‖ / ‖δ(0)‖ per N]},
    "norms": [memory_norms per N], "tokens": [tokens streamed per N]}; signals are `layer{i}` for each
    Titans layer and `logits` (log-probabilities).
    """
    lengths = sorted(set(lengths) | {0})  # N = 0 is the reference every retention is relative to
    if lengths[0] < 0 or lengths[-1] > distractor.numel():
        raise ValueError(
            f"lengths must lie in [0, {distractor.numel()}] (the distractor's length), got {lengths}"
        )
    device = next(model.parameters()).device
    streams = make_streams(tokenizer, n_pairs, seed)
    streams = Streams(streams.pairs.to(device), streams.prompt.to(device), streams.marks)
    text = distractor.to(device)[None].expand(2, -1)
    names = [f"layer{i}" for i, _ in _titans_layers(model)] + ["logits"]
    _, state = model(streams.pairs)
    seen, first = 0, None
    out = {"lengths": lengths, "retention": {n: [] for n in names}, "gain": {n: [] for n in names}}
    out["norms"], out["tokens"] = [], []
    for n in lengths:
        while seen < n:
            step = min(piece, n - seen)
            _, state = model(text[:, seen : seen + step], state)
            seen += step
        deltas = _read_back(model, state, streams)
        first = deltas if first is None else first
        for name, d, d0 in zip(names, deltas, first):
            out["retention"][name].append(retention_score(d, d0))
            out["gain"][name].append(float(d.norm() / d0.norm().clamp_min(1e-30)))
        out["norms"].append(memory_norms(model, state))
        out["tokens"].append(streams.pairs.shape[1] + n)
    return out


# ---- the `hope retention` command ------------------------------------------------------------------


def distractor_tokens(tokenizer, n: int) -> torch.Tensor:
    """n tokens of the built-in corpus's validation split (repeated if n is longer), never seen in training."""
    from hope.data.corpus import builtin_text
    from hope.data.tokens import split_text

    ids = torch.as_tensor(list(tokenizer.encode(split_text(builtin_text(), 0.05)[1])), dtype=torch.long)
    return ids.repeat(-(-n // ids.numel()))[:n]


def load_models(runs: list[str], presets: list[str], size: str, seed: int, device):
    """[(label, model, tokenizer)]: trained runs (newest checkpoint) and freshly initialised presets."""
    import hope
    from hope.data.tokenizer import ByteTokenizer
    from hope.train import load_for_inference

    models = []
    for run in runs:
        model, tokenizer, cfg, step = load_for_inference(run, device)
        models.append((f"{cfg.preset} (trained, step {step})", model, tokenizer))
    for name in presets:
        torch.manual_seed(seed)
        config = hope.ModelConfig.preset(name, size=size, vocab_size=256)
        models.append((f"{name} (fresh)", hope.build_model(config).to(device).eval(), ByteTokenizer()))
    return models


def write_report(results: dict, out_dir) -> None:
    """results.json, results.md (tables) and retention.png / norms.png in `out_dir`."""
    import json
    from pathlib import Path

    from hope.atomic import write_bytes_atomic, write_text_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "results.json", json.dumps(results, indent=1))
    lengths = results["args"]["lengths"]
    lines = [
        f"# Retention probe ({results['date']}, {results['device']})",
        "",
        (
            f"{results['args']['pairs']} key=value pairs, then N distractor tokens, then the keys again. "
            "retention(N) = ⟨δ(N), δ(0)⟩ / (‖δ(0)‖ max(‖δ(N)‖, ‖δ(0)‖)) for δ the difference between two "
            "streams whose values differ, read at the keys; `gain` = ‖δ(N)‖ / ‖δ(0)‖; `written` = ‖M_mem − M_0‖ / ‖M_0‖ of the main memory, `kept` = ‖M_mem‖ / ‖M_0‖ "
            "(first Titans layer, mean over heads and streams)."
        ),
        "",
        "| model | signal | " + " | ".join(f"N={n:,}" for n in lengths) + " |",
        "|---|---|" + "---|" * len(lengths),
    ]
    for label, r in results["models"].items():
        for signal, values in r["retention"].items():
            lines.append(f"| {label} | retention {signal} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
        lines.append(
            f"| {label} | gain layer0 | " + " | ".join(f"{v:.2f}" for v in r["gain"]["layer0"]) + " |"
        )
        for kind in ("written", "kept"):
            if r["norms"][0][kind]:
                row = [f"{n[kind][0]['mem']:.3f}" for n in r["norms"]]
                lines.append(f"| {label} | {kind} (layer 0) | " + " | ".join(row) + " |")
    write_text_atomic(out / "results.md", "\n".join(lines) + "\n")

    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, key in (("retention.png", "retention"), ("norms.png", "norms")):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for label, r in results["models"].items():
            xs = [max(n, 1) for n in r["lengths"]]
            if key == "retention":
                ax.plot(
                    xs,
                    r["retention"]["layer0" if "layer0" in r["retention"] else "logits"],
                    "o-",
                    label=label,
                )
            elif r["norms"][0]["written"]:
                ax.plot(
                    r["tokens"], [n["written"][0]["mem"] for n in r["norms"]], "o-", label=f"{label} written"
                )
                ax.plot(r["tokens"], [n["kept"][0]["mem"] for n in r["norms"]], "x--", label=f"{label} kept")
        ax.set_xscale("log")
        ax.set_xlabel("distractor tokens N" if key == "retention" else "tokens streamed")
        ax.set_ylabel("retention (first Titans layer)" if key == "retention" else "‖M‖ relative to ‖M_0‖")
        ax.axhline(0.0, color="grey", lw=0.5)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=120)
        plt.close(fig)
        write_bytes_atomic(out / name, buf.getvalue())
