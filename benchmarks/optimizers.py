"""AdamW vs Muon vs M3 (and DGD) at equal steps: an LR sweep per optimizer, several seeds, on one task.

    python benchmarks/optimizers.py --task lm --out runs/bench_optim --device cpu --steps 200
    python benchmarks/optimizers.py --task vision --out runs/bench_vision --device cpu --threads 1

Tasks:
* ``lm``: `hope.build_model(ModelConfig.preset("transformer", size="tiny", ...))` on the built-in
  Shakespeare corpus as bytes (90% train / 10% validation); the best LR is the lowest mean final
  validation loss.
* ``vision`` (the paper's ViT on ImageNet, scaled down): a small ViT (:class:`ViT`) classifying the
  procedurally drawn digits of `hope.suites.digits` (a fixed training set drawn with replacement, a
  validation set and a test set, each its own split); the best LR is the highest mean final validation
  accuracy, and the test accuracy is reported at that LR.

Writes into --out: results.json (every run's curves and timings), results.md (the table) and
loss_curves.png. Every optimizer gets the same initial weights and batch order per seed; the
non-matrix parameters inside Muon/M3/DGD (embeddings, norms, biases) use AdamW at --adamw-lr. Each
run: `hope train`'s step (`hope.train.step`; a non-finite step is skipped), linear warm-up over the
first 5% of steps, cosine decay to 10%. "step ms" is the whole training step (forward, backward,
optimizer); "opt ms" is `optimizer.step()` alone; overhead is relative to AdamW's.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import hope
from hope.data import ByteTokenizer, builtin_text
from hope.optim import build_optimizer
from hope.suites import digits
from hope.train.step import lr_factor, train_step

# name -> (build_optimizer name, extra hyper-parameters, default LR sweep per task)
OPTIMIZERS = {
    "adamw": ("adamw", {}, {"lm": (1e-3, 3e-3, 1e-2), "vision": (1e-3, 3e-3, 1e-2)}),
    "muon": ("muon", {}, {"lm": (1e-3, 3e-3, 1e-2), "vision": (3e-3, 1e-2, 3e-2)}),
    "m3": ("m3", {}, {"lm": (1e-5, 1e-4, 1e-3), "vision": (3e-5, 1e-4, 3e-4)}),
    "m3_orth": (
        "m3",
        {"variance": "orthogonalized"},
        {"lm": (1e-3, 3e-3, 1e-2), "vision": (3e-4, 1e-3, 3e-3)},
    ),
    "dgd": ("dgd", {}, {"lm": (0.1, 0.3, 1.0), "vision": (0.1, 0.3, 1.0)}),
    "delta_momentum": ("delta_momentum", {}, {"lm": (0.01, 0.03, 0.1), "vision": (0.01, 0.03, 0.1)}),
    "deep_momentum": ("deep_momentum", {}, {"lm": (0.01, 0.03, 0.1), "vision": (0.01, 0.03, 0.1)}),
}
TASKS = ("lm", "vision")
# Options whose default depends on the task (None on the command line: take the task's).
TASK_DEFAULTS = {
    "lm": {"steps": 300, "batch_size": 16, "optimizers": "adamw,muon,m3,m3_orth,dgd", "eval_every": 50},
    "vision": {"steps": 300, "batch_size": 64, "optimizers": "adamw,muon,m3,m3_orth", "eval_every": 50},
}


@dataclass
class Task:
    """What the training loop needs from a task. ``evaluate`` returns the held-out metrics; ``select``
    names the one that picks the best LR (``higher`` says which way is better); ``report`` lists the
    final metrics the table shows."""

    model: str
    data: str
    build: Callable[[], nn.Module]
    next_batch: Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]]
    evaluate: Callable[[nn.Module], dict[str, float]]
    select: str
    higher: bool
    report: tuple[str, ...]


def _loss(model, x, y) -> torch.Tensor:
    logits, _ = model(x)
    return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())


def lm_task(args) -> Task:
    ids = torch.from_numpy(ByteTokenizer().encode(builtin_text()).astype("int64"))
    split = int(0.9 * len(ids))
    train_ids, val_ids = ids[:split], ids[split:]

    def windows(source: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(0, len(source) - args.seq_len - 1, (args.batch_size, 1), generator=g)
        window = source[starts + torch.arange(args.seq_len + 1)]
        return window[:, :-1], window[:, 1:]

    g_val = torch.Generator().manual_seed(1234)
    val_batches = [windows(val_ids, g_val) for _ in range(args.val_batches)]

    @torch.no_grad()
    def evaluate(model) -> dict[str, float]:
        loss = sum(_loss(model, x.to(args.device), y.to(args.device)).item() for x, y in val_batches)
        return {"val_loss": loss / len(val_batches)}

    def build() -> nn.Module:
        config = hope.ModelConfig.preset(
            "transformer",
            size="tiny",
            vocab_size=256,
            d_model=args.d_model,
            n_layers=args.n_layers,
            n_heads=args.n_heads,
        )
        return hope.build_model(config)

    return Task(
        model="hope.build_model(transformer, tiny)",
        data="hope.data built-in Shakespeare corpus, byte tokens",
        build=build,
        next_batch=functools.partial(windows, train_ids),
        evaluate=evaluate,
        select="val_loss",
        higher=False,
        report=("val_loss",),
    )


class ViT(nn.Module):
    """A small Vision Transformer (Dosovitskiy et al., 2021): non-overlapping patches through one linear
    map, a class token, learned positions, pre-norm encoder blocks, logits read off the class token.

    The class token is position 0's embedding added to a zero vector, so the class token and the
    positions are one ``nn.Embedding``: `hope.optim` routes embeddings to AdamW, and a (1, d) token
    stepped by Muon's orthogonalisation would only ever be rescaled to unit spectral norm."""

    def __init__(
        self, image_size: int, patch: int, d_model: int, n_layers: int, n_heads: int, n_classes: int
    ):
        super().__init__()
        self.patch = patch
        self.embed = nn.Linear(patch * patch, d_model)
        self.pos = nn.Embedding((image_size // patch) ** 2 + 1, d_model)
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, 4 * d_model, dropout=0.0, batch_first=True, norm_first=True, activation="gelu"
        )
        self.blocks = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, images: torch.Tensor, state=None) -> tuple[torch.Tensor, None]:
        patches = F.unfold(images, self.patch, stride=self.patch).transpose(1, 2)  # (B, patches, p*p)
        tokens = self.embed(patches)
        h = torch.cat([tokens.new_zeros(len(images), 1, tokens.shape[-1]), tokens], dim=1) + self.pos.weight
        # One output "position" per image: (B, 1, classes), the (logits, state) shape train_step takes.
        return self.head(self.norm(self.blocks(h))[:, :1]), state


def vision_task(args) -> Task:
    if args.image_size % args.patch:
        raise ValueError(f"--patch must divide --image-size ({args.image_size}); got {args.patch}")
    kw = {"size": args.image_size, "noise": args.noise}
    train_x, train_y = digits.generate(args.n_train, 0, split="train", **kw)
    held_out = {split: digits.generate(args.n_eval, 0, split=split, **kw) for split in ("val", "test")}

    def next_batch(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        # Images drawn with replacement from the fixed training set, as the LM task draws windows.
        index = torch.randint(0, args.n_train, (args.batch_size,), generator=g)
        return train_x[index], train_y[index, None]

    @torch.no_grad()
    def evaluate(model) -> dict[str, float]:
        out = {}
        for split, (x, y) in held_out.items():
            logits = torch.cat([model(chunk.to(args.device))[0][:, 0].float() for chunk in x.split(500)])
            out[f"{split}_loss"] = F.cross_entropy(logits, y.to(logits.device)).item()
            out[f"{split}_accuracy"] = (logits.argmax(-1).cpu() == y).float().mean().item()
        return out

    def build() -> nn.Module:
        return ViT(args.image_size, args.patch, args.d_model, args.n_layers, args.n_heads, digits.N_CLASSES)

    return Task(
        model=f"ViT ({args.image_size}x{args.image_size} images, {args.patch}x{args.patch} patches, "
        f"d_model {args.d_model}, {args.n_layers} layers, {args.n_heads} heads)",
        data=(
            f"hope.suites.digits, {args.n_train} training / {args.n_eval} validation / {args.n_eval} test "
            f"images, noise {args.noise}"
        ),
        build=build,
        next_batch=next_batch,
        evaluate=evaluate,
        select="val_accuracy",
        higher=True,
        report=("test_accuracy", "test_loss", "val_accuracy"),
    )


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _clock(device: str, times: list[float]) -> None:
    sync(device)
    times.append(time.perf_counter())


def run(name: str, lr: float, seed: int, task: Task, args) -> dict:
    opt_name, extra, _ = OPTIMIZERS[name]
    torch.manual_seed(seed)
    model = task.build().to(args.device)
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
        x, y = task.next_batch(g)
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
        if not math.isfinite(loss):
            break
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            model.eval()
            val_curve.append((step + 1, task.evaluate(model)))
            model.train()
    finished = len(train_curve) == args.steps and math.isfinite(train_curve[-1])
    return {
        "optimizer": name,
        "lr": lr,
        "seed": seed,
        "final": val_curve[-1][1] if finished else {},  # empty: diverged
        "train_loss": train_curve,
        "val": val_curve,
        "step_ms": 1e3 * statistics.median(step_times) if step_times else float("nan"),
        "opt_ms": 1e3 * statistics.median(opt_times) if opt_times else float("nan"),
    }


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def summarise(runs: list[dict], names: list[str], task: Task) -> dict:
    """Best LR per optimizer (by the task's ``select`` metric, mean over seeds; a sweep point where any
    seed diverged never wins) and the statistics of its runs."""
    summary = {}
    worst = -math.inf if task.higher else math.inf
    for name in names:
        by_lr = {}
        for r in runs:
            if r["optimizer"] == name:
                by_lr.setdefault(r["lr"], []).append(r)

        def selected(rs):
            return (
                statistics.mean(r["final"][task.select] for r in rs) if all(r["final"] for r in rs) else worst
            )

        pick = max if task.higher else min
        lr = pick(by_lr, key=lambda k: selected(by_lr[k]))
        rs = by_lr[lr]
        finished = all(r["final"] for r in rs)
        summary[name] = {
            "best_lr": lr,
            "metrics": {k: _mean_std([r["final"][k] for r in rs]) for k in task.report} if finished else {},
            "final_train_loss": _mean_std([statistics.mean(r["train_loss"][-20:]) for r in rs]),
            "step_ms": statistics.median(r["step_ms"] for r in rs),
            "opt_ms": statistics.median(r["opt_ms"] for r in rs),
            "sweep": {str(k): selected(v) for k, v in sorted(by_lr.items())},
        }
    return summary


def markdown(summary: dict, meta: dict, task: Task) -> str:
    base = summary.get("adamw")
    lines = [
        f"Model: {meta['model']} ({meta['params']:,} parameters), data: {meta['data']}.",
        f"Device: {meta['device_name']}; torch {meta['torch']}; {meta['threads']} thread(s); {meta['date']}.",
        (
            f"{meta['steps']} steps of batch {meta['batch_size']}, seeds {meta['seeds']}; best LR per optimizer "
            f"by mean final {task.select}; AdamW LR for non-matrix parameters {meta['adamw_lr']}."
        ),
        "",
        "| optimizer | best LR | "
        + " | ".join(f"final {k} (mean ± std)" for k in task.report)
        + " | train loss, last 20 steps | step ms | optimizer.step ms | step time vs AdamW |"
        + f" LR sweep (mean final {task.select}) |",
        "|---|---|" + "---|" * (len(task.report) + 5),
    ]
    for name, s in summary.items():
        overhead = f"{s['step_ms'] / base['step_ms']:.2f}×" if base else "n/a"
        sweep = ", ".join(
            f"{lr}: {v:.4f}" if math.isfinite(v) else f"{lr}: diverged" for lr, v in s["sweep"].items()
        )
        cells = [
            f"{s['metrics'][k]['mean']:.4f} ± {s['metrics'][k]['std']:.4f}" if s["metrics"] else "diverged"
            for k in task.report
        ]
        train = s["final_train_loss"]
        lines.append(
            f"| {name} | {s['best_lr']:g} | {' | '.join(cells)} | {train['mean']:.4f} ± {train['std']:.4f} | "
            f"{s['step_ms']:.1f} | {s['opt_ms']:.2f} | {overhead} | {sweep} |"
        )
    return "\n".join(lines) + "\n"


def plot(runs: list[dict], summary: dict, task: Task, path: Path) -> None:
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
        points = min(len(r["val"]) for r in rs)
        steps = [step for step, _ in rs[0]["val"][:points]]
        mean_val = [statistics.mean(r["val"][i][1][task.select] for r in rs) for i in range(points)]
        ax_val.plot(steps, mean_val, marker="o", markersize=3, label=name)
    ax_train.set(
        xlabel="step", ylabel="train loss (moving average)", title="train loss, best LR, mean of seeds"
    )
    ax_val.set(xlabel="step", ylabel=task.select, title=f"{task.select}, best LR, mean of seeds")
    for ax in (ax_train, ax_val):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=TASKS, default="lm")
    parser.add_argument("--out", type=Path, default=None, help="default: runs/bench_optimizers[_vision]")
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--steps", type=int, default=None, help="lm: 300, vision: 300")
    parser.add_argument("--batch-size", type=int, default=None, help="lm: 16 sequences, vision: 64 images")
    parser.add_argument("--seq-len", type=int, default=128, help="lm only")
    parser.add_argument("--image-size", type=int, default=16, help="vision only")
    parser.add_argument("--patch", type=int, default=4, help="vision only: patch side in pixels")
    parser.add_argument("--n-train", type=int, default=10_000, help="vision only: training images")
    parser.add_argument(
        "--n-eval", type=int, default=2_000, help="vision only: validation and test images each"
    )
    parser.add_argument("--noise", type=float, default=0.15, help="vision only: pixel noise std")
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--n-layers", type=int, default=2)
    parser.add_argument("--n-heads", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--optimizers",
        default=None,
        help=f"comma-separated subset of {','.join(OPTIMIZERS)} (lm: adamw,muon,m3,m3_orth,dgd; "
        "vision: adamw,muon,m3,m3_orth)",
    )
    parser.add_argument(
        "--lrs",
        default=None,
        help="override the sweeps, e.g. 'adamw=1e-3:3e-3,m3=1e-4' (unlisted keep their task's default)",
    )
    parser.add_argument("--adamw-lr", type=float, default=3e-3)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--eval-every", type=int, default=None, help="lm: 50, vision: 50")
    parser.add_argument("--val-batches", type=int, default=8, help="lm only")
    args = parser.parse_args(argv)
    for key, value in TASK_DEFAULTS[args.task].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.out is None:
        args.out = Path("runs/bench_optimizers" + ("_vision" if args.task == "vision" else ""))
    for key in (
        "steps",
        "batch_size",
        "seeds",
        "eval_every",
        "seq_len",
        "image_size",
        "patch",
        "n_train",
        "n_eval",
    ):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be an integer >= 1, got {getattr(args, key)}")
    if args.threads < 0:
        parser.error(f"--threads must be >= 0 (0: torch's default), got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)

    names = [n.strip() for n in args.optimizers.split(",") if n.strip()]
    unknown = [n for n in names if n not in OPTIMIZERS]
    if unknown:
        parser.error(f"--optimizers: unknown {unknown}; accepted: {list(OPTIMIZERS)}")
    sweeps = {n: OPTIMIZERS[n][2][args.task] for n in names}
    for item in args.lrs.split(",") if args.lrs else []:
        key, _, values = item.partition("=")
        if key not in sweeps or not values:
            parser.error(f"--lrs: expected NAME=LR[:LR...] with NAME in {names}, got {item!r}")
        sweeps[key] = tuple(float(v) for v in values.split(":"))
    if args.device == "cuda":
        if not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA device is available")
        torch.backends.cuda.matmul.allow_tf32 = True

    try:
        task = (lm_task if args.task == "lm" else vision_task)(args)
    except ValueError as e:
        parser.error(str(e))
    probe = task.build()
    args.out.mkdir(parents=True, exist_ok=True)

    runs = []
    for name in names:
        for lr in sweeps[name]:
            for seed in range(args.seeds):
                r = run(name, lr, seed, task, args)
                runs.append(r)
                final = ", ".join(f"{k}={v:.4f}" for k, v in r["final"].items()) or "diverged"
                print(
                    f"{name:>15} lr={lr:<8g} seed={seed} {final} step={r['step_ms']:.1f}ms opt={r['opt_ms']:.2f}ms",
                    flush=True,
                )

    summary = summarise(runs, names, task)
    meta = {
        "task": args.task,
        "model": task.model,
        "params": sum(p.numel() for p in probe.parameters()),
        "data": task.data,
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else "CPU",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "seeds": args.seeds,
        "adamw_lr": args.adamw_lr,
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    (args.out / "results.json").write_text(
        json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=1)
    )
    table = markdown(summary, meta, task)
    (args.out / "results.md").write_text(table)
    plot(runs, summary, task, args.out / "loss_curves.png")
    print(table)


if __name__ == "__main__":
    main()
