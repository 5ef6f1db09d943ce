"""`TrainConfig`: everything a training run needs besides the model architecture, validated on creation."""

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from hope.data.corpus import BUILTIN
from hope.data.tokenizer import validate_spec
from hope.train.step import lr_factor

PRECISIONS = ("fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
# Sized so that `hope train` with no arguments finishes within ~5 minutes on 2 CPU cores (tiny HOPE).
DEFAULT_STEPS = 150


def _check_int(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"train.{name} must be an integer >= {minimum}, got {value!r}")


def _check_float(name: str, value: Any, lo: float, hi: float = math.inf, lo_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        bound = f"{'>' if lo_open else '>='} {lo}" + (f" and <= {hi}" if hi != math.inf else "")
        raise ValueError(f"train.{name} must be a finite number {bound}, got {value!r}")


@dataclass
class TrainConfig:
    """A training run. ``batch_size`` is the *global* batch: sequences per optimizer step summed over
    processes and gradient-accumulation micro-steps, so results do not depend on how many GPUs ran it."""

    preset: str = "hope"
    size: str = "tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. {"titans.chunk_size": 16}
    optimizer_args: dict[str, Any] = field(default_factory=dict)  # e.g. {"betas": [0.9, 0.99, 0.9]}
    data: list[str] = field(default_factory=lambda: [BUILTIN])
    tokenizer: str = "byte"
    val_fraction: float = 0.05
    seq_len: int = 128
    batch_size: int = 16
    grad_accum: int = 1
    steps: int | None = None  # give steps or tokens; neither means DEFAULT_STEPS
    tokens: int | None = None
    lr: float = 1e-3  # at 3e-3 the tiny HOPE preset reached NaN near step 77 in our runs; 1e-3 trains cleanly
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int | None = None  # None: 5% of the steps
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # 0 disables clipping
    optimizer: str = "adamw"
    precision: str = "fp32"
    compile: bool = False
    fsdp: bool = False
    device: str = "auto"
    eval_every: int = 100  # 0: evaluate only at the end
    eval_batches: int = 8
    save_every: int = 100  # 0: save only at the end
    keep_checkpoints: int = 2
    log_every: int = 10
    sample_prompt: str = "ROMEO:"
    sample_tokens: int = 200
    out: str | None = None  # run directory; None: runs/<time>-<preset>
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        from hope.config import PRESETS, SIZES

        if self.preset not in PRESETS:
            raise ValueError(f"train.preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        if self.size not in SIZES:
            raise ValueError(f"train.size must be one of {list(SIZES)}, got {self.size!r}")
        if not isinstance(self.model_overrides, dict):
            raise ValueError(  # noqa: TRY004 - every config error is a ValueError naming the field
                f"train.model_overrides must be a dict of model fields, got {self.model_overrides!r}"
            )
        if not self.data or not all(isinstance(d, str) and d for d in self.data):
            raise ValueError(
                f"train.data must be a non-empty list of paths, globs or {BUILTIN!r}, got {self.data!r}"
            )
        try:
            validate_spec(self.tokenizer)
        except ValueError as e:
            raise ValueError(f"train.{e}") from None
        _check_float("val_fraction", self.val_fraction, 0.0, 0.5, lo_open=True)
        for name in ("seq_len", "batch_size", "grad_accum", "eval_batches", "keep_checkpoints", "log_every"):
            _check_int(name, getattr(self, name), 1)
        for name in ("eval_every", "save_every", "sample_tokens", "seed"):
            _check_int(name, getattr(self, name), 0)
        if self.steps is not None and self.tokens is not None:
            raise ValueError("train.steps and train.tokens are alternatives; give one")
        if self.steps is not None:
            _check_int("steps", self.steps, 1)
        if self.tokens is not None:
            _check_int("tokens", self.tokens, 1)
        if self.warmup_steps is not None:
            _check_int("warmup_steps", self.warmup_steps, 0)
            if self.warmup_steps >= self.total_steps:
                raise ValueError(
                    f"train.warmup_steps ({self.warmup_steps}) must be below the step count "
                    f"({self.total_steps})"
                )
        _check_float("lr", self.lr, 0.0, lo_open=True)
        _check_float("min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        _check_float("weight_decay", self.weight_decay, 0.0)
        _check_float("grad_clip", self.grad_clip, 0.0)
        from hope.optim import OPTIMIZERS

        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"train.optimizer must be one of {list(OPTIMIZERS)}, got {self.optimizer!r}")
        from hope.optim import OPTIMIZER_DEFAULTS

        accepted = set(OPTIMIZER_DEFAULTS[self.optimizer]) - {"lr", "weight_decay"}
        unknown = sorted(set(self.optimizer_args) - accepted)
        if unknown:
            raise ValueError(
                f"train.optimizer_args {unknown} are not hyper-parameters of {self.optimizer}; "
                f"accepted: {sorted(accepted)} (lr and weight_decay have their own options)"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(f"train.precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.device not in DEVICES:
            raise ValueError(f"train.device must be one of {list(DEVICES)}, got {self.device!r}")
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"train.batch_size ({self.batch_size}) must be divisible by train.grad_accum "
                f"({self.grad_accum}): "
                "batch_size is the global batch per optimizer step"
            )

    @property
    def total_steps(self) -> int:
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
