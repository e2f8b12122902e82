"""The cache: HDF5 shards, the manifest that lists them, and `Cache`, the one way to read them.

Layout and format: docs/cache.md; the record format itself is `schema.py`."""

from omama.cache.reader import Cache
from omama.cache.records import Sample
from omama.cache.verify import verify_cache

__all__ = ["Cache", "Sample", "verify_cache"]
