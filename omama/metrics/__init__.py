"""The official metrics (docs/reference.md, Metrics) and the official ground truth."""

from omama.metrics.official import Metrics, evaluate
from omama.metrics.official_gt import build_official_gt, load_official_gt

__all__ = ["Metrics", "build_official_gt", "evaluate", "load_official_gt"]
