"""The dataset root (docs/reference.md, Dataset root): pair lists, splits, annotations, frames
and candidate files."""

from omama.dataset.candidates import load_candidates
from omama.dataset.images import preprocess_image, read_image
from omama.dataset.layout import Annotations, find_pairs_file, load_pairs, split_takes

__all__ = [
    "Annotations",
    "find_pairs_file",
    "load_candidates",
    "load_pairs",
    "preprocess_image",
    "read_image",
    "split_takes",
]
