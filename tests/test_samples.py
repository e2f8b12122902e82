"""Samples as memory-mapped columns (samples format 2), the workers' reader, the read-once
evaluation order and the fork rule of the post-processing workers."""

from __future__ import annotations

import json
import multiprocessing
import pickle
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import precompute_config

from omama import parallel
from omama.cache.manifest import Manifest, load_manifest, save_manifest
from omama.cache.paths import legacy_samples_path, samples_path
from omama.cache.reader import Cache, Records, SampleLocator
from omama.cache.records import Sample
from omama.cache.samples import SampleTable, read_samples, write_samples
from omama.errors import OmamaError
from omama.loader.eval_samples import EvalSamples, pair_inputs, read_order
from omama.loader.train_samples import TrainSamples
from omama.matcher.checkpoint import build_matcher
from omama.matcher.model import predict
from omama.matcher.visibility import visibility_features
from omama.precompute.run import run_precompute
from omama.predict.evaluate import measure
from omama.predict.scoring import Scored, score_samples

CPU = torch.device("cpu")


def fake_samples(n: int, seed: int = 0) -> list[Sample]:
    """n pairs of a made-up split: 4 objects per frame, 3 exo cameras, takes of 50 frames."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        take, frame = f"take{i // 600:05d}", str(30 * ((i // 12) % 50))
        obj, cam = f"obj {i % 4}", f"cam0{1 + (i // 4) % 3}"
        out.append(
            Sample(
                take=take,
                obj=obj,
                src_cam=cam,
                dst_cam="aria01",
                frame=frame,
                src=f"{take}/{cam}/{int(frame)}",
                dst=f"{take}/aria01/{int(frame)}",
                src_k=i % 4,
                dst_k=int(rng.integers(-1, 4)),
            )
        )
    return out


# ------------------------------------------------------------------ the file and the table


def test_columns_round_trip_and_write_the_same_bytes(cache_dir, tmp_path):
    for split in ("train", "test"):
        want = list(read_samples(samples_path(cache_dir, "exo2ego", split)))
        path = tmp_path / f"{split}.npz"
        write_samples(path, want)
        first = path.read_bytes()
        write_samples(path, SampleTable.from_samples(want))
        assert path.read_bytes() == first  # deterministic: the same samples, the same bytes
        got = read_samples(path)
        assert list(got) == want and [got[i] for i in range(len(want))] == want
        assert got[-1] == want[-1] and got[1:3] == want[1:3]
        plain = np.load(path)  # plain numpy reads it too
        keys = [k.decode() for k in plain["images"]]
        assert [keys[i] for i in plain["src"]] == [s.src for s in want]
        assert plain["dst_k"].tolist() == [s.dst_k for s in want]


def _mapping_pages(path: Path) -> dict[str, int]:
    """kB of this process's mappings of `path`, by kind (/proc/self/smaps)."""
    out: dict[str, int] = {}
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            inside = line.rstrip().endswith(str(path))
        elif inside and ":" in line:
            key, _, value = line.partition(":")
            if value.strip().endswith("kB"):
                out[key] = out.get(key, 0) + int(value.split()[0])
    return out


def _touch_all(table: SampleTable, path: Path, queue) -> None:
    total = sum(int(table.column(f).sum()) for f in ("src", "dst", "src_k", "dst_k"))
    total += sum(len(table.tables[t]) for t in ("images", "takes"))
    queue.put((total, _mapping_pages(path)))


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc")
def test_samples_memory_is_shared_not_copied_at_n_and_4n(tmp_path):
    """The columns are views of the file's mapping: a forked worker reading every row and a
    pickled copy add no private copy of them, at N and at 4N samples alike."""
    ctx = multiprocessing.get_context("fork")
    sizes = {}
    for n in (3_000, 12_000):
        path = tmp_path / f"{n:06d}" / "s.npz"
        write_samples(path, fake_samples(n))
        table = read_samples(path)
        for arr in (*table.columns.values(), *table.tables.values()):
            assert not arr.flags.owndata and not arr.flags.writeable  # a view of the mapping
        queue = ctx.SimpleQueue()
        child = ctx.Process(target=_touch_all, args=(table, path, queue))
        child.start()
        total, pages = queue.get()
        child.join()
        assert total > 0 and child.exitcode == 0
        assert pages["Rss"] > 0  # the child did read the file's pages...
        assert pages.get("Private_Dirty", 0) == 0 and pages.get("Anonymous", 0) == 0  # shared
        sizes[n] = len(pickle.dumps(table))  # what a spawned worker or another rank receives
        again = pickle.loads(pickle.dumps(table.take_rows(np.arange(5, 50))))
        assert list(again) == list(table)[5:50]
    assert sizes[12_000] == sizes[3_000] < 1_000  # the path, not the samples


def test_the_workers_reader_carries_no_manifest(tmp_path):
    """`Cache.reader`: records located from arrays over the split's image keys, a few bytes
    per image; the manifest (every image of every split) stays in the main process."""
    samples = fake_samples(6_000)
    path = tmp_path / "s.npz"
    write_samples(path, samples)
    table = read_samples(path)
    images = {f"other/{i}": f"shard{i % 7}.h5" for i in range(20_000)}  # other splits
    for s in samples:
        images[s.src] = images[s.dst] = f"shard-{s.take}.h5"
    manifest = Manifest({}, images=images, candidates={"exo2ego": {s.dst: "c.h5" for s in samples}})
    reader = Records(tmp_path, SampleLocator(table, manifest, "exo2ego"))
    blob = pickle.dumps(reader)
    assert len(blob) < len(json.dumps(manifest.to_json())) / 20
    got = pickle.loads(blob).where
    for s in samples[::97]:
        assert got.image_shard(s.src) == images[s.src]
        assert got.cand_shard("exo2ego", s.dst) == "c.h5"
    assert got.image_shard("other/3") is None and got.cand_shard("ego2exo", samples[0].dst) is None


# ------------------------------------------------------------------ format version, bad rows


def _copy(cache_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(cache_dir, tmp_path / "cache"))


def test_samples_of_an_older_omama_are_refused_then_rewritten(
    cache_dir, synth_root, weights, tmp_path
):
    cache = _copy(cache_dir, tmp_path)
    samples = list(Cache(cache).samples("exo2ego", "test"))
    manifest = load_manifest(cache)
    manifest.sample_formats.clear()  # as an older omama wrote it: JSON samples, no format
    save_manifest(cache, manifest)
    samples_path(cache, "exo2ego", "test").unlink()
    old = legacy_samples_path(cache, "exo2ego", "test")
    old.write_text(json.dumps([s.to_json() for s in samples]))
    with pytest.raises(OmamaError) as exc:
        Cache(cache).samples("exo2ego", "test")
    msg = str(exc.value)
    assert msg.startswith(f"{old}: ") and "\n" not in msg
    assert "rerun omama-precompute --split test --direction exo2ego" in msg
    report = run_precompute(precompute_config(synth_root, cache, weights, split="test"))
    assert report.images_computed == 0 and not old.exists()  # nothing recomputed
    assert load_manifest(cache).sample_formats["exo2ego/test"] == 2
    assert list(Cache(cache).samples("exo2ego", "test")) == samples
    fresh = samples_path(cache_dir, "exo2ego", "test").read_bytes()
    assert samples_path(cache, "exo2ego", "test").read_bytes() == fresh


@pytest.mark.parametrize("field, value", [("src_k", 99), ("src_k", -3), ("dst_k", 7)])
def test_an_object_row_out_of_range_names_the_file_and_entry(cache_dir, tmp_path, field, value):
    cache = _copy(cache_dir, tmp_path)
    for split in ("train", "test"):
        path = samples_path(cache, "exo2ego", split)
        table = read_samples(path)
        columns = {k: np.array(v) for k, v in table.columns.items()}
        columns[field][2] = value
        write_samples(path, SampleTable(columns, dict(table.tables)))
    c = Cache(cache)
    data = TrainSamples(c, "exo2ego", "train", n_masks=4, seed=0)
    data[(0, 1)]  # the others read as before
    train = re.escape(str(path.parent / "exo2ego_train.npz"))
    with pytest.raises(OmamaError, match=rf"^{train}: entry 2: "):
        data[(0, 2)]
    test = c.samples("exo2ego", "test")
    pairs = EvalSamples(c.reader(test, "exo2ego"), "exo2ego", test)
    with pytest.raises(OmamaError, match=r"exo2ego_test.npz: entry 2: .* object row"):
        pairs.__getitems__([0, 1, 2, 3])


# ------------------------------------------------------------------ the read-once order


class CountingReader(Records):
    """The workers' reader, counting token reads per image."""

    def __init__(self, inner: Records) -> None:
        self.__dict__.update(inner.__dict__)
        self.reads: dict[str, int] = {}

    def tokens(self, rec, out=None):
        self.reads[rec.path] = self.reads.get(rec.path, 0) + 1
        return super().tokens(rec, out)


def _plain_scores(cache, model, samples, batch_size: int) -> list[Scored]:
    """Scoring as before the read-once order: batches of consecutive pairs in input order,
    each pair's images read for itself."""
    data = EvalSamples(cache, "exo2ego", samples)
    out = []
    with torch.inference_mode():
        for start in range(0, len(samples), batch_size):
            items = [data[i] for i in range(start, min(start + batch_size, len(samples)))]
            n = max(len(x["valid"]) for x in items)
            pad = [F.pad(x["cand_desc"], (0, 0, 0, n - len(x["valid"]))) for x in items]
            valid = torch.stack([F.pad(x["valid"], (0, n - len(x["valid"]))) for x in items])
            sims = model(
                torch.stack([x["src_desc"] for x in items]),
                torch.stack(pad),
                torch.stack([x["src_tokens"] for x in items]),
                torch.stack([x["dst_tokens"] for x in items]),
            )
            best, conf, top5 = predict(sims, valid)
            feats = visibility_features(sims, valid)
            for j, x in enumerate(items):
                out.append(
                    Scored(
                        samples[start + j],
                        int(best[j]),
                        float(conf[j]),
                        tuple(top5[j].tolist()),
                        int(x["valid"].sum()),
                        tuple(feats[j].tolist()),
                    )
                )
    return out


@pytest.mark.parametrize("split", ["train", "test"])
def test_read_once_order_gives_the_plain_orders_predictions(cache_dir, split):
    cache = Cache(cache_dir)
    samples = cache.samples("exo2ego", split)
    model = build_matcher(*cache.role_grids(samples)).eval()
    order = read_order(samples)
    keys = [(s.take, int(s.frame), s.dst, s.src) for s in samples]
    assert [keys[i] for i in order] == sorted(keys) and sorted(order) == list(range(len(samples)))
    reader = CountingReader(cache.reader(samples, "exo2ego"))
    got = score_samples(reader, model, "exo2ego", samples, CPU, batch_size=6, progress=False)
    want = _plain_scores(cache, model, samples, batch_size=6)
    assert [g.sample for g in got] == list(samples)
    for g, w in zip(got, want, strict=True):
        assert (g.best, g.top5, g.n_cands) == (w.best, w.top5, w.n_cands)  # the same masks
        # the same scores up to float rounding: a batch of other pairs is another matrix shape
        np.testing.assert_allclose(g.confidence, w.confidence, rtol=0, atol=1e-6)
        np.testing.assert_allclose(g.features, w.features, rtol=0, atol=1e-5)
    _, _, m_got = measure(cache, "exo2ego", samples, got)
    _, _, m_want = measure(cache, "exo2ego", samples, want)
    assert (m_got.iou, m_got.shape_acc, m_got.location_score, m_got.n) == (
        m_want.iou,
        m_want.shape_acc,
        m_want.location_score,
        m_want.n,
    )
    # each image read once per batch it appears in, and fewer reads than two per pair
    per_batch = 0
    for start in range(0, len(samples), 6):
        batch = [samples[i] for i in order[start : start + 6]]
        per_batch += len({s.src for s in batch}) + len({s.dst for s in batch})
    assert sum(reader.reads.values()) == per_batch < 2 * len(samples)


def test_eval_batches_gather_each_pairs_own_inputs(cache_dir):
    """A batch holding each image once gives, per pair, exactly the pair's own inputs."""
    cache = Cache(cache_dir)
    samples = cache.samples("exo2ego", "train")
    data = EvalSamples(cache, "exo2ego", samples)
    idx = read_order(samples)[:7].tolist()
    batch = data.__getitems__(idx)
    assert len(batch["dst_tokens"]) < len(idx)  # images shared within the batch
    got = pair_inputs(batch)
    for j, i in enumerate(idx):
        s = samples[i]
        n = cache.cand_count("exo2ego", s.dst)
        assert torch.equal(got["src_tokens"][j], torch.from_numpy(cache.tokens(s.src)))
        assert torch.equal(got["dst_tokens"][j], torch.from_numpy(cache.tokens(s.dst)))
        assert torch.equal(got["src_desc"][j], torch.from_numpy(cache.obj_desc(s.src, s.src_k)))
        desc = cache.whole(cache.cands("exo2ego", s.dst), "desc")
        assert torch.equal(got["cand_desc"][j, :n], torch.from_numpy(desc))
        assert got["valid"][j].tolist() == [True] * n + [False] * (len(got["valid"][j]) - n)
        assert not got["cand_desc"][j, n:].any()


# ------------------------------------------------------------------ the fork rule


def _echo(context: str, chunk: list) -> list:
    return [(context, x) for x in chunk]


def test_no_fork_of_a_process_with_cuda_a_process_group_or_threads(monkeypatch):
    assert parallel.fork_hazard() is None and parallel.start_method() == "fork"
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert parallel.fork_hazard() == "CUDA is initialised"
    assert parallel.start_method() == "forkserver"
    monkeypatch.undo()
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    assert "process group" in parallel.fork_hazard()
    monkeypatch.undo()
    stop = threading.Event()
    writer = threading.Thread(target=stop.wait, name="writer")
    writer.start()
    try:
        assert parallel.fork_hazard() == "thread 'writer' is running"
        assert parallel.worker_context().get_start_method() == "forkserver"
        items = [str(i) for i in range(11)]
        got = parallel.ordered_map(_echo, "c", items, workers=2, chunk=3, min_items=1)
        assert got == [("c", x) for x in items]  # the same results from the fork server
    finally:
        stop.set()
        writer.join()
    assert parallel.start_method() == "fork"


def test_validation_reads_in_workers_and_builds_its_ground_truth_once(
    cache_dir, tmp_path, monkeypatch
):
    """Two epochs validated by 2 loader workers (started from the fork server: the checkpoint
    writer's thread runs) give the epochs of a run validated in the main process, and the
    validation ground truth is read once per run."""
    from omama.train import loop

    calls = []
    real = loop.gt_samples
    monkeypatch.setattr(loop, "gt_samples", lambda *a: calls.append(1) or real(*a))
    runs = {}
    for workers in (0, 2):
        cfg = loop.TrainConfig(
            cache=cache_dir,
            out=tmp_path / f"w{workers}",
            epochs=2,
            batch_size=4,
            n_masks=8,
            val_limit=10,
            workers=workers,
            device="cpu",
            seed=3,
            token_store_gb=0,
        )
        runs[workers] = loop.run_train(cfg)["epochs"]
    assert len(calls) == 2  # once per run, not per epoch
    assert runs[2] == runs[0] and len(runs[0]) == 2 and "iou" in runs[0][0]
