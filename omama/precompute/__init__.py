"""Precompute: every unique image of a split through the backbone once, into the cache.

options (what a run is asked) -> jobs (pairs -> unique images -> jobs, samples) -> build (the
compute loop of one part) -> parts (where a part lists its shards; the merge) -> run (the one
orchestration: a plain run is part 0 of 1); estimate is `--dry-run`. backbone, descriptors,
adjacency and subset hold the math.
"""

from omama.precompute.backbone import save_random_init
from omama.precompute.estimate import dry_run
from omama.precompute.options import PrecomputeConfig, PrecomputeReport
from omama.precompute.run import run_precompute

__all__ = ["PrecomputeConfig", "PrecomputeReport", "dry_run", "run_precompute", "save_random_init"]
