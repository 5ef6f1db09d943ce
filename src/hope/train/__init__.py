"""Training harness: `TrainConfig`, the loop, checkpoints, distributed plumbing and run logging."""

from hope.train.config import TrainConfig
from hope.train.loop import TrainingDiverged, TrainResult, load_for_inference, load_train_config, train

__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "load_for_inference",
    "load_train_config",
    "train",
]
