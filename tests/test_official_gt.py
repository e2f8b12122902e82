"""The official ground truth (`omama-gt`, `omama-eval --relations`) against the official rules.

The builder is checked on crafted annotation/relations dicts against hand-worked expected
dicts (rules: module docstring of omama/metrics/official_gt.py), then end to end on the
synthetic dataset, then where it matters: a frame the destination camera never annotated,
which the official GT skips and omama-eval's own GT counts as "not visible".
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_lines import one_error_line

from omama import rle
from omama.cli import eval as eval_cli
from omama.cli import gt as gt_cli
from omama.errors import OmamaError
from omama.metrics.official import evaluate
from omama.metrics.official_gt import RELATIONS, GTInputError, build_official_gt
from omama.metrics.validate import eval_size
from omama.prepare.download import relations_path

ANN_HW = (4, 6)  # annotation size of every crafted mask: evaluated at 320 x 480


def mask_rle(seed: int, hw: tuple[int, int] = ANN_HW) -> dict:
    rng = np.random.default_rng(seed)
    m = rng.random(hw) < 0.5
    m[0, 0] = True  # never empty
    return rle.encode(m)


R = [mask_rle(i) for i in range(8)]

# Take t1: "cup" is seen by the ego camera at frame 3 only, by cam01 at 3 and 5, by cam02 at
# 5 only (frames annotated in one camera only); "lid" is never annotated in the ego camera
# (an object annotated in no destination frame for exo2ego). The relations file also knows
# an object and a camera that annotation.json lacks: the official builder ignores both.
ANN_T1 = {
    "masks": {
        "cup": {"aria01": {"3": R[0]}, "cam01": {"3": R[1], "5": R[2]}, "cam02": {"5": R[3]}},
        "lid": {"aria01": {}, "cam01": {"7": R[4]}},
    },
    "subsample_idx": [3, 5, 7],
}
# Take t2 already holds an annotated_frames key: the builder replaces it in place.
ANN_T2 = {
    "annotated_frames": {"old": "value"},
    "masks": {"pan": {"cam03": {"1": R[5]}, "aria02": {"1": R[6]}}},
    "subsample_idx": [1],
}
RELATIONS_DICT = {
    "annotations": {
        "t1": {
            "object_masks": {
                "cup": {
                    "aria01": {"annotated_frames": [3, 5]},
                    "cam01": {"annotated_frames": [3, 5]},
                    "cam02": {"annotated_frames": [5]},
                    "cam09": {"annotated_frames": [1]},
                },
                "lid": {"aria01": {"annotated_frames": []}, "cam01": {"annotated_frames": [7]}},
                "ghost": {"aria01": {"annotated_frames": [3]}},
            },
            "take_name": "ignored",
        },
        "t2": {
            "object_masks": {
                "pan": {"cam03": {"annotated_frames": [1]}, "aria02": {"annotated_frames": [1]}}
            }
        },
        "t_other_split": {"object_masks": {}},
    }
}

EXPECTED = {
    "version": "xx",
    "challenge": "xx",
    "annotations": {
        "t1": {
            "masks": ANN_T1["masks"],
            "subsample_idx": [3, 5, 7],
            "annotated_frames": {
                "cup": {"aria01": [3, 5], "cam01": [3, 5], "cam02": [5]},
                "lid": {"aria01": [], "cam01": [7]},
            },
        },
        "t2": {
            "annotated_frames": {"pan": {"cam03": [1], "aria02": [1]}},
            "masks": ANN_T2["masks"],
            "subsample_idx": [1],
        },
    },
}


def build(takes=("t1", "t2"), relations=None) -> dict:
    relations = json.loads(json.dumps(RELATIONS_DICT)) if relations is None else relations
    return build_official_gt(list(takes), {"t1": ANN_T1, "t2": ANN_T2}, relations)


def test_builder_matches_hand_worked_gt_to_the_byte():
    gt = build()
    assert gt == EXPECTED
    # same key order, so json.dumps (what write_json and the official script write) agrees
    assert json.dumps(gt) == json.dumps(EXPECTED)
    assert list(gt["annotations"]["t2"]) == ["annotated_frames", "masks", "subsample_idx"]
    assert list(gt["annotations"]) == ["t1", "t2"]  # the split's order, no other take
    assert ANN_T2["annotated_frames"] == {"old": "value"}  # the inputs are not modified


def test_split_order_and_a_take_listed_twice():
    gt = build(takes=("t2", "t1", "t2"))
    assert list(gt["annotations"]) == ["t2", "t1"]


def pred_for(gt: dict, direction: str, confidence: float) -> dict:
    """A prediction for every (pair, source frame) of `gt`: empty masks at the official size."""
    results = {}
    for take, entry in gt["annotations"].items():
        objs = {}
        for obj, cams in entry["masks"].items():
            ego = [c for c in cams if "aria" in c]
            pairs = {}
            for exo in (c for c in cams if "aria" not in c):
                src, dst = (ego[0], exo) if direction == "ego2exo" else (exo, ego[0])
                size = eval_size(*ANN_HW)
                empty = rle.encode(np.zeros(size, np.uint8))
                pairs[f"{src}_{dst}"] = {
                    f: {"pred_mask": empty, "confidence": confidence} for f in cams[src]
                }
            objs[obj] = pairs
        results[take] = {"masks": objs, "subsample_idx": entry["subsample_idx"]}
    key = "exo-ego" if direction == "exo2ego" else "ego-exo"
    return {key: {"version": "xx", "challenge": "xx", "results": results}}


def test_evaluator_visits_only_annotated_destination_frames():
    gt = build(takes=("t1",))
    # exo2ego samples: cup cam01->aria01 frames 3 (visible) and 5 (annotated, not visible),
    # cup cam02->aria01 frame 5 (not visible); lid cam01->aria01 frame 7 is skipped (the ego
    # camera never annotated it).
    m = evaluate(pred_for(gt, "exo2ego", 0.0), gt, "exo2ego")
    assert (m.n, m.n_visibility) == (1, 3)
    assert m.balanced_acc == pytest.approx(0.5)  # recall 0 on visible, 1 on invisible
    # ego2exo: cup aria01->cam01 frame 3 (visible), aria01->cam02 frame 3 is skipped (cam02
    # annotated frame 5 only); lid has no ego frame at all.
    m = evaluate(pred_for(gt, "ego2exo", 1.0), gt, "ego2exo")
    assert (m.n, m.n_visibility) == (1, 1)


@pytest.mark.parametrize(
    "change, why",
    [
        (lambda r: r["annotations"].pop("t2"), "take t2 of the split is missing"),
        (lambda r: r.pop("annotations"), "no 'annotations' key"),
        (lambda r: r["annotations"]["t1"].pop("object_masks"), "take t1: no 'object_masks'"),
        (lambda r: r["annotations"]["t1"]["object_masks"].pop("lid"), "object 'lid': missing"),
        (
            lambda r: r["annotations"]["t1"]["object_masks"]["cup"].pop("cam02"),
            "object 'cup' camera 'cam02': missing",
        ),
        (
            lambda r: r["annotations"]["t2"]["object_masks"]["pan"]["cam03"].update(
                annotated_frames=["1"]
            ),
            "not a list of ints",
        ),
    ],
)
def test_bad_relations_name_the_problem(change, why):
    relations = json.loads(json.dumps(RELATIONS_DICT))
    change(relations)
    with pytest.raises(GTInputError) as exc:
        build(relations=relations)
    assert exc.value.where == RELATIONS and why in str(exc.value)


def test_bad_annotation_names_the_take():
    with pytest.raises(GTInputError) as exc:
        build_official_gt(["t1"], {"t1": {"subsample_idx": []}}, RELATIONS_DICT)
    assert exc.value.where == "t1" and isinstance(exc.value, OmamaError)


# ------------------------------------------------------------------ synthetic dataset, CLI


def test_synth_relations_match_annotations(synth_root):
    split = json.loads((synth_root / "processed" / "split.json").read_text())
    for name, takes in split.items():
        rel = json.loads(relations_path(synth_root, name).read_text())["annotations"]
        assert sorted(rel) == sorted(takes)
        for take in takes:
            ann = json.loads((synth_root / "processed" / take / "annotation.json").read_text())
            objects = rel[take]["object_masks"]
            assert {o: sorted(c) for o, c in objects.items()} == {
                o: sorted(c) for o, c in ann["masks"].items()
            }
            for obj, cams in ann["masks"].items():
                for cam, frames in cams.items():
                    annotated = objects[obj][cam]["annotated_frames"]
                    assert annotated == ann["subsample_idx"]
                    assert {int(f) for f in frames} <= set(annotated)


@pytest.fixture(scope="module")
def baseline_eval(cache_dir, tmp_path_factory):
    """omama-eval's random-baseline predictions of the test split, with its own GT."""
    out = tmp_path_factory.mktemp("eval") / "pred.json"
    argv = ["--cache", cache_dir, "--split", "test", "--baseline", "random", "--out", out]
    argv += ["--workers", "0", "--device", "cpu", "--seed", "3"]
    assert eval_cli.main([str(a) for a in argv]) == 0
    return out


def run_gt(root: Path, relations: Path, out: Path, split: str = "test") -> int:
    argv = ["--root", root, "--split", split, "--relations", relations, "--out", out]
    return gt_cli.main([str(a) for a in argv])


def test_omama_gt_end_to_end_is_accepted_by_the_evaluator(synth_root, baseline_eval, tmp_path):
    out = tmp_path / "gt.json"
    assert run_gt(synth_root, relations_path(synth_root, "test"), out) == 0
    gt = json.loads(out.read_text())
    takes = json.loads((synth_root / "processed" / "split.json").read_text())["test"]
    assert list(gt["annotations"]) == takes
    pred = json.loads(baseline_eval.read_text())
    official = evaluate(pred, gt, "exo2ego")  # strict: the official validator's checks
    # every synthetic frame is annotated: the official GT and omama-eval's own agree
    own = json.loads(baseline_eval.with_name("pred_metrics.json").read_text())
    assert official.as_dict() == pytest.approx(own)


def sample_labels(pred: dict, gt: dict) -> list[tuple[str, str, str, bool, bool]]:
    """(take, obj, frame, visible, predicted visible) of every exo2ego sample, as the
    official evaluator walks them (an independent plain loop)."""
    out = []
    results = pred["exo-ego"]["results"]
    for take, entry in gt["annotations"].items():
        for obj, cams in entry["masks"].items():
            ego = [c for c in cams if "aria" in c][0]
            for exo in (c for c in cams if "aria" not in c):
                for frame in cams[exo]:
                    if int(frame) in entry["annotated_frames"][obj][ego]:
                        conf = results[take]["masks"][obj][f"{exo}_{ego}"][frame]["confidence"]
                        out.append((take, obj, frame, frame in cams[ego], conf > 0.5))
    return out


def test_eval_relations_gives_the_official_balanced_accuracy(
    synth_root, cache_dir, baseline_eval, tmp_path, caplog
):
    pred = json.loads(baseline_eval.read_text())
    relations = json.loads(relations_path(synth_root, "test").read_text())
    full_gt = build_official_gt(
        list(relations["annotations"]),
        {
            t: json.loads((synth_root / "processed" / t / "annotation.json").read_text())
            for t in relations["annotations"]
        },
        relations,
    )
    own = evaluate(pred, full_gt, "exo2ego").balanced_acc
    # un-annotate, in the ego camera, the frame of one invisible sample whose removal moves
    # the balanced accuracy (if none does alone, all of them)
    invisible = [s for s in sample_labels(pred, full_gt) if not s[3]]
    assert invisible, "the synthetic test split needs a hidden-object sample"
    trials = [[s] for s in invisible] + [invisible]
    for chosen in trials:
        crafted = json.loads(json.dumps(relations))
        for take, obj, frame, _, _ in chosen:
            cams = crafted["annotations"][take]["object_masks"][obj]
            ego = [c for c in cams if "aria" in c][0]
            cams[ego]["annotated_frames"] = [
                f for f in cams[ego]["annotated_frames"] if f != int(frame)
            ]
        official_gt = build_official_gt(
            list(full_gt["annotations"]), full_gt["annotations"], crafted
        )
        official = evaluate(pred, official_gt, "exo2ego")
        if official.balanced_acc != pytest.approx(own):
            break
    assert official.balanced_acc != pytest.approx(own)
    rel_path = tmp_path / "relations_test.json"
    rel_path.write_text(json.dumps(crafted))

    out = tmp_path / "pred.json"
    argv = ["--cache", cache_dir, "--split", "test", "--baseline", "random", "--out", out]
    argv += ["--workers", "0", "--device", "cpu", "--seed", "3"]
    with caplog.at_level(logging.WARNING):
        assert (
            eval_cli.main([str(a) for a in argv + ["--root", synth_root, "--relations", rel_path]])
            == 0
        )
    assert not [r for r in caplog.records if "may differ from the official" in r.message]
    metrics = json.loads(out.with_name("pred_metrics.json").read_text())
    assert metrics["balanced_acc"] == pytest.approx(official.balanced_acc)
    assert metrics["n_visibility"] == official.n_visibility
    assert json.loads(out.read_text()) == pred  # same predictions, other ground truth
    assert json.loads(out.with_name("pred_gt.json").read_text()) == official_gt

    # without --relations: today's builder, its different figure, and one warning
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert eval_cli.main([str(a) for a in argv]) == 0
    warned = [r for r in caplog.records if "may differ from the official" in r.message]
    assert len(warned) == 1
    today = json.loads(out.with_name("pred_metrics.json").read_text())["balanced_acc"]
    assert today == pytest.approx(own) and today != pytest.approx(official.balanced_acc)


# ------------------------------------------------------------------ bad input: exit 2


@pytest.fixture
def root(synth_root, tmp_path) -> Path:
    return Path(shutil.copytree(synth_root, tmp_path / "data"))


def break_missing(path: Path) -> None:
    path.unlink()


def break_malformed(path: Path) -> None:
    path.write_text('{"annotations": [1, 2')


def break_no_annotations(path: Path) -> None:
    path.write_text(json.dumps({"takes": {}}))


def break_take(path: Path) -> None:
    data = json.loads(path.read_text())
    data["annotations"].pop(sorted(data["annotations"])[0])
    path.write_text(json.dumps(data))


BREAKS = [
    (break_missing, "relations file missing"),
    (break_malformed, "not valid JSON"),
    (break_no_annotations, "no 'annotations' key"),
    (break_take, "of the split is missing"),
]


@pytest.mark.parametrize("breaker, why", BREAKS, ids=lambda b: getattr(b, "__name__", ""))
def test_omama_gt_bad_relations_exit_2(root, tmp_path, capsys, breaker, why):
    rel = relations_path(root, "test")
    breaker(rel)
    assert run_gt(root, rel, tmp_path / "gt.json") == 2
    line = one_error_line(capsys, "omama-gt")
    assert str(rel) in line and why in line, line
    assert not (tmp_path / "gt.json").exists()


def test_omama_gt_missing_annotation_and_split(root, tmp_path, capsys):
    take = json.loads((root / "processed" / "split.json").read_text())["test"][0]
    ann = root / "processed" / take / "annotation.json"
    ann.unlink()
    assert run_gt(root, relations_path(root, "test"), tmp_path / "gt.json") == 2
    assert str(ann) in one_error_line(capsys, "omama-gt")
    assert run_gt(root, relations_path(root, "test"), tmp_path / "gt.json", "nosuch") == 2
    line = one_error_line(capsys, "omama-gt")
    assert str(root / "processed" / "split.json") in line and "no split 'nosuch'" in line
    assert gt_cli.main(["--root", str(root), "--out", str(tmp_path / "gt.json")]) == 2
    assert "missing required option --relations" in one_error_line(capsys, "omama-gt")


@pytest.mark.parametrize("breaker, why", BREAKS[::3], ids=lambda b: getattr(b, "__name__", ""))
def test_eval_bad_relations_exit_2_before_scoring(root, cache_dir, tmp_path, capsys, breaker, why):
    rel = relations_path(root, "test")
    breaker(rel)
    out = tmp_path / "pred.json"
    argv = ["--cache", cache_dir, "--baseline", "random", "--out", out, "--device", "cpu"]
    argv += ["--root", root, "--relations", rel]
    assert eval_cli.main([str(a) for a in argv]) == 2
    line = one_error_line(capsys, "omama-eval")
    assert str(rel) in line and why in line, line
    assert not out.exists()
    argv = ["--cache", cache_dir, "--baseline", "random", "--out", out, "--relations", rel]
    assert eval_cli.main([str(a) for a in argv]) == 2
    assert "missing required option --root" in one_error_line(capsys, "omama-eval")
