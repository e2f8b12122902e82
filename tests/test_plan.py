"""A split is planned once and shared by its parts and its merge; a stale plan is never used."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from conftest import precompute_config

from omama.cache.manifest import load_manifest
from omama.cache.paths import plan_path
from omama.cache.records import image_key
from omama.dataset.layout import Annotations
from omama.precompute import jobs, plan
from omama.precompute.jobs import select_pairs, table_images
from omama.precompute.run import run_precompute


def split_images(pairs) -> jobs.SplitImages:
    """The unique images of the pairs, pair by pair (the per-object code `table_images`
    replaced)."""
    where, dest = {}, set()
    for p in pairs:
        for cam in (p.src_cam, p.dst_cam):
            where[image_key(p.take, cam, p.frame)] = (p.take, cam, p.frame)
        dest.add(image_key(p.take, p.dst_cam, p.frame))
    return jobs.SplitImages(dict(sorted(where.items())), frozenset(dest))


@pytest.fixture
def planner_calls(monkeypatch) -> dict[str, int]:
    """How often the split is planned and its pair file parsed."""
    calls = {"plan": 0, "parse": 0}
    real_plan, real_load = plan.make_plan, jobs.load_pairs

    def counted_plan(*args, **kw):
        calls["plan"] += 1
        return real_plan(*args, **kw)

    def counted_load(*args, **kw):
        calls["parse"] += 1
        return real_load(*args, **kw)

    monkeypatch.setattr(plan, "make_plan", counted_plan)
    monkeypatch.setattr(jobs, "load_pairs", counted_load)
    return calls


def test_parts_and_merge_plan_once_and_write_the_plain_runs_cache(
    cache_dir, synth_root, weights, tmp_path, planner_calls
):
    cache = tmp_path / "cache"

    def cfg(**kw):
        return precompute_config(synth_root, cache, weights, split="test", **kw)

    assert not run_precompute(cfg(part=0, parts=2)).merged
    assert planner_calls == {"plan": 1, "parse": 1}
    assert run_precompute(cfg(part=1, parts=2)).merged  # the last part merges
    before = (cache / "manifest.json").read_text()
    assert run_precompute(cfg(parts=2, merge=True)).merged
    assert planner_calls == {"plan": 1, "parse": 1}  # parsed by the first part only
    assert (cache / "manifest.json").read_text() == before

    samples = "samples/exo2ego_test.npz"
    assert (cache / samples).read_bytes() == (cache_dir / samples).read_bytes()
    got, want = load_manifest(cache), load_manifest(cache_dir)
    assert got.splits == {"exo2ego/test": want.splits["exo2ego/test"]}
    test_keys = {k for k, shard in want.images.items() if shard.startswith("exo2ego-test-")}
    assert set(got.images) == test_keys
    want_cands = {k for k, s in want.candidates["exo2ego"].items() if "-test-" in s}
    assert set(got.candidates["exo2ego"]) == want_cands
    assert got.sample_formats == {"exo2ego/test": want.sample_formats["exo2ego/test"]}
    assert got.subsets == {}


def test_the_plan_holds_what_planning_gives(synth_root, weights, tmp_path):
    cfg = precompute_config(synth_root, tmp_path / "c", weights, split="val", pairs_fraction=0.5)
    ann = Annotations(synth_root)
    made = plan.shared_plan(cfg, ann)
    read = plan.shared_plan(cfg, ann)  # from the file
    assert read.samples.path == plan_path(tmp_path / "c", "exo2ego", "val")
    assert list(read.samples) == list(made.samples)
    assert (read.subset, read.bad) == (made.subset, made.bad) and made.subset is not None
    chosen = select_pairs(cfg, ann)
    assert table_images(read.samples) == split_images(chosen.pairs)
    assert list(table_images(read.samples).where) == list(split_images(chosen.pairs).where)


def test_changed_inputs_are_planned_again(synth_root, weights, tmp_path, planner_calls):
    pairs = tmp_path / "pairs.json"
    shutil.copy(synth_root / "dataset_jsons" / "val_exoego_pairs.json", pairs)
    cfg = precompute_config(synth_root, tmp_path / "c", weights, split="val", pairs=pairs)
    ann = Annotations(synth_root)
    n = len(plan.shared_plan(cfg, ann).samples)
    assert len(plan.shared_plan(cfg, ann).samples) == n and planner_calls["plan"] == 1

    entries = json.loads(pairs.read_text())
    pairs.write_text(json.dumps(entries[:-1]))  # the pair file changed
    assert len(plan.shared_plan(cfg, ann).samples) == n - 1 and planner_calls["plan"] == 2
    assert len(plan.shared_plan(cfg, ann).samples) == n - 1 and planner_calls["plan"] == 2

    stat = pairs.stat()  # the same size and time, other bytes (the pairs reversed): sha256
    pairs.write_text(json.dumps(entries[:-1][::-1]))
    os.utime(pairs, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert pairs.stat().st_size == stat.st_size
    again = plan.shared_plan(cfg, ann).samples
    assert planner_calls["plan"] == 3
    assert list(again) == jobs.build_samples(select_pairs(cfg, ann).pairs, ann)

    half = precompute_config(
        synth_root, tmp_path / "c", weights, split="val", pairs=pairs, pairs_fraction=0.5
    )
    assert len(plan.shared_plan(half, ann).samples) < n and planner_calls["plan"] == 4

    take = plan.shared_plan(half, ann).samples[0].take
    assert planner_calls["plan"] == 4
    note = ann.path(take)
    os.utime(note, ns=(note.stat().st_atime_ns, note.stat().st_mtime_ns + 10**9))
    plan.shared_plan(half, ann)  # an annotation file changed
    assert planner_calls["plan"] == 5

    path = plan_path(tmp_path / "c", "exo2ego", "val")
    path.write_bytes(path.read_bytes()[:100])  # a truncated plan is made again, no error
    assert len(plan.shared_plan(half, ann).samples) < n and planner_calls["plan"] == 6
    assert len(plan.shared_plan(half, ann).samples) < n and planner_calls["plan"] == 6
