"""Past one process: sharded precompute, DDP training and split evaluation under torchrun.

Two gloo CPU processes (real `torchrun --standalone`) are compared with 1-process runs on the
synthetic set: the same cache records, the same losses within float tolerance, the same
prediction JSON byte for byte. Planning tools (--dry-run, --pairs-fraction) and 8-bit token
storage are checked against plain recomputations from the raw files.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import precompute_config
from test_descriptors import loop_descriptors
from torch.nn.parallel import DistributedDataParallel

from omama import dist
from omama.cache.manifest import load_manifest
from omama.cache.quant import dequantize, quantize, store_batch, store_tokens
from omama.cache.reader import Cache
from omama.cli.precompute import main as precompute_main
from omama.config import build_parser, default_workers, parse_config
from omama.dataset.layout import load_pairs
from omama.dist import DistEnv
from omama.errors import OmamaError
from omama.loader.sampler import EpochSampler
from omama.loader.train_samples import TrainSamples
from omama.precompute.parts import Part, assign
from omama.precompute.run import PrecomputeConfig, run_precompute
from omama.precompute.subset import select_fraction
from omama.predict.evaluate import EvalConfig, run_eval
from omama.predict.ranks import rank_indices
from omama.train import loop
from omama.train.ddp import local_batch_size, syncs_buffers, wrap
from omama.train.loop import TrainConfig, run_train

# ---------------------------------------------------------------- helpers


def torchrun(module: str, *args, nproc: int = 2) -> str:
    """Run `python -m module args` as `nproc` gloo processes; return stdout (fail on rc != 0)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    # the ranks compute with the threads of this process's single-process reference: BLAS
    # splits its reductions by thread count, which moves float results by an ulp
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        module,
        *(str(a) for a in args),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def records(cache: Path, split: str, direction: str = "exo2ego") -> dict:
    """{record path: {dataset: array, '@attr': value}} of every record a split's samples use,
    read straight from the HDF5 files the manifest names (plain h5py, no omama reader)."""
    manifest = json.loads((cache / "manifest.json").read_text())
    columns = np.load(cache / "samples" / f"{direction}_{split}.npz")  # plain numpy
    keys = [k.decode() for k in columns["images"]]
    samples = [
        {r: keys[i] for r in ("src", "dst") for i in [columns[r][j]]}
        for j in range(len(columns["src"]))
    ]
    wanted = {f"img/{s[r]}": manifest["images"][s[r]] for s in samples for r in ("src", "dst")}
    for s in samples:
        wanted[f"cand/{direction}/{s['dst']}"] = manifest["candidates"][direction][s["dst"]]
    out = {}
    for path, shard in sorted(wanted.items()):
        with h5py.File(cache / "shards" / shard, "r") as f:
            g = f[path]
            rec = {name: g[name][()] for name in g}
            rec.update({f"@{k}": np.asarray(v) for k, v in g.attrs.items()})
        out[path] = rec
    return out


def assert_same_records(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for path in a:
        assert sorted(a[path]) == sorted(b[path]), path
        for name in a[path]:
            x, y = a[path][name], b[path][name]
            assert x.dtype == y.dtype and x.shape == y.shape, (path, name)
            assert np.array_equal(x, y), (path, name)


def train_args(cache: Path, out: Path, *extra) -> list[str]:
    return [
        "--cache",
        cache,
        "--out",
        out,
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--n-masks",
        "8",
        "--lr",
        "1e-3",
        "--log-every",
        "1",
        "--val-split",
        "val",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--seed",
        "5",
        *extra,
    ]


def train_config(cache: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        cache=cache,
        out=out,
        epochs=1,
        batch_size=2,
        n_masks=8,
        lr=1e-3,
        log_every=1,
        val_split="val",
        workers=0,
        device="cpu",
        seed=5,
    )
    base.update(kw)
    return TrainConfig(**base)


def step_losses(run: Path) -> list[float]:
    return [s["loss"] for s in json.loads((run / "log.json").read_text())["steps"]]


# ---------------------------------------------------------------- pure pieces


def test_parts_are_disjoint_and_balanced():
    rng = random.Random(0)
    keys = {
        f"take{rng.randrange(9)}/cam0{rng.randrange(4)}/{rng.randrange(500)}" for _ in range(400)
    }
    dest = set(rng.sample(sorted(keys), 130))
    for n in (1, 2, 3, 8):
        parts = [assign(keys, dest, Part(i, n)) for i in range(n)]
        assert set().union(*parts) == keys
        assert sum(len(p) for p in parts) == len(keys)  # disjoint
        sizes = [len(p) for p in parts]
        dests = [len(p & dest) for p in parts]
        assert max(sizes) - min(sizes) <= 1 and max(dests) - min(dests) <= 1
        assert parts == [assign(sorted(keys, reverse=True), dest, Part(i, n)) for i in range(n)]
    with pytest.raises(OmamaError):
        Part(2, 2)


def test_ranks_see_the_global_batches_of_one_process():
    for n, batch, world in ((11, 2, 2), (11, 4, 2), (23, 6, 3), (8, 8, 4)):
        local = local_batch_size(batch, DistEnv(0, world, 0))
        order = EpochSampler(n, seed=3).order()
        per_rank = [list(EpochSampler(n, 3, rank=r, num_replicas=world)) for r in range(world)]
        for k in range(-(-n // batch)):
            got = sorted(
                i for r in range(world) for _, i in per_rank[r][k * local : (k + 1) * local]
            )
            assert got == sorted(order[k * batch : (k + 1) * batch].tolist())
    with pytest.raises(OmamaError, match="batch-size 5"):
        local_batch_size(5, DistEnv(1, 2, 1))


def test_eval_ranks_take_whole_batches():
    for n, b, w in ((11, 4, 2), (3, 4, 2), (20, 3, 3)):
        parts = [rank_indices(n, b, r, w) for r in range(w)]
        assert sorted(i for p in parts for i in p) == list(range(n))
        for r, p in enumerate(parts):  # batch k = [k*b, (k+1)*b) belongs to rank k % w
            assert all((i // b) % w == r for i in p)


def test_int8_tokens_round_trip_within_half_a_step():
    torch.manual_seed(0)
    x = torch.randn(300, 768) * torch.rand(300, 1) * 8
    x[7] = 0  # an all-zero token
    q, s = quantize(x.half())
    assert q.dtype == np.int8 and s.dtype == np.float16 and s.shape == (300,)
    back = dequantize(q, s)
    plain = (q.astype(np.float64) * s.astype(np.float64)[:, None]).astype(np.float16)
    assert np.array_equal(back, plain)
    err = np.abs(back.astype(np.float64) - x.half().double().numpy())
    # half a quantisation step, plus fp16 rounding of the scale and of the result
    bound = s.astype(np.float64)[:, None] * 0.51 + np.abs(x.double().numpy()) * 2e-3 + 1e-7
    assert (err <= bound).all()
    assert np.array_equal(back[7], np.zeros(768, np.float16))


@pytest.mark.parametrize("features", ["fp16", "int8"])
def test_a_batch_is_stored_as_its_images_one_by_one(features):
    """Precompute stores a batch with one copy to the host (int8 quantised on the device):
    the same bytes, and the same fp16 readback, as each image stored alone."""
    torch.manual_seed(1)
    toks = (torch.randn(3, 50, 768) * torch.rand(3, 50, 1) * 8).half()
    toks[1, 4] = 0
    batch = store_batch(toks, features)
    for i, got in enumerate(batch):
        want = store_tokens(toks[i], features)
        assert got.tokens.dtype == want.tokens.dtype and np.array_equal(got.tokens, want.tokens)
        if features == "int8":
            assert np.array_equal(got.token_scale, want.token_scale)
        else:
            assert got.token_scale is None
        assert torch.equal(got.readback, want.readback)


def test_part_flags_and_their_old_names_are_the_same_options(tmp_path):
    def parsed(argv: list[str], yaml_text: str | None = None) -> PrecomputeConfig:
        if yaml_text is not None:
            (tmp_path / "exp.yaml").write_text(yaml_text)
            argv = ["--config", str(tmp_path / "exp.yaml"), *argv]
        return parse_config(PrecomputeConfig, argv, "omama-precompute", "")

    new = parsed(["--part", "1", "--parts", "3"])
    assert (new.part, new.parts) == (1, 3)
    assert parsed(["--shard-index", "1", "--num-shards", "3"]) == new
    for keys in (("part", "parts"), ("shard_index", "num_shards"), ("shard-index", "num-shards")):
        assert parsed([], f"precompute:\n  {keys[0]}: 1\n  {keys[1]}: 3\n") == new
    assert parsed(["--part", "1"], "precompute:\n  num_shards: 3\n") == new
    text = build_parser(PrecomputeConfig, "omama-precompute", "").format_help()
    assert "--part PART, --shard-index PART" in text
    assert "--parts PARTS, --num-shards PARTS" in text
    with pytest.raises(OmamaError, match="--parts must be at least 1, got 0"):
        parsed(["--num-shards", "0"])


def test_pairs_fraction_is_seeded_and_order_free(synth_root):
    pairs = load_pairs(synth_root / "dataset_jsons" / "train_exoego_pairs.json", "exo2ego")
    sub = select_fraction(pairs, 0.5, seed=3)
    assert len(sub) == int(0.5 * len(pairs) + 0.5)
    assert [p for p in pairs if p in set(sub)] == sub  # file order kept
    shuffled = list(reversed(pairs))
    assert set(select_fraction(shuffled, 0.5, seed=3)) == set(sub)
    assert set(sub) <= set(select_fraction(pairs, 0.8, seed=3))
    assert select_fraction(pairs, 1.0, seed=3) == pairs
    others = [set(select_fraction(pairs, 0.5, seed=s)) for s in range(6)]
    assert len({frozenset(o) for o in others}) > 1
    with pytest.raises(OmamaError, match="pairs-fraction"):
        select_fraction(pairs, 1.5, seed=3)


# ---------------------------------------------------------------- precompute


def test_torchrun_precompute_equals_single_process(cache_dir, synth_root, weights, tmp_path):
    cache, ref = tmp_path / "cache", tmp_path / "ref"
    # one image per backbone batch in both: each rank batches its own share of the images, and
    # a batch of other images moves fp16 tokens by an ulp on some CPUs
    out = torchrun(
        "omama.cli.precompute",
        *("--root", synth_root, "--cache", cache, "--weights", weights, "--split", "train"),
        *("--device", "cpu", "--workers", "0", "--batch-size", "1"),
    )
    assert "part 0-of-2" in out and "part 1-of-2" in out
    run_precompute(precompute_config(synth_root, ref, weights, split="train", batch_size=1))
    assert_same_records(records(ref, "train"), records(cache, "train"))
    manifest = load_manifest(cache)
    assert manifest.splits == {"exo2ego/train": load_manifest(cache_dir).splits["exo2ego/train"]}
    owners = {name.split("-")[1] for name in manifest.shards}
    assert owners == {"train.part0of2", "train.part1of2"}  # both ranks wrote their own shards
    assert len(Cache(cache).samples("exo2ego", "train")) == manifest.splits["exo2ego/train"]


def test_a_dead_part_reruns_alone_then_merges(
    cache_dir, synth_root, weights, tmp_path, monkeypatch
):
    from omama.cache import writer

    cache = tmp_path / "cache"

    # one image per backbone batch, here and in the reference: the rerun part computes fewer
    # images, and a batch of another size moves fp16 tokens by an ulp on some CPUs
    def cfg(i, **kw):
        return precompute_config(
            synth_root, cache, weights, split="test", part=i, parts=2, batch_size=1, **kw
        )

    ref = tmp_path / "ref"
    run_precompute(precompute_config(synth_root, ref, weights, split="test", batch_size=1))

    first = run_precompute(cfg(0, shard_records=1))
    assert first.images_computed == 3 and not first.merged
    assert load_manifest(cache) is None  # nothing listed before every part is done

    real_close, published = writer.ShardWriter.close_shard, []

    def dies_after_two(self):
        if self._file is not None and len(published) == 2:
            raise RuntimeError("node lost")
        published.append(self._name)
        real_close(self)

    monkeypatch.setattr(writer.ShardWriter, "close_shard", dies_after_two)
    with pytest.raises(RuntimeError, match="node lost"):
        run_precompute(cfg(1, shard_records=1))
    monkeypatch.undo()
    frag = json.loads((cache / "parts" / "exo2ego_test_1-of-2.json").read_text())
    assert not frag["done"] and len(frag["shards"]) == 2
    assert load_manifest(cache) is None

    # a report of bad input from an earlier run whose files are fixed now: the merge drops it,
    # so --verify and the readers no longer excuse pairs whose images are all cached
    stale = cache / "reports" / "bad_exo2ego_test.json"
    stale.parent.mkdir()
    part0 = json.loads((cache / "parts" / "exo2ego_test_0-of-2.json").read_text())
    stale.write_text(json.dumps([{"key": min(part0["images"]), "error": "fixed since"}]))
    again = run_precompute(cfg(1, shard_records=1))  # the dead part alone, no other part
    done_before = len(frag["images"]) + sum(len(t) for t in frag["candidates"].values())
    assert again.images_computed + again.candidate_sets_computed + done_before == 4
    assert again.merged and again.samples == load_manifest(ref).splits["exo2ego/test"]
    assert_same_records(records(ref, "test"), records(cache, "test"))
    assert not stale.exists()
    samples = Path("samples") / "exo2ego_test.npz"
    assert (cache / samples).read_bytes() == (cache_dir / samples).read_bytes()

    before = (cache / "manifest.json").read_text()
    precompute_main(
        ["--root", str(synth_root), "--cache", str(cache), "--split", "test", "--merge"]
    )
    assert (cache / "manifest.json").read_text() == before  # merging again changes nothing
    rerun = run_precompute(cfg(0))
    assert rerun.images_computed == 0 and rerun.candidate_sets_computed == 0


def test_dry_run_counts_and_bytes(cache_dir, synth_root, tmp_path, capsys):
    pairs = json.loads((synth_root / "dataset_jsons" / "val_exoego_pairs.json").read_text())
    images, dests = set(), set()
    for ego_rgb, _, exo_rgb, _ in pairs:  # exo2ego: source exo, destination ego
        _, take, ego, _, _, frame = ego_rgb.rsplit("//", 5)
        exo = exo_rgb.rsplit("//", 5)[2]
        images |= {(take, ego, int(frame)), (take, exo, int(frame))}
        dests.add((take, ego, int(frame)))
    n_cands = 0
    for take, cam, frame in dests:
        m = np.load(synth_root / "Masks_VAL_EXO2EGO" / take / cam / f"{frame}_masks.npz")
        n_cands += len(m["arr_0"])
    argv = ["--root", str(synth_root), "--split", "val", "--dry-run", "--cache"]
    precompute_main([*argv, str(tmp_path / "none"), "--parts", "2"])
    text = capsys.readouterr().out
    assert f"unique images      {len(images)} ({len(dests)} destination" in text
    assert f"candidate masks    {n_cands}" in text
    assert "part 1 of 2" in text and not (tmp_path / "none").exists()
    total = int(text.split("total")[1].split("(")[1].split(" bytes")[0])
    actual = sum(p.stat().st_size for p in (cache_dir / "shards").glob("exo2ego-val-*.h5"))
    assert abs(total - actual) / actual < 0.05
    precompute_main([*argv, str(cache_dir)])
    assert "still to write     0 B" in capsys.readouterr().out
    # headers only: the same plan when every frame's pixel data is cut off after 1 KB (and
    # the parts asked for by their old flag name)
    root = tmp_path / "root"
    shutil.copytree(synth_root, root)
    for take, cam, frame in images:
        jpg = root / "processed" / take / cam / f"{frame}.jpg"
        jpg.write_bytes(jpg.read_bytes()[:1024])
    precompute_main([*argv[:1], str(root), *argv[2:], str(tmp_path / "none"), "--num-shards", "2"])
    assert capsys.readouterr().out == text.replace(str(synth_root), str(root))


def test_int8_subset_cache(cache_dir, synth_root, weights, tmp_path):
    cache = tmp_path / "cache8"
    report = run_precompute(
        precompute_config(
            synth_root, cache, weights, split="val", features="int8", pairs_fraction=0.5, seed=1
        )
    )
    full = Cache(cache_dir)
    small = Cache(cache)
    # the subset: exactly the full split's samples whose pairs the seeded selection keeps
    pairs = load_pairs(synth_root / "dataset_jsons" / "val_exoego_pairs.json", "exo2ego")
    keep = {(p.take, p.obj, p.exo_cam, p.frame) for p in select_fraction(pairs, 0.5, 1)}
    want = [
        s for s in full.samples("exo2ego", "val") if (s.take, s.obj, s.src_cam, s.frame) in keep
    ]
    assert small.samples("exo2ego", "val") == want and report.samples == len(want)
    assert small.manifest.subsets["exo2ego/val"]["pairs_fraction"] == 0.5
    assert small.manifest.subsets["exo2ego/val"]["seed"] == 1
    assert small.manifest.settings["features"] != full.manifest.settings["features"]
    stored = records(cache, "val")
    for key in sorted(small.manifest.images):
        q, s = stored[f"img/{key}"]["tokens"], stored[f"img/{key}"]["token_scale"]
        assert q.dtype == np.int8 and s.dtype == np.float16
        plain = (q.astype(np.float64) * s.astype(np.float64)[:, None]).astype(np.float16)
        assert np.array_equal(small.tokens(key), plain)  # what training and eval read
        fp16 = full.tokens(key).astype(np.float64)
        assert np.abs(plain - fp16).max() <= 0.51 * s.max() + 1e-2
    # descriptors are pooled from the dequantised tokens, by the plain per-mask loop
    key = sorted(small.manifest.candidates["exo2ego"])[0]
    take, cam, frame = key.split("/")
    folder = synth_root / "Masks_VAL_EXO2EGO" / take / cam
    masks = torch.from_numpy(np.load(folder / f"{frame}_masks.npz")["arr_0"])
    boxes = torch.from_numpy(np.load(folder / f"{frame}_boxes.npy").astype(np.float32))
    grid = small.grid(key)
    dense = torch.nn.functional.interpolate(
        torch.from_numpy(small.tokens(key)).float().T.reshape(1, 768, *grid),
        size=(grid[0] * 14 // 4, grid[1] * 14 // 4),
        mode="bilinear",
        align_corners=False,
    )[0]
    got = torch.from_numpy(stored[f"cand/exo2ego/{key}"]["desc"])
    torch.testing.assert_close(got, loop_descriptors(dense, masks, boxes), atol=1e-5, rtol=1e-5)
    item = TrainSamples(small, "exo2ego", "val", n_masks=8, seed=0)[(0, 1)]  # training reads
    s = small.samples("exo2ego", "val")[1]
    assert torch.equal(item["src_tokens"], torch.from_numpy(small.tokens(s.src)))
    assert torch.equal(item["dst_tokens"], torch.from_numpy(small.tokens(s.dst)))
    with pytest.raises(OmamaError, match="features"):  # fp16 into an int8 cache: refused
        run_precompute(precompute_config(synth_root, cache, weights, split="test"))


# ---------------------------------------------------------------- training and evaluation


@pytest.fixture(scope="module")
def single_run(cache_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "run"
    run_train(train_config(cache_dir, out))
    return out


def test_torchrun_training_follows_one_process(cache_dir, single_run, tmp_path):
    out = tmp_path / "run2"
    torchrun("omama.cli.train", *train_args(cache_dir, out))
    one, two = step_losses(single_run), step_losses(out)
    assert len(one) == len(two) == 6  # 11 samples, global batch 2: the last step has 1 sample
    assert any(v > 0 for v in one)
    np.testing.assert_allclose(two, one, rtol=1e-4, atol=1e-6)
    a = torch.load(single_run / "last.pt", weights_only=True)
    b = torch.load(out / "last.pt", weights_only=True)
    # AdamW moves a weight by about lr * sign(gradient) where the gradient is ~0 (the key bias
    # has an exactly-zero gradient in theory), so float noise in the gradient sum can move such
    # weights by up to 2 lr per step; nearly all others agree to float precision
    close, count = 0, 0
    for k in a:
        diff = (b[k] - a[k]).abs()
        assert diff.max() <= 2 * 1e-3 * 6, k
        close += int((diff <= 1e-5 + 1e-4 * a[k].abs()).sum())
        count += diff.numel()
    assert close / count > 0.995
    m1 = json.loads((single_run / "log.json").read_text())["epochs"][-1]
    m2 = json.loads((out / "log.json").read_text())["epochs"][-1]
    assert m1.keys() == m2.keys() and "iou" in m1
    for k in m1:  # the visibility fit follows the float noise of the weights above
        tol = 1e-4 if k == "visibility_fit" else 1e-9
        assert m2[k] == pytest.approx(m1[k], rel=1e-6, abs=tol)


def test_resume_on_another_number_of_ranks(cache_dir, single_run, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real = loop.write_torch

    def killed_after_saving(obj, path):
        real(obj, path)
        raise RuntimeError("preempted")

    monkeypatch.setattr(loop, "write_torch", killed_after_saving)
    with pytest.raises(RuntimeError, match="preempted"):
        run_train(train_config(cache_dir, out, save_every=3))  # 1 process, killed at step 3
    monkeypatch.undo()
    torchrun("omama.cli.train", *train_args(cache_dir, out, "--save-every", "3", "--resume"))
    np.testing.assert_allclose(step_losses(out), step_losses(single_run), rtol=1e-4, atol=1e-6)


def test_torchrun_eval_writes_the_same_json(cache_dir, single_run, tmp_path):
    common = dict(cache=cache_dir, checkpoint=single_run / "last.pt", batch_size=4, workers=0)
    one = tmp_path / "one" / "pred.json"
    run_eval(EvalConfig(out=one, device="cpu", **common))
    two = tmp_path / "two" / "pred.json"
    out = torchrun(
        "omama.cli.eval",
        *("--cache", cache_dir, "--checkpoint", single_run / "last.pt", "--out", two),
        *("--batch-size", "4", "--workers", "0", "--device", "cpu"),
    )
    assert out.count("predictions") == 1  # rank 0 alone reports
    for name in ("pred.json", "pred_gt.json", "pred_metrics.json"):
        assert (one.parent / name).read_bytes() == (two.parent / name).read_bytes(), name


# ---------------------------------------------------------------- launchers


@pytest.mark.parametrize(
    "environ, want",
    [
        ({}, None),  # a plain process
        ({"RANK": "0", "WORLD_SIZE": "1"}, None),  # torchrun with one process
        ({"OMAMA_DIST": "1"}, DistEnv(0, 1, 0, 1)),  # the real path with one rank
        ({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "OMAMA_DIST": "1"}, DistEnv(0, 1, 0)),
        (  # torchrun
            {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"},
            DistEnv(5, 8, 1, 4),
        ),
        (  # srun, RANK/WORLD_SIZE exported from SLURM_PROCID/SLURM_NTASKS by the job script
            {"RANK": "3", "WORLD_SIZE": "4", "SLURM_LOCALID": "1", "SLURM_TASKS_PER_NODE": "2(x2)"},
            DistEnv(3, 4, 1, 2),
        ),
        (  # srun on uneven nodes: this node's count
            {"RANK": "4", "WORLD_SIZE": "5", "SLURM_LOCALID": "0"}
            | {"SLURM_TASKS_PER_NODE": "2(x2),1", "SLURM_NODEID": "2"},
            DistEnv(4, 5, 0, 1),
        ),
        (  # LOCAL_RANK wins over SLURM_LOCALID (torchrun inside an srun step)
            {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "SLURM_LOCALID": "0"},
            DistEnv(1, 2, 1, 1),
        ),
        (  # no local rank at all: unknown, never the global rank
            {"RANK": "9", "WORLD_SIZE": "16"},
            DistEnv(9, 16, None, 1),
        ),
    ],
)
def test_launcher_environments(environ, want):
    assert dist.from_env(environ) == want


@pytest.mark.parametrize(
    "environ, message",
    [
        ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK=.x.: not an integer"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "outside WORLD_SIZE"),
        ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "-1"}, "never negative"),
        ({"RANK": "0", "WORLD_SIZE": "2", "SLURM_LOCALID": "a"}, "SLURM_LOCALID='a'"),
    ],
)
def test_bad_launcher_environments_stop_in_one_line(environ, message):
    with pytest.raises(OmamaError, match=message):
        dist.from_env(environ)


@pytest.mark.parametrize(
    "local_rank, visible, want",
    [
        (0, 1, 0),
        (3, 1, 0),  # srun --gpus-per-task=1: each task sees its own device as device 0
        (None, 1, 0),
        (2, 4, 2),  # torchrun: one device per local rank
        (4, 4, "sees 4 CUDA devices"),  # more ranks than devices
        (None, 2, "neither LOCAL_RANK nor SLURM_LOCALID"),
        (0, 0, "no CUDA device"),
    ],
)
def test_local_rank_maps_onto_the_visible_devices(local_rank, visible, want):
    if isinstance(want, int):
        assert dist.device_index(local_rank, visible) == want
    else:
        with pytest.raises(OmamaError, match=want):
            dist.device_index(local_rank, visible)


@pytest.mark.parametrize(
    "environ, want",
    [
        ({}, 1),
        ({"LOCAL_WORLD_SIZE": "8"}, 8),
        ({"SLURM_NTASKS_PER_NODE": "4"}, 4),
        ({"RANK": "0", "SLURM_LOCALID": "0", "SLURM_TASKS_PER_NODE": "3(x4)"}, 3),
        ({"SLURM_TASKS_PER_NODE": "3(x4)"}, 1),  # an allocation, no task of a job step
    ],
)
def test_precompute_workers_share_the_node(environ, want, monkeypatch):
    assert dist.local_ranks(environ) == want
    for k in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE", "RANK", "SLURM_LOCALID"):
        monkeypatch.delenv(k, raising=False)
    alone = default_workers(cap=None)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert default_workers(cap=None) == max(1, (alone + 1) // 2 - 1)


def test_one_rank_runs_the_real_distributed_path(cache_dir, single_run, tmp_path, monkeypatch):
    """OMAMA_DIST=1: a process group of one (gloo here, NCCL on a GPU), DDP without buffer
    broadcasts, the collectives: the same losses and weights as the plain process."""
    monkeypatch.setenv("OMAMA_DIST", "1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    with dist.session("cpu") as env:
        assert env == DistEnv(0, 1, 0, 1) and torch.distributed.is_initialized()
        assert dist.all_min(env, 7, torch.device("cpu")) == 7
        assert dist.gather_to_main(env, {"a": 1}) == [{"a": 1}]
        net = wrap(torch.nn.Linear(2, 2), env, torch.device("cpu"))
        assert isinstance(net, DistributedDataParallel) and not syncs_buffers(net)
    assert not torch.distributed.is_initialized()
    out = tmp_path / "one_rank"
    run_train(train_config(cache_dir, out))
    np.testing.assert_allclose(step_losses(out), step_losses(single_run), rtol=1e-6, atol=1e-7)
    a = torch.load(single_run / "last.pt", weights_only=True)
    b = torch.load(out / "last.pt", weights_only=True)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6)


def test_parts_of_different_backbone_precisions_are_refused_at_merge(
    synth_root, weights, tmp_path, monkeypatch
):
    """A part made on the CPU (fp32 backbone) and one made on CUDA (fp16 autocast) hold
    tokens of two number formats: the merge stops in one line naming backbone_precision.
    (The fp16 part is made here by recording fp16 in its settings.)"""
    from omama.precompute import run as run_module
    from omama.precompute.options import cache_settings

    cache = tmp_path / "cache"

    def cfg(i):
        return precompute_config(synth_root, cache, weights, split="test", part=i, parts=2)

    run_precompute(cfg(0))
    as_on_cuda = lambda *a: cache_settings(*a[:3], "fp16")  # noqa: E731
    monkeypatch.setattr(run_module, "cache_settings", as_on_cuda)
    with pytest.raises(OmamaError, match="backbone_precision=None, this run asks 'fp16'"):
        run_precompute(cfg(1))
    assert cache_settings("x", precision="fp32") == cache_settings("x")  # CPU bytes unchanged


def test_a_cpu_fallback_is_said_once(monkeypatch, caplog):
    """No CUDA device: the commands say once, in one log line, that they run on the CPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dist, "_fallback_noted", False)
    with caplog.at_level("INFO", logger="omama.dist"):
        for _ in range(3):
            assert dist.device_for(None, "cpu") == torch.device("cpu")
    lines = [r.getMessage() for r in caplog.records if "no CUDA device" in r.getMessage()]
    assert len(lines) == 1 and "running on the CPU" in lines[0]
    with pytest.raises(OmamaError, match="no CUDA device is available"):
        dist.device_for(None, "cuda")
