"""omama: fast O-MaMa object mask matching between egocentric and exocentric views.

The names a notebook needs, one import away (README.md, "Python API"):

    from omama import Cache, build_matcher, score_samples
    cache = Cache("demo_out/cache")

Each stage's config dataclass (the same fields as its command's flags and its YAML section)
and its run function: `SynthConfig` / `generate` (and `write_download`), `PrepareConfig` /
`run_prepare`, `ProposalsConfig` / `run_proposals`, `load_official_gt` (what omama-gt
writes), `PrecomputeConfig` / `run_precompute` (and `dry_run`, `verify_cache`),
`TrainConfig` / `run_train`, `EvalConfig` / `run_eval`; `OmamaError` is the one error they
raise on bad input.

Names are imported on first use (PEP 562), so `import omama` stays cheap and a submodule
import (`omama.constants`) never pulls in torch. This root is the one module that may name
every stage (tests/test_architecture.py exempts it); nothing inside the package imports it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> the module that defines it (the one definition; this table only points there)
_EXPORTS = {
    "OmamaError": "omama.errors",
    "DIRECTIONS": "omama.constants",
    "SPLITS": "omama.constants",
    "SynthConfig": "omama.synth.config",
    "generate": "omama.synth.writing",
    "write_download": "omama.synth.download",
    "PrepareConfig": "omama.prepare.run",
    "run_prepare": "omama.prepare.run",
    "ProposalsConfig": "omama.proposals.options",
    "run_proposals": "omama.proposals.run",
    "load_official_gt": "omama.metrics.official_gt",
    "PrecomputeConfig": "omama.precompute.options",
    "run_precompute": "omama.precompute.run",
    "dry_run": "omama.precompute.estimate",
    "save_random_init": "omama.precompute.backbone",
    "Cache": "omama.cache.reader",
    "verify_cache": "omama.cache.verify",
    "OMaMaMatcher": "omama.matcher.model",
    "build_matcher": "omama.matcher.checkpoint",
    "TrainConfig": "omama.train.options",
    "run_train": "omama.train.loop",
    "EvalConfig": "omama.predict.options",
    "run_eval": "omama.predict.evaluate",
    "score_samples": "omama.predict.scoring",
    "Metrics": "omama.metrics.official",
    "evaluate": "omama.metrics.official",
}

__all__ = [
    "__version__",
    "OmamaError",
    "DIRECTIONS",
    "SPLITS",
    "SynthConfig",
    "generate",
    "write_download",
    "PrepareConfig",
    "run_prepare",
    "ProposalsConfig",
    "run_proposals",
    "load_official_gt",
    "PrecomputeConfig",
    "run_precompute",
    "dry_run",
    "save_random_init",
    "Cache",
    "verify_cache",
    "OMaMaMatcher",
    "build_matcher",
    "TrainConfig",
    "run_train",
    "EvalConfig",
    "run_eval",
    "score_samples",
    "Metrics",
    "evaluate",
]

if TYPE_CHECKING:  # for type checkers and editors; at run time `__getattr__` imports
    from omama.cache.reader import Cache
    from omama.cache.verify import verify_cache
    from omama.constants import DIRECTIONS, SPLITS
    from omama.errors import OmamaError
    from omama.matcher.checkpoint import build_matcher
    from omama.matcher.model import OMaMaMatcher
    from omama.metrics.official import Metrics, evaluate
    from omama.metrics.official_gt import load_official_gt
    from omama.precompute.backbone import save_random_init
    from omama.precompute.estimate import dry_run
    from omama.precompute.options import PrecomputeConfig
    from omama.precompute.run import run_precompute
    from omama.predict.evaluate import run_eval
    from omama.predict.options import EvalConfig
    from omama.predict.scoring import score_samples
    from omama.prepare.run import PrepareConfig, run_prepare
    from omama.proposals.options import ProposalsConfig
    from omama.proposals.run import run_proposals
    from omama.synth.config import SynthConfig
    from omama.synth.download import write_download
    from omama.synth.writing import generate
    from omama.train.loop import run_train
    from omama.train.options import TrainConfig


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'omama' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
