"""The RLEs an evaluation reads, each image's read once while its take is in use."""

from __future__ import annotations

import json
from collections import OrderedDict

from omama.cache.reader import Cache

_TAKES = 2  # takes whose images' RLE texts are kept (pairs come take by take)


def take_of(key: str) -> str:
    """The take of an image key `take/cam/frame`."""
    return key.rsplit("/", 2)[0]


class RleReads:
    """`Cache.obj_rle`, `Cache.cand_rle` and `Cache.orig_hw` with equal results, for many
    pairs in a row: a dataset of RLE texts is read whole on first use (one HDF5 read instead
    of one per object or candidate) and kept while its take is among the last `_TAKES` takes
    used. Pairs come take by take, object by object: a take's images are all reused by its
    next object, however many there are, and a finished take goes whole."""

    def __init__(self, cache: Cache, direction: str = "") -> None:
        """`direction`: whose candidates `cand_rle` reads."""
        self.cache = cache
        self.direction = direction
        # take -> (kind, image key) -> RLE texts, or the image's original size
        self._takes: OrderedDict[str, dict[tuple[str, str], list | tuple]] = OrderedDict()

    def _get(self, kind: str, key: str) -> list | tuple:
        take = take_of(key)
        texts_of = self._takes.get(take)
        if texts_of is None:
            texts_of = self._takes[take] = {}
            if len(self._takes) > _TAKES:
                self._takes.popitem(last=False)
        else:
            self._takes.move_to_end(take)
        texts = texts_of.get((kind, key))
        if texts is None:
            if kind == "obj":
                texts = self.cache.obj_rle_texts(key)
            elif kind == "cand":
                texts = self.cache.cand_rle_texts(self.direction, key)
            else:
                texts = self.cache.orig_hw(key)
            texts_of[(kind, key)] = texts
        return texts

    def obj_rle(self, key: str, k: int) -> dict:
        return json.loads(self._get("obj", key)[k])

    def cand_rle(self, key: str, i: int) -> dict:
        return json.loads(self._get("cand", key)[i])

    def orig_hw(self, key: str) -> tuple[int, int]:
        return self._get("hw", key)  # type: ignore[return-value]

    @property
    def takes_held(self) -> list[str]:
        """The takes whose reads are kept now, oldest first."""
        return list(self._takes)
