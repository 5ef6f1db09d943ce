"""AdamW vs Muon vs M3 (and DGD) on one small language model: equal steps, an LR sweep, several seeds.

    python benchmarks/optimizers.py --out runs/bench_optim --device cpu --steps 200

Writes into --out: results.json (every run's curves and timings), results.md (the table) and
loss_curves.png. Model: `hope.build_model(ModelConfig.preset("transformer", size="tiny", ...))` when the
package provides it, else a small built-in causal transformer. Data: the built-in Shakespeare corpus of
`hope.data` as bytes (90% train / 10% validation), else a seeded synthetic sequence task.
Every optimizer gets the same initial weights and batch order per seed; the non-matrix parameters
inside Muon/M3/DGD (embeddings, norms, biases) use AdamW at --adamw-lr. Each run: `hope train`'s step
(`hope.train.step`; a non-finite step is skipped), linear warm-up over the first 5% of steps, cosine
decay to 10%. "step ms" is the whole training step (forward, backward, optimizer); "opt ms" is
`optimizer.step()` alone; overhead is relative to AdamW's.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from hope.optim import build_optimizer
from hope.train.step import lr_factor, train_step

# name -> (build_optimizer name, extra hyper-parameters, default LR sweep)
OPTIMIZERS = {
    "adamw": ("adamw", {}, (1e-3, 3e-3, 1e-2)),
    "muon": ("muon", {}, (1e-3, 3e-3, 1e-2)),
    "m3": ("m3", {}, (1e-5, 1e-4, 1e-3)),
    "m3_orth": ("m3", {"variance": "orthogonalized"}, (1e-3, 3e-3, 1e-2)),
    "dgd": ("dgd", {}, (0.1, 0.3, 1.0)),
    "delta_momentum": ("delta_momentum", {}, (0.01, 0.03, 0.1)),
    "deep_momentum": ("deep_momentum", {}, (0.01, 0.03, 0.1)),
}


def load_tokens(seed: int) -> tuple[torch.Tensor, torch.Tensor, int, str]:
    """(train ids, val ids, vocab size, description): Shakespeare bytes, else a synthetic task."""
    try:
        from hope.data import ByteTokenizer, builtin_text

        ids = torch.from_numpy(ByteTokenizer().encode(builtin_text()).astype("int64"))
        split = int(0.9 * len(ids))
        return ids[:split], ids[split:], 256, "hope.data built-in Shakespeare corpus, byte tokens"
    except ImportError:
        # Synthetic: a seeded order-2 Markov chain over 64 symbols (learnable but not trivially).
        g = torch.Generator().manual_seed(seed)
        vocab = 64
        table = torch.randint(0, vocab, (vocab, vocab, 3), generator=g)
        ids = [0, 1]
        choice = torch.randint(0, 3, (400_000,), generator=g)
        for c in choice.tolist():
            ids.append(int(table[ids[-2], ids[-1], c]))
        ids = torch.tensor(ids)
        split = int(0.9 * len(ids))
        return ids[:split], ids[split:], vocab, "synthetic order-2 Markov chain (hope.data unavailable)"


class FallbackLM(nn.Module):
    """A small pre-norm causal transformer, used only when hope.build_model is unavailable."""

    def __init__(self, vocab: int, d_model: int, n_layers: int, n_heads: int, max_len: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, 4 * d_model, dropout=0.0, batch_first=True, norm_first=True, activation="gelu"
        )
        self.blocks = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)

    def forward(self, ids, state=None):
        T = ids.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=ids.device)
        h = self.blocks(
            self.embed(ids) + self.pos(torch.arange(T, device=ids.device)), mask=mask, is_causal=True
        )
        return self.head(self.norm(h)), state


def build_lm(vocab: int, args) -> tuple[nn.Module, str]:
    try:
        import hope

        config = hope.ModelConfig.preset(
            "transformer",
            size="tiny",
            vocab_size=vocab,
            d_model=args.d_model,
            n_layers=args.n_layers,
            n_heads=args.n_heads,
        )
        return hope.build_model(config), "hope.build_model(transformer, tiny)"
    except (ImportError, AttributeError):
        return FallbackLM(
            vocab, args.d_model, args.n_layers, args.n_heads, args.seq_len
        ), "built-in fallback transformer"


def batch(ids: torch.Tensor, g: torch.Generator, batch_size: int, seq_len: int, device) -> tuple:
    starts = torch.randint(0, len(ids) - seq_len - 1, (batch_size, 1), generator=g)
    window = ids[starts + torch.arange(seq_len + 1)]
    window = window.to(device)
    return window[:, :-1], window[:, 1:]


def lm_loss(model, x, y) -> torch.Tensor:
    logits, _ = model(x)
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))


@torch.no_grad()
def evaluate(model, val_batches) -> float:
    model.eval()
    loss = sum(lm_loss(model, x, y).item() for x, y in val_batches) / len(val_batches)
    model.train()
    return loss


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _clock(device: str, times: list[float]) -> None:
    sync(device)
    times.append(time.perf_counter())


def run(name: str, lr: float, seed: int, train_ids, val_batches, vocab, args) -> dict:
    opt_name, extra, _ = OPTIMIZERS[name]
    torch.manual_seed(seed)
    model, _ = build_lm(vocab, args)
    model.to(args.device)
    hparams = dict(extra)
    if opt_name != "adamw":
        hparams["adamw_lr"] = args.adamw_lr
    opt = build_optimizer(opt_name, model, lr=lr, weight_decay=args.weight_decay, **hparams)
    base_lrs = [group["lr"] for group in opt.param_groups]
    warmup = max(1, args.steps // 20)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(seed)
    train_curve, val_curve, step_times, opt_times = [], [], [], []
    for step in range(args.steps):
        x, y = batch(train_ids, g, args.batch_size, args.seq_len, args.device)
        sync(args.device)
        backward_done = []
        t0 = time.perf_counter()
        loss, _ = train_step(
            model,
            opt,
            lambda x=x, y=y: (x, y),
            base_lrs,
            lr_factor(step, args.steps, warmup, 0.1),
            device,
            after_backward=functools.partial(_clock, args.device, backward_done),
        )
        sync(args.device)
        t2 = time.perf_counter()
        if step >= min(5, args.steps // 10):  # skip warm-up iterations (allocator, kernels)
            step_times.append(t2 - t0)
            opt_times.append(t2 - backward_done[0])
        train_curve.append(loss)
        if not math.isfinite(train_curve[-1]):
            break
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            val_curve.append((step + 1, evaluate(model, val_batches)))
    final = val_curve[-1][1] if val_curve and len(train_curve) == args.steps else float("nan")
    return {
        "optimizer": name,
        "lr": lr,
        "seed": seed,
        "final_val_loss": final,
        "train_loss": train_curve,
        "val_loss": val_curve,
        "step_ms": 1e3 * statistics.median(step_times) if step_times else float("nan"),
        "opt_ms": 1e3 * statistics.median(opt_times) if opt_times else float("nan"),
    }


def summarise(runs: list[dict], names: list[str]) -> dict:
    """Best LR per optimizer (lowest mean final val loss over seeds) and its statistics."""
    summary = {}
    for name in names:
        by_lr = {}
        for r in runs:
            if r["optimizer"] == name:
                by_lr.setdefault(r["lr"], []).append(r)

        def mean_loss(rs):
            losses = [r["final_val_loss"] for r in rs]
            return statistics.mean(losses) if all(math.isfinite(v) for v in losses) else float("inf")

        lr = min(by_lr, key=lambda k: mean_loss(by_lr[k]))
        rs = by_lr[lr]
        losses = [r["final_val_loss"] for r in rs]
        summary[name] = {
            "best_lr": lr,
            "val_loss_mean": statistics.mean(losses),
            "val_loss_std": statistics.stdev(losses) if len(losses) > 1 else 0.0,
            "step_ms": statistics.median(r["step_ms"] for r in rs),
            "opt_ms": statistics.median(r["opt_ms"] for r in rs),
            "sweep": {str(k): mean_loss(v) for k, v in sorted(by_lr.items())},
        }
    return summary


def markdown(summary: dict, meta: dict) -> str:
    base = summary.get("adamw")
    lines = [
        f"Model: {meta['model']} ({meta['params']:,} parameters), data: {meta['data']}.",
        f"Device: {meta['device_name']}; torch {meta['torch']}; {meta['date']}.",
        (
            f"{meta['steps']} steps, batch {meta['batch_size']} × {meta['seq_len']} tokens, seeds {meta['seeds']}; "
            f"best LR per optimizer by mean final validation loss; AdamW LR for non-matrix parameters "
            f"{meta['adamw_lr']}."
        ),
        "",
        (
            "| optimizer | best LR | final val loss (mean ± std) | step ms | optimizer.step ms | step overhead vs AdamW |"
            " LR sweep (mean final val loss) |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        overhead = f"{s['step_ms'] / base['step_ms']:.2f}×" if base else "n/a"
        sweep = ", ".join(
            f"{lr}: {v:.3f}" if math.isfinite(v) else f"{lr}: diverged" for lr, v in s["sweep"].items()
        )
        lines.append(
            f"| {name} | {s['best_lr']:g} | {s['val_loss_mean']:.4f} ± {s['val_loss_std']:.4f} | "
            f"{s['step_ms']:.1f} | {s['opt_ms']:.2f} | {overhead} | {sweep} |"
        )
    return "\n".join(lines) + "\n"


def plot(runs: list[dict], summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_train, ax_val) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, s in summary.items():
        rs = [r for r in runs if r["optimizer"] == name and r["lr"] == s["best_lr"]]
        n = min(len(r["train_loss"]) for r in rs)
        mean_train = [statistics.mean(r["train_loss"][i] for r in rs) for i in range(n)]
        k = max(1, n // 50)  # moving average for readability
        smooth = [statistics.mean(mean_train[max(0, i - k + 1) : i + 1]) for i in range(n)]
        ax_train.plot(range(1, n + 1), smooth, label=f"{name} (lr {s['best_lr']:g})")
        steps = [step for step, _ in rs[0]["val_loss"]]
        mean_val = [statistics.mean(r["val_loss"][i][1] for r in rs) for i in range(len(steps))]
        ax_val.plot(steps, mean_val, marker="o", markersize=3, label=name)
    ax_train.set(
        xlabel="step", ylabel="train loss (moving average)", title="train loss, best LR, mean of seeds"
    )
    ax_val.set(xlabel="step", ylabel="validation loss", title="validation loss, best LR, mean of seeds")
    for ax in (ax_train, ax_val):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench_optimizers"))
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--n-layers", type=int, default=2)
    parser.add_argument("--n-heads", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--optimizers",
        default="adamw,muon,m3,m3_orth,dgd",
        help=f"comma-separated subset of {','.join(OPTIMIZERS)}",
    )
    parser.add_argument(
        "--lrs",
        default=None,
        help="override the sweeps, e.g. 'adamw=1e-3:3e-3,m3=1e-4' (unlisted keep their default)",
    )
    parser.add_argument("--adamw-lr", type=float, default=3e-3)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--val-batches", type=int, default=8)
    args = parser.parse_args(argv)

    names = [n.strip() for n in args.optimizers.split(",") if n.strip()]
    unknown = [n for n in names if n not in OPTIMIZERS]
    if unknown:
        parser.error(f"--optimizers: unknown {unknown}; accepted: {list(OPTIMIZERS)}")
    sweeps = {n: OPTIMIZERS[n][2] for n in names}
    for item in args.lrs.split(",") if args.lrs else []:
        key, _, values = item.partition("=")
        if key not in sweeps or not values:
            parser.error(f"--lrs: expected NAME=LR[:LR...] with NAME in {names}, got {item!r}")
        sweeps[key] = tuple(float(v) for v in values.split(":"))
    if args.device == "cuda":
        if not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA device is available")
        torch.backends.cuda.matmul.allow_tf32 = True

    train_ids, val_ids, vocab, data_desc = load_tokens(seed=0)
    g_val = torch.Generator().manual_seed(1234)
    val_batches = [
        batch(val_ids, g_val, args.batch_size, args.seq_len, args.device) for _ in range(args.val_batches)
    ]
    probe, model_desc = build_lm(vocab, args)
    args.out.mkdir(parents=True, exist_ok=True)

    runs = []
    for name in names:
        for lr in sweeps[name]:
            for seed in range(args.seeds):
                r = run(name, lr, seed, train_ids, val_batches, vocab, args)
                runs.append(r)
                print(
                    f"{name:>15} lr={lr:<8g} seed={seed} val={r['final_val_loss']:.4f} "
                    f"step={r['step_ms']:.1f}ms opt={r['opt_ms']:.2f}ms",
                    flush=True,
                )

    summary = summarise(runs, names)
    meta = {
        "model": model_desc,
        "params": sum(p.numel() for p in probe.parameters()),
        "data": data_desc,
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else "CPU",
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "seeds": args.seeds,
        "adamw_lr": args.adamw_lr,
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    (args.out / "results.json").write_text(
        json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=1)
    )
    table = markdown(summary, meta)
    (args.out / "results.md").write_text(table)
    plot(runs, summary, args.out / "loss_curves.png")
    print(table)


if __name__ == "__main__":
    main()
