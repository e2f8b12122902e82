"""Challenge output: layout written by challenge_json and the checks of schema_problems."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from omama import rle
from omama.errors import OmamaError
from omama.metrics.groundtruth import GTSample, build_gt_json
from omama.metrics.validate import schema_problems
from omama.predict.challenge import PredRecord, challenge_json

EGO, EXO1, EXO2 = "aria01", "cam01", "cam02"
# Original sizes, small stand-ins with the real aspect ratios' official sizes:
# ego 960x960 -> 480x480, exo 540x960 -> 270x480, portrait exo 960x540 -> 480x270.
ORIG = {EGO: (960, 960), EXO1: (540, 960), EXO2: (960, 540)}
EVAL = {EGO: (480, 480), EXO1: (270, 480), EXO2: (480, 270)}


def dot(hw):
    m = np.zeros(hw, np.uint8)
    m[2:6, 3:9] = 1
    return rle.encode(m)


def samples(direction: str) -> list[GTSample]:
    """Two takes, two objects, two exo cameras; some frames invisible in the destination."""
    out = []
    for take in ("take1", "take2"):
        for obj in ("cup", "knife"):
            for exo in (EXO1, EXO2):
                for frame in ("0", "5", "10"):
                    src, dst = (EGO, exo) if direction == "ego2exo" else (exo, EGO)
                    # ego frame 5 invisible (exo2ego); cam02 never sees the knife (ego2exo)
                    invisible = frame == "5" if direction == "exo2ego" else obj == "knife"
                    if direction == "ego2exo" and exo == EXO1:
                        invisible = frame == "10"
                    dst_rle = None if invisible else dot(ORIG[dst])
                    out.append(GTSample(take, obj, src, dst, frame, dot(ORIG[src]), dst_rle))
    return out


def records(direction: str) -> list[PredRecord]:
    return [
        PredRecord(s.take, s.obj, s.src_cam, s.dst_cam, s.frame, dot(EVAL[s.dst_cam]), 0.25)
        for s in samples(direction)
    ]


@pytest.fixture(params=["exo2ego", "ego2exo"])
def case(request):
    direction = request.param
    gt = build_gt_json(samples(direction))
    return direction, gt, challenge_json(direction, records(direction))


def test_challenge_json_layout():
    recs = [
        PredRecord("t", "cup", EXO1, EGO, "12", dot((480, 480)), np.float32(0.75)),
        PredRecord("t", "cup", EXO2, EGO, "3", dot((480, 480)), 0.5),
        PredRecord("t", "pan", EXO1, EGO, "3", dot((480, 480)), 1),
    ]
    out = challenge_json("exo2ego", recs)
    assert list(out) == ["exo-ego"]
    sec = out["exo-ego"]
    assert sec["version"] == "xx" and sec["challenge"] == "xx"
    take = sec["results"]["t"]
    assert take["subsample_idx"] == [3, 12]
    assert set(take["masks"]) == {"cup", "pan"}
    assert set(take["masks"]["cup"]) == {"cam01_aria01", "cam02_aria01"}
    entry = take["masks"]["cup"]["cam01_aria01"]["12"]
    assert type(entry["confidence"]) is float and entry["confidence"] == 0.75
    assert entry["pred_mask"] == dot((480, 480))
    json.dumps(out)  # plain JSON types only

    eg = challenge_json("ego2exo", [PredRecord("t", "cup", EGO, EXO2, "4", dot((480, 270)), 0.9)])
    assert list(eg["ego-exo"]["results"]["t"]["masks"]["cup"]) == ["aria01_cam02"]


def test_challenge_json_rejects_bad_records():
    with pytest.raises(OmamaError):  # a list is not a confidence (the reference wrote [x])
        challenge_json("exo2ego", [PredRecord("t", "o", EXO1, EGO, "1", dot((4, 4)), [0.3])])
    with pytest.raises(OmamaError):  # cameras the wrong way round for the direction
        challenge_json("exo2ego", [PredRecord("t", "o", EGO, EXO1, "1", dot((4, 4)), 0.3)])
    rec = PredRecord("t", "o", EXO1, EGO, "1", dot((4, 4)), 0.3)
    with pytest.raises(OmamaError):  # the same sample twice
        challenge_json("exo2ego", [rec, rec])


def test_full_prediction_has_no_problems(case):
    direction, gt, pred = case
    assert schema_problems(pred, gt, direction) == []


def _pair(direction, exo):
    return f"{EGO}_{exo}" if direction == "ego2exo" else f"{exo}_{EGO}"


def _masks(pred, direction, take):
    key = "ego-exo" if direction == "ego2exo" else "exo-ego"
    return pred[key]["results"][take]["masks"]


def test_missing_frame_is_reported(case):
    direction, gt, pred = case
    del _masks(pred, direction, "take2")["knife"][_pair(direction, EXO2)]["10"]
    problems = schema_problems(pred, gt, direction)
    assert len(problems) == 1
    assert "take2" in problems[0] and "knife" in problems[0] and "10" in problems[0]
    assert _pair(direction, EXO2) in problems[0]


def test_missing_camera_pair_is_reported(case):
    direction, gt, pred = case
    del _masks(pred, direction, "take1")["cup"][_pair(direction, EXO2)]
    problems = schema_problems(pred, gt, direction)
    assert len(problems) == 1 and _pair(direction, EXO2) in problems[0]


def test_missing_object_and_take_are_reported(case):
    direction, gt, pred = case
    p1 = copy.deepcopy(pred)
    del _masks(p1, direction, "take1")["knife"]
    problems = schema_problems(p1, gt, direction)
    assert len(problems) == 1 and "knife" in problems[0] and "take1" in problems[0]
    key = next(iter(pred))
    del pred[key]["results"]["take2"]
    problems = schema_problems(pred, gt, direction)
    assert len(problems) == 1 and "take2" in problems[0]


def test_list_confidence_and_wrong_size_are_reported(case):
    direction, gt, pred = case
    pair = _masks(pred, direction, "take1")["cup"][_pair(direction, EXO1)]
    pair["0"]["confidence"] = [0.4]
    pair["5"]["pred_mask"] = dot((700, 700))  # crop size, not the official size
    problems = schema_problems(pred, gt, direction)
    assert len(problems) == 2
    assert any("confidence" in p and "list" in p for p in problems)
    assert any("[700, 700]" in p for p in problems)


def test_extra_take_is_reported(case):
    direction, gt, pred = case
    key = next(iter(pred))
    pred[key]["results"]["take9"] = {"masks": {}, "subsample_idx": []}
    assert any("take9" in p for p in schema_problems(pred, gt, direction))


def test_wrong_direction_section_is_reported(case):
    direction, gt, pred = case
    other = "exo2ego" if direction == "ego2exo" else "ego2exo"
    assert schema_problems(pred, gt, other) != []


def test_ego2exo_subset_needs_strict_false():
    # A subset of the ego2exo pairs: frame 10 is paired with cam01 only. The official
    # validator still wants a cam02 prediction for ego frame 10 (never scored).
    subset = [
        s
        for s in samples("ego2exo")
        if s.take == "take1" and s.obj == "cup" and not (s.frame == "10" and s.dst_cam == EXO2)
    ]
    gt = build_gt_json(subset)
    pred = challenge_json(
        "ego2exo",
        [
            PredRecord(s.take, s.obj, s.src_cam, s.dst_cam, s.frame, dot(EVAL[s.dst_cam]), 0.9)
            for s in subset
        ],
    )
    strict = schema_problems(pred, gt, "ego2exo")
    assert len(strict) == 1 and "aria01_cam02" in strict[0] and "frame 10" in strict[0]
    assert schema_problems(pred, gt, "ego2exo", strict=False) == []
