"""`TrainConfig`: everything a training run needs besides the model architecture, validated on creation."""

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from hope.checks import check_choice, check_int, check_number
from hope.data.corpus import BUILTIN
from hope.data.tokens import check_sources
from hope.train.step import lr_factor

PRECISIONS = ("fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
# `hope train` with no arguments (HOPE at size quick, batch 8 x 128 bytes): 320 steps, ~330K bytes, take
# ~95 s on an idle 2-core CPU (0.27 s a step and ~10 s of start-up), which with the ~50 s install leaves
# the quick start inside 3 minutes with room for a slower or shared machine. More steps pay: 340
# validated at 2.930 bits/byte, 360 at 2.872, 380 at 2.850 (issue 13, 2026-12-01).
DEFAULT_STEPS = 320


def _option(default: Any, help: str, resumable: bool = False, **bounds: Any) -> Any:
    """A field that is also a ``hope train`` option: its help, whether ``--resume`` may change it, and
    its bounds (``lo`` with ``lo_open`` and ``hi`` for numbers; ints: ``lo`` is the minimum)."""
    return field(default=default, metadata=_about(help, resumable, **bounds))


def _about(help: str, resumable: bool = False, **bounds: Any) -> dict[str, Any]:
    return {"help": help, "resumable": resumable, **bounds}


@dataclass
class TrainConfig:
    """A training run. ``batch_size`` is the *global* batch: sequences per optimizer step summed over
    processes and gradient-accumulation micro-steps, so results do not depend on how many GPUs ran it.

    Every field but the two dictionaries is a ``hope train`` option of the same name (``seq_len``:
    ``--seq-len``), with the help text, bounds and ``--resume`` rule kept here."""

    preset: str = _option(
        "hope",
        "architecture preset: hope, hope-no-cms, hope-no-selfmod, hope-no-surprise, hope-attention, "
        "titans, transformer, linear-attention, deltanet, gated-deltanet",
    )
    size: str = _option(
        "quick", "size preset: quick (one tiny block, the CPU quick start), tiny, small, 125m, 350m, 760m"
    )
    model_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. {"titans.chunk_size": 16}
    optimizer_args: dict[str, Any] = field(default_factory=dict)  # e.g. {"betas": [0.9, 0.99, 0.9]}
    data: list[str] = field(
        default_factory=lambda: [BUILTIN],
        metadata=_about(
            "training text: builtin, .txt/.jsonl files, pre-tokenised .bin (uint16) files, or globs"
        ),
    )
    tokenizer: str = _option(
        "byte", "byte, bpe:N (trained on the training text, saved in the run), or a tokenizer.json"
    )
    val_fraction: float = _option(
        0.05, "fraction of the data held out for validation", lo=0.0, lo_open=True, hi=0.5
    )
    seq_len: int = _option(128, "tokens per training sequence", lo=1)
    # Small batches, many steps: after 205K tokens tiny HOPE (lr 1e-2) was at 3.20 bits/byte with batch 8,
    # 3.42 with batch 16.
    batch_size: int = _option(8, "global sequences per optimizer step", lo=1)
    grad_accum: int = _option(1, "micro-batches accumulated per optimizer step", lo=1)
    # Give steps, tokens or minutes; none of them means DEFAULT_STEPS.
    steps: int | None = _option(None, f"optimizer steps (default: {DEFAULT_STEPS})", resumable=True, lo=1)
    tokens: int | None = _option(
        None, "training tokens instead of --steps (rounded up to whole steps)", resumable=True, lo=1
    )
    minutes: float | None = _option(
        None,
        "wall-clock budget instead of --steps: the first steps are timed, then the step count is fixed so "
        "that training and its evaluations end within M minutes (startup, data and the sample come on top)",
        lo=0.0,
        lo_open=True,
    )
    # Tiny HOPE with Titans chunks of 16-32 trains cleanly at 1e-2 (a NaN once seen at 3e-3 was with
    # chunks of 8, batch 16) and reached 3.42 bits/byte after 100 steps of 16 x 128 where 3e-3 reached 3.55.
    lr: float = _option(1e-2, "peak learning rate", lo=0.0, lo_open=True)
    min_lr_ratio: float = _option(
        0.1, "final learning rate as a fraction of --lr (cosine schedule)", lo=0.0, hi=1.0
    )
    warmup_steps: int | None = _option(None, "linear warm-up steps (default: 5%% of the steps)", lo=0)
    weight_decay: float = _option(0.1, "decoupled weight decay on matrices", lo=0.0)
    grad_clip: float = _option(1.0, "clip the global gradient norm to this (0: off)", lo=0.0)
    optimizer: str = _option(
        "adamw",
        "adamw, muon, m3, dgd, delta_momentum or deep_momentum (hope.optim); their "
        "hyper-parameters as dotted options, e.g. --optim.betas 0.9,0.999,0.9 --optim.frequency 10 "
        "--optim.alpha 0.5 for m3 (defaults: hope.optim.OPTIMIZER_DEFAULTS)",
    )
    precision: str = _option("fp32", "fp32 or bf16 (autocast)", choices=PRECISIONS)
    compile: bool = _option(False, "torch.compile the model", resumable=True)
    cuda_graphs: bool = _option(
        False,
        "replay each micro-batch's forward and backward from CUDA graphs (one GPU process): about 4x "
        "faster where a step waits on kernel launches (small HOPE models), nothing where the GPU is "
        "already busy (docs/PERFORMANCE.md)",
        resumable=True,
    )
    fsdp: bool = _option(False, "under torchrun, shard with FSDP2 instead of DDP")
    device: str = _option("auto", "auto, cpu or cuda", resumable=True, choices=DEVICES)
    eval_every: int = _option(100, "validate every N steps (0: only at the end)", resumable=True, lo=0)
    eval_batches: int = _option(8, "validation batches per evaluation", resumable=True, lo=1)
    save_every: int = _option(100, "checkpoint every N steps (0: only at the end)", resumable=True, lo=0)
    keep_checkpoints: int = _option(2, "how many recent checkpoints to keep", resumable=True, lo=1)
    log_every: int = _option(10, "write metrics every N steps", resumable=True, lo=1)
    sample_prompt: str = _option("ROMEO:", "prompt for the sample printed after training", resumable=True)
    sample_tokens: int = _option(200, "tokens to sample after training (0: none)", resumable=True, lo=0)
    out: str | None = _option(
        None, "run directory (default: runs/<date>-<time>-<preset>, and runs/latest points to it)"
    )
    seed: int = _option(0, "random seed (model init, data order, sampling)", lo=0)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        from hope.config import PRESETS, SIZES

        check_choice("train.preset", self.preset, sorted(PRESETS))
        check_choice("train.size", self.size, SIZES)
        if not isinstance(self.model_overrides, dict):
            raise ValueError(  # noqa: TRY004 - every config error is a ValueError naming the field
                f"train.model_overrides must be a dict of model fields, got {self.model_overrides!r}"
            )
        check_sources("train", self.data, self.tokenizer)
        for f in dataclasses.fields(self):
            value, about = getattr(self, f.name), f.metadata
            if "choices" in about:
                check_choice(f"train.{f.name}", value, about["choices"])
            elif "lo" in about and value is not None and f.type in (float, float | None):
                hi = about.get("hi", math.inf)
                check_number(f"train.{f.name}", value, about["lo"], hi, about.get("lo_open", False))
            elif "lo" in about and value is not None:
                check_int(f"train.{f.name}", value, about["lo"])
        given = [name for name in ("steps", "tokens", "minutes") if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"train.{' and train.'.join(given)} are alternatives; give one")
        # A --minutes run checks its warm-up once the budget has fixed the step count.
        if self.minutes is None and self.warmup_steps is not None and self.warmup_steps >= self.total_steps:
            raise ValueError(
                f"train.warmup_steps ({self.warmup_steps}) must be below the step count ({self.total_steps})"
            )
        from hope.optim import OPTIMIZER_DEFAULTS, OPTIMIZERS

        check_choice("train.optimizer", self.optimizer, OPTIMIZERS)
        accepted = set(OPTIMIZER_DEFAULTS[self.optimizer]) - {"lr", "weight_decay"}
        unknown = sorted(set(self.optimizer_args) - accepted)
        if unknown:
            raise ValueError(
                f"train.optimizer_args {unknown} are not hyper-parameters of {self.optimizer}; "
                f"accepted: {sorted(accepted)} (lr and weight_decay have their own options)"
            )
        if self.cuda_graphs and (self.device == "cpu" or self.fsdp):
            raise ValueError(
                "train.cuda_graphs needs one GPU process: it cannot run with "
                + ("train.device 'cpu'" if self.device == "cpu" else "train.fsdp")
            )
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"train.batch_size ({self.batch_size}) must be divisible by train.grad_accum "
                f"({self.grad_accum}): batch_size is the global batch per optimizer step"
            )

    @property
    def total_steps(self) -> int:
        """The run's step count. A ``minutes`` run follows DEFAULT_STEPS' schedule for the few steps that
        time it (`hope.train.budget`), then the count the budget allows is written into ``steps``."""
        if self.tokens is not None:
            return max(1, -(-self.tokens // (self.batch_size * self.seq_len)))
        return self.steps if self.steps is not None else DEFAULT_STEPS

    @property
    def total_warmup(self) -> int:
        return self.warmup_steps if self.warmup_steps is not None else self.total_steps // 20

    def micro_batch(self, world_size: int) -> int:
        """Sequences per forward pass on one process."""
        per_step = self.batch_size // self.grad_accum
        if per_step % world_size:
            raise ValueError(
                f"train.batch_size / grad_accum = {per_step} sequences must split evenly over "
                f"{world_size} processes"
            )
        return per_step // world_size

    def model_config(self, vocab_size: int):
        """The resolved `ModelConfig`: preset at size, the tokeniser's vocabulary, then the overrides."""
        from hope.config import ModelConfig

        return ModelConfig.preset(self.preset, self.size, vocab_size=vocab_size, **self.model_overrides)

    def lr_factor(self, step: int) -> float:
        """``lr``'s multiplier at 0-based ``step``: linear warm-up, then cosine decay to ``min_lr_ratio``."""
        return lr_factor(step, self.total_steps, self.total_warmup, self.min_lr_ratio)

    def lr_at(self, step: int) -> float:
        """Learning rate at 0-based ``step``."""
        return self.lr * self.lr_factor(step)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown train field(s) {unknown}; accepted: {sorted(known)}")
        return cls(**data)
