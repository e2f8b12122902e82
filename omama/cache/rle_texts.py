"""The RLEs an evaluation reads, each image's read once while it is in use."""

from __future__ import annotations

import json
from collections import OrderedDict

from omama.cache.reader import Cache

_IMAGES = 256  # images whose RLE texts are kept (a few hundred kB each at most)


class RleReads:
    """`Cache.obj_rle`, `Cache.cand_rle` and `Cache.orig_hw` with equal results, for many
    pairs in a row: a dataset of RLE texts is read whole on first use (one HDF5 read instead
    of one per object or candidate) and kept for the last `_IMAGES` images."""

    def __init__(self, cache: Cache, direction: str = "") -> None:
        """`direction`: whose candidates `cand_rle` reads."""
        self.cache = cache
        self.direction = direction
        self._texts: OrderedDict[tuple[str, str], list] = OrderedDict()
        self._hw: dict[str, tuple[int, int]] = {}

    def _get(self, kind: str, key: str) -> list:
        texts = self._texts.get((kind, key))
        if texts is None:
            if kind == "obj":
                texts = self.cache.obj_rle_texts(key)
            else:
                texts = self.cache.cand_rle_texts(self.direction, key)
            self._texts[(kind, key)] = texts
            if len(self._texts) > _IMAGES:
                self._texts.popitem(last=False)
        else:
            self._texts.move_to_end((kind, key))
        return texts

    def obj_rle(self, key: str, k: int) -> dict:
        return json.loads(self._get("obj", key)[k])

    def cand_rle(self, key: str, i: int) -> dict:
        return json.loads(self._get("cand", key)[i])

    def orig_hw(self, key: str) -> tuple[int, int]:
        hw = self._hw.get(key)
        if hw is None:
            hw = self._hw[key] = self.cache.orig_hw(key)
        return hw
