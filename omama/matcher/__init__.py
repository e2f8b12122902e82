"""The O-MaMa matcher (docs/reference.md, Matcher): the model, its attention core, the fitted
visibility confidence (docs/visibility.md), and checkpoints (`build_matcher`)."""

from omama.matcher.checkpoint import build_matcher, load_matcher_state, save_matcher_state
from omama.matcher.model import OMaMaMatcher, matching_loss, predict

__all__ = [
    "OMaMaMatcher",
    "build_matcher",
    "load_matcher_state",
    "matching_loss",
    "predict",
    "save_matcher_state",
]
