"""What the stale-record check of an `omama-precompute` rerun costs per image.

Builds a throw-away root of N images (a tiny frame, a masks and a boxes file each, 20 images
per take with 4 objects of RLEs of real length), fingerprints them into shards of 256
records as precompute does, then times `stale_records` over every image and candidate
record, with annotation.json already read (a rerun reads it anyway to check the pairs), on
a warm file-system cache: what a rerun on local disk pays; a cold network file system pays
its own `stat` latency three times per image on top.

    python scripts/stale_check_cost.py --images 20000 --out /tmp/stale_cost
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from omama.cache.manifest import Manifest
from omama.dataset.layout import Annotations
from omama.precompute.fingerprints import Inputs, all_records, stale_records, write_shard_prints
from omama.precompute.jobs import Job
from omama.rle import encode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--out", type=Path, default=Path("/tmp/stale_cost"))
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    root, cache = args.out / "root", args.out / "cache"
    masks_dir = root / "Masks_TEST_EXO2EGO"
    rng = np.random.default_rng(0)
    mask = (rng.random((1408, 1408)) > 0.999).astype(np.uint8)  # a long RLE
    rle = encode(mask)
    per_take, jobs = 20, []
    t0 = time.perf_counter()
    for i in range(args.images):
        take, frame = f"take{i // per_take:05d}", str(i % per_take)
        cam_dir = root / "processed" / take / "aria01"
        if i % per_take == 0:
            cam_dir.mkdir(parents=True)
            ann = {f"obj{k}": {"aria01": {str(f): rle for f in range(per_take)}} for k in range(4)}
            (root / "processed" / take / "annotation.json").write_text(json.dumps({"masks": ann}))
            (masks_dir / take / "aria01").mkdir(parents=True)
        (cam_dir / f"{frame}.jpg").write_bytes(b"x")
        (masks_dir / take / "aria01" / f"{frame}_masks.npz").write_bytes(b"x")
        (masks_dir / take / "aria01" / f"{frame}_boxes.npy").write_bytes(b"x")
        jobs.append(Job(f"{take}/aria01/{frame}", take, "aria01", frame, (), True, True))
    made = time.perf_counter() - t0
    inputs = Inputs(root, masks_dir, Annotations(root))
    manifest = Manifest(settings={})
    t0 = time.perf_counter()
    for s in range(0, len(jobs), 256):
        shard = f"exo2ego-test-{s // 256:05d}.h5"
        chunk = jobs[s : s + 256]
        prints = {}
        for j in chunk:
            prints[f"img/{j.key}"] = inputs.image(j.take, j.cam, j.frame)
            prints[f"cand/exo2ego/{j.key}"] = inputs.candidates(j.take, j.cam, j.frame)
            manifest.images[j.key] = shard
            manifest.candidates.setdefault("exo2ego", {})[j.key] = shard
        keys = [j.key for j in chunk]
        write_shard_prints(cache, shard, inputs, prints, keys, [("exo2ego", k) for k in keys])
    written = time.perf_counter() - t0
    t0 = time.perf_counter()
    stale = stale_records(cache, manifest, all_records(manifest), root, inputs.ann)
    checked = time.perf_counter() - t0
    n = args.images
    print(
        json.dumps(
            {
                "images": n,
                "records": 2 * n,
                "stale": len(stale),
                "setup_s": round(made, 1),
                "fingerprint_and_write_s": round(written, 2),
                "check_s": round(checked, 2),
                "check_us_per_image": round(1e6 * checked / n, 1),
                "check_s_at_300k_images": round(checked / n * 300_000, 1),
            }
        )
    )
    shutil.rmtree(args.out, ignore_errors=True)


if __name__ == "__main__":
    main()
