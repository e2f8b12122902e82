"""Plain reference forms, written as directly as the method reads: the tests compare the
project against them, and `make bench` times the project against the same functions (it puts
this folder on sys.path), so that each is defined once.

Nothing here is tuned: each function is the obvious transcription of the reference.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def loop_descriptors(dense: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """docs/reference.md, Descriptors, one mask at a time: nearest-resize the mask to the dense
    map, average the features under it; grow the box by 100 px, clamp, divide by 4, average the
    window."""
    c, h, w = dense.shape
    n, big_h, big_w = masks.shape
    out = torch.zeros(n, 2 * c, device=dense.device)
    for i in range(n):
        m = F.interpolate(masks[i][None, None].float(), size=(h, w), mode="nearest")[0, 0]
        m = (m != 0).float()
        if m.sum() > 0:
            out[i, :c] = (dense * m).sum(dim=(1, 2)) / m.sum()
        x, y, bw, bh = (int(v) for v in boxes[i].tolist())  # int() truncates toward zero
        x1, y1, x2, y2 = x, y, x + bw, y + bh
        x1 = min(max(x1 - 100, 0), big_w)
        y1 = min(max(y1 - 100, 0), big_h)
        x2 = min(max(x2 + 100, 0), big_w)
        y2 = min(max(y2 + 100, 0), big_h)
        x1, y1, x2, y2 = (math.floor(v / 4) for v in (x1, y1, x2, y2))
        x2 = max(x1 + 1, x2)
        y2 = max(y1 + 1, y2)
        max_x, max_y = big_w // 4 - 1, big_h // 4 - 1
        x1 = min(max(x1, 0), max_x)
        y1 = min(max(y1, 0), max_y)
        x2 = min(max(x2, 0), max_x + 1)
        y2 = min(max(y2, 0), max_y + 1)
        out[i, c:] = dense[:, y1:y2, x1:x2].mean(dim=(1, 2))
    return out


# --------------------------------------------------------------------------------------------
# Evaluation post-processing, one pair at a time on full pixel masks (omama-eval before its
# run-level path, BENCHMARKS.md rows 9 and 9b): the run-level path must give the same bytes
# and the same numbers.


def per_pair_records(cache, direction: str, scored: list, mask_size: str = "official") -> list:
    """Each chosen candidate decoded at the crop size, cv2-nearest resized to the official size
    of the destination GT (else of the image), encoded again."""
    import cv2

    from omama import rle
    from omama.metrics.validate import eval_size
    from omama.predict.challenge import PredRecord

    records = []
    for s in scored:
        x = s.sample
        mask = rle.decode(cache.cand_rle(direction, x.dst, s.best), f"cache {x.dst}")
        if mask_size != "crop":
            if x.dst_k >= 0:
                h, w = cache.obj_rle(x.dst, x.dst_k)["size"]
            else:
                h, w = cache.orig_hw(x.dst)
            th, tw = eval_size(h, w)
            mask = cv2.resize(mask, (tw, th), interpolation=cv2.INTER_NEAREST)
        records.append(
            PredRecord(x.take, x.obj, x.src_cam, x.dst_cam, x.frame, rle.encode(mask), s.confidence)
        )
    return records


def per_pair_gt_samples(cache, samples: list) -> list:
    """The ground truth of each sample, one cache read per mask."""
    from omama.metrics.groundtruth import GTSample

    return [
        GTSample(
            s.take,
            s.obj,
            s.src_cam,
            s.dst_cam,
            s.frame,
            cache.obj_rle(s.src, s.src_k),
            cache.obj_rle(s.dst, s.dst_k) if s.dst_k >= 0 else None,
        )
        for s in samples
    ]


def pixel_scores(pred_rle: dict, gt_rle: dict) -> tuple[float, float, float]:
    """(IoU, contour accuracy, location error): the prediction decoded, the GT decoded at its
    own size and resized as the official tool resizes it, the pixel metrics of official.py."""
    from omama import rle
    from omama.metrics import pixels

    pred = rle.decode(pred_rle)
    gt = pixels.resize_for_eval(rle.decode(gt_rle))
    return (
        pixels.mask_iou(pred, gt),
        pixels.boundary_f_measure(pred, gt),
        pixels.location_error(pred, gt),
    )


def per_pair_evaluate(pred_json: dict, gt_json: dict, direction: str, strict: bool = True):
    """The official walk (see `omama.metrics.official.evaluate`), each visible sample scored
    by `pixel_scores` as soon as it is reached."""
    import numpy as np

    from omama.constants import direction_info
    from omama.errors import OmamaError
    from omama.metrics import official
    from omama.metrics.validate import pair_key, schema_problems, split_cams

    problems = schema_problems(pred_json, gt_json, direction, strict)
    if problems:
        raise OmamaError(problems[0])
    info = direction_info(direction)
    results = pred_json[info.challenge_key]["results"]
    scores, gt_vis, pred_vis = [], [], []
    for take, gt_take in gt_json["annotations"].items():
        for obj, cams in gt_take["masks"].items():
            ego, exo = split_cams(cams)
            if not ego:
                continue
            for exo_cam in exo:
                src, dst = (ego[0], exo_cam) if info.source_is_ego else (exo_cam, ego[0])
                annotated = gt_take["annotated_frames"][obj][dst]
                pred_pair = results[take]["masks"][obj].get(pair_key(src, dst), {})
                for frame in cams[src]:
                    if int(frame) not in annotated:
                        continue
                    entry = pred_pair[frame]
                    visible = frame in cams[dst]
                    if visible:
                        scores.append(pixel_scores(entry["pred_mask"], cams[dst][frame]))
                    gt_vis.append(int(visible))
                    pred_vis.append(int(entry["confidence"] > official.CONF_THRESHOLD))

    def mean(values: list[float]) -> float:
        return float(np.mean(values)) if values else float("nan")

    return official.Metrics(
        iou=mean([t[0] for t in scores]),
        shape_acc=mean([t[1] for t in scores]),
        location_score=mean([t[2] for t in scores]),
        balanced_acc=official.balanced_accuracy(pred_vis, gt_vis),
        n=len(scores),
        n_visibility=len(gt_vis),
    )


# --------------------------------------------------------------------------------------------
# Before the dataset root (omama-prepare): the Ego-Exo4D download read one bit, one run and
# one frame at a time, by the official rules (docs/reference.md, Preparation).

URI_SAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-$"


def plain_lzstring_decode(text: str) -> str:
    """`LZString.decompressFromEncodedURIComponent`, one bit at a time as the JavaScript
    reads them: each character is 6 bits, taken from its bit 5 down to bit 0; a value of n
    bits is assembled lowest bit first."""
    values = [URI_SAFE.index(ch) for ch in text.replace(" ", "+")]
    state = {"index": 0, "mask": 32}

    def read(n: int) -> int:
        out = 0
        for k in range(n):
            value = values[state["index"]]
            bit = 1 if value & state["mask"] else 0
            state["mask"] >>= 1
            if state["mask"] == 0:
                state["mask"] = 32
                state["index"] += 1
            out += bit << k
        return out

    dictionary: dict[int, str] = {}
    first = read(2)
    if first == 2:
        return ""
    c = chr(read(8 if first == 0 else 16))
    dictionary[3] = c
    size, n_bits, enlarge = 4, 3, 4
    w, result = c, [c]
    while True:
        code = read(n_bits)
        if code in (0, 1):
            dictionary[size] = chr(read(8 if code == 0 else 16))
            size += 1
            code = size - 1
            enlarge -= 1
        elif code == 2:
            return "".join(result)
        if enlarge == 0:
            enlarge = 2**n_bits
            n_bits += 1
        if code in dictionary:
            entry = dictionary[code]
        elif code == size:
            entry = w + w[0]
        else:
            raise ValueError("bad code")
        result.append(entry)
        dictionary[size] = w + entry[0]
        size += 1
        enlarge -= 1
        w = entry
        if enlarge == 0:
            enlarge = 2**n_bits
            n_bits += 1


def plain_rle_mask(counts: str, height: int, width: int):
    """A COCO compressed counts string to an H x W 0/1 mask, plainly: 5 bits a character
    with a continuation bit and a sign bit, runs from the third on relative to the run two
    before, runs alternating 0 and 1 down the columns."""
    import numpy as np

    runs, i = [], 0
    while i < len(counts):
        x, k, more = 0, 0, True
        while more:
            c = ord(counts[i]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            i += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    flat = np.zeros(height * width, np.uint8)
    pos, value = 0, 0
    for run in runs:
        flat[pos : pos + run] = value
        pos += run
        value = 1 - value
    return flat.reshape(width, height).T


def official_pairs(data_dir: str, split_takes: list[str], annotations: dict, setting: str):
    """docs/reference.md, Preparation: per take, per object that has an ego camera, per exo camera,
    per frame annotated in the source camera (ego for egoexo, the exo camera for exoego),
    [ego_rgb, ego_mask, exo_rgb, exo_mask] as ROOT//take//cam//obj//kind//frame."""
    pairs = []
    for take in split_takes:
        masks = annotations[take]["masks"]
        for obj in masks:
            ego_cam = None
            for cam in masks[obj]:
                if "aria" in cam:
                    ego_cam = cam
            if ego_cam is None:
                continue
            for cam in masks[obj]:
                if "aria" in cam:
                    continue
                source = ego_cam if setting == "egoexo" else cam
                for idx in masks[obj][source]:
                    pair = []
                    for c in (ego_cam, cam):
                        for kind in ("rgb", "mask"):
                            pair.append(f"{data_dir}//{take}//{c}//{obj}//{kind}//{idx}")
                    pairs.append(pair)
    return pairs


def official_frames(video: str, scale: int) -> dict[int, bytes]:
    """The official frame rule with another decoder (OpenCV's FFmpeg reader): every 30th
    frame, resized to (W // scale, H // scale) by cv2.resize's default, encoded as
    cv2.imwrite's default JPEG."""
    import cv2

    cap = cv2.VideoCapture(video)
    out, i = {}, 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if i % 30 == 0:
            h, w = frame.shape[:2]
            ok, buf = cv2.imencode(".jpg", cv2.resize(frame, (w // scale, h // scale)))
            assert ok
            out[i] = buf.tobytes()
        i += 1
    cap.release()
    return out


def reference_box(mask) -> list[float]:
    """O-MaMa's bbox_from_mask, as it reads: [x_min, y_min, x_max - x_min, y_max - y_min] of
    the nonzero pixels (no +1), zeros for an empty mask."""
    import numpy as np

    ys, xs = np.nonzero(np.asarray(mask))
    if len(ys) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [
        float(xs.min()),
        float(ys.min()),
        float(xs.max() - xs.min()),
        float(ys.max() - ys.min()),
    ]


def reference_reads_candidates(masks_dir, take: str, cam: str, frame: int, h2: int, w2: int):
    """What O-MaMa's loader makes of one destination image's candidate files, step by step as
    its __getitem__ does: `np.load(npz)['arr_0'].astype(uint8)`, fewer than 3 dims -> one
    all-zero mask, another size -> torch nearest resize to (h2, w2); the boxes file as
    float32, scaled by the same factors. Returns (masks uint8 [N, h2, w2], boxes [N, 4])."""
    import numpy as np

    masks = torch.from_numpy(
        np.load(f"{masks_dir}/{take}/{cam}/{frame}_masks.npz")["arr_0"].astype(np.uint8)
    )
    if masks.dim() < 3:
        masks = torch.zeros((1, h2, w2))
    n, h, w = masks.shape
    if (h, w) != (h2, w2):
        masks = F.interpolate(masks[None].float(), size=(h2, w2), mode="nearest")[0].long()
    boxes = torch.from_numpy(
        np.load(f"{masks_dir}/{take}/{cam}/{frame}_boxes.npy").astype(np.float32)
    )
    fy, fx = h2 / h, w2 / w
    if fy != 1 or fx != 1:
        boxes[:, 0] *= fx
        boxes[:, 1] *= fy
        boxes[:, 2] *= fx
        boxes[:, 3] *= fy
    return masks.to(torch.uint8), boxes
