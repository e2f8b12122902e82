"""`omama-train`: the matcher trained from a cache (TrainConfig, run_train)."""

from omama.train.loop import TrainConfig, run_train

__all__ = ["TrainConfig", "run_train"]
