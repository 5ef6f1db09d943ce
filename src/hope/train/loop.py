"""The training loop: data → model → optimizer steps with warm-up + cosine LR, evaluation, checkpoints.

``train(cfg)`` starts a run; ``train(load_train_config(dir), resume=True)`` continues one from its newest
checkpoint, bit for bit on CPU: the checkpoint holds the weights, optimizer state, every RNG and the
loader's position, and the learning rate is a pure function of the step.
"""

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch
from tqdm import tqdm

import hope
from hope import distributed as dist
from hope.atomic import write_text_atomic
from hope.data.loader import TokenLoader, check_long_enough
from hope.data.tokenizer import TOKENIZER_FILE, load_tokenizer, token_byte_lengths
from hope.data.tokens import prepare_tokens
from hope.eval.lm import evaluate_lm
from hope.generate import stream
from hope.optim import build_optimizer
from hope.train.budget import Budget
from hope.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from hope.train.config import TrainConfig
from hope.train.graphs import GraphedLoss
from hope.train.metrics import MetricsLogger, plot_losses
from hope.train.step import train_step

CONFIG = "config.json"
LATEST = "latest"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stopped before applying that step."""


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    val: dict
    sample: str


def resolve_run_dir(path: str | Path) -> Path:
    """A run directory, following ``runs/latest`` (a symlink, or a one-line pointer file where links fail)."""
    path = Path(path)
    if path.is_file():
        path = path.parent / path.read_text().strip()
    if not path.is_dir():
        raise FileNotFoundError(f"no run directory at {path}")
    if not (path / CONFIG).is_file():
        raise FileNotFoundError(f"{path} is not a run directory (it has no {CONFIG})")
    return path


def load_train_config(run_dir: str | Path) -> TrainConfig:
    run_dir = resolve_run_dir(run_dir)
    cfg = TrainConfig.from_dict(json.loads((run_dir / CONFIG).read_text())["train"])
    cfg.out = str(run_dir)
    return cfg


def _new_run_dir(cfg: TrainConfig) -> Path:
    if cfg.out is not None:
        run_dir = Path(cfg.out)
        if (run_dir / CONFIG).exists():
            raise FileExistsError(
                f"{run_dir} already holds a run; continue it with --resume {run_dir} or pick another --out"
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir
    base = Path("runs") / f"{datetime.now():%Y%m%d-%H%M%S}-{cfg.preset}"
    run_dir, n = base, 1
    while True:
        try:
            run_dir.mkdir(parents=True)
            break
        except FileExistsError:
            n += 1
            run_dir = base.with_name(f"{base.name}-{n}")
    _point_latest(run_dir)
    return run_dir


def _point_latest(run_dir: Path) -> None:
    """Makes ``runs/latest`` name this run (an atomic symlink swap; a pointer file where symlinks fail)."""
    latest = run_dir.parent / LATEST
    tmp = run_dir.parent / f".{LATEST}.{os.getpid()}"
    try:
        os.symlink(run_dir.name, tmp)
    except OSError:
        tmp.write_text(run_dir.name + "\n")
    os.replace(tmp, latest)


def train(cfg: TrainConfig, resume: bool = False) -> TrainResult:
    """Runs (or with ``resume``, continues in ``cfg.out``) a training run; collective under torchrun."""
    owns_group = not dist.is_distributed()
    device = dist.setup(cfg.device)
    try:
        result = _train(cfg, resume, device)
        # On success every rank gets here; wait for all before tearing gloo/NCCL down, since a rank
        # that destroys the group while another still talks to it can abort the process.
        dist.barrier()
        return result
    finally:
        if owns_group:
            dist.teardown()


def _train(cfg: TrainConfig, resume: bool, device: torch.device) -> TrainResult:
    main = dist.rank() == 0
    world = dist.world_size()
    micro = cfg.micro_batch(world)
    if resume:
        run_dir = resolve_run_dir(cfg.out)
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            raise FileNotFoundError(f"{run_dir} has no complete checkpoint to resume from")
        tokenizer_spec = str(run_dir / TOKENIZER_FILE)  # the run's own tokeniser, never a retrained one
    else:
        run_dir = Path(dist.broadcast_object(str(_new_run_dir(cfg)) if main else None))
        ckpt, tokenizer_spec = None, cfg.tokenizer

    # Rank 0 tokenises first so that other processes find the cache filled instead of racing to fill it.
    if main:
        splits, tokenizer = prepare_tokens(cfg.data, tokenizer_spec, cfg.val_fraction)
    dist.barrier()
    if not main:
        splits, tokenizer = prepare_tokens(cfg.data, tokenizer_spec, cfg.val_fraction)
    check_long_enough(splits.val, cfg.seq_len, "validation")

    model_cfg = cfg.model_config(tokenizer.vocab_size)
    torch.manual_seed(cfg.seed)
    model = hope.build_model(model_cfg).to(device)
    n_params = sum(p.numel() for p in model.parameters())

    def write_config(**extra) -> None:
        config = {
            "train": cfg.to_dict(),
            "model": model_cfg.to_dict(),
            "n_params": n_params,
            "world_size": world,
            "hope_version": hope.__version__,
            "torch_version": torch.__version__,
            **extra,
        }
        write_text_atomic(run_dir / CONFIG, json.dumps(config, indent=2) + "\n")

    if main:
        # Rewritten on resume too: a resumed run may have extended its steps.
        if not resume:
            tokenizer.save(run_dir / TOKENIZER_FILE)
        write_config()
        idle = [model_cfg.cms.chunk_sizes[i] for i in model.idle_cms_levels(cfg.seq_len)]
        if idle:
            print(
                f"warning: CMS level(s) of chunk size {', '.join(map(str, idle))} never step before the end "
                f"of a {cfg.seq_len}-token training sequence: at this --seq-len they train as plain MLPs and "
                "their in-context learning (with cms.error='local', their key/value read-outs) learns nothing",
                file=sys.stderr,
            )

    model = dist.wrap(model, device, cfg.fsdp, cfg.seq_len)
    hparams = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.optimizer_args.items()}
    optimizer = build_optimizer(cfg.optimizer, model, cfg.lr, cfg.weight_decay, **hparams)
    base_lrs = [group["lr"] for group in optimizer.param_groups]  # groups may scale the global lr differently
    if cfg.compile:
        model = torch.compile(model)
    loss_fn = GraphedLoss(model, cfg.precision) if cfg.cuda_graphs else None

    loader = TokenLoader(splits.train, cfg.seq_len, micro, cfg.seed, dist.rank(), world)
    step = 0
    if ckpt is not None:
        record = load_checkpoint(ckpt, model, optimizer)
        loader.load_state_dict(record["data"])
        step = record["step"]
        if step >= cfg.total_steps:
            raise ValueError(
                f"{run_dir} already finished its {step} steps; resume with a larger --steps to extend it"
            )
    logger = MetricsLogger(run_dir, resume_step=step if resume else None) if main else None
    byte_lengths = token_byte_lengths(tokenizer)

    def evaluate() -> dict:
        return evaluate_lm(
            model, splits.val, cfg.seq_len, micro, byte_lengths, device, cfg.eval_batches, cfg.precision
        )

    def checkpoint() -> None:
        record = {
            "data": loader.state_dict(),
            "tokens_seen": step * cfg.batch_size * cfg.seq_len,
            "train_config": cfg.to_dict(),
            "model_config": model_cfg.to_dict(),
        }
        save_checkpoint(run_dir, step, model, optimizer, record, cfg.keep_checkpoints)

    total = cfg.total_steps
    tokens_per_step = cfg.batch_size * cfg.seq_len
    if main:
        print(
            f"run {run_dir}: {cfg.preset}/{cfg.size}, {n_params:,} parameters, vocab {tokenizer.vocab_size}, "
            f"{len(splits.train):,} train / {len(splits.val):,} val tokens, {world} process(es) on {device}, "
            f"{'resuming at' if resume else 'starting at'} step {step} of {total}",
            file=sys.stderr,
        )
    bar = tqdm(total=total, initial=step, desc="train", unit="step", dynamic_ncols=True, disable=not main)
    model.train()
    try:
        # tok/s counts training steps only, so evaluation and checkpoint time do not drag it down.
        window_time, window_steps = 0.0, 0
        budget = Budget(cfg) if cfg.minutes is not None else None
        while step < total:
            factor = cfg.lr_factor(step) if budget is None else budget.lr_factor(step)
            started = time.perf_counter()
            loss, grad_norm = train_step(
                model,
                optimizer,
                loader.next_batch,
                base_lrs,
                factor,
                device,
                cfg.grad_accum,
                cfg.precision,
                cfg.grad_clip,
                loss_fn=loss_fn,
            )
            seconds = time.perf_counter() - started
            window_time += seconds
            if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                last = latest_checkpoint(run_dir)
                kept = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
                raise TrainingDiverged(
                    f"non-finite training loss ({loss}) or gradient norm ({grad_norm}) at step "
                    f"{step + 1}; stopped before applying it, {kept}"
                )
            step += 1
            window_steps += 1
            if budget is not None:
                fixed = budget.record(seconds, step)
                total = bar.total = budget.steps
                if fixed:
                    record = budget.fix()
                    if main:
                        write_config(budget=record)
                    budget = None
            tok_per_s = window_steps * tokens_per_step / window_time
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tok_per_s:,.0f}")
            if step % cfg.log_every == 0 or step == total:
                if main:
                    logger.log(
                        {
                            "step": step,
                            "split": "train",
                            "loss": loss,
                            "lr": cfg.lr * factor,
                            "grad_norm": grad_norm,
                            "tokens": step * tokens_per_step,
                            "tok_per_s": tok_per_s,
                        }
                    )
                window_time, window_steps = 0.0, 0
            if cfg.eval_every and step % cfg.eval_every == 0 and step < total:
                val = evaluate()
                if main:
                    logger.log({"step": step, "split": "val", **val})
                    bar.write(
                        f"step {step}: val loss {val['loss']:.4f}, ppl {val['ppl']:.2f}, bpb {val['bpb']:.3f}"
                    )
            if (cfg.save_every and step % cfg.save_every == 0) or step == total:
                checkpoint()
        val = evaluate()
        if main:
            logger.log({"step": step, "split": "val", **val})
    finally:
        bar.close()
        if main:
            logger.close()
            plot_losses(run_dir)

    sample = ""
    if main:
        print(
            f"validation: loss {val['loss']:.4f}, perplexity {val['ppl']:.2f}, {val['bpb']:.3f} bits/byte",
            file=sys.stderr,
        )
        sample = _print_sample(cfg, model, tokenizer, device)
        print(f"run directory: {run_dir}", file=sys.stderr)
    dist.barrier()
    return TrainResult(run_dir, step, val, sample)


def _print_sample(cfg: TrainConfig, model, tokenizer, device) -> str:
    if not cfg.sample_tokens:
        return ""
    if cfg.fsdp and dist.is_distributed():
        print("(no sample under FSDP: run `hope generate --run DIR` on the checkpoint)", file=sys.stderr)
        return ""
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    print(f"\n--- sample ---\n{cfg.sample_prompt}", end="", flush=True)
    pieces = []
    for piece in stream(
        dist.unwrap(model),
        tokenizer,
        cfg.sample_prompt,
        cfg.sample_tokens,
        temperature=0.8,
        top_k=None,
        top_p=0.95,
        device=device,
        generator=generator,
    ):
        pieces.append(piece)
        print(piece, end="", flush=True)
    print("\n--------------", flush=True)
    return "".join(pieces)


def load_for_inference(run: str | Path, device: torch.device | str = "cpu"):
    """(model in eval mode, tokenizer, TrainConfig, step) from a run directory's newest checkpoint."""
    from hope.train.checkpoint import load_weights

    run_dir = resolve_run_dir(run)
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise FileNotFoundError(f"{run_dir} has no complete checkpoint yet")
    config = json.loads((run_dir / CONFIG).read_text())
    model = hope.build_model(hope.ModelConfig.from_dict(config["model"])).to(device)
    load_weights(ckpt, model)
    model.eval()
    tokenizer = load_tokenizer(run_dir / TOKENIZER_FILE)
    return model, tokenizer, load_train_config(run_dir), int(ckpt.name.removeprefix("step_"))
