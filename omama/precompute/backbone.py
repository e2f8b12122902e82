"""Frozen DINOv2 / DINOv3 ViT backbones through timm, loaded from a LOCAL weights file.

Which backbone is `omama.backbones` (default DINOv2 ViT-B/14 reg4, as O-MaMa). Pretrained
weights cannot be downloaded here, so the model is always created with ``pretrained=False``
and filled from a file the user provides: Meta's released file (``dinov2_vits14_reg4_pretrain
.pth``, ``dinov3_vitb16_pretrain_lvd1689m-*.pth``: Meta key names) or a timm state_dict
(.pth/.bin, or .safetensors when the ``safetensors`` package is importable). Meta keys are
converted with timm's own ``checkpoint_filter_fn`` of the model's family (vision_transformer
for DINOv2, eva for DINOv3); the converted dict is checked key by key and shape by shape
against the model built on the ``meta`` device (no memory), so a file of another backbone is
one line that names the backbone it looks like.

Position embeddings (DINOv2): timm (``dynamic_img_size=True``) resizes the 37x37 table to the
image's patch grid with ``F.interpolate(mode="bicubic", antialias=True, align_corners=False)``
and a target *size*, which is exactly what DINOv2's hub ``dinov2_vitb14_reg`` does
(``interpolate_antialias=True, interpolate_offset=0.0``). Checked numerically against the
DINOv2 code on 224x224 and 196x350 inputs (fp32 CPU; see the module report). DINOv3 has no
position table: timm's eva applies DINOv3's rotary embedding (RoPE) on the patch grid.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import timm
import torch
from timm.models import eva, vision_transformer

from omama.backbones import BACKBONE_TABLE, DEFAULT_BACKBONE, Backbone
from omama.errors import OmamaError, bad_file
from omama.files import file_sha256, write_torch

log = logging.getLogger(__name__)

PRETRAIN_GRID = 37  # DINOv2: 518 / 14, the grid of the released position embeddings
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FORMATS = ("meta", "timm")
# Keys a timm-format file may carry that the backbone does not use (a classifier head).
_IGNORED_TIMM_PREFIXES = ("head.", "fc_norm.")
# The key that tells each family's Meta format from timm's (timm: `reg_token`).
_META_KEYS = {"dinov2": ("register_tokens", "mask_token"), "dinov3": ("storage_tokens",)}
_FILTERS = {
    "dinov2": vision_transformer.checkpoint_filter_fn,
    "dinov3": eva.checkpoint_filter_fn,
}


def available(spec: Backbone) -> bool:
    """Whether the installed timm provides this backbone's model."""
    return spec.arch in timm.list_models(spec.arch)


def _create_model(
    spec: Backbone, init_values: float | None = None, device: str | None = None
) -> torch.nn.Module:
    if not available(spec):
        raise OmamaError(
            f"backbone {spec.name}: the installed timm {timm.__version__} has no {spec.arch}"
        )
    kwargs = {} if init_values is None else {"init_values": init_values}
    with torch.device(device or "cpu"):
        return timm.create_model(
            spec.arch, pretrained=False, dynamic_img_size=True, num_classes=0, **kwargs
        )


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise bad_file(path, "weights file not found")
    if not path.is_file():
        raise bad_file(path, "weights path is not a file")
    try:
        if path.suffix == ".safetensors":
            try:
                from safetensors.torch import load_file
            except ImportError as exc:
                raise bad_file(
                    path, "a .safetensors file needs the 'safetensors' package (not installed)"
                ) from exc
            obj = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except OmamaError:
        raise
    except Exception as exc:  # any reader failure becomes one user-facing line
        msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise bad_file(path, f"cannot read weights ({type(exc).__name__}: {msg})") from exc
    # Training checkpoints sometimes nest the weights.
    for wrapper in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not obj:
        raise bad_file(path, f"not a state_dict of tensors (found {type(obj).__name__})")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise bad_file(path, f"not a state_dict of tensors (entry {bad[0]!r} is not a tensor)")
    return obj


def guess_backbone(sd: dict[str, torch.Tensor]) -> Backbone | None:
    """The table's backbone whose family, width, patch and depth fit a state_dict's keys and
    shapes (those it has), when exactly one does."""
    family = None
    if any(k in sd for k in ("storage_tokens", "blocks.0.gamma_1", "blocks.0.attn.q_bias")):
        family = "dinov3"
    elif any(k in sd for k in ("register_tokens", "pos_embed")):
        family = "dinov2"
    cls = sd.get("cls_token")
    width = int(cls.shape[-1]) if cls is not None and cls.dim() else None
    proj = sd.get("patch_embed.proj.weight")
    patch = int(proj.shape[-1]) if proj is not None and proj.dim() == 4 else None
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
    depth = max(blocks) + 1 if blocks else None
    fits = [
        b
        for b in BACKBONE_TABLE.values()
        if (family is None or b.family == family)
        and (width is None or b.width == width)
        and (patch is None or b.patch == patch)
        and (depth is None or b.depth == depth)
    ]
    return fits[0] if len(fits) == 1 else None


def _hint(sd: dict[str, torch.Tensor], spec: Backbone) -> str:
    other = guess_backbone(sd)
    if other is None or other == spec:
        return ""
    return f"; the file looks like {other.title}: pass --backbone {other.name}"


def _detect_format(path: Path, sd: dict[str, torch.Tensor], spec: Backbone) -> bool:
    """True for Meta's key names, False for timm's; else one line naming the file."""
    meta_keys = _META_KEYS[spec.family]
    if any(k in sd for k in meta_keys):
        return True
    if "reg_token" in sd:
        return False
    raise bad_file(
        path,
        f"expected {spec.title} weights: found neither Meta key names "
        f"({', '.join(meta_keys)}) nor timm's (reg_token){_hint(sd, spec)}",
    )


def _check_tensors(path: Path, sd: dict[str, torch.Tensor], spec: Backbone, meta: bool) -> None:
    """The checks that read the file's own names: width, DINOv2's position table, dtypes."""
    w = spec.width
    cls = sd.get("cls_token")
    if cls is not None and tuple(cls.shape) != (1, 1, w):
        raise bad_file(
            path,
            f"expected {w}-d {spec.title} weights, found cls_token of shape "
            f"{tuple(cls.shape)} (expected {(1, 1, w)}){_hint(sd, spec)}",
        )
    if spec.family == "dinov2" and "pos_embed" in sd:
        pe = tuple(sd["pos_embed"].shape)
        n = (pe[1] - 1 if meta else pe[1]) if len(pe) == 3 else -1
        side = int(round(n**0.5)) if n > 0 else 0
        if len(pe) != 3 or pe[0] != 1 or pe[2] != w or side < 1 or side * side != n:
            first = "1 + " if meta else ""
            raise bad_file(
                path,
                f"expected {w}-d {spec.title} weights, found pos_embed of shape "
                f"{pe} (expected (1, {first}M*M, {w}))",
            )
    for key, value in sd.items():
        if not value.is_floating_point():
            raise bad_file(path, f"{key} has dtype {value.dtype}, expected a floating dtype")


def _listed(keys: list[str]) -> str:
    more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
    return f"{', '.join(keys[:3])}{more}"


def convert_state_dict(
    path: Path, sd: dict[str, torch.Tensor], spec: Backbone
) -> tuple[dict[str, torch.Tensor], bool]:
    """A Meta- or timm-format state_dict -> the timm model's keys, checked against the model
    built on the ``meta`` device (so any size, ViT-g included, costs no memory). Returns the
    converted dict and whether the file was in Meta's format. Works on ``meta`` tensors too.
    """
    meta = _detect_format(path, sd, spec)
    fmt = "Meta" if meta else "timm"
    _check_tensors(path, sd, spec, meta)
    model = _create_model(spec, device="meta")
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    sd = {k: v for k, v in sd.items() if meta or not k.startswith(_IGNORED_TIMM_PREFIXES)}
    try:
        # timm's filter converts Meta's names (registers, cls/pos split, DINOv3's layer scales
        # and q/v biases) and resizes a square DINOv2 pos_embed of another grid to 37x37.
        # It pops from its input.
        out = _FILTERS[spec.family](dict(sd), model)
    except Exception as exc:  # a malformed tensor the filter trips over: one line
        detail = " ".join(str(exc).split())[:200]
        raise bad_file(
            path, f"cannot convert {fmt}-format {spec.title} weights ({detail}){_hint(sd, spec)}"
        ) from exc
    if spec.family == "dinov3" and not meta and not any(k.endswith("q_bias") for k in out):
        # timm's DINOv3 variant without a qkv bias: the same function with zero biases
        for k, shape in want.items():
            if k.endswith(("attn.q_bias", "attn.v_bias")):
                out[k] = torch.zeros(shape, device=next(iter(sd.values())).device)
    missing = [k for k in want if k not in out]
    unexpected = [k for k in out if k not in want]
    if missing:
        raise bad_file(
            path,
            f"expected {spec.title} weights ({fmt} format), missing keys: "
            f"{_listed(missing)}{_hint(sd, spec)}",
        )
    if unexpected:
        raise bad_file(
            path,
            f"expected {spec.title} weights ({fmt} format), unexpected keys: "
            f"{_listed(unexpected)}{_hint(sd, spec)}",
        )
    for key, shape in want.items():
        if tuple(out[key].shape) != shape:
            raise bad_file(
                path,
                f"expected {spec.width}-d {spec.title} weights, found {key} of shape "
                f"{tuple(out[key].shape)} (expected {shape}){_hint(sd, spec)}",
            )
    return out, meta


def load_backbone(
    weights: Path, device: str | torch.device = "cpu", backbone: Backbone = DEFAULT_BACKBONE
) -> torch.nn.Module:
    """Build `backbone`'s timm model and fill it from a local Meta- or timm-format file.

    The model is returned in eval mode with every parameter frozen (requires_grad False).
    Any problem with the file raises OmamaError naming the file.
    """
    path = Path(weights)
    sd = _read_state_dict(path)
    converted, meta = convert_state_dict(path, sd, backbone)
    model = _create_model(backbone)
    try:
        model.load_state_dict(converted, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise bad_file(
            path,
            f"weights do not fit {backbone.arch}: {' '.join(s.strip() for s in first[:2])[:300]}",
        ) from exc
    model.eval()
    model.requires_grad_(False)
    model.to(device)
    log.info(
        "loaded %s weights (%s format) from %s", backbone.arch, "Meta" if meta else "timm", path
    )
    return model


def to_meta_format(
    tsd: dict[str, torch.Tensor], spec: Backbone, fill: Fill
) -> dict[str, torch.Tensor]:
    """A timm state_dict in Meta's released key names and shapes (the inverse of timm's
    filter). Tensors Meta's files have and timm's do not (DINOv2's class position, mask
    tokens) come from `fill(shape, std)`; norms, biases and layer scales are redrawn through
    `fill` too, so that a mix-up of any two tensors changes the output (timm's init leaves
    them all 0/1/constant). Works on ``meta`` tensors (a key map check of ViT-g costs no
    memory)."""
    w = spec.width
    out: dict[str, torch.Tensor] = {"cls_token": fill((1, 1, w), 0.02)}
    if spec.family == "dinov2":
        out["pos_embed"] = fill((1, 1 + PRETRAIN_GRID * PRETRAIN_GRID, w), 0.02)
        out["register_tokens"] = fill((1, spec.registers, w), 0.02)
        out["mask_token"] = fill((1, w), 0.02)
    else:
        out["storage_tokens"] = fill((1, spec.registers, w), 0.02)
        out["mask_token"] = fill((1, w), 0.02)
    q_bias: torch.Tensor | None = None
    for key, value in tsd.items():
        if key in ("cls_token", "reg_token", "pos_embed"):
            continue
        value = value.detach().clone().float()
        if re.search(r"norm\d?\.weight$", key):
            value = 1.0 + fill(tuple(value.shape), 0.1)
        elif key.endswith(("bias", ".gamma", "gamma_1", "gamma_2")):
            if key.endswith("bias"):
                value = fill(tuple(value.shape), 0.02)
            else:
                value = 0.1 + 0.9 * fill(tuple(value.shape), -1.0)  # -1: uniform [0, 1)
        if spec.family == "dinov2":
            if spec.swiglu:
                key = key.replace(".mlp.fc1.", ".mlp.w12.").replace(".mlp.fc2.", ".mlp.w3.")
        else:
            key = key.replace("gamma_1", "ls1.gamma").replace("gamma_2", "ls2.gamma")
            if key.endswith("attn.q_bias"):
                q_bias = value
                continue
            if key.endswith("attn.v_bias"):
                assert q_bias is not None
                stem = key[: -len("v_bias")]
                # Meta keeps one qkv bias and masks its k third to zero
                out[stem + "qkv.bias"] = torch.cat([q_bias, torch.zeros_like(value), value])
                out[stem + "qkv.bias_mask"] = torch.cat(
                    [torch.ones_like(value), torch.zeros_like(value), torch.ones_like(value)]
                )
                continue
        out[key] = value.contiguous()
    if spec.family == "dinov3":
        head_dim = 64  # every DINOv3 ViT: 64 channels per head
        out["rope_embed.periods"] = 100.0 ** (
            2 * torch.arange(head_dim // 4, device=out["cls_token"].device) / (head_dim // 2)
        )
    return out


class Fill:
    """Seeded draws for `to_meta_format`: normal with `std`, or uniform [0, 1) for std -1."""

    def __init__(self, seed: int | None, device: str = "cpu") -> None:
        self.device = device
        self.gen = torch.Generator().manual_seed(seed) if seed is not None else None

    def __call__(self, shape: tuple[int, ...], std: float) -> torch.Tensor:
        if self.device == "meta":
            return torch.empty(shape, device="meta")
        if std < 0:
            return torch.rand(*shape, generator=self.gen)
        return torch.randn(*shape, generator=self.gen) * std


def save_random_init(
    path: Path, seed: int, backbone: Backbone = DEFAULT_BACKBONE, fmt: str = "meta"
) -> Path:
    """Write a seeded random-init `backbone` in Meta's released format or timm's (atomically).

    Meta's: the same keys and shapes as Meta's file (DINOv2: ``dinov2_vitb14_reg4_pretrain.pth``
    with pos_embed for the 37x37 grid plus the class position). timm's: that dict converted
    by timm's filter, so both formats of one seed hold the same network. Deterministic: the
    same seed gives the same tensors and bytes. Lets tests and the demo run the real loading
    code without the real weights.
    """
    if fmt not in FORMATS:
        raise OmamaError(f"weights format {fmt!r}: expected one of {', '.join(FORMATS)}")
    path = Path(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _create_model(backbone, init_values=1.0)
    sd = to_meta_format(model.state_dict(), backbone, Fill(seed))
    if fmt == "timm":
        sd, _ = convert_state_dict(path, sd, backbone)
        sd = {k: v.contiguous() for k, v in sd.items()}
    write_torch(sd, path)
    return path


def weights_fingerprint(path: Path) -> str:
    """sha256 hex digest of the weights file's bytes (a cache key for precomputed features)."""
    try:
        return file_sha256(path)
    except OSError as exc:
        raise bad_file(path, f"cannot read weights ({exc.strerror or exc})") from exc


def _model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def precision_on(device: torch.device) -> str:
    """The number format the backbone runs in on `device` by default: FP16 autocast on
    CUDA, fp32 elsewhere (the cache records it: `options.cache_settings`)."""
    return "fp16" if device.type == "cuda" else "fp32"


def patch_tokens(
    model: torch.nn.Module, images: torch.Tensor, fp16: bool | None = None
) -> torch.Tensor:
    """Normalised patch tokens of uint8 RGB images.

    images: uint8 [B, H, W, 3], RGB, H and W multiples of the model's patch P (14 for DINOv2,
    16 for DINOv3). Returns float32 [B, (H/P)*(W/P), width]: the tokens after the final
    LayerNorm without CLS and registers, row-major over the patch grid. ImageNet mean/std
    normalisation happens here, on the model's device. fp16=None means FP16 autocast on CUDA
    and fp32 elsewhere; True/False forces it.
    """
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        raise ValueError("images must be a uint8 torch.Tensor [B, H, W, 3]")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [B, H, W, 3], got {tuple(images.shape)}")
    h, w = int(images.shape[1]), int(images.shape[2])
    patch = int(model.patch_embed.patch_size[0])
    if h % patch or w % patch or h == 0 or w == 0:
        raise ValueError(f"image size {h}x{w} is not a positive multiple of {patch}")
    device = _model_device(model)
    if fp16 is None:
        fp16 = precision_on(device) == "fp16"
    n_prefix = int(model.num_prefix_tokens)  # CLS and registers
    with torch.inference_mode():
        x = images.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
        x = (x - mean) / std
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=bool(fp16)):
            feats = model.forward_features(x)
        out = feats[:, n_prefix:].float()
    # A plain (non-inference) tensor, so that callers may modify it in place.
    return out.clone()
