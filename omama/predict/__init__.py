"""`omama-eval`: every candidate scored, predictions in the challenge format, the metrics."""

from omama.predict.evaluate import run_eval
from omama.predict.options import EvalConfig
from omama.predict.scoring import Scored, score_samples

__all__ = ["EvalConfig", "Scored", "run_eval", "score_samples"]
