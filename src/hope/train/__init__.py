"""Training: `TrainConfig`, the loop, checkpoints and run logging (process groups: `hope.distributed`)."""

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
