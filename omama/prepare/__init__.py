"""`omama-prepare`: from the Ego-Exo4D download to a dataset root, as the official scripts
(EGO4D/ego-exo4d-relation, `correspondence/SegSwap/data`) make it, decoding each video once.

Modules, one job each:
  lzstring    LZString's URI-safe encoding of the relations files' masks (both ways)
  download    the download's layout and the relations reader; the official sizes
  annotation  annotation.json and the pair rule of `create_pairs.py`; bad-input records
  video       one video's header, and its sampled frames resized and written as JPEGs
  plan        per take: annotation, frame indices, cameras still to write, bad inputs
  run         PrepareConfig and `run_prepare`: the worker pool, publishing, outputs

Base level plus nothing: it comes before the dataset root that every other stage reads.
"""

from omama.prepare.run import PrepareConfig, PrepareSummary, run_prepare

__all__ = ["PrepareConfig", "PrepareSummary", "run_prepare"]
