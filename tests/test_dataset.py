"""Reader of the Ego-Exo4D layout: pairs, splits, annotations, frames and candidate masks.

Every fixture is built here in tmp_path; oracles are plain index arithmetic or literal values.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from omama import rle
from omama.constants import DIRECTIONS, direction_info
from omama.dataset import candidates, images, layout
from omama.errors import OmamaError

TAKE = "take-1"
EGO, EXO = "aria01", "cam01"
KNIFE = "cutting board/knife 1"  # spaces and a single slash
BOWL = "bowl"
EGO_HW, EXO_HW = (32, 32), (24, 40)  # annotation (original) resolutions


def expect_error(fn, *args, contains: str, file: str | Path):
    """Call fn, require a one-line OmamaError naming `file` and containing `contains`."""
    with pytest.raises(OmamaError) as info:
        fn(*args)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(file) in msg
    assert msg.startswith(str(file))
    assert contains in msg, msg
    return msg


def box_mask(hw, y0, y1, x0, x1):
    m = np.zeros(hw, np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def entry(obj, frame, ego=EGO, exo=EXO, take=TAKE, root="/old//place/ROOT"):
    return [
        f"{root}//{take}//{ego}//{obj}//rgb//{frame}",
        f"{root}//{take}//{ego}//{obj}//mask//{frame}",
        f"{root}//{take}//{exo}//{obj}//rgb//{frame}",
        f"{root}//{take}//{exo}//{obj}//mask//{frame}",
    ]


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A one-take dataset: the knife is seen by both cameras at frame 0, the bowl at 30."""
    base = tmp_path / "data"
    write_json(base / "processed" / "split.json", {"train": [TAKE], "val": []})
    masks = {
        KNIFE: {
            EGO: {"0": rle.encode(box_mask(EGO_HW, 2, 10, 3, 9))},
            EXO: {"0": rle.encode(box_mask(EXO_HW, 1, 5, 20, 30))},
        },
        BOWL: {
            EGO: {"30": rle.encode(box_mask(EGO_HW, 20, 30, 20, 30))},
            EXO: {
                "0": rle.encode(box_mask(EXO_HW, 10, 20, 0, 8)),
                "30": rle.encode(box_mask(EXO_HW, 11, 21, 1, 9)),
            },
        },
    }
    write_json(
        base / "processed" / TAKE / "annotation.json",
        {"masks": masks, "subsample_idx": [0, 30], "other": 1},
    )
    return base


# ---------------------------------------------------------------- directions and paths


def test_directions_and_default_paths(tmp_path):
    assert DIRECTIONS == ("exo2ego", "ego2exo")
    assert direction_info("ego2exo").name == "ego2exo"
    with pytest.raises(OmamaError) as info:
        direction_info("exo-ego")
    assert "exo-ego" in str(info.value) and "\n" not in str(info.value)
    assert layout.setting("exo2ego") == "exoego"
    assert layout.setting("ego2exo") == "egoexo"
    assert layout.default_pairs_path(tmp_path, "val", "exo2ego") == (
        tmp_path / "dataset_jsons" / "val_exoego_pairs.json"
    )
    assert layout.default_pairs_path(tmp_path, "test", "ego2exo") == (
        tmp_path / "dataset_jsons" / "test_egoexo_pairs.json"
    )
    assert (
        layout.default_masks_dir(tmp_path, "train", "exo2ego") == tmp_path / "Masks_TRAIN_EXO2EGO"
    )
    assert layout.default_masks_dir(tmp_path, "val", "ego2exo") == tmp_path / "Masks_VAL_EGO2EXO"
    assert layout.image_path(tmp_path, TAKE, EXO, "0030") == (
        tmp_path / "processed" / TAKE / EXO / "30.jpg"
    )


def test_pair_file_plain_name_wins_then_the_references(tmp_path, caplog):
    folder = tmp_path / "dataset_jsons"
    folder.mkdir()
    plain, ref = folder / "train_exoego_pairs.json", folder / "train_exoego_20percent_pairs.json"
    ref.write_text("[]")
    with caplog.at_level("INFO"):
        assert layout.find_pairs_file(tmp_path, "train", "exo2ego") == ref
    assert "reference" in caplog.text
    plain.write_text("[]")
    caplog.clear()
    with caplog.at_level("INFO"):
        assert layout.find_pairs_file(tmp_path, "train", "exo2ego") == plain
    assert ref.name in caplog.text and "ignored" in caplog.text
    val_ref = folder / "custom_val_egoexo_pairs_10.json"
    val_ref.write_text("[]")
    assert layout.find_pairs_file(tmp_path, "val", "ego2exo") == val_ref
    assert layout.reference_pairs_path(tmp_path, "test", "exo2ego") is None


def test_no_pair_file_lists_the_ones_present(tmp_path):
    folder = tmp_path / "dataset_jsons"
    folder.mkdir()
    (folder / "train_egoexo_pairs.json").write_text("[]")
    with pytest.raises(OmamaError) as info:
        layout.find_pairs_file(tmp_path, "val", "exo2ego")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(folder / "val_exoego_pairs.json"))
    assert "custom_val_exoego_pairs_10.json" in msg and "train_egoexo_pairs.json" in msg


def test_repeated_pairs_are_counted_in_the_log(tmp_path, caplog):
    entry = [f"R//t//{c}//obj//{k}//3" for c, k in (("aria01", "rgb"), ("aria01", "mask"))]
    entry += [f"R//t//cam01//obj//{k}//3" for k in ("rgb", "mask")]
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps([entry, entry, entry]))
    with caplog.at_level("WARNING"):
        assert len(layout.load_pairs(path, "exo2ego")) == 1
    assert "2 of 3 pairs repeat" in caplog.text


# ---------------------------------------------------------------- pairs


def test_load_pairs_exo2ego(tmp_path):
    path = write_json(
        tmp_path / "p.json",
        [entry(KNIFE, "0"), entry(BOWL, "30", root="/elsewhere"), entry(KNIFE, "0", root="")],
    )
    pairs = layout.load_pairs(path, "exo2ego")
    assert pairs == [
        layout.Pair(TAKE, KNIFE, EGO, EXO, "0", "exo2ego"),
        layout.Pair(TAKE, BOWL, EGO, EXO, "30", "exo2ego"),
    ]  # the third entry repeats the first under another ROOT: dropped
    assert pairs[0].src_cam == EXO and pairs[0].dst_cam == EGO


def test_load_pairs_ego2exo_keeps_order(tmp_path):
    data = [entry(BOWL, "30"), entry(KNIFE, "0", exo="cam02"), entry(BOWL, "30"), entry(KNIFE, "0")]
    pairs = layout.load_pairs(write_json(tmp_path / "p.json", data), "ego2exo")
    assert [(p.obj, p.exo_cam, p.frame) for p in pairs] == [
        (BOWL, EXO, "30"),
        (KNIFE, "cam02", "0"),
        (KNIFE, EXO, "0"),
    ]
    assert all(p.direction == "ego2exo" for p in pairs)
    assert pairs[1].src_cam == EGO and pairs[1].dst_cam == "cam02"


def _replace(e, slot, text):
    e = list(e)
    e[slot] = text
    return e


BAD_ENTRIES = {
    "not a list": ("x", "entry 1 is str"),
    "three strings": (entry(BOWL, "0")[:3], "entry 1 is a list of 3"),
    "number element": (_replace(entry(BOWL, "0"), 2, 7), "element 2 (exo rgb) is int"),
    "too few parts": (_replace(entry(BOWL, "0"), 0, f"{TAKE}//{EGO}//rgb//0"), "element 0"),
    "mask in rgb slot": (
        _replace(entry(BOWL, "0"), 2, f"R//{TAKE}//{EXO}//{BOWL}//mask//0"),
        "'mask' where 'rgb' belongs",
    ),
    "frame not integer": (entry(BOWL, "0x"), "not an integer"),
    "take differs": (
        _replace(entry(BOWL, "0"), 2, f"R//other//{EXO}//{BOWL}//rgb//0"),
        "element 2 names take 'other'",
    ),
    "object differs": (
        _replace(entry(BOWL, "0"), 3, f"R//{TAKE}//{EXO}//cup//mask//0"),
        "element 3 names object 'cup'",
    ),
    "frame differs": (
        _replace(entry(BOWL, "0"), 2, f"R//{TAKE}//{EXO}//{BOWL}//rgb//30"),
        "element 2 names frame '30'",
    ),
    "mask camera differs": (
        _replace(entry(BOWL, "0"), 3, f"R//{TAKE}//cam02//{BOWL}//mask//0"),
        "exo mask camera 'cam02'",
    ),
    "same camera": (entry(BOWL, "0", exo=EGO), "both 'aria01'"),
}


@pytest.mark.parametrize("case", sorted(BAD_ENTRIES))
def test_load_pairs_malformed_entry(tmp_path, case):
    bad, why = BAD_ENTRIES[case]
    path = write_json(tmp_path / "pairs.json", [entry(KNIFE, "0"), bad])
    expect_error(layout.load_pairs, path, "exo2ego", contains=why, file=path)


def test_load_pairs_bad_files(tmp_path):
    missing = tmp_path / "nope.json"
    expect_error(layout.load_pairs, missing, "exo2ego", contains="missing", file=missing)
    garbage = tmp_path / "garbage.json"
    garbage.write_text('[["a", "b"')
    expect_error(layout.load_pairs, garbage, "exo2ego", contains="not valid JSON", file=garbage)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00\x81garbage")
    expect_error(layout.load_pairs, binary, "exo2ego", contains="not valid JSON", file=binary)
    obj = write_json(tmp_path / "obj.json", {"pairs": []})
    expect_error(layout.load_pairs, obj, "exo2ego", contains="expected a JSON list", file=obj)
    empty = write_json(tmp_path / "empty.json", [])
    expect_error(layout.load_pairs, empty, "ego2exo", contains="empty", file=empty)


# ---------------------------------------------------------------- splits


def test_split(root):
    assert layout.load_split(root) == {"train": [TAKE], "val": []}
    assert layout.split_takes(root, "train") == [TAKE]
    assert layout.split_takes(root, "val") == []
    split = root / "processed" / "split.json"
    expect_error(layout.split_takes, root, "test", contains="no split 'test'", file=split)
    write_json(split, {"train": "take-1"})
    expect_error(layout.load_split, root, contains="not a list of take ids", file=split)
    split.write_text("{")
    expect_error(layout.load_split, root, contains="not valid JSON", file=split)
    split.unlink()
    expect_error(layout.load_split, root, contains="missing", file=split)


# ---------------------------------------------------------------- annotations


def test_annotations_lookup(root):
    ann = layout.Annotations(root)
    got = ann.rle(TAKE, KNIFE, EXO, "0")
    assert got == rle.encode(box_mask(EXO_HW, 1, 5, 20, 30))
    assert rle.decode(got).sum() == 4 * 10
    assert ann.rle(TAKE, KNIFE, EGO, "30") is None  # camera annotated, frame not
    assert ann.rle(TAKE, KNIFE, "cam02", "0") is None  # camera never annotated
    assert ann.rle(TAKE, BOWL, EXO, 30) is not None  # int frames work too
    assert ann.objects_at(TAKE, EXO, "0") == [BOWL, KNIFE]
    assert ann.objects_at(TAKE, EGO, "0") == [KNIFE]
    assert ann.objects_at(TAKE, EGO, "60") == []
    assert set(ann.masks(TAKE)) == {KNIFE, BOWL}
    path = root / "processed" / TAKE / "annotation.json"
    expect_error(ann.rle, TAKE, "cup", EGO, "0", contains="'cup' absent", file=path)
    path.unlink()  # cached: the take is not read again
    assert ann.objects_at(TAKE, EXO, "30") == [BOWL]


def test_annotations_keep_every_take_index_and_only_a_few_rle_trees(tmp_path, monkeypatch):
    monkeypatch.setattr(layout, "_TREES", 2)
    mask = {"size": [4, 4], "counts": "0@0"}
    takes = [f"take{i}" for i in range(5)]
    for i, take in enumerate(takes):
        doc = {"masks": {f"obj{i}": {"aria01": {"0": mask}, "cam01": {"0": mask, "3": mask}}}}
        path = tmp_path / "processed" / take / "annotation.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(doc))
    ann = layout.Annotations(tmp_path)
    for i, take in enumerate(takes):
        assert ann.objects_at(take, "cam01", 3) == [f"obj{i}"]
        assert len(ann._trees) <= 2
    assert ann.rle("take0", "obj0", "aria01", "0") == mask  # read again after its eviction
    assert list(ann._trees) == ["take4", "take0"]
    for take in takes:  # the indexes stay: no file is read for them
        (tmp_path / "processed" / take / "annotation.json").unlink()
    assert ann.objects_at("take2", "aria01", "0") == ["obj2"] and ann.has_object("take3", "obj3")


def test_annotations_bad_files(root):
    ann = layout.Annotations(root)  # lazy: nothing read yet, so a missing take is no error here
    missing = root / "processed" / "ghost" / "annotation.json"
    expect_error(ann.masks, "ghost", contains="missing", file=missing)
    path = root / "processed" / TAKE / "annotation.json"
    cases = {
        "{not json": "not valid JSON",
        "[1, 2]": "expected a JSON object",
        '{"subsample_idx": []}': "no 'masks' key",
        '{"masks": {"bowl": []}}': "not an object of cameras",
        '{"masks": {"bowl": {"aria01": {"0": {"size": [2, 2]}}}}}': "not an RLE object",
    }
    for text, why in cases.items():
        path.write_text(text)
        expect_error(layout.Annotations(root).masks, TAKE, contains=why, file=path)


def test_validate_pairs(root, tmp_path):
    ann = layout.Annotations(root)
    good_exo2ego = [layout.Pair(TAKE, BOWL, EGO, EXO, f, "exo2ego") for f in ("0", "30")]
    layout.validate_pairs(good_exo2ego, ann, "pairs.json")
    layout.validate_pairs([layout.Pair(TAKE, BOWL, EGO, EXO, "30", "ego2exo")], ann, "p.json")

    # ego2exo needs the ego mask: the bowl has none at frame 0
    no_source = [layout.Pair(TAKE, BOWL, EGO, EXO, "0", "ego2exo")]
    msg = expect_error(
        layout.validate_pairs,
        no_source,
        ann,
        "p.json",
        contains="source mask absent",
        file="p.json",
    )
    assert EGO in msg
    absent = [layout.Pair(TAKE, "cup", EGO, EXO, "0", "exo2ego")]
    expect_error(
        layout.validate_pairs,
        absent,
        ann,
        "p.json",
        contains="pair names object 'cup' absent from annotation.json",
        file="p.json",
    )
    ghost = [layout.Pair("ghost", BOWL, EGO, EXO, "0", "exo2ego")]
    expect_error(
        layout.validate_pairs, ghost, ann, "p.json", contains="no annotation file", file="p.json"
    )


# ---------------------------------------------------------------- images


def nearest_oracle(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """cv2 INTER_NEAREST: source index = floor(dst * in / out), clamped."""
    in_h, in_w = img.shape[:2]
    rows = [min(int(np.floor(y * (in_h / out_h))), in_h - 1) for y in range(out_h)]
    cols = [min(int(np.floor(x * (in_w / out_w))), in_w - 1) for x in range(out_w)]
    out = np.empty((out_h, out_w) + img.shape[2:], img.dtype)
    for y, sy in enumerate(rows):
        for x, sx in enumerate(cols):
            out[y, x] = img[sy, sx]
    return out


def test_crop_size():
    assert images.crop_size(704, 704) == (700, 700)
    assert images.crop_size(540, 960) == (532, 952)
    assert images.crop_size(960, 540) == (532, 952)  # portrait: stretched to landscape
    assert images.crop_size(230, 230) == (224, 224)
    assert images.crop_size(28, 42) == (28, 42)
    with pytest.raises(OmamaError):
        images.crop_size(13, 100)


@pytest.mark.parametrize(
    "h,w,expect",
    [
        (30, 45, (28, 42)),
        (28, 45, (28, 42)),  # height already a multiple: the width is still cut
        (28, 42, (28, 42)),
        (45, 30, (28, 42)),  # portrait
        (29, 28, (28, 28)),  # barely portrait
        (60, 17, (14, 56)),
    ],
)
def test_preprocess_image_matches_nearest_oracle(h, w, expect):
    img = np.random.default_rng(h * 100 + w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    out = images.preprocess_image(img)
    assert out.shape == expect + (3,) and out.dtype == np.uint8
    want = img
    if h > w:  # stretch to landscape, then cut to multiples of 14
        want = nearest_oracle(want, w, h)
    want = nearest_oracle(want, *expect)
    np.testing.assert_array_equal(out, want)


def test_preprocess_image_full_size_exo_portrait():
    img = np.random.default_rng(1).integers(0, 256, (960, 540, 3), dtype=np.uint8)
    out = images.preprocess_image(img)
    assert out.shape == (532, 952, 3)
    # spot check: stretched (960x540 -> 540x960) then cut (-> 532x952)
    for y, x in [(0, 0), (531, 951), (100, 700), (377, 33)]:
        y1, x1 = int(np.floor(y * 540 / 532)), int(np.floor(x * 960 / 952))
        y0, x0 = int(np.floor(y1 * 960 / 540)), int(np.floor(x1 * 540 / 960))
        np.testing.assert_array_equal(out[y, x], img[y0, x0])


def test_resize_mask():
    mask = np.random.default_rng(2).integers(0, 2, (24, 40)).astype(bool)
    out = images.resize_mask(mask, (14, 28))
    assert out.dtype == np.uint8 and out.shape == (14, 28)
    np.testing.assert_array_equal(out, nearest_oracle(mask.astype(np.uint8), 14, 28))
    same = images.resize_mask(mask.astype(np.uint8), (24, 40))
    np.testing.assert_array_equal(same, mask)


def write_jpeg(path: Path, img_rgb: np.ndarray, progressive: bool = False) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, 95]
    if progressive:
        params += [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img_rgb[..., ::-1]), params)
    assert ok
    path.write_bytes(buf.tobytes())
    return buf.tobytes()


def two_colour_image() -> np.ndarray:
    img = np.zeros((48, 64, 3), np.uint8)
    img[:, :32] = (255, 0, 0)  # red left half (RGB)
    img[:, 32:] = (0, 0, 255)  # blue right half
    return img


@pytest.mark.parametrize("progressive", [False, True])
def test_read_image_good(tmp_path, progressive):
    path = tmp_path / "0.jpg"
    write_jpeg(path, two_colour_image(), progressive)
    img = images.read_image(path)
    assert img.shape == (48, 64, 3) and img.dtype == np.uint8
    assert np.abs(img[24, 8].astype(int) - (255, 0, 0)).max() < 10
    assert np.abs(img[24, 56].astype(int) - (0, 0, 255)).max() < 10
    with open(path, "ab") as fp:  # bytes after the end-of-image marker are tolerated
        fp.write(b"\x00" * 16)
    assert images.read_image(path).shape == (48, 64, 3)


@pytest.mark.parametrize("progressive", [False, True])
def test_read_image_truncated(tmp_path, progressive):
    noisy = np.random.default_rng(3).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    data = write_jpeg(tmp_path / "full.jpg", noisy, progressive)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    expect_error(images.read_image, cut, contains="truncated", file=cut)
    no_eoi = tmp_path / "no_eoi.jpg"
    no_eoi.write_bytes(data[:-2])
    expect_error(images.read_image, no_eoi, contains="0xFFD9", file=no_eoi)


def test_read_image_thumbnail_eoi_does_not_hide_truncation(tmp_path):
    """An EXIF thumbnail carries its own 0xFFD9; a cut main image must still be caught."""
    thumb = write_jpeg(tmp_path / "thumb.jpg", two_colour_image()[:8, :8])
    noisy = np.random.default_rng(8).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    main = write_jpeg(tmp_path / "main.jpg", noisy)
    payload = b"Exif\x00\x00" + thumb
    app1 = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    with_thumb = main[:2] + app1 + main[2:]
    full = tmp_path / "thumb_full.jpg"
    full.write_bytes(with_thumb)
    assert images.read_image(full).shape == (48, 64, 3)
    cut = tmp_path / "thumb_cut.jpg"
    cut.write_bytes(with_thumb[: len(app1) + len(main) // 2])
    expect_error(images.read_image, cut, contains="truncated", file=cut)


def test_read_image_bad(tmp_path):
    missing = tmp_path / "7.jpg"
    expect_error(images.read_image, missing, contains="missing", file=missing)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(np.random.default_rng(4).integers(0, 256, 500, dtype=np.uint8).tobytes())
    expect_error(images.read_image, garbage, contains="not a readable image", file=garbage)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    expect_error(images.read_image, empty, contains="empty", file=empty)
    header_only = tmp_path / "header.jpg"
    header_only.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF")
    expect_error(images.read_image, header_only, contains="truncated", file=header_only)


# ---------------------------------------------------------------- candidates

CROP_HW, ORIG_HW = (14, 28), (20, 36)


def write_candidates(masks_dir: Path, masks, boxes, frame=30, cam=EGO) -> tuple[Path, Path]:
    base = masks_dir / TAKE / cam
    base.mkdir(parents=True, exist_ok=True)
    npz, npy = base / f"{frame}_masks.npz", base / f"{frame}_boxes.npy"
    np.savez_compressed(npz, masks)
    np.save(npy, boxes)
    return npz, npy


def torch_nearest_oracle(stack: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """torch 'nearest': source index = floor(dst * float32(in / out)), in float32, clamped."""
    n, in_h, in_w = stack.shape
    out = np.zeros((n, out_h, out_w), np.uint8)
    row_scale = np.float32(in_h) / np.float32(out_h)
    col_scale = np.float32(in_w) / np.float32(out_w)
    for y in range(out_h):
        sy = min(int(np.floor(np.float32(y) * row_scale)), in_h - 1)
        for x in range(out_w):
            sx = min(int(np.floor(np.float32(x) * col_scale)), in_w - 1)
            out[:, y, x] = stack[:, sy, sx]
    return out


def test_candidates_at_crop_size(tmp_path):
    masks = np.random.default_rng(5).integers(0, 2, (3, *CROP_HW)).astype(bool)
    boxes = np.array([[1, 2, 3, 4], [0, 0, 28, 14], [5.5, 6.5, 1, 1]], np.float64)
    write_candidates(tmp_path, masks, boxes)
    got_m, got_b = candidates.load_candidates(tmp_path, TAKE, EGO, "30", CROP_HW, ORIG_HW)
    assert got_m.dtype == np.uint8 and got_b.dtype == np.float32
    np.testing.assert_array_equal(got_m, masks.astype(np.uint8))
    np.testing.assert_array_equal(got_b, boxes.astype(np.float32))


def test_candidates_single_2d_mask(tmp_path):
    mask = box_mask(CROP_HW, 2, 5, 3, 9)
    write_candidates(tmp_path, mask, np.array([3, 2, 6, 3], np.float32))
    got_m, got_b = candidates.load_candidates(tmp_path, TAKE, EGO, 30, CROP_HW, ORIG_HW)
    assert got_m.shape == (1, *CROP_HW)
    np.testing.assert_array_equal(got_m[0], mask)
    np.testing.assert_array_equal(got_b, [[3, 2, 6, 3]])


@pytest.mark.parametrize(
    "masks,boxes",
    [(np.array([]), np.array([])), (np.zeros((0, 14, 28), np.uint8), np.zeros((0, 4)))],
)
def test_candidates_no_mask(tmp_path, masks, boxes):
    write_candidates(tmp_path, masks, boxes)
    got_m, got_b = candidates.load_candidates(tmp_path, TAKE, EGO, 30, CROP_HW, ORIG_HW)
    np.testing.assert_array_equal(got_m, np.zeros((1, 14, 28), np.uint8))
    np.testing.assert_array_equal(got_b, np.zeros((1, 4), np.float32))
    assert got_m.dtype == np.uint8 and got_b.dtype == np.float32


@pytest.mark.parametrize(
    "mask_hw,orig_hw",
    [
        ((20, 36), ORIG_HW),  # masks at the original image size
        ((27, 48), ORIG_HW),  # another landscape size of the same aspect
        ((36, 20), (36, 20)),  # a portrait camera: portrait masks stretched to the crop
        ((7, 14), ORIG_HW),  # smaller than the crop (upsampled)
    ],
)
def test_candidates_other_size(tmp_path, mask_hw, orig_hw):
    rng = np.random.default_rng(6)
    masks = rng.integers(0, 2, (4, *mask_hw)).astype(np.uint8)
    boxes = rng.uniform(0, 10, (4, 4))
    write_candidates(tmp_path, masks, boxes)
    got_m, got_b = candidates.load_candidates(tmp_path, TAKE, EGO, 30, CROP_HW, orig_hw)
    assert got_m.dtype == np.uint8 and got_m.shape == (4, *CROP_HW)
    np.testing.assert_array_equal(got_m, torch_nearest_oracle(masks, *CROP_HW))
    sx, sy = CROP_HW[1] / mask_hw[1], CROP_HW[0] / mask_hw[0]
    want = boxes * np.array([sx, sy, sx, sy])
    np.testing.assert_allclose(got_b, want, rtol=1e-5)


@pytest.mark.parametrize(
    "mask_hw,orig_hw",
    [
        # FastSAM's masks as O-MaMa stores them for real Ego-Exo4D frames: at the frame's size,
        # at the multiple-of-14 crop, or at FastSAM's 1024 input size without retina masks
        ((704, 704), (704, 704)),
        ((700, 700), (704, 704)),
        ((1024, 1024), (704, 704)),
        ((540, 960), (540, 960)),
        ((532, 952), (540, 960)),
        ((576, 1024), (540, 960)),
        ((960, 540), (960, 540)),  # a portrait exo camera
        ((532, 952), (960, 540)),
    ],
)
def test_real_fastsam_mask_sizes_pass_the_aspect_check(mask_hw, orig_hw):
    crop = images.crop_size(*orig_hw)
    assert candidates._aspect_ok(mask_hw, crop, orig_hw)


def test_candidates_bad_inputs(tmp_path):
    good = np.ones((2, *CROP_HW), np.uint8)
    two_boxes = np.zeros((2, 4), np.float32)
    args = (tmp_path, TAKE, EGO, 30, CROP_HW, ORIG_HW)
    npz, npy = candidates.candidate_paths(tmp_path, TAKE, EGO, 30)

    expect_error(candidates.load_candidates, *args, contains="missing", file=npz)
    write_candidates(tmp_path, good, two_boxes)
    npy.unlink()
    expect_error(candidates.load_candidates, *args, contains="missing", file=npy)

    write_candidates(tmp_path, good, np.zeros((3, 4)))
    expect_error(candidates.load_candidates, *args, contains="3 boxes for 2 masks", file=npy)
    write_candidates(tmp_path, good, np.zeros((2, 3)))
    expect_error(candidates.load_candidates, *args, contains="expected N x 4", file=npy)
    write_candidates(tmp_path, np.zeros((0,)), np.zeros((1, 4)))
    expect_error(candidates.load_candidates, *args, contains="1 boxes for 0 masks", file=npy)
    write_candidates(tmp_path, good, np.array([["a"] * 4] * 2))
    expect_error(candidates.load_candidates, *args, contains="not a numeric", file=npy)
    write_candidates(tmp_path, good, np.full((2, 4), np.nan))
    expect_error(candidates.load_candidates, *args, contains="NaN", file=npy)

    write_candidates(tmp_path, np.ones((1, 2, *CROP_HW), np.uint8), np.zeros((1, 4)))
    expect_error(candidates.load_candidates, *args, contains="expected N x H x W", file=npz)
    write_candidates(tmp_path, np.full((2, *CROP_HW), "x"), two_boxes)
    expect_error(candidates.load_candidates, *args, contains="dtype", file=npz)
    write_candidates(tmp_path, good * 255, two_boxes)
    expect_error(candidates.load_candidates, *args, contains="other than 0 and 1", file=npz)
    write_candidates(tmp_path, np.ones((2, 20, 20), np.uint8), two_boxes)
    expect_error(
        candidates.load_candidates,
        *args,
        contains="masks of an unexpected size 20x20 for an image of 20x36",
        file=npz,
    )

    noisy = np.random.default_rng(7).integers(0, 2, (2, 140, 280)).astype(np.uint8)
    write_candidates(tmp_path, noisy, two_boxes)
    data = npz.read_bytes()
    npz.write_bytes(data[: len(data) // 2])
    expect_error(candidates.load_candidates, *args, contains="unreadable npz", file=npz)
    # damage a byte inside the compressed member (the zip directory stays intact)
    corrupt = bytearray(data)
    corrupt[len(data) // 3] ^= 0xFF
    npz.write_bytes(bytes(corrupt))
    expect_error(candidates.load_candidates, *args, contains="unreadable npz", file=npz)
    npz.write_bytes(b"not a zip file at all")
    expect_error(candidates.load_candidates, *args, contains="unreadable npz", file=npz)
    np.save(tmp_path / "bare.npy", good)
    npz.write_bytes((tmp_path / "bare.npy").read_bytes())
    expect_error(candidates.load_candidates, *args, contains="not an npz", file=npz)
    np.savez(npz, other=good)
    expect_error(candidates.load_candidates, *args, contains="no array 'arr_0'", file=npz)
    npy.write_bytes(b"garbage")
    np.savez(npz, good)
    expect_error(candidates.load_candidates, *args, contains="unreadable npy", file=npy)
