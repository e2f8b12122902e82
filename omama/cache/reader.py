"""Read side of the cache: the only thing training and evaluation need (no dataset root)."""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np

from omama.cache import quant
from omama.cache.manifest import Manifest, load_manifest, load_samples, manifest_path
from omama.cache.records import Sample
from omama.cache.shards import ShardReader, read_rle
from omama.errors import OmamaError, bad_file

log = logging.getLogger(__name__)


def read_tokens(group: h5py.Group, out: np.ndarray | None = None) -> np.ndarray:
    """An image record's patch tokens as float16 [T, 768], whichever way they are stored.

    The one place that knows the 8-bit layout (`tokens` int8 + `token_scale`): training,
    evaluation and a later precompute run all read tokens through here.
    """
    ds = group["tokens"]
    if "token_scale" in group:
        return quant.dequantize(ds[()], group["token_scale"][()], out)
    if out is None:
        return ds[()]
    ds.read_direct(out)
    return out


class Cache:
    """A finished cache folder; picklable, so DataLoader workers each open their own handles."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        manifest = load_manifest(self.path)
        if manifest is None:
            raise bad_file(manifest_path(self.path), "no cache here; run omama-precompute first")
        self.manifest: Manifest = manifest
        self.shards = ShardReader(self.path)

    # --- samples -------------------------------------------------------------------------
    def samples(self, direction: str, split: str) -> list[Sample]:
        """The split's samples whose images are all cached (others were skipped as bad input)."""
        samples = load_samples(self.path, direction, split)
        cands = self.manifest.candidates.get(direction, {})
        kept = [s for s in samples if s.src in self.manifest.images and s.dst in cands]
        if len(kept) < len(samples):
            report = self.path / "reports" / f"bad_{direction}_{split}.json"
            log.warning(
                "%s %s: skipping %d of %d pairs whose images were not cached%s",
                direction,
                split,
                len(samples) - len(kept),
                len(samples),
                f" (bad input, listed in {report})" if report.exists() else "",
            )
        if not kept:
            raise OmamaError(f"{self.path}: no usable {direction} {split} samples in this cache")
        return kept

    # --- records -------------------------------------------------------------------------
    def image_group(self, key: str) -> h5py.Group:
        shard = self.manifest.images.get(key)
        if shard is None:
            raise bad_file(manifest_path(self.path), f"image {key} is not in this cache")
        return self.shards.group(shard, f"img/{key}")

    def cand_group(self, direction: str, key: str) -> h5py.Group:
        shard = self.manifest.candidates.get(direction, {}).get(key)
        if shard is None:
            raise bad_file(
                manifest_path(self.path), f"{direction} candidates of {key} are not in this cache"
            )
        return self.shards.group(shard, f"cand/{direction}/{key}")

    def grid(self, key: str) -> tuple[int, int]:
        return tuple(int(v) for v in self.image_group(key).attrs["grid"])

    def tokens(self, key: str, out: np.ndarray | None = None) -> np.ndarray:
        return read_tokens(self.image_group(key), out)

    def obj_desc(self, key: str, k: int) -> np.ndarray:
        return self.image_group(key)["obj_desc"][k]

    def obj_rle(self, key: str, k: int) -> dict:
        return read_rle(self.image_group(key)["obj_rle"], k)

    def cand_rle(self, direction: str, key: str, i: int) -> dict:
        return read_rle(self.cand_group(direction, key)["rle"], i)

    def role_grids(self, samples: list[Sample]) -> tuple[tuple[int, int], tuple[int, int]]:
        """(destination grid, source grid): one each, since the matcher's position embeddings
        are tied to a grid. A camera's frames share one size, so one image per camera is
        read; mixed grids are refused with the offending image named."""
        grids = []
        for attr in ("dst", "src"):
            first = getattr(samples[0], attr)
            want = self.grid(first)
            per_camera = {getattr(s, attr).rsplit("/", 1)[0]: getattr(s, attr) for s in samples}
            for key in per_camera.values():
                got = self.grid(key)
                if got != want:
                    raise OmamaError(
                        f"{self.path}: image {key} has a {got[0]}x{got[1]} patch grid but "
                        f"{first} has {want[0]}x{want[1]}; all {attr} images must share one"
                    )
            grids.append(want)
        return grids[0], grids[1]

    def close(self) -> None:
        self.shards.close()
