"""omama-prepare's writers under faults: a run killed anywhere resumes to the same bytes, a
half-written take is never taken as done, a second writer is refused, and every bad input
of the download is one line naming take, camera and frame (exit 2) or, with --skip-bad,
skipped and listed in the report."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_lines import error_line
from test_prepare import SMALL, load

from omama.cli import prepare as prepare_cli
from omama.prepare import run as prepare_run
from omama.prepare.download import relations_path, video_path
from omama.prepare.video import VideoError
from omama.synth.download import write_video


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "omama.cli.prepare", *(str(a) for a in args)]


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".prepare.lock"
    }


def cmd_for(dl: Path, root: Path, split: str = "train") -> list[str]:
    return cli(
        "--download", dl, "--out", root, "--split", split, "--workers", 1, "--min-height", SMALL
    )


# ---------------------------------------------------------------------------- kill, resume

KILL_POINTS = {
    0: ("a camera half written", lambda root: any(root.glob("processed/*/.*.partial"))),
    1: ("a camera published, the take not", lambda root: any(root.glob("processed/*/*/0.jpg"))),
}


@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_killed_run_resumes_to_the_same_root(point, download, tmp_path, capsys):
    root = tmp_path / "root"
    done = subprocess.run(cmd_for(download, root), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    want = snapshot(root)
    shutil.rmtree(root)

    _, reached = KILL_POINTS[point]
    extra = random.Random(point).uniform(0.0, 0.05)
    for _ in range(5):
        shutil.rmtree(root, ignore_errors=True)
        proc = subprocess.Popen(cmd_for(download, root), stderr=subprocess.DEVNULL)
        while proc.poll() is None and not (root / ".prepare.lock").exists():
            time.sleep(0.002)
        while proc.poll() is None and not reached(root):
            time.sleep(0.002)
        time.sleep(extra)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.returncode == -signal.SIGKILL:
            break
        extra /= 4
    else:
        pytest.skip("the run always finished before it could be killed")
    # what the kill left: a take with annotation.json has every camera whole
    for ann in root.glob("processed/*/annotation.json"):
        cams = {c for obj in load(ann)["masks"].values() for c in obj}
        assert all((ann.parent / c).is_dir() for c in cams)
    done = subprocess.run(cmd_for(download, root), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert snapshot(root) == want
    assert not list(root.glob("processed/*/.*.partial"))


def test_a_second_writer_is_refused(download, tmp_path, capsys):
    root = tmp_path / "root"
    root.mkdir()
    import fcntl

    with open(root / ".prepare.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        code = prepare_cli.main([str(a) for a in cmd_for(download, root)[3:]])
    line = error_line(capsys.readouterr().err, "omama-prepare")
    assert code == 2 and "another omama-prepare is writing this root" in line


# ---------------------------------------------------------------------------- bad inputs


def first_take(dl: Path) -> tuple[str, dict]:
    take, entry = next(iter(load(relations_path(dl, "test"))["annotations"].items()))
    return take, entry


def edit_relations(dl: Path, change) -> None:
    path = relations_path(dl, "test")
    data = load(path)
    change(next(iter(data["annotations"].values())))
    path.write_text(json.dumps(data))


def first_mask(entry: dict) -> tuple[str, str, str]:
    for obj, cams in entry["object_masks"].items():
        for cam, cam_entry in cams.items():
            for frame in cam_entry["annotation"]:
                return obj, cam, frame
    raise AssertionError("no mask")


def _missing_exo(dl, name, entry):
    video_path(dl, name, "cam01").unlink()
    return ["camera cam01", "video missing", str(video_path(dl, name, "cam01"))]


def _missing_ego(dl, name, entry):
    video_path(dl, name, "aria01").unlink()
    return ["camera aria01", "video missing"]


def _garbage_video(dl, name, entry):
    video_path(dl, name, "cam02").write_bytes(b"not a video at all" * 100)
    return ["camera cam02", "cannot open the video"]


def _short_exo(dl, name, entry):
    write_video(video_path(dl, name, "cam01"), [np.zeros((200, 350, 3), np.uint8)], 4, 30)
    return ["camera cam01", "video has 1 frames", "frame 30 is missing"]


def _bad_mask(dl, name, entry):
    obj, cam, frame = first_mask(entry)

    def change(e):
        e["object_masks"][obj][cam]["annotation"][frame]["encodedMask"] = "!!not-lz!!"

    edit_relations(dl, change)
    return [f"object {obj} camera {cam} frame {frame}", "does not decode as LZString"]


def _wrong_size_mask(dl, name, entry):
    obj, cam, frame = first_mask(entry)

    def change(e):
        e["object_masks"][obj][cam]["annotation"][frame]["width"] += 1

    edit_relations(dl, change)
    return [f"object {obj} camera {cam} frame {frame}", "pixels, not"]


def _two_egos(dl, name, entry):
    def change(e):
        obj = next(iter(e["object_masks"]))
        e["object_masks"][obj]["aria02"] = e["object_masks"][obj]["aria01"]

    edit_relations(dl, change)
    return ["2 ego (aria) cameras"]


def _no_ego(dl, name, entry):
    def change(e):
        for cams in e["object_masks"].values():
            cams.pop("aria01")

    edit_relations(dl, change)
    return ["no ego camera"]


def _small_video(dl, name, entry):
    return ["camera aria01", "video is 460x460, smaller than the full size"]


# case -> (break the download, what --skip-bad drops: "take", "camera" or "mask")
CASES = {
    "missing exo video": (_missing_exo, "camera"),
    "missing ego video": (_missing_ego, "take"),
    "undecodable video": (_garbage_video, "camera"),
    "exo video shorter than the ego video": (_short_exo, "camera"),
    "undecodable mask": (_bad_mask, "mask"),
    "mask of the wrong size": (_wrong_size_mask, "mask"),
    "two ego cameras": (_two_egos, "take"),
    "no ego camera": (_no_ego, "take"),
    "video smaller than the full size": (_small_video, "take"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_bad_input_is_one_line_or_skipped_and_listed(case, download, tmp_path, capsys):
    dl = Path(shutil.copytree(download, tmp_path / "dl"))
    take, entry = first_take(dl)
    breaker, scope = CASES[case]
    words = breaker(dl, entry["take_name"], entry)
    args = ["--download", str(dl), "--split", "test", "--workers", "1"]
    if case != "video smaller than the full size":
        args += ["--min-height", str(SMALL)]
    root = tmp_path / "root"
    assert prepare_cli.main([*args, "--out", str(root)]) == 2
    line = error_line(capsys.readouterr().err, "omama-prepare")
    for word in [f"take {take}", *words]:
        assert word in line, line
    assert not (root / "processed" / take / "annotation.json").exists()

    assert prepare_cli.main([*args, "--out", str(root), "--skip-bad"]) == 0
    capsys.readouterr()
    report = load(root / "reports" / "prepare_bad_test.json")["problems"]
    assert len(report) == 1 and report[0]["skipped"] == scope and take in report[0]["line"]
    split = load(root / "processed" / "split.json")["test"]
    pairs = load(root / "dataset_jsons" / "test_exoego_pairs.json")
    if scope == "take":
        assert split == [] and pairs == []
        return
    assert split == [take]
    masks = load(root / "processed" / take / "annotation.json")["masks"]
    if scope == "camera":
        cam = report[0]["camera"]
        assert not (root / "processed" / take / cam).exists()
        assert all(cam not in cams for cams in masks.values())
        assert all(f"//{cam}//" not in p[2] for p in pairs)
    else:
        r = report[0]
        assert r["frame"] not in masks[r["object"]][r["camera"]]


def test_an_ego_video_failing_while_read_drops_its_take(download, tmp_path, capsys, monkeypatch):
    """A video that probes well but fails while its frames are read is the camera's loss for
    an exo camera; for the ego camera it is the take's, as at planning: with --skip-bad the
    take is not published and gives no pairs."""
    dl = Path(shutil.copytree(download, tmp_path / "dl"))
    take, entry = first_take(dl)
    ego, plain = video_path(dl, entry["take_name"], "aria01"), prepare_run.extract

    def failing(path, *args, **kwargs):
        if path == ego:
            raise VideoError("video ends after 3 frames, before frame 30", 30)
        return plain(path, *args, **kwargs)

    monkeypatch.setattr(prepare_run, "extract", failing)
    args = ["--download", str(dl), "--split", "test", "--workers", "1"]
    args += ["--min-height", str(SMALL), "--out", str(tmp_path / "root")]
    assert prepare_cli.main(args) == 2
    line = error_line(capsys.readouterr().err, "omama-prepare")
    assert f"take {take}" in line and "video ends after 3 frames" in line, line
    assert prepare_cli.main([*args, "--skip-bad"]) == 0
    root = tmp_path / "root"
    report = load(root / "reports" / "prepare_bad_test.json")["problems"]
    assert [(r["skipped"], r["camera"]) for r in report] == [("take", "aria01")]
    assert not (root / "processed" / take / "annotation.json").exists()
    assert take not in load(root / "processed" / "split.json")["test"]
    pairs = load(root / "dataset_jsons" / "test_exoego_pairs.json")
    assert all(take not in p[0] for p in pairs)


def test_bad_split_file_and_relations_are_one_line(download, tmp_path, capsys):
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"test": ["no-such-take"]}))
    argv = ["--download", str(download), "--out", str(tmp_path / "r"), "--split", "test"]
    assert prepare_cli.main([*argv, "--split-file", str(split_file), "--min-height", "400"]) == 2
    line = error_line(capsys.readouterr().err, "omama-prepare")
    assert "take no-such-take" in line and "not in the relations file" in line
    empty = tmp_path / "empty"
    empty.mkdir()
    assert prepare_cli.main(["--download", str(empty), "--out", str(tmp_path / "r2")]) == 2
    line = error_line(capsys.readouterr().err, "omama-prepare")
    assert "relations_train.json: relations file missing" in line


def test_a_camera_folder_short_of_frames_is_redone(download, tmp_path):
    """What the official script leaves when killed: a take folder, camera folders with some
    frames and one cut short, no annotation.json. The take is not taken as done; the short
    cameras are redone."""
    dl, root = download, tmp_path / "root"
    done = subprocess.run(cmd_for(dl, root, "val"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    want = snapshot(root)
    take = load(root / "processed" / "split.json")["val"][0]
    (root / "processed" / take / "annotation.json").unlink()
    (root / "processed" / take / "cam01" / "30.jpg").unlink()
    cut = root / "processed" / take / "aria01" / "0.jpg"
    cut.write_bytes(cut.read_bytes()[:100])  # a write cut short
    done = subprocess.run(cmd_for(dl, root, "val"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert snapshot(root) == want
