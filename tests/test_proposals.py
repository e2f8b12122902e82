"""omama-proposals: candidate files in O-MaMa's format, read the way its loader reads them.

The post-processing (resize, empty masks, the whole-image fallback, boxes) is tested as pure
functions on crafted masks against plain oracles; the command itself runs the real FastSAM
code path of ultralytics on a seeded random-init FastSAM-s (tests that need the optional
package skip, saying so, only where it is not installed).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from oracles import reference_box, reference_reads_candidates

from omama.cli.proposals import main as proposals_main
from omama.config import parse_config
from omama.dataset.candidates import load_candidates
from omama.dataset.images import read_image
from omama.dist import DistEnv
from omama.errors import OmamaError
from omama.proposals import store
from omama.proposals.jobs import Share, destination_images, resolve_share
from omama.proposals.masks import boxes_of, finish, mask_size, resize_nearest
from omama.proposals.options import ProposalsConfig
from omama.proposals.run import run_proposals

needs_ultralytics = pytest.mark.skipif(
    importlib.util.find_spec("ultralytics") is None,
    reason="the optional package ultralytics is not installed (pip install -e '.[proposals]')",
)

PROG = "omama-proposals"
# random-init FastSAM finds masks only at very low confidence; a small input keeps it fast
FAST = dict(imgsz=64, conf=0.001, max_det=20, device="cpu", workers=2)


@pytest.mark.parametrize(
    ("hw", "expect"),
    [((704, 704), (700, 700)), ((540, 960), (532, 952)), ((960, 540), (952, 532))],
)
def test_mask_size_is_omamas_crop_in_the_images_orientation(hw, expect):
    assert mask_size(*hw) == expect


@pytest.mark.parametrize(("hw", "size"), [((704, 704), (700, 700)), ((37, 90), (28, 84))])
def test_resize_is_cv2_nearest_of_each_mask(hw, size):
    masks = torch.rand(5, *hw) > 0.7
    got = resize_nearest(masks, size).to(torch.uint8).numpy()
    for m, g in zip(masks.to(torch.uint8).numpy(), got, strict=True):
        np.testing.assert_array_equal(g, cv2.resize(m, size[::-1], interpolation=cv2.INTER_NEAREST))


def test_boxes_are_omamas_bbox_from_mask():
    masks = torch.zeros(6, 20, 30, dtype=torch.uint8)
    masks[0, 3, 4] = 1  # one pixel: w = h = 0
    masks[1, 2:9, 5:25] = 1
    masks[2, 0, :] = 1
    masks[3, :, 29] = 1
    masks[4] = (torch.rand(20, 30) > 0.9).to(torch.uint8)
    # masks[5] empty: zeros
    want = [reference_box(m.numpy()) for m in masks]
    assert boxes_of(masks).tolist() == want
    assert boxes_of(masks).dtype == torch.float32


def test_empty_masks_are_dropped_in_order():
    masks = torch.zeros(4, 40, 40, dtype=torch.uint8)
    masks[0, 5:9, 5:9] = 1
    # masks[1] empty from the start
    masks[2, 39, 39] = 1  # one pixel that the 40 -> 28 nearest resize skips: empty after it
    masks[3, 20:30, 10:12] = 1
    assert cv2.resize(masks[2].numpy(), (28, 28), interpolation=cv2.INTER_NEAREST).sum() == 0
    got = finish(masks, (28, 28))
    assert not got.fallback and got.dropped == 2
    want = [cv2.resize(masks[i].numpy(), (28, 28), interpolation=cv2.INTER_NEAREST) for i in (0, 3)]
    np.testing.assert_array_equal(got.masks, np.stack(want))
    assert got.masks.dtype == np.uint8 and got.boxes.dtype == np.float32
    assert got.boxes.tolist() == [reference_box(m) for m in want]


@pytest.mark.parametrize("found", ["none", "zero", "all-empty"])
def test_no_mask_left_gives_the_whole_image(found):
    masks = {
        "none": None,
        "zero": torch.zeros(0, 30, 50, dtype=torch.uint8),
        "all-empty": torch.zeros(3, 30, 50, dtype=torch.uint8),
    }[found]
    got = finish(masks, (28, 42))
    assert got.fallback and got.dropped == (3 if found == "all-empty" else 0)
    np.testing.assert_array_equal(got.masks, np.ones((1, 28, 42), np.uint8))
    assert got.boxes.tolist() == [reference_box(got.masks[0])] == [[0.0, 0.0, 41.0, 27.0]]


def test_written_files_read_unchanged_by_omamas_loader(tmp_path):
    masks = np.zeros((3, 28, 42), np.uint8)
    masks[0, 2:5, 3:9] = 1
    masks[1, 10:20, 30:41] = 1
    masks[2] = 1
    boxes = np.array([reference_box(m) for m in masks], np.float32)
    m_path, b_path = tmp_path / "t/cam01/30_masks.npz", tmp_path / "t/cam01/30_boxes.npy"
    store.write_candidates(m_path, b_path, masks, boxes)
    first = m_path.read_bytes(), b_path.read_bytes()
    store.write_candidates(m_path, b_path, masks, boxes)
    assert (m_path.read_bytes(), b_path.read_bytes()) == first  # the same masks, the same bytes
    assert store.is_done(m_path, b_path)
    with np.load(m_path) as z:
        assert z.files == ["arr_0"] and z["arr_0"].dtype == np.uint8
    # at the files' own size (evaluation) and stretched to another (training, landscape)
    for h2, w2 in ((28, 42), (56, 42)):
        got_m, got_b = reference_reads_candidates(tmp_path, "t", "cam01", 30, h2, w2)
        want = torch.nn.functional.interpolate(
            torch.from_numpy(masks)[None].float(), size=(h2, w2), mode="nearest"
        )[0]
        np.testing.assert_array_equal(got_m.numpy(), want.numpy())
        np.testing.assert_allclose(got_b[:, [1, 3]].numpy(), boxes[:, [1, 3]] * h2 / 28)
    # omama's own reader takes them too
    got_m, got_b = load_candidates(tmp_path, "t", "cam01", 30, (28, 42), (30, 45))
    np.testing.assert_array_equal(got_m, masks)
    np.testing.assert_array_equal(got_b, boxes)


def test_only_whole_files_count_as_done(tmp_path):
    m_path, b_path = tmp_path / "0_masks.npz", tmp_path / "0_boxes.npy"
    assert not store.is_done(m_path, b_path)
    store.write_candidates(
        m_path, b_path, np.ones((2, 4, 4), np.uint8), np.zeros((2, 4), np.float32)
    )
    assert store.is_done(m_path, b_path)
    np.save(b_path, np.zeros((3, 4), np.float32))  # a box count that is not the mask count
    assert not store.is_done(m_path, b_path)
    b_path.unlink()
    assert not store.is_done(m_path, b_path)  # killed between the two renames
    b_path.write_bytes(b"garbage")
    assert not store.is_done(m_path, b_path)


def test_other_settings_are_refused(tmp_path):
    store.check_settings(tmp_path, {"conf": 0.4, "imgsz": 1024})
    store.check_settings(tmp_path, {"conf": 0.4, "imgsz": 1024})
    with pytest.raises(OmamaError, match=r"omama-proposals.json: .*conf=0.4, this run asks 0.1"):
        store.check_settings(tmp_path, {"conf": 0.1, "imgsz": 1024})


def test_config_file_section_and_help(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("common:\n  device: cpu\n  seed: 3\nproposals:\n  conf: 0.1\n  max-det: 50\n")
    cfg = parse_config(ProposalsConfig, ["--config", str(path), "--imgsz", "512"], PROG, "")
    assert (cfg.device, cfg.seed, cfg.conf, cfg.max_det, cfg.imgsz) == ("cpu", 3, 0.1, 50, 512)
    assert (cfg.iou, cfg.retina_masks, ProposalsConfig().conf) == (0.9, True, 0.4)
    with pytest.raises(SystemExit):
        proposals_main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--weights", "--random-init", "--no-retina-masks", "--max-det", "--parts"):
        assert flag in text


def test_shares_follow_torchrun_or_part():
    assert resolve_share(None, 1, None) == Share(0, 1)
    assert resolve_share(2, 3, None) == Share(2, 3)
    assert resolve_share(None, 1, DistEnv(rank=1, world=4, local_rank=1)) == Share(1, 4)
    assert Share(1, 3).of(list(range(8))) == [1, 4, 7]
    with pytest.raises(OmamaError, match="drop --part"):
        resolve_share(0, 2, DistEnv(rank=0, world=2, local_rank=0))
    with pytest.raises(OmamaError, match="--parts 2 needs --part I"):
        resolve_share(None, 2, None)
    with pytest.raises(OmamaError, match="must be in"):
        resolve_share(3, 3, None)


def test_missing_ultralytics_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ultralytics", None)  # import ultralytics -> ImportError
    weights = tmp_path / "FastSAM-x.pt"
    weights.write_bytes(b"x")
    rc = proposals_main(["--root", str(tmp_path), "--weights", str(weights), "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "ultralytics (AGPL-3.0)" in err[0] and "pip install -e '.[proposals]'" in err[0]


@needs_ultralytics
def test_weights_or_random_init_exactly_one(synth_root, tmp_path, capsys):
    argv = ["--root", str(synth_root), "--masks-dir", str(tmp_path / "m"), "--device", "cpu"]
    for extra in ([], ["--random-init", "--weights", str(tmp_path / "w.pt")]):
        assert proposals_main([*argv, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        want = "omama-proposals: error: give exactly one of --weights FILE or --random-init"
        assert err == [want]


@needs_ultralytics
def test_other_checkpoints_are_refused_in_one_line(tmp_path):
    from ultralytics.nn.tasks import DetectionModel, SegmentationModel

    from omama.files import write_torch
    from omama.proposals.segmenter import Segmenter

    det, seg80, junk = tmp_path / "det.pt", tmp_path / "seg80.pt", tmp_path / "junk.pt"
    write_torch({"model": DetectionModel("yolov8n.yaml", nc=1, verbose=False)}, det)
    write_torch({"model": SegmentationModel("yolov8n-seg.yaml", nc=80, verbose=False)}, seg80)
    junk.write_bytes(b"not a checkpoint")
    (pth := tmp_path / "w.pth").write_bytes(b"x")
    for path, problem in (
        (det, "a DetectionModel, not a segmentation model like FastSAM"),
        (seg80, "a segmentation model of 80 classes, not FastSAM (one class)"),
        (junk, "not a loadable FastSAM checkpoint (TypeError: "),
        (pth, "expected an ultralytics .pt checkpoint (FastSAM-x.pt)"),
    ):
        with pytest.raises(OmamaError) as exc:
            Segmenter(path, torch.device("cpu"), {})
        assert str(exc.value).startswith(f"{path}: {problem}")
        assert "\n" not in str(exc.value)


def test_missing_weights_say_where_to_get_them(capsys, synth_root, tmp_path):
    weights = tmp_path / "FastSAM-x.pt"
    argv = ["--root", str(synth_root), "--split", "test", "--weights", str(weights)]
    rc = proposals_main([*argv, "--masks-dir", str(tmp_path / "m"), "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith(f"omama-proposals: error: {weights}: FastSAM weights file missing")
    assert "CASIA-IVA-Lab/FastSAM" in err[0]


@pytest.fixture(scope="session")
def fastsam_s(tmp_path_factory) -> Path:
    pytest.importorskip("ultralytics", reason="the optional package ultralytics is not installed")
    from omama.proposals.segmenter import save_random_init

    return save_random_init(tmp_path_factory.mktemp("fastsam") / "FastSAM-s-seed0.pt", 0, "s")


def _cfg(root: Path, masks_dir: Path, weights: Path | None, **kw) -> ProposalsConfig:
    base = dict(root=root, masks_dir=masks_dir, weights=weights, direction="ego2exo", split="train")
    return ProposalsConfig(**{**base, **FAST, **kw})


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != store.SETTINGS_FILE
    }


@needs_ultralytics
def test_every_destination_image_gets_files_omama_reads(synth_root, fastsam_s, tmp_path):
    masks_dir = tmp_path / "Masks_TRAIN_EGO2EXO"
    report = run_proposals(_cfg(synth_root, masks_dir, fastsam_s, batch_size=3, writers=2))
    jobs = destination_images(synth_root, "train", "ego2exo", masks_dir)
    assert report.written == len(jobs) == report.images and report.skipped == 0
    assert report.masks > report.written  # FastSAM's own masks came through, not only fallbacks
    assert {j.cam for j in jobs} >= {"cam01", "cam02"}  # a portrait exo camera among them
    for job in jobs:
        h, w = read_image(job.image).shape[:2]
        th, tw = mask_size(h, w)
        masks, boxes = reference_reads_candidates(masks_dir, job.take, job.cam, job.frame, th, tw)
        assert masks.shape[0] >= 1 and masks.flatten(1).any(dim=1).all()  # no empty mask
        assert boxes.tolist() == [reference_box(m.numpy()) for m in masks]
        load_candidates(masks_dir, job.take, job.cam, job.frame, (min(th, tw), max(th, tw)), (h, w))
    again = run_proposals(_cfg(synth_root, masks_dir, fastsam_s, batch_size=3))
    assert again.written == 0 and again.skipped == len(jobs)


@needs_ultralytics
def test_resume_after_a_kill_gives_identical_files(synth_root, fastsam_s, tmp_path, monkeypatch):
    # one image per batch: the segmenter then sees the same inputs in both runs; one writer:
    # the kill falls on the third image written
    whole = tmp_path / "whole"
    run_proposals(_cfg(synth_root, whole, fastsam_s, batch_size=1, writers=2))
    killed = tmp_path / "killed"
    real_write, calls = store.write_candidates, []

    def dies_on_the_third(m_path, b_path, masks, boxes):
        calls.append(m_path)
        if len(calls) == 3:  # the masks renamed, the boxes never: as a kill between the two
            real_write(m_path, b_path.with_name("ignored.npy"), masks, boxes)
            (b_path.parent / f".{b_path.name}.abc.tmp").write_bytes(b"half")
            b_path.parent.joinpath("ignored.npy").unlink()
            raise KeyboardInterrupt
        real_write(m_path, b_path, masks, boxes)

    monkeypatch.setattr(store, "write_candidates", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        run_proposals(_cfg(synth_root, killed, fastsam_s, batch_size=1, writers=1))
    monkeypatch.setattr(store, "write_candidates", real_write)
    report = run_proposals(_cfg(synth_root, killed, fastsam_s, batch_size=1))
    assert report.skipped == 2 and report.written == report.images - 2
    for p in killed.rglob(".*.tmp"):
        p.unlink()  # what the kill left, never read
    assert _files(killed) == _files(whole)


@needs_ultralytics
def test_a_bad_image_is_one_line(synth_root, fastsam_s, tmp_path, capsys):
    root = tmp_path / "root"
    shutil.copytree(synth_root, root)
    jobs = destination_images(root, "train", "ego2exo", tmp_path / "m")
    bad = jobs[-1].image
    bad.write_bytes(bad.read_bytes()[:-200])
    argv = ["--root", str(root), "--direction", "ego2exo", "--split", "train"]
    argv += ["--weights", str(fastsam_s), "--masks-dir", str(tmp_path / "m"), "--batch-size", "1"]
    argv += ["--imgsz", "64", "--conf", "0.001", "--device", "cpu"]
    rc = proposals_main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert rc == 2
    assert err == [
        f"omama-proposals: error: {bad}: truncated JPEG (the file ends before its "
        "end-of-image marker 0xFFD9)"
    ]
    # what came before the bad image was written, and is kept for the rerun
    assert all(store.is_done(j.masks, j.boxes) for j in jobs[:-1])


@needs_ultralytics
def test_random_init_and_parts(synth_root, tmp_path, capsys):
    masks_dir = tmp_path / "ds" / "Masks_TRAIN_EGO2EXO"
    common = ["--root", str(synth_root), "--direction", "ego2exo", "--split", "train"]
    common += ["--random-init", "--arch", "s", "--masks-dir", str(masks_dir), "--imgsz", "64"]
    common += ["--conf", "0.001", "--device", "cpu", "--parts", "2"]
    assert proposals_main([*common, "--part", "1"]) == 0
    jobs = destination_images(synth_root, "train", "ego2exo", masks_dir)
    assert [store.is_done(j.masks, j.boxes) for j in jobs] == [i % 2 == 1 for i in range(len(jobs))]
    assert (tmp_path / "ds" / "FastSAM-s-random-init-seed0.pt").is_file()
    assert proposals_main([*common, "--part", "0"]) == 0
    assert all(store.is_done(j.masks, j.boxes) for j in jobs)
    out = capsys.readouterr().out
    assert "part 0-of-2 of ego2exo train" in out


@needs_ultralytics
def test_torchrun_ranks_write_the_files_of_one_process(synth_root, fastsam_s, tmp_path):
    one = tmp_path / "one"
    run_proposals(_cfg(synth_root, one, fastsam_s, batch_size=1))
    two = tmp_path / "two"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())  # the same threads as `one`
    args = ["--root", synth_root, "--direction", "ego2exo", "--split", "train", "--weights"]
    args += [fastsam_s, "--masks-dir", two, "--batch-size", "1", "--imgsz", "64"]
    args += ["--conf", "0.001", "--max-det", "20", "--device", "cpu"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "omama.cli.proposals", *map(str, args)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "part 0-of-2" in done.stdout and "part 1-of-2" in done.stdout
    assert _files(two) == _files(one)
