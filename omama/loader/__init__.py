"""Training and evaluation batches read from the cache in place."""

from omama.loader.eval_samples import EvalSamples
from omama.loader.train_samples import TrainSamples

__all__ = ["EvalSamples", "TrainSamples"]
