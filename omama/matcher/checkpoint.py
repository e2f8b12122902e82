"""Load and save matcher weights (the released O-MaMa checkpoint and our own).

Checkpoints are plain state_dicts with the reference key names. Loading is strict on keys
and shapes, except that the two position embeddings may come from another patch grid: they
are then resized bicubic to the model's grids (the released weights are for 50x50 / 38x68).

A matcher reads one backbone's tokens. A checkpoint of a backbone other than the default
records its timm name under `BACKBONE_KEY` (a string beside the tensors); one without it is
the default DINOv2 ViT-B/14 reg4's, as the released O-MaMa checkpoint and every default
checkpoint (whose bytes stay those of a plain state_dict). A checkpoint of another backbone
than the model's is refused in one line naming the file.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from omama.backbones import DEFAULT_BACKBONE, Backbone, recorded_backbone
from omama.errors import OmamaError, bad_file
from omama.files import write_torch
from omama.matcher.model import OMaMaMatcher

log = logging.getLogger(__name__)

POS_KEYS = {"pos_embed_T": "grid_t", "pos_embed_Q": "grid_q"}
# The fitted visibility part (visibility.py): absent from the released checkpoint and from
# omama checkpoints written before it existed; such a checkpoint loads with it unfitted.
OPTIONAL_KEYS = ("visibility.weight", "visibility.bias", "visibility.fitted_flag")
BACKBONE_KEY = "omama_backbone"  # the timm name of a non-default backbone
_WRAPPER_KEYS = ("model", "state_dict")
# Aspect ratios closer than this (as |log ratio|) are treated as the same shape.
_SAME_ASPECT = math.log(1.2)


def infer_grid(n_tokens: int, like: tuple[int, int]) -> tuple[int, int]:
    """The (rows, cols) with rows * cols == n_tokens whose aspect is closest to `like`'s.

    Closeness is |log(cols/rows) - log(like_cols/like_rows)|; ties go to the landscape grid.
    """
    target = math.log(like[1] / like[0])
    best: tuple[float, int, tuple[int, int]] | None = None
    for rows in range(1, n_tokens + 1):
        if n_tokens % rows:
            continue
        cols = n_tokens // rows
        key = (
            round(abs(math.log(cols / rows) - target), 9),
            0 if cols >= rows else 1,
            (rows, cols),
        )
        if best is None or key[:2] < best[:2]:
            best = key
    assert best is not None
    return best[2]


def _log_aspect(grid: tuple[int, int]) -> float:
    return math.log(grid[1] / grid[0])


def resize_pos_embed(pos: torch.Tensor, src: tuple[int, int], dst: tuple[int, int]) -> torch.Tensor:
    """[1, src_h*src_w, C] row-major grid -> [1, dst_h*dst_w, C], bicubic, align_corners False."""
    c = pos.shape[-1]
    grid = pos.reshape(1, src[0], src[1], c).permute(0, 3, 1, 2).float()
    out = F.interpolate(grid, size=dst, mode="bicubic", align_corners=False)
    return out.permute(0, 2, 3, 1).reshape(1, dst[0] * dst[1], c).to(pos.dtype)


# How the files torch.save writes begin: a zip archive, or (before torch 1.6) a pickle.
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")


def _check_checkpoint_file(path: Path) -> None:
    """A checkpoint path names a file torch.save could have written; else one line saying
    what it is (missing, a folder, empty, or some other kind of file)."""
    if not path.exists():
        raise bad_file(path, "checkpoint file not found")
    if path.is_dir():
        raise bad_file(path, "is a folder, not a checkpoint file (give best.pt or last.pt in it)")
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise bad_file(path, f"cannot read the checkpoint ({exc.strerror})") from None
    if not head:
        raise bad_file(path, "the checkpoint file is empty")
    if not head.startswith(_TORCH_MAGIC):
        raise bad_file(
            path,
            f"not a PyTorch checkpoint (torch.save writes a zip archive; this file begins "
            f"with {head!r})",
        )


def _read(state: dict | str | Path) -> tuple[dict, str, Backbone]:
    """Return the raw state_dict, a name for error messages and the backbone it records."""
    if isinstance(state, (str, Path)):
        path = Path(state)
        _check_checkpoint_file(path)
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a bad file
            detail = " ".join(str(exc).split())[:200]
            raise bad_file(
                path, f"cannot read checkpoint ({type(exc).__name__}: {detail})"
            ) from exc
        name = str(path)
    else:
        obj, name = state, "<state dict>"
    if not isinstance(obj, dict):
        raise bad_file(name, f"checkpoint holds a {type(obj).__name__}, not a state_dict")
    for wrapper in _WRAPPER_KEYS:
        if wrapper in obj and isinstance(obj[wrapper], dict):
            obj = obj[wrapper]
            break
    obj = dict(obj)
    record = {"backbone": obj.pop(BACKBONE_KEY)} if BACKBONE_KEY in obj else {}
    try:
        backbone = recorded_backbone(record, name)
    except OmamaError as exc:
        raise OmamaError(f"{exc} (as {BACKBONE_KEY})") from None
    keys = list(obj)
    if keys and all(isinstance(k, str) and k.startswith("module.") for k in keys):
        obj = {k[len("module.") :]: v for k, v in obj.items()}  # saved from DataParallel
    return obj, name, backbone


def _short(keys: list[str]) -> str:
    shown = ", ".join(keys[:6])
    return shown + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")


def load_matcher_state(model: OMaMaMatcher, state: dict | str | Path) -> None:
    """Load weights into `model` in place; OmamaError (one line) when they do not fit."""
    ckpt, name, backbone = _read(state)
    if backbone != model.backbone:
        what = "records" if backbone != DEFAULT_BACKBONE else "records no backbone, so it is for"
        raise bad_file(
            name,
            f"checkpoint {what} {backbone.name} ({backbone.width}-d tokens), but the cache "
            f"was built with {model.backbone.name} ({model.backbone.width}-d): use a "
            "checkpoint trained on a cache of the same backbone",
        )
    expected = model.state_dict()
    absent = [k for k in OPTIONAL_KEYS if k not in ckpt]
    if absent:
        log.info("%s: no fitted visibility part; confidence = sigmoid(best cosine)", name)
        ckpt = {**ckpt, **{k: torch.zeros_like(expected[k]) for k in absent}}
    missing = sorted(set(expected) - set(ckpt))
    unexpected = sorted(set(ckpt) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_short(unexpected)}")
        raise bad_file(name, "not an O-MaMa matcher checkpoint: " + "; ".join(parts))
    for key, value in ckpt.items():
        if not isinstance(value, torch.Tensor):
            raise bad_file(name, f"{key} is a {type(value).__name__}, not a tensor")
        want = expected[key].shape
        if key in POS_KEYS:
            if value.dim() != 3 or value.shape[0] != 1 or value.shape[2] != want[2]:
                raise bad_file(
                    name, f"{key} has shape {tuple(value.shape)}, expected (1, T, {want[2]})"
                )
        elif value.shape != want:
            raise bad_file(name, f"{key} has shape {tuple(value.shape)}, expected {tuple(want)}")

    grids = {
        key: infer_grid(ckpt[key].shape[1], getattr(model, attr))
        if ckpt[key].shape[1] != expected[key].shape[1]
        else getattr(model, attr)
        for key, attr in POS_KEYS.items()
    }
    _check_direction(model, grids["pos_embed_T"], grids["pos_embed_Q"], name)

    loaded = dict(ckpt)
    for key, attr in POS_KEYS.items():
        target = getattr(model, attr)
        if ckpt[key].shape[1] != expected[key].shape[1]:
            src = grids[key]
            log.info(
                "%s: %s is for a %dx%d grid; resized bicubic to the model's %dx%d",
                name,
                key,
                src[0],
                src[1],
                target[0],
                target[1],
            )
            loaded[key] = resize_pos_embed(ckpt[key], src, target)
    model.load_state_dict(loaded, strict=True)


def _check_direction(
    model: OMaMaMatcher, ck_t: tuple[int, int], ck_q: tuple[int, int], name: str
) -> None:
    """Refuse exo2ego weights in an ego2exo model (and the reverse), judged by grid shapes."""
    a_t, a_q = _log_aspect(model.grid_t), _log_aspect(model.grid_q)
    if abs(a_t - a_q) <= _SAME_ASPECT:
        return  # the two grids look alike: shapes cannot tell the directions apart
    c_t, c_q = _log_aspect(ck_t), _log_aspect(ck_q)
    if abs(c_t - a_q) < abs(c_t - a_t) and abs(c_q - a_t) < abs(c_q - a_q):
        raise bad_file(
            name,
            f"checkpoint is for the other direction (its destination/source grids are "
            f"{ck_t[0]}x{ck_t[1]}/{ck_q[0]}x{ck_q[1]}, the model's are "
            f"{model.grid_t[0]}x{model.grid_t[1]}/{model.grid_q[0]}x{model.grid_q[1]})",
        )


def matcher_weights(model: OMaMaMatcher) -> dict:
    """What a matcher checkpoint holds: a plain dict of the state_dict's tensors (reference
    key names), still the model's own: copy them before training changes them; a
    non-default backbone's name under `BACKBONE_KEY`."""
    state: dict = {k: v.detach() for k, v in model.state_dict().items()}
    if model.backbone != DEFAULT_BACKBONE:
        state[BACKBONE_KEY] = model.backbone.arch
    return state


def save_matcher_state(model: OMaMaMatcher, path: str | Path) -> None:
    """Write a plain state_dict (reference key names) atomically: temp file, then rename; a
    non-default backbone is recorded under `BACKBONE_KEY`."""
    state = {
        k: v.to("cpu").clone() if isinstance(v, torch.Tensor) else v
        for k, v in matcher_weights(model).items()
    }
    write_torch(state, path)  # a failed write is one line and leaves the old file intact


def build_matcher(
    grid_t: tuple[int, int],
    grid_q: tuple[int, int],
    checkpoint: Path | None = None,
    backbone: Backbone = DEFAULT_BACKBONE,
) -> OMaMaMatcher:
    """A matcher for these destination / source patch grids and the tokens of `backbone`
    (the cache's), with `checkpoint`'s weights when given (omama's or the released O-MaMa
    file), else freshly initialised."""
    model = OMaMaMatcher(grid_t=grid_t, grid_q=grid_q, backbone=backbone)
    if checkpoint is not None:
        load_matcher_state(model, checkpoint)
    return model
