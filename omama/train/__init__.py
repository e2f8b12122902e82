"""`omama-train`: the matcher trained from a cache (TrainConfig, run_train)."""

from omama.train.loop import run_train
from omama.train.options import TrainConfig

__all__ = ["TrainConfig", "run_train"]
