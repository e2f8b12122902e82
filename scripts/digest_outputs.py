"""Digest a demo run's outputs so two builds can be compared byte for byte.

    python scripts/digest_outputs.py DEMO_OUT > digest.json

Every cache record (each `img/...` and `cand/...` group of every listed shard: its datasets'
bytes, dtypes, shapes and attributes) gets one sha256, independent of which shard file holds
it; the samples files, the run's checkpoints and the evaluation JSONs are hashed whole. Uses
only h5py and hashlib, so it reads caches of any omama version.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import h5py
import numpy as np


def _group_digest(g: h5py.Group) -> str:
    h = hashlib.sha256()
    for name in sorted(g.attrs):
        h.update(f"attr {name} {np.asarray(g.attrs[name]).tolist()}".encode())
    for name in sorted(g):
        ds = g[name]
        h.update(f"ds {name} {ds.dtype} {ds.shape}".encode())
        data = ds[()]
        if ds.dtype.kind == "O":
            h.update(json.dumps([v.decode() if isinstance(v, bytes) else v for v in data]).encode())
        else:
            h.update(np.ascontiguousarray(data).tobytes())
    return h.hexdigest()


def cache_records(cache: Path) -> dict[str, str]:
    manifest = json.loads((cache / "manifest.json").read_text())
    out: dict[str, str] = {}
    for shard in sorted(manifest["shards"]):
        with h5py.File(cache / "shards" / shard, "r") as f:

            def visit(name: str, obj, f=f) -> None:
                if isinstance(obj, h5py.Group) and any(
                    isinstance(v, h5py.Dataset) for v in obj.values()
                ):
                    out[name] = _group_digest(obj)

            f.visititems(visit)
    return out


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(demo_out: str) -> None:
    root = Path(demo_out)
    digest = {"records": cache_records(root / "cache"), "files": {}}
    for pattern in ("cache/samples/*.json", "run/*.pt", "eval/*.json"):
        for path in sorted(root.glob(pattern)):
            if path.name != "state.pt":  # holds the wall-clock-free but pickled history too
                digest["files"][str(path.relative_to(root))] = file_digest(path)
    json.dump(digest, sys.stdout, indent=1, sort_keys=True)


if __name__ == "__main__":
    main(sys.argv[1])
