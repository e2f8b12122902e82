"""Shards, manifest, lock and atomic writes: nothing half-written is ever read as good."""

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from omama.cache.manifest import Manifest, cache_lock, check_settings, load_manifest, save_manifest
from omama.cache.reader import Cache
from omama.cache.records import CandidateRecord, ImageRecord
from omama.cache.shards import ShardReader
from omama.cache.toc import Toc, toc_problems
from omama.cache.verify import verify_cache
from omama.cache.writer import ShardWriter
from omama.errors import OmamaError
from omama.files import atomic_path, write_json
from omama.precompute.parts import Fragment, WholeSplit, load_fragment, save_fragment


def image_record(rng, k=2):
    return ImageRecord(
        tokens=rng.standard_normal((12, 768)).astype(np.float16),
        image=rng.integers(0, 255, (42, 56, 3), dtype=np.uint8),
        grid=(3, 4),
        orig_hw=(45, 60),
        obj_names=[f"obj {i}" for i in range(k)],
        obj_desc=rng.standard_normal((k, 1536)).astype(np.float32),
        obj_box=rng.random((k, 4)).astype(np.float32),
        obj_rle=[json.dumps({"size": [90, 120], "counts": "abc"})] * k,
    )


def cand_record(rng, n=5):
    return CandidateRecord(
        desc=rng.standard_normal((n, 1536)).astype(np.float32),
        boxes=rng.random((n, 4)).astype(np.float32),
        adj=rng.random((n, n)) < 0.5,
        rle=[json.dumps({"size": [42, 56], "counts": str(i)}) for i in range(n)],
        anchor=np.array([1, -1], dtype=np.int32),
    )


def lister(manifest: Manifest, save_to: Path | None = None):
    """A shard writer's publish callback listing each shard in `manifest` (and saving it)."""

    def publish(name, info, images, cands):
        manifest.shards[name] = info
        manifest.images.update({k: name for k in images})
        for d, k in cands:
            manifest.candidates.setdefault(d, {})[k] = name
        if save_to is not None:
            save_manifest(save_to, manifest)

    return publish


def test_shards_roll_publish_and_read_back(tmp_path):
    rng = np.random.default_rng(0)
    manifest = Manifest(settings={"a": 1})

    writer = ShardWriter(tmp_path, "exo2ego-train", lister(manifest, tmp_path), max_records=3)
    recs = {f"t/cam01/{i}": (image_record(rng), cand_record(rng)) for i in range(4)}
    for key, (img, cand) in recs.items():
        writer.add_image(key, img)
        writer.add_candidates("exo2ego", key, cand)
    assert len(manifest.shards) == 2  # 8 records, 3 per shard -> 2 published, 1 open
    writer.close_shard()
    assert len(manifest.shards) == 3
    assert not list((tmp_path / "shards").glob("*.tmp"))
    cache = Cache(tmp_path)
    for key, (img, cand) in recs.items():
        np.testing.assert_array_equal(cache.tokens(key), img.tokens)
        np.testing.assert_array_equal(cache.obj_desc(key, 1), img.obj_desc[1])
        rec = cache.cands("exo2ego", key)
        np.testing.assert_array_equal(cache.whole(rec, "adj").astype(bool), cand.adj)
        np.testing.assert_array_equal(cache.rows(rec, "desc", [1, 3]), cand.desc[[1, 3]])
        assert cache.cand_rle("exo2ego", key, 2) == json.loads(cand.rle[2])
        assert cache.grid(key) == (3, 4)


def _shard_with_records(folder: Path, n: int = 4) -> tuple[Manifest, dict]:
    rng = np.random.default_rng(1)
    manifest = Manifest(settings={"a": 1})
    writer = ShardWriter(folder, "exo2ego-train", lister(manifest, folder), max_records=2 * n)
    recs = {
        f"t/cam01/{i}": (image_record(rng, k=i % 3), cand_record(rng, n=i + 1)) for i in range(n)
    }
    for key, (img, cand) in recs.items():
        writer.add_image(key, img)
        writer.add_candidates("exo2ego", key, cand)
    writer.close_shard()
    return manifest, recs


def test_every_record_of_a_shard_is_in_its_table_of_contents(tmp_path):
    """Each row of `toc` points at the dataset's own bytes: read straight from the file at the
    row's offset with its shape and dtype, they equal what h5py reads."""
    manifest, recs = _shard_with_records(tmp_path)
    (shard,) = manifest.shards
    path = tmp_path / "shards" / shard
    with h5py.File(path, "r") as f:
        toc = Toc.load(f)
        records = [f"img/{k}" for k in recs] + [f"cand/exo2ego/{k}" for k in recs]
        assert sorted(p.decode() for p in set(toc.paths)) == sorted(records)
        assert toc_problems(f) == []
        for rec in records:
            fields = toc.fields(rec)
            assert set(fields) == set(f[rec])
            for name, ext in fields.items():
                ds = f[rec][name]
                if ext is None:  # strings and empty datasets: HDF5 reads them
                    assert h5py.check_string_dtype(ds.dtype) or ds.size == 0, (rec, name)
                    continue
                assert all(type(v) is int for v in (ext.offset, ext.row_bytes, *ext.shape))
                raw = np.fromfile(path, ext.dtype, int(np.prod(ext.shape)), offset=ext.offset)
                np.testing.assert_array_equal(raw.reshape(ext.shape), ds[()])
        assert toc.fields("img/t/cam01/9") is None and toc.fields("img/t/cam01/") is None


def test_a_shard_without_a_table_of_contents_reads_the_same(tmp_path):
    manifest, recs = _shard_with_records(tmp_path)
    (shard,) = manifest.shards
    with h5py.File(tmp_path / "shards" / shard, "r+") as f:  # as written before the table
        del f["toc"]
    cache = Cache(tmp_path)
    assert cache.shards.toc(shard) is None
    for key, (img, cand) in recs.items():
        np.testing.assert_array_equal(cache.tokens(key), img.tokens)
        if img.obj_names:
            np.testing.assert_array_equal(cache.obj_desc(key, 0), img.obj_desc[0])
        rec = cache.cands("exo2ego", key)
        np.testing.assert_array_equal(cache.rows(rec, "desc", [0]), cand.desc[[0]])
        assert cache.cand_rle("exo2ego", key, 0) == json.loads(cand.rle[0])


def test_verify_names_a_table_of_contents_that_disagrees_with_its_shard(tmp_path):
    manifest, recs = _shard_with_records(tmp_path)
    (shard,) = manifest.shards
    with h5py.File(tmp_path / "shards" / shard, "r+") as f:
        table = Toc.load(f).table.copy()
        row = int(np.flatnonzero(table["field"] == b"tokens")[0])
        table[row]["offset"] += 2
        raw = f["toc"][()]
        f["toc"][...] = np.concatenate([raw[:16], np.frombuffer(table.tobytes(), np.uint8)])
        problems = toc_problems(f)
    assert problems == [f"toc disagrees with the datasets of {table[row]['path'].decode()}"]
    with h5py.File(tmp_path / "shards" / shard, "r+") as f:  # cut short: one line on reading
        del f["toc"]
        f["toc"] = raw[:-3]
    with pytest.raises(OmamaError, match=rf"{shard}: unreadable table of contents"):
        Cache(tmp_path).tokens(next(iter(recs)))


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_reader_of_many_shards_keeps_at_most_max_open_open(tmp_path):
    rng = np.random.default_rng(0)
    manifest = Manifest(settings={"a": 1})

    writer = ShardWriter(tmp_path, "exo2ego-train", lister(manifest), max_records=1)
    recs = {f"t/cam01/{i}": image_record(rng) for i in range(12)}
    for key, img in recs.items():
        writer.add_image(key, img)
    writer.close_shard()
    save_manifest(tmp_path, manifest)
    assert len(manifest.shards) == 12
    cache = Cache(tmp_path)
    cache.shards = ShardReader(tmp_path, max_open=3)
    before = _fds()
    most = 0
    for _ in range(2):  # twice: every shard closed on eviction and opened again
        for key, img in recs.items():
            np.testing.assert_array_equal(cache.tokens(key), img.tokens)
            assert cache.obj_rle(key, 1) == json.loads(img.obj_rle[1])
            most = max(most, _fds() - before)
            assert cache.shards.open_count <= 3
    assert most <= 3
    cache.close()
    assert _fds() <= before


def test_verify_shard_by_shard_in_workers_finds_the_same_problems(tmp_path):
    rng = np.random.default_rng(0)
    manifest = Manifest(settings={"a": 1})

    writer = ShardWriter(tmp_path, "exo2ego-train", lister(manifest), max_records=2)
    for i in range(6):
        writer.add_image(f"t/cam01/{i}", image_record(rng))
        writer.add_candidates("exo2ego", f"t/cam01/{i}", cand_record(rng))
    writer.close_shard()
    save_manifest(tmp_path, manifest)
    assert verify_cache(tmp_path, workers=2).problems == []
    names = sorted(manifest.shards)
    with open(tmp_path / "shards" / names[1], "r+b") as fh:  # same size, other bytes
        fh.seek(-8, 2)
        fh.write(b"\xff" * 8)
    manifest.images["t/cam01/9"] = names[4]  # listed, never written
    manifest.candidates["exo2ego"]["t/cam01/8"] = "nowhere.h5"
    save_manifest(tmp_path, manifest)
    one, two = verify_cache(tmp_path, workers=1), verify_cache(tmp_path, workers=2)
    assert one.problems == two.problems
    assert len(one.problems) == 3
    assert "sha256 differs" in one.problems[0] and names[1] in one.problems[0]
    assert one.problems[1].endswith(f"{names[4]}: record img/t/cam01/9 is missing")
    assert one.problems[2].endswith("cand/exo2ego/t/cam01/8 points at unlisted nowhere.h5")
    assert (one.shards, one.images, one.candidate_sets) == (6, 7, 7)


def test_shards_are_listed_by_journal_lines_and_the_manifest_rewritten_rarely(tmp_path):
    listing = WholeSplit(tmp_path, "exo2ego-train")
    work = listing.open({"a": 1})
    assert load_manifest(tmp_path) == work  # a fresh cache: written at once, empty
    rewrites = []
    for i in range(9):
        before = (tmp_path / "manifest.json").stat().st_mtime_ns
        info = {"sha256": f"h{i}", "bytes": i}
        listing.publish(work, f"s{i}.h5", info, [f"t/c/{i}"], [("exo2ego", f"t/c/{i}")])
        if (tmp_path / "manifest.json").stat().st_mtime_ns != before:
            rewrites.append(i + 1)
        assert load_manifest(tmp_path) == work  # manifest.json + journal: every shard so far
    assert rewrites == [1, 2, 4, 8]  # written whole as the listing doubles
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert len(on_disk["shards"]) == 8 and (tmp_path / "manifest.journal").exists()
    # a run killed while appending leaves a torn last line: ignored, its shard not listed
    with open(tmp_path / "manifest.journal", "a") as fh:
        fh.write('{"shard": "s9.h5", "info"')
    assert load_manifest(tmp_path) == work
    # the resumed run writes the listing whole and drops the journal
    again = WholeSplit(tmp_path, "exo2ego-train").open({"a": 1})
    assert again == work and not (tmp_path / "manifest.journal").exists()
    assert json.loads((tmp_path / "manifest.json").read_text()) == work.to_json()
    (tmp_path / "manifest.journal").write_text("not json\n")
    with pytest.raises(OmamaError, match="manifest.journal: line 1 is not a shard listing"):
        load_manifest(tmp_path)


def test_shard_names_count_on_from_the_highest_present(tmp_path):
    rng = np.random.default_rng(0)
    names = []
    shards = tmp_path / "shards"
    shards.mkdir()
    for name in ("p-00000.h5", "p-00007.h5", "p.part0of2-00009.h5", "q-00011.h5"):
        (shards / name).write_bytes(b"")
    writer = ShardWriter(tmp_path, "p", lambda name, *a: names.append(name), max_records=1)
    writer.add_image("t/c/0", image_record(rng))
    writer.add_image("t/c/1", image_record(rng))
    assert names == ["p-00008.h5", "p-00009.h5"]


def test_unfinished_shard_is_dropped_and_never_listed(tmp_path):
    rng = np.random.default_rng(0)
    published = []
    writer = ShardWriter(tmp_path, "p", lambda *a: published.append(a), max_records=10)
    writer.add_image("t/c/0", image_record(rng))
    # the process dies here: a .tmp shard stays on disk, unlisted
    assert list((tmp_path / "shards").glob("*.tmp")) and not published
    ShardWriter(tmp_path, "p", lambda *a: None)  # the rerun removes it
    assert not list((tmp_path / "shards").glob("*.tmp"))


def test_settings_mismatch_is_refused(tmp_path):
    path = tmp_path / "manifest.json"
    check_settings(path, {"w": "abc", "patch": 14}, {"w": "abc", "patch": 14})
    with pytest.raises(OmamaError, match="manifest.json: cache was built with w='abc'"):
        check_settings(path, {"w": "abc"}, {"w": "def"})


def test_manifest_round_trip_and_missing_cache(tmp_path):
    assert load_manifest(tmp_path) is None
    with pytest.raises(OmamaError, match="no cache here"):
        Cache(tmp_path)
    m = Manifest(settings={"x": 1}, images={"a/b/1": "s.h5"})
    save_manifest(tmp_path, m)
    assert load_manifest(tmp_path).images == {"a/b/1": "s.h5"}
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(OmamaError, match="manifest.json: not valid JSON"):
        load_manifest(tmp_path)


@pytest.mark.parametrize("key", ["settings", "shards", "images", "candidates"])
def test_manifest_missing_a_key_is_one_line(tmp_path, key):
    data = Manifest(settings={"x": 1}).to_json()
    del data[key]
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(OmamaError) as err:
        load_manifest(tmp_path)
    assert str(err.value) == f"{tmp_path / 'manifest.json'}: malformed manifest: no '{key}' key"
    assert verify_cache(tmp_path).problems == [str(err.value)]
    data[key] = []  # present, but not an object
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(OmamaError, match=f"'{key}' is not a JSON object"):
        load_manifest(tmp_path)


def test_part_manifest_missing_a_key_is_one_line(tmp_path):
    path = tmp_path / "exo2ego_train_0-of-2.json"
    save_fragment(path, Fragment({"x": 1}, "exo2ego", "train", 0, 2, "abc"))
    assert load_fragment(path) == Fragment({"x": 1}, "exo2ego", "train", 0, 2, "abc")
    data = json.loads(path.read_text())
    del data["plan"]
    path.write_text(json.dumps(data))
    with pytest.raises(OmamaError) as err:
        load_fragment(path)
    assert str(err.value) == f"{path}: malformed part manifest: no 'plan' key"
    path.write_text("[1, 2]")
    with pytest.raises(OmamaError, match="malformed part manifest: expected a JSON object"):
        load_fragment(path)


def test_second_writer_is_refused(tmp_path):
    with cache_lock(tmp_path):
        with pytest.raises(OmamaError, match="another omama-precompute"):
            with cache_lock(tmp_path):
                pass
    with cache_lock(tmp_path):  # released again
        pass


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "x.json"
    write_json({"v": 1}, target)
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_unwritable_folder_is_one_clear_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OmamaError, match="cannot write here") as err:
        write_json({}, blocker / "sub" / "x.json")
    assert "\n" not in str(err.value)
