"""The mistakes users make, round two: each as the user types it, with its exit
code, its one line, and every input and earlier output left as it was.

Options and paths are refused before any work, so most cases cost milliseconds; the cases
that need data reuse the session's cache (copied where a case edits it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from cli_lines import one_error_line

from omama.cache.manifest import load_manifest
from omama.cache.paths import samples_path
from omama.cache.reader import Cache
from omama.cache.samples import SampleTable, read_samples, write_samples
from omama.cache.shards import ShardReader
from omama.cli import eval as eval_cli
from omama.cli import gt as gt_cli
from omama.cli import precompute as precompute_cli
from omama.cli import train as train_cli
from omama.errors import OmamaError, bad_file
from omama.matcher.checkpoint import save_matcher_state
from omama.matcher.model import OMaMaMatcher
from omama.prepare.download import relations_path
from omama.rle import encode


def refused(capsys, main, argv: list, prog: str, *wants: str) -> str:
    """`main(argv)` exits 2 with one line holding every one of `wants`."""
    assert main([str(a) for a in argv]) == 2
    line = one_error_line(capsys, prog)
    for want in wants:
        assert want in line, line
    return line


def snapshot(*paths: Path) -> dict[str, str]:
    """sha256 of every file at or below `paths` (a missing path is recorded as missing)."""
    out = {}
    for top in paths:
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        out[str(top)] = "missing" if not top.exists() else ""
        for p in files:
            if p.name != ".lock":
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


CPU = ["--device", "cpu", "--workers", "0"]


# ------------------------------------------------------------------ numbers and YAML types


NUMBER_CASES = [
    (["--lr", "nan"], "--lr must be a finite number, got nan"),
    (["--weight-decay", "nan"], "--weight-decay must be a finite number, got nan"),
    (["--token-store-gb", "nan"], "--token-store-gb must be a finite number, got nan"),
    (["--lr", "inf"], "--lr must be a finite number, got inf"),
    (["--min-lr", "1e-3", "--lr", "1e-4"], "--min-lr 0.001 is above --lr 0.0001"),
]


@pytest.mark.parametrize("argv,why", NUMBER_CASES, ids=lambda v: " ".join(v)[:30])
def test_bad_numbers_on_the_command_line(argv, why, tmp_path, capsys):
    argv = ["--cache", tmp_path / "cache", "--out", tmp_path / "run", *argv]
    refused(capsys, train_cli.main, argv, "omama-train", "command line: ", why)
    assert not (tmp_path / "run").exists()


YAML_CASES = [
    ("lr: .nan", "--lr must be a finite number, got nan"),
    ("epochs: 1.7", "option epochs=1.7 is not an int"),
    ("epochs: true", "option epochs=True is not an int"),
    ('resume: "no"', "option resume='no' is not true or false"),
    ("n_masks: 1", "--n-masks must be at least 2, got 1"),
    ("lr: 1.0e-4\n  min_lr: 1.0e-3", "--min-lr 0.001 is above --lr 0.0001"),
]


@pytest.mark.parametrize("line,why", YAML_CASES, ids=[c[0][:16] for c in YAML_CASES])
def test_yaml_values_are_checked_as_strictly_as_flags(line, why, tmp_path, capsys):
    config = tmp_path / "exp.yaml"
    config.write_text(f"common:\n  direction: exo2ego\ntrain:\n  {line}\n")
    argv = ["--config", config, "--cache", tmp_path / "cache", "--out", tmp_path / "run"]
    refused(capsys, train_cli.main, argv, "omama-train", f"{config}: ", why)
    assert not (tmp_path / "run").exists()


def test_yaml_accepts_what_the_command_line_accepts(tmp_path):
    """Strings are parsed as flag text (YAML reads `8e-5` as a string), ints pass as floats."""
    from omama.config import parse_config
    from omama.train.loop import TrainConfig

    config = tmp_path / "exp.yaml"
    config.write_text('train:\n  lr: 8e-5\n  min_lr: 0\n  epochs: "3"\n  resume: no\n')
    cfg = parse_config(TrainConfig, ["--config", str(config)], "omama-train", "")
    assert (cfg.lr, cfg.min_lr, cfg.epochs, cfg.resume) == (8e-5, 0.0, 3, False)
    assert isinstance(cfg.min_lr, float)


# ------------------------------------------------------------------ outputs over inputs


@pytest.fixture(scope="module")
def checkpoint(cache_dir, tmp_path_factory) -> Path:
    cache = Cache(cache_dir)
    try:
        grids = cache.role_grids(cache.samples("exo2ego", "test"))
    finally:
        cache.close()
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "matcher.pt"
    save_matcher_state(OMaMaMatcher(*grids), path)
    return path


def eval_argv(cache: Path, checkpoint: Path, out: Path, *extra) -> list:
    return ["--cache", cache, "--split", "test", "--checkpoint", checkpoint, "--out", out, *CPU]


def test_eval_never_writes_over_its_inputs(cache_dir, checkpoint, tmp_path, capsys):
    ckpt = Path(shutil.copy(checkpoint, tmp_path / "best.pt"))
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"version": "xx", "challenge": "xx", "annotations": {}}))
    before = snapshot(tmp_path, cache_dir)
    cases = [
        (eval_argv(cache_dir, ckpt, ckpt), f"{ckpt}: --out would overwrite --checkpoint"),
        (
            eval_argv(cache_dir, ckpt, gt) + ["--gt", gt],
            f"{gt}: --out would overwrite --gt",
        ),
        (
            eval_argv(cache_dir, ckpt, tmp_path / "p.json")
            + ["--metrics-out", tmp_path / "p.json"],
            f"{tmp_path / 'p.json'}: --metrics-out and --out name the same file",
        ),
        (
            eval_argv(cache_dir, ckpt, tmp_path / "best.json") + ["--metrics-out", ckpt],
            f"{ckpt}: --metrics-out would overwrite --checkpoint",
        ),
    ]
    for argv, why in cases:
        refused(capsys, eval_cli.main, argv, "omama-eval", why)
        assert snapshot(tmp_path, cache_dir) == before


def test_gt_never_writes_over_the_relations_file(synth_root, tmp_path, capsys):
    relations = Path(shutil.copy(relations_path(synth_root, "test"), tmp_path / "rel.json"))
    before = snapshot(relations)
    argv = ["--root", synth_root, "--split", "test", "--relations", relations, "--out", relations]
    refused(
        capsys, gt_cli.main, argv, "omama-gt", f"{relations}: --out would overwrite --relations"
    )
    assert snapshot(relations) == before


def test_train_out_is_not_the_cache(cache_dir, capsys):
    before = snapshot(cache_dir)
    argv = ["--cache", cache_dir, "--out", cache_dir, *CPU]
    refused(
        capsys, train_cli.main, argv, "omama-train", f"{cache_dir}: --out would overwrite --cache"
    )
    assert snapshot(cache_dir) == before


# ------------------------------------------------------------------ paths checked first


def test_eval_checks_every_path_before_scoring(
    cache_dir, checkpoint, tmp_path, capsys, monkeypatch
):
    """A missing --gt, an --out that is a folder or under a file: one line, and nothing is
    scored (the scorer is never reached)."""
    from omama.predict import evaluate

    def no_scoring(*a, **k):
        raise AssertionError("scored before the paths were checked")

    monkeypatch.setattr(evaluate, "score_across_ranks", no_scoring)
    blocker = tmp_path / "file"
    blocker.write_text("a file")
    folder = tmp_path / "folder"
    folder.mkdir()
    out = tmp_path / "pred.json"
    cases = [
        (
            eval_argv(cache_dir, checkpoint, out) + ["--gt", tmp_path / "no_gt.json"],
            f"{tmp_path / 'no_gt.json'}: ground-truth file missing (--gt)",
        ),
        (
            eval_argv(cache_dir, checkpoint, blocker / "pred.json"),
            f"{blocker / 'pred.json'}: cannot write here ({blocker} is not a directory)",
        ),
        (
            eval_argv(cache_dir, checkpoint, folder),
            f"{folder}: is a folder (--out names a file to write)",
        ),
        (
            eval_argv(cache_dir, folder, out),
            f"{folder}: is a folder, not a checkpoint file (--checkpoint)",
        ),
    ]
    for argv, why in cases:
        refused(capsys, eval_cli.main, argv, "omama-eval", why)
    assert not out.exists()


def test_checkpoint_that_is_not_one(cache_dir, tmp_path, capsys):
    text = tmp_path / "notes.pt"
    text.write_text("these are my notes, not weights\n")
    argv = eval_argv(cache_dir, text, tmp_path / "pred.json")
    why = (
        "not a PyTorch checkpoint (torch.save writes a zip archive; this file begins with b'thes')"
    )
    refused(capsys, eval_cli.main, argv, "omama-eval", f"{text}: {why}")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    argv = eval_argv(cache_dir, empty, tmp_path / "pred.json")
    refused(capsys, eval_cli.main, argv, "omama-eval", f"{empty}: the checkpoint file is empty")
    assert not (tmp_path / "pred.json").exists()


def test_gt_file_problems_name_the_gt_file(cache_dir, checkpoint, tmp_path, capsys):
    gt = tmp_path / "gt.json"
    out = tmp_path / "pred.json"
    gt.write_text(json.dumps({"version": "xx", "masks": {}}))
    argv = eval_argv(cache_dir, checkpoint, out) + ["--gt", gt]
    why = "no 'annotations' object (not an official ground-truth file?)"
    refused(capsys, eval_cli.main, argv, "omama-eval", f"{gt}: {why}")
    gt.write_text(json.dumps({"annotations": {"t1": {"masks": {"o": {"aria01": {"0": {}}}}}}}))
    refused(capsys, eval_cli.main, argv, "omama-eval", f"{gt}: take t1: no 'annotated_frames'")
    assert not out.exists()  # refused before anything was scored or written


# ------------------------------------------------------------------ samples rows


@pytest.mark.parametrize("row", [99, -3])
def test_samples_row_out_of_range(row, cache_dir, checkpoint, tmp_path, capsys):
    cache = Path(shutil.copytree(cache_dir, tmp_path / "cache"))
    wants = {}
    for split in ("test", "train"):
        path = samples_path(cache, "exo2ego", split)
        table = read_samples(path)
        columns = {k: np.array(v) for k, v in table.columns.items()}
        columns["src_k"][1] = row
        write_samples(path, SampleTable(columns, dict(table.tables)))
        wants[split] = (f"{path}: entry 1: source object row {row}, but image ",)
    before = snapshot(cache)
    argv = eval_argv(cache, checkpoint, tmp_path / "pred.json")
    refused(capsys, eval_cli.main, argv, "omama-eval", *wants["test"])
    argv = ["--cache", cache, "--out", tmp_path / "run", "--epochs", 1, "--batch-size", 64]
    argv += ["--n-masks", 4, "--val-split", "none", *CPU]
    refused(capsys, train_cli.main, argv, "omama-train", *wants["train"])
    assert snapshot(cache) == before
    assert not (tmp_path / "pred.json").exists() and not (tmp_path / "run" / "last.pt").exists()


# ------------------------------------------------------------------ non-finite training


def test_a_read_failing_in_a_loader_worker_is_one_line(cache_dir, tmp_path, capsys, monkeypatch):
    """A shard that cannot be read in a DataLoader worker (here: opening any shard fails in
    every process but this one, so only the forked worker meets it) ends the run with that
    worker's one line, not the traceback the DataLoader wraps around it."""
    parent, plain = os.getpid(), ShardReader._open

    def failing(self, shard):
        if os.getpid() != parent:
            raise bad_file(self.dir / shard, "cannot open cache shard (injected)")
        return plain(self, shard)

    monkeypatch.setattr(ShardReader, "_open", failing)
    argv = ["--cache", cache_dir, "--out", tmp_path / "run", "--epochs", 1, "--batch-size", 4]
    argv += ["--n-masks", 4, "--val-split", "none", "--token-store-gb", 0]
    argv += ["--device", "cpu", "--workers", 1]
    line = refused(
        capsys, train_cli.main, argv, "omama-train", ": cannot open cache shard (injected)"
    )
    assert line.startswith(f"omama-train: error: {cache_dir / 'shards'}/"), line


def test_a_shard_cut_short_under_a_reader_is_one_line(cache_dir, tmp_path):
    """A shard truncated after a reader opened it (a copy still in progress, a full disk)
    gives a short read: one line naming the shard and the field, never wrong bytes."""
    cache_path = Path(shutil.copytree(cache_dir, tmp_path / "cache"))
    cache = Cache(cache_path)
    key, shard = sorted(load_manifest(cache_path).images.items())[0]
    cache.tokens(key)  # the shard is open and the record known
    os.truncate(cache_path / "shards" / shard, 4096)
    with pytest.raises(OmamaError) as err:
        cache.tokens(key)
    want = f"{cache_path / 'shards' / shard}: reading img/{key}/tokens failed (short read at byte"
    assert str(err.value).startswith(want), err.value


def test_nan_tokens_stop_training_naming_the_record(cache_dir, tmp_path, capsys):
    cache = Path(shutil.copytree(cache_dir, tmp_path / "cache"))
    key = Cache(cache).samples("exo2ego", "train")[0].src
    shard = load_manifest(cache).images[key]
    with h5py.File(cache / "shards" / shard, "r+") as f:
        tokens = f[f"img/{key}/tokens"]
        block = tokens[()]
        block[:4] = np.nan
        tokens[...] = block
    out = tmp_path / "run"
    argv = ["--cache", cache, "--out", out, "--epochs", 1, "--batch-size", 4, "--n-masks", 4]
    argv += ["--val-split", "none", "--save-every", 1, "--log-every", 50, *CPU]
    line = refused(
        capsys,
        train_cli.main,
        argv,
        "omama-train",
        f"{cache / 'shards' / shard}: img/{key}/tokens holds a non-finite value (used by step ",
        "training stopped: the loss is not finite",
    )
    step = int(line.split("(used by step ")[1].split(",")[0])
    # what was saved is the last good step; no NaN weights anywhere
    assert not (out / "last.pt").exists() and not (out / "best.pt").exists()
    if step > 1:
        assert f"the checkpoints in {out} are those of step {step - 1}" in line, line
        state = torch.load(out / "state.pt", map_location="cpu", weights_only=False)
        assert state["step"] == step - 1
        assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_lr_too_high_stops_training_and_keeps_the_good_checkpoint(cache_dir, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["--cache", cache_dir, "--out", out, "--batch-size", 4, "--n-masks", 4]
    base += ["--val-split", "none", "--log-every", 1, *CPU]
    assert train_cli.main([str(a) for a in base + ["--epochs", 1]]) == 0
    capsys.readouterr()
    good = snapshot(out)
    # a second run from those weights with an absurd learning rate
    out2 = tmp_path / "run2"
    argv = [a if a != out else out2 for a in base] + ["--epochs", 1, "--lr", 1e30]
    argv += ["--init", out / "last.pt", "--save-every", 1]
    line = refused(
        capsys, train_cli.main, argv, "omama-train", f"{out2}: training stopped at step "
    )
    assert "the loss or a gradient is not finite (is --lr too high?)" in line
    assert not (out2 / "last.pt").exists()
    assert snapshot(out) == good


# ------------------------------------------------------------------ inputs edited after precompute


def precompute_argv(root: Path, cache: Path, weights: Path, *extra) -> list[str]:
    argv = ["--root", root, "--cache", cache, "--weights", weights, "--split", "test", *CPU]
    return [str(a) for a in (*argv, "--batch-size", 4, *extra)]


def test_inputs_edited_after_precompute_are_stale(synth_root, cache_dir, weights, tmp_path, capsys):
    """An object's RLE edited in annotation.json and a candidate file rewritten: the rerun
    names the stale records and stops, --verify lists them, --stale recompute computes
    exactly them again, and the cache then holds the edited ground truth."""
    root = Path(shutil.copytree(synth_root, tmp_path / "data"))  # mtimes kept
    cache = Path(shutil.copytree(cache_dir, tmp_path / "cache"))
    assert precompute_cli.main(precompute_argv(root, cache, weights)) == 0  # nothing stale yet
    assert ": 0 images and 0 candidate sets computed, 6 reused" in capsys.readouterr().out

    sample = Cache(cache).samples("exo2ego", "test")[0]
    ann_path = root / "processed" / sample.take / "annotation.json"
    ann = json.loads(ann_path.read_text())
    rle = ann["masks"][sample.obj][sample.src_cam][str(int(sample.frame))]
    h, w = rle["size"]
    square = np.zeros((h, w), np.uint8)
    square[h // 4 : h // 2, w // 4 : w // 2] = 1
    new_rle = encode(square)
    ann["masks"][sample.obj][sample.src_cam][str(int(sample.frame))] = new_rle
    ann_path.write_text(json.dumps(ann))
    masks = root / "Masks_TEST_EXO2EGO" / sample.take / sample.dst_cam / f"{sample.frame}_masks.npz"
    masks.write_bytes(masks.read_bytes())  # same bytes, new mtime: the file was touched

    before = snapshot(cache)
    refused(
        capsys,
        precompute_cli.main,
        precompute_argv(root, cache, weights),
        "omama-precompute",
        f"{cache}: ",
        "cached records are stale, ",
        "rerun with --stale recompute",
    )
    assert snapshot(cache) == before
    stale_img, stale_cand = f"img/{sample.src}", f"cand/exo2ego/{sample.dst}"
    line = refused(
        capsys,
        precompute_cli.main,
        ["--verify", "--cache", cache, "--root", root],
        "omama-precompute",
        "is stale, input changed since it was cached: ",
    )
    assert stale_img in line or stale_cand in line, line
    assert snapshot(cache) == before

    argv = precompute_argv(root, cache, weights, "--stale", "recompute")
    assert precompute_cli.main(argv) == 0
    out = capsys.readouterr().out
    assert ": 1 images and 1 candidate sets computed, 4 reused" in out, out
    assert precompute_cli.main(["--verify", "--cache", str(cache), "--root", str(root)]) == 0
    reread = Cache(cache)
    src = reread.samples("exo2ego", "test")[0]
    assert reread.obj_rle(src.src, src.src_k) == new_rle
    manifest = load_manifest(cache)
    assert manifest.images[sample.src] != load_manifest(cache_dir).images[sample.src]
    reread.close()


def test_fingerprints_leave_the_records_unchanged(cache_dir):
    """Fingerprints live beside the shards (CACHE/inputs/), one file per listed shard."""
    manifest = load_manifest(cache_dir)
    for shard in manifest.shards:
        doc = json.loads((cache_dir / "inputs" / f"{shard}.json").read_text())
        assert doc["records"], shard
        for record, prints in doc["records"].items():
            assert record.startswith(("img/", "cand/exo2ego/"))
            assert prints["frame"][0] > 0 and len(prints["ann"]) == 20
