"""A small synthetic dataset in the exact Ego-Exo4D correspondence layout (`omama-synth`).

Ego-Exo4D is licensed and absent from development machines, so tests, demos and benchmarks
run on scenes made here. Each take is one textured world plane (a table or floor) with a few
flat, distinctly coloured and patterned objects lying on it that move a little between frames.
Every camera sees that plane through its own homography, so a matcher can learn the
correspondence. Candidate masks imitate FastSAM proposals at the crop size.

Modules, one job each:
  config     SynthConfig (flags, YAML `synth:` keys and Python API) and SynthSummary
  world      the textured plane and the objects on it
  cameras    cameras and the homographies through which they see the plane
  scene      rendering the views of a take, occluders, visibility
  proposals  imperfect candidate masks and distractors
  writing    frames, annotation.json, candidate files, pair lists, split.json, takes.json,
             synth_meta.json; `generate`
  download   the same takes as an Ego-Exo4D download (videos, relations, takes.json)

Base level plus omama.dataset, and omama.prepare's download layout and LZString writer:
nothing here imports precompute, cache, loader, train, predict or metrics.
"""

from omama.synth.config import SynthConfig, SynthSummary
from omama.synth.writing import SETTINGS, generate, save_npz_deterministic

__all__ = ["SETTINGS", "SynthConfig", "SynthSummary", "generate", "save_npz_deterministic"]
