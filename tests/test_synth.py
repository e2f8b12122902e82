"""The synthetic Ego-Exo4D-layout generator, checked with plain file reads and numpy oracles."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from omama.cli.synth import main
from omama.constants import SPLITS
from omama.masks import mask_iou, tight_boxes
from omama.synth import SETTINGS, SynthConfig, generate, save_npz_deterministic

FRAMES = [0, 30, 60]
EGO_JPG, EXO_JPG = (230, 230), (200, 350)


def small_cfg(seed: int = 7, **kw) -> SynthConfig:
    base = dict(seed=seed, takes=3, frames=3, objects=4, exo_cams=2, small=True)
    base.update(kw)
    return SynthConfig(**base)


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "ds"
    generate(small_cfg(), out)
    return out


def load(path: Path):
    with open(path, encoding="utf-8") as fp:
        return json.load(fp)


def parse(entry: str) -> tuple[str, str, str, str, str, str]:
    """ROOT//take//cam//obj//kind//frame, read from the right."""
    root, take, cam, obj, kind, frame = entry.rsplit("//", 5)
    return root, take, cam, obj, kind, frame


def cams_of(ds: Path, take: str) -> tuple[str, list[str]]:
    cams = sorted(p.name for p in (ds / "processed" / take).iterdir() if p.is_dir())
    ego = [c for c in cams if "aria" in c]
    assert len(ego) == 1
    return ego[0], [c for c in cams if "aria" not in c]


def crop(hw: tuple[int, int]) -> tuple[int, int]:
    return (hw[0] // 14 * 14, hw[1] // 14 * 14)


def decode_to(rle: dict, hw: tuple[int, int]) -> np.ndarray:
    m = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    return cv2.resize(m, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return np.logical_and(a, b).sum() / max(1, np.logical_or(a, b).sum())


def test_layout_files_exist(ds: Path) -> None:
    split = load(ds / "processed" / "split.json")
    assert sorted(split) == sorted(SPLITS)
    assert [len(split[s]) for s in SPLITS] == [1, 1, 1]
    takes = load(ds / "takes.json")
    assert sorted(t["take_uid"] for t in takes) == sorted(sum(split.values(), []))
    assert all(isinstance(t["take_name"], str) and t["take_name"] for t in takes)
    for take in sum(split.values(), []):
        ann = load(ds / "processed" / take / "annotation.json")
        assert ann["subsample_idx"] == FRAMES
        ego, exos = cams_of(ds, take)
        assert ego == "aria01" and exos == ["cam01", "cam02"]
        for cam in [ego, *exos]:
            for f in FRAMES:
                assert (ds / "processed" / take / cam / f"{f}.jpg").is_file()
        assert len(ann["masks"]) == 4
        assert any(" " in obj for obj in ann["masks"])  # names like "red mug_0"
    for s in SPLITS:
        for setting in SETTINGS:
            assert (ds / "dataset_jsons" / f"{s}_{setting}_pairs.json").is_file()
        for d in ("EXO2EGO", "EGO2EXO"):
            assert (ds / f"Masks_{s.upper()}_{d}").is_dir()
    for setting in SETTINGS:
        full = load(ds / "dataset_jsons" / f"train_{setting}_pairs.json")
        sub = load(ds / "dataset_jsons" / f"train_{setting}_20percent_pairs.json")
        assert len(sub) == max(1, round(0.2 * len(full)))
        assert all(p in full for p in sub)
        val = load(ds / "dataset_jsons" / f"val_{setting}_pairs.json")
        assert load(ds / "dataset_jsons" / f"custom_val_{setting}_pairs_10.json") == val[::10]


def test_pairs_exist_iff_source_annotated(ds: Path) -> None:
    split = load(ds / "processed" / "split.json")
    for s in SPLITS:
        for setting in SETTINGS:
            expected = set()
            for take in split[s]:
                masks = load(ds / "processed" / take / "annotation.json")["masks"]
                ego, exos = cams_of(ds, take)
                for obj, per_cam in masks.items():
                    for exo in exos:
                        source = exo if setting == "exoego" else ego
                        for frame in per_cam.get(source, {}):
                            expected.add((take, ego, exo, obj, frame))
            got = set()
            for entry in load(ds / "dataset_jsons" / f"{s}_{setting}_pairs.json"):
                assert len(entry) == 4
                parts = [parse(e) for e in entry]
                assert [p[4] for p in parts] == ["rgb", "mask", "rgb", "mask"]
                assert all(p[0] == str(ds) for p in parts)
                assert len({(p[1], p[3], p[5]) for p in parts}) == 1  # same take, obj, frame
                assert parts[0][2] == parts[1][2] == "aria01"  # ego first in both directions
                assert parts[2][2] == parts[3][2] != "aria01"
                take, _, obj, _, frame = parts[0][1:]
                assert obj in load(ds / "processed" / take / "annotation.json")["masks"]
                assert int(frame) in FRAMES
                got.add((take, parts[0][2], parts[2][2], obj, frame))
            assert got == expected, (s, setting)
            assert got, (s, setting)


def test_sizes_of_frames_annotations_and_candidates(ds: Path) -> None:
    split = load(ds / "processed" / "split.json")
    portrait = []
    n_files = 0
    for s in SPLITS:
        for take in split[s]:
            ann = load(ds / "processed" / take / "annotation.json")
            ego, exos = cams_of(ds, take)
            for cam in [ego, *exos]:
                img = cv2.imread(str(ds / "processed" / take / cam / "0.jpg"))
                hw = img.shape[:2]
                if cam == ego:
                    assert hw == EGO_JPG
                    orig = (2 * hw[0], 2 * hw[1])
                else:
                    assert hw in (EXO_JPG, EXO_JPG[::-1])
                    if hw[0] > hw[1]:
                        portrait.append((s, take, cam))
                    orig = (4 * hw[0], 4 * hw[1])
                for f in FRAMES:
                    assert (
                        cv2.imread(str(ds / "processed" / take / cam / f"{f}.jpg")).shape[:2] == hw
                    )
                for obj in ann["masks"]:
                    for rle in ann["masks"][obj].get(cam, {}).values():
                        assert tuple(rle["size"]) == orig
                for d in ("EXO2EGO", "EGO2EXO"):
                    for npz in (ds / f"Masks_{s.upper()}_{d}" / take / cam).glob("*_masks.npz"):
                        n_files += 1
                        with np.load(npz) as z:
                            assert z.files == ["arr_0"]
                            masks = z["arr_0"]
                        boxes = np.load(str(npz).replace("_masks.npz", "_boxes.npy"))
                        assert masks.dtype == np.uint8 and masks.ndim == 3
                        assert masks.shape[1:] == crop(hw)
                        assert set(np.unique(masks)) <= {0, 1}
                        assert 12 <= len(masks) <= 40
                        assert boxes.dtype == np.float32 and boxes.shape == (len(masks), 4)
                        for m, b in zip(masks, boxes, strict=True):
                            ys, xs = np.nonzero(m)
                            want = [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
                            assert b.tolist() == [float(v) for v in want]
    assert n_files > 0
    assert len(portrait) == 1 and portrait[0][0] == "train" and portrait[0][2] == "cam02"


def test_candidates_exist_for_every_destination(ds: Path) -> None:
    for s in SPLITS:
        for setting, d, slot in (("exoego", "EXO2EGO", 0), ("egoexo", "EGO2EXO", 2)):
            for entry in load(ds / "dataset_jsons" / f"{s}_{setting}_pairs.json"):
                _, take, cam, _, _, frame = parse(entry[slot])
                base = ds / f"Masks_{s.upper()}_{d}" / take / cam
                assert (base / f"{frame}_masks.npz").is_file()
                assert (base / f"{frame}_boxes.npy").is_file()


def test_each_visible_object_has_a_close_but_inexact_candidate(ds: Path) -> None:
    checked = 0
    for d in ds.glob("Masks_*_*"):
        for npz in d.glob("*/*/*_masks.npz"):
            take, cam = npz.parts[-3], npz.parts[-2]
            frame = npz.name.split("_")[0]
            masks = np.load(npz)["arr_0"]
            ann = load(ds / "processed" / take / "annotation.json")["masks"]
            for obj, per_cam in ann.items():
                if frame not in per_cam.get(cam, {}):
                    continue
                gt = decode_to(per_cam[cam][frame], masks.shape[1:])
                ious = [iou(m, gt) for m in masks]
                assert max(ious) > 0.5, (take, cam, frame, obj, max(ious))
                assert not any(np.array_equal(m, gt) for m in masks)
                checked += 1
    assert checked > 10


def mean_colour(ds: Path, take: str, ann: dict, cam: str, frame: str, obj: str) -> np.ndarray:
    img = cv2.imread(str(ds / "processed" / take / cam / f"{frame}.jpg"))
    m = decode_to(ann[obj][cam][frame], img.shape[:2]).astype(bool)
    return img[m].mean(0)


def test_objects_look_alike_across_views(ds: Path) -> None:
    """Learnability smoke test: an object's mean colour in the ego view is nearest to the same
    object's mean colour in an exo view (among the objects visible there) most of the time."""
    hits = total = 0
    for take in load(ds / "processed" / "split.json")["train"]:
        ann = load(ds / "processed" / take / "annotation.json")["masks"]
        ego, exos = cams_of(ds, take)

        for f in map(str, FRAMES):
            for exo in exos:
                there = [o for o in ann if f in ann[o].get(exo, {})]
                if len(there) < 2:
                    continue
                means = {o: mean_colour(ds, take, ann, exo, f, o) for o in there}
                for obj in there:
                    if f not in ann[obj].get(ego, {}):
                        continue
                    q = mean_colour(ds, take, ann, ego, f, obj)
                    best = min(there, key=lambda o: np.linalg.norm(means[o] - q))
                    hits += best == obj
                    total += 1
    assert total >= 3
    assert hits / total >= 0.7, (hits, total)


def test_visible_and_hidden_destinations_in_every_split(ds: Path) -> None:
    for s in SPLITS:
        for setting, slot in (("exoego", 0), ("egoexo", 2)):
            seen = set()
            for entry in load(ds / "dataset_jsons" / f"{s}_{setting}_pairs.json"):
                _, take, cam, obj, _, frame = parse(entry[slot])
                ann = load(ds / "processed" / take / "annotation.json")["masks"]
                seen.add(frame in ann[obj].get(cam, {}))
            assert seen == {True, False}, (s, setting)


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    cfg = small_cfg(seed=3, frames=2)
    out = tmp_path / "ds"
    generate(cfg, out)
    first = tree_hashes(out)
    shutil.rmtree(out)
    generate(cfg, out)
    assert tree_hashes(out) == first
    assert any(name.endswith(".npz") for name in first)
    shutil.rmtree(out)
    generate(small_cfg(seed=4, frames=2), out)
    other = tree_hashes(out)
    assert other["processed/split.json"] != first["processed/split.json"]
    assert not set(other.values()) & {v for k, v in first.items() if k.endswith(".jpg")}


def test_pair_file_namings(tmp_path: Path) -> None:
    """--pair-names plain / reference write one naming each; every other file (but the
    settings record) is the same as with both, and the reference subsets are subsets."""
    trees = {}
    for names in ("both", "plain", "reference"):
        generate(small_cfg(seed=5, frames=2, pair_names=names), tmp_path / names)
        trees[names] = tree_hashes(tmp_path / names)
    jsons = {k: {n for n in t if n.startswith("dataset_jsons/")} for k, t in trees.items()}
    plain = {f"dataset_jsons/{sp}_{s}_pairs.json" for sp in SPLITS for s in SETTINGS}
    ref = {f"dataset_jsons/train_{s}_20percent_pairs.json" for s in SETTINGS}
    ref |= {f"dataset_jsons/custom_val_{s}_pairs_10.json" for s in SETTINGS}
    test_plain = {f"dataset_jsons/test_{s}_pairs.json" for s in SETTINGS}
    assert jsons == {"both": plain | ref, "plain": plain, "reference": ref | test_plain}
    for names in ("plain", "reference"):
        same = set(trees[names]) - {"synth_meta.json"} - jsons[names]  # pairs name their root
        assert {n: trees[names][n] for n in same} == {n: trees["both"][n] for n in same}
        for n in jsons[names]:
            text = (tmp_path / names / n).read_text().replace(str(tmp_path / names), "ROOT")
            assert text == (tmp_path / "both" / n).read_text().replace(
                str(tmp_path / "both"), "ROOT"
            )
        assert load(tmp_path / names / "synth_meta.json")["config"]["pair_names"] == names
    for s in SETTINGS:  # the reference's train file: a fifth of the full list
        full = load(tmp_path / "both" / f"dataset_jsons/train_{s}_pairs.json")
        sub = load(tmp_path / "both" / f"dataset_jsons/train_{s}_20percent_pairs.json")
        assert sub and {tuple(p) for p in sub} < {tuple(p) for p in full}
        assert len(sub) == max(1, round(0.2 * len(full)))


def test_helpers() -> None:
    masks = np.zeros((3, 6, 8), np.uint8)
    masks[0, 1:4, 2:7] = 1
    masks[1, 5, 0] = 1
    assert tight_boxes(masks).tolist() == [[2, 1, 4, 2], [0, 5, 0, 0], [0, 0, 0, 0]]
    assert mask_iou(masks[0], masks[0]) == 1.0
    assert mask_iou(masks[0], masks[1]) == 0.0
    assert mask_iou(masks[2], masks[2]) == 1.0  # two empty masks
    half = masks[0].copy()
    half[:, 5:] = 0
    assert mask_iou(half, masks[0]) == 9 / 15


def test_npz_writer_reads_back(tmp_path: Path) -> None:
    arr = (np.arange(2 * 5 * 7).reshape(2, 5, 7) % 3 == 0).astype(np.uint8)
    save_npz_deterministic(tmp_path / "a.npz", arr)
    with np.load(tmp_path / "a.npz") as z:
        assert z.files == ["arr_0"]
        np.testing.assert_array_equal(z["arr_0"], arr)


def test_cli_writes_and_reports(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    argv = ["--out", str(out), "--seed", "1", "--small", "--takes", "3", "--frames", "2"]
    argv += ["--objects", "3", "--exo-cams", "1", "--no-portrait"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert str(out) in text and "train" in text and "egoexo" in text
    split = load(out / "processed" / "split.json")
    take = split["train"][0]
    assert cams_of(out, take)[1] == ["cam01"]
    img = cv2.imread(str(out / "processed" / take / "cam01" / "30.jpg"))
    assert img.shape[:2] == EXO_JPG  # landscape: --no-portrait
    # a second run into the same folder needs --overwrite
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "--overwrite" in err and len(err.splitlines()) == 1
    assert main([*argv, "--overwrite"]) == 0


def test_cli_rejects_bad_input(tmp_path: Path, capsys) -> None:
    assert main(["--out", str(tmp_path / "x"), "--small", "--takes", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "takes" in err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    assert main(["--out", str(foreign), "--small", "--overwrite"]) == 2
    assert (foreign / "keep.txt").read_text() == "mine"


def test_cli_help_names_every_flag(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--out", "--seed", "--small", "--takes", "--frames", "--objects", "--exo-cams"):
        assert flag in text
    for flag in ("--no-portrait", "--overwrite", "--config", "--frame-step", "--ego-hw"):
        assert flag in text


def test_cli_needs_out(tmp_path: Path, capsys) -> None:
    assert main(["--small"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "omama-synth: error: missing required option --out (or --download)"


def test_cli_download_needs_the_official_step_and_scales(tmp_path: Path, capsys) -> None:
    dl = tmp_path / "dl"
    assert main(["--small", "--download", str(dl), "--frame-step", "10", "--exo-scale", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "omama-synth: error: synth config: --download needs --frame-step 30 (got 10), "
        "--exo-scale 4 (got 2)"
    )
    assert not dl.exists()


def test_cli_reads_the_synth_section_of_a_config(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "common:\n  direction: exo2ego\nsynth:\n  seed: 2\n  small: true\n  takes: 3\n"
        "  frames: 1\n  objects: 2\n  exo_cams: 1\n  portrait: false\n"
    )
    out = tmp_path / "ds"
    assert main(["--config", str(cfg), "--out", str(out), "--objects", "1"]) == 0
    meta = load(out / "synth_meta.json")
    assert meta["generator"] == "omama.dataset.synth"  # the tag older datasets carry
    config = meta["config"]
    assert (config["seed"], config["n_takes"], config["n_frames"]) == (2, 3, 1)
    assert (config["n_objects"], config["n_exo_cams"], config["portrait"]) == (1, 1, False)
    assert "out" not in config and "overwrite" not in config
    assert meta["portrait"] is None
    take = load(out / "processed" / "split.json")["train"][0]
    assert len(load(out / "processed" / take / "annotation.json")["masks"]) == 1


def test_sizes_and_candidate_range_flags(tmp_path: Path, capsys) -> None:
    out = tmp_path / "ds"
    argv = ["--out", str(out), "--takes", "3", "--frames", "1", "--objects", "2", "--exo-cams"]
    argv += ["1", "--ego-hw", "224x224", "--exo-hw", "196x350", "--n-candidates", "5-8"]
    assert main([*argv, "--ego-scale", "1", "--no-portrait"]) == 0
    take = load(out / "processed" / "split.json")["val"][0]
    assert cv2.imread(str(out / "processed" / take / "aria01" / "0.jpg")).shape[:2] == (224, 224)
    assert cv2.imread(str(out / "processed" / take / "cam01" / "0.jpg")).shape[:2] == (196, 350)
    for npz in out.glob("Masks_*/*/*/*_masks.npz"):
        assert 5 <= len(np.load(npz)["arr_0"]) <= 8
    config = load(out / "synth_meta.json")["config"]
    assert (config["ego_hw"], config["n_candidates"]) == ([224, 224], [5, 8])
    assert main(["--out", str(tmp_path / "bad"), "--ego-hw", "224"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ego_hw" in err
