"""Frozen DINOv2 ViT-B/14 (4 registers) backbone through timm, loaded from a LOCAL weights file.

Pretrained weights cannot be downloaded here, so the model is always created with
``pretrained=False`` and filled from a file the user provides: either Meta's released
``dinov2_vitb14_reg4_pretrain.pth`` (Meta key names) or a timm state_dict (.pth/.bin, or
.safetensors when the ``safetensors`` package is importable). Meta keys are converted with
timm's own ``checkpoint_filter_fn``.

Position embeddings: timm (``dynamic_img_size=True``) resizes the 37x37 table to the image's
patch grid with ``F.interpolate(mode="bicubic", antialias=True, align_corners=False)`` and a
target *size*, which is exactly what DINOv2's hub ``dinov2_vitb14_reg`` does
(``interpolate_antialias=True, interpolate_offset=0.0``). Checked numerically against the
DINOv2 code on 224x224 and 196x350 inputs (fp32 CPU; see the module report).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import timm
import torch
from timm.models.vision_transformer import checkpoint_filter_fn

from omama.constants import PATCH, TOKEN_DIM
from omama.errors import OmamaError, bad_file
from omama.files import file_sha256, write_torch

log = logging.getLogger(__name__)

ARCH = "vit_base_patch14_reg4_dinov2"
EMBED_DIM = TOKEN_DIM
DEPTH = 12
NUM_REG = 4
MLP_DIM = 3072
PRETRAIN_GRID = 37  # 518 / 14: the grid of the released position embeddings
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_BLOCK_SHAPES: dict[str, tuple[int, ...]] = {
    "norm1.weight": (EMBED_DIM,),
    "norm1.bias": (EMBED_DIM,),
    "attn.qkv.weight": (3 * EMBED_DIM, EMBED_DIM),
    "attn.qkv.bias": (3 * EMBED_DIM,),
    "attn.proj.weight": (EMBED_DIM, EMBED_DIM),
    "attn.proj.bias": (EMBED_DIM,),
    "ls1.gamma": (EMBED_DIM,),
    "norm2.weight": (EMBED_DIM,),
    "norm2.bias": (EMBED_DIM,),
    "mlp.fc1.weight": (MLP_DIM, EMBED_DIM),
    "mlp.fc1.bias": (MLP_DIM,),
    "mlp.fc2.weight": (EMBED_DIM, MLP_DIM),
    "mlp.fc2.bias": (EMBED_DIM,),
    "ls2.gamma": (EMBED_DIM,),
}
# Keys a timm-format file may carry that the backbone does not use (a classifier head).
_IGNORED_TIMM_PREFIXES = ("head.", "fc_norm.")


def _expected_shapes(meta: bool) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a DINOv2 ViT-B/14 reg4 state_dict (pos_embed is checked separately)."""
    shapes: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, EMBED_DIM),
        "patch_embed.proj.weight": (EMBED_DIM, 3, PATCH, PATCH),
        "patch_embed.proj.bias": (EMBED_DIM,),
    }
    if meta:
        shapes["register_tokens"] = (1, NUM_REG, EMBED_DIM)
        shapes["mask_token"] = (1, EMBED_DIM)
    else:
        shapes["reg_token"] = (1, NUM_REG, EMBED_DIM)
    for i in range(DEPTH):
        for name, shape in _BLOCK_SHAPES.items():
            shapes[f"blocks.{i}.{name}"] = shape
    shapes["norm.weight"] = (EMBED_DIM,)
    shapes["norm.bias"] = (EMBED_DIM,)
    return shapes


def _create_model(init_values: float | None = None) -> torch.nn.Module:
    kwargs = {} if init_values is None else {"init_values": init_values}
    return timm.create_model(ARCH, pretrained=False, dynamic_img_size=True, num_classes=0, **kwargs)


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


def _check_architecture(path: Path, sd: dict[str, torch.Tensor]) -> bool:
    """Validate keys and shapes; return True for Meta's format, False for timm's."""
    if "register_tokens" in sd or "mask_token" in sd:
        meta = True
    elif "reg_token" in sd:
        meta = False
    else:
        raise bad_file(
            path,
            "expected DINOv2 ViT-B/14 reg4 weights: found neither Meta key names "
            "(register_tokens, mask_token) nor timm's (reg_token)",
        )
    fmt = "Meta" if meta else "timm"
    expected = _expected_shapes(meta)
    for key, shape in expected.items():
        if key in sd and tuple(sd[key].shape) != shape:
            raise bad_file(
                path,
                f"expected {EMBED_DIM}-d DINOv2 ViT-B/14 reg4 weights, found {key} of shape "
                f"{tuple(sd[key].shape)} (expected {shape})",
            )
    if "pos_embed" in sd:
        pe = tuple(sd["pos_embed"].shape)
        n = (pe[1] - 1 if meta else pe[1]) if len(pe) == 3 else -1
        side = int(round(n**0.5)) if n > 0 else 0
        if len(pe) != 3 or pe[0] != 1 or pe[2] != EMBED_DIM or side < 1 or side * side != n:
            first = "1 + " if meta else ""
            raise bad_file(
                path,
                f"expected {EMBED_DIM}-d DINOv2 ViT-B/14 reg4 weights, found pos_embed of shape "
                f"{pe} (expected (1, {first}M*M, {EMBED_DIM}))",
            )
    missing = [k for k in [*expected, "pos_embed"] if k not in sd]
    if missing:
        more = f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""
        raise bad_file(
            path,
            f"expected DINOv2 ViT-B/14 reg4 weights ({fmt} format), missing keys: "
            f"{', '.join(missing[:3])}{more}",
        )
    unexpected = [
        k
        for k in sd
        if k not in expected
        and k != "pos_embed"
        and not (not meta and k.startswith(_IGNORED_TIMM_PREFIXES))
    ]
    if unexpected:
        more = f" (+{len(unexpected) - 3} more)" if len(unexpected) > 3 else ""
        raise bad_file(
            path,
            f"expected DINOv2 ViT-B/14 reg4 weights ({fmt} format), unexpected keys: "
            f"{', '.join(unexpected[:3])}{more}",
        )
    for key, value in sd.items():
        if not value.is_floating_point():
            raise bad_file(path, f"{key} has dtype {value.dtype}, expected a floating dtype")
    return meta


def load_backbone(weights: Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Build the timm ViT-B/14 reg4 and fill it from a local Meta- or timm-format file.

    The model is returned in eval mode with every parameter frozen (requires_grad False).
    Any problem with the file raises OmamaError naming the file.
    """
    path = Path(weights)
    sd = _read_state_dict(path)
    meta = _check_architecture(path, sd)
    model = _create_model()
    sd = {k: v for k, v in sd.items() if not k.startswith(_IGNORED_TIMM_PREFIXES)}
    # timm's filter converts Meta's names (registers, cls/pos split) and resizes pos_embed to
    # the model's 37x37 grid if the file holds another square grid. It pops from its input.
    converted = checkpoint_filter_fn(dict(sd), model)
    try:
        model.load_state_dict(converted, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise bad_file(
            path, f"weights do not fit {ARCH}: {' '.join(s.strip() for s in first[:2])[:300]}"
        ) from exc
    model.eval()
    model.requires_grad_(False)
    model.to(device)
    log.info("loaded %s weights (%s format) from %s", ARCH, "Meta" if meta else "timm", path)
    return model


def _to_meta_state_dict(model: torch.nn.Module, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Meta key names and shapes for a timm model; the extra Meta tensors are drawn from gen."""

    def randn(*shape: int, std: float) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * std

    tsd = model.state_dict()
    out: dict[str, torch.Tensor] = {
        "cls_token": randn(1, 1, EMBED_DIM, std=0.02),
        "pos_embed": randn(1, 1 + PRETRAIN_GRID * PRETRAIN_GRID, EMBED_DIM, std=0.02),
        "register_tokens": randn(1, NUM_REG, EMBED_DIM, std=0.02),
        "mask_token": randn(1, EMBED_DIM, std=0.02),
    }
    for key, value in tsd.items():
        if key in ("cls_token", "reg_token", "pos_embed"):
            continue
        value = value.detach().clone().float()
        # Give norms, biases and layer scales non-trivial values so that a mix-up of any
        # two tensors changes the output (timm's init leaves them all 0/1/constant).
        if re.search(r"norm\d?\.weight$", key):
            value = 1.0 + randn(*value.shape, std=0.1)
        elif key.endswith(".bias"):
            value = randn(*value.shape, std=0.02)
        elif key.endswith(".gamma"):
            value = 0.1 + 0.9 * torch.rand(*value.shape, generator=gen)
        out[key] = value.contiguous()
    return out


def save_random_init(path: Path, seed: int) -> Path:
    """Write a seeded random-init ViT-B/14 reg4 in Meta's released format (atomically).

    Same keys and shapes as ``dinov2_vitb14_reg4_pretrain.pth`` (pos_embed for the 37x37 grid
    plus the class position). Deterministic: the same seed gives the same tensors and bytes.
    Lets tests and the demo run the real loading code without the real weights.
    """
    path = Path(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _create_model(init_values=1.0)
    gen = torch.Generator().manual_seed(seed)
    write_torch(_to_meta_state_dict(model, gen), path)
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


def patch_tokens(
    model: torch.nn.Module, images: torch.Tensor, fp16: bool | None = None
) -> torch.Tensor:
    """Normalised patch tokens of uint8 RGB images.

    images: uint8 [B, H, W, 3], RGB, H and W multiples of 14. Returns float32
    [B, (H/14)*(W/14), 768]: the tokens after the final LayerNorm without CLS and registers,
    row-major over the patch grid. ImageNet mean/std normalisation happens here, on the model's
    device. fp16=None means FP16 autocast on CUDA and fp32 elsewhere; True/False forces it.
    """
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        raise ValueError("images must be a uint8 torch.Tensor [B, H, W, 3]")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [B, H, W, 3], got {tuple(images.shape)}")
    h, w = int(images.shape[1]), int(images.shape[2])
    if h % PATCH or w % PATCH or h == 0 or w == 0:
        raise ValueError(f"image size {h}x{w} is not a positive multiple of {PATCH}")
    device = _model_device(model)
    if fp16 is None:
        fp16 = device.type == "cuda"
    n_prefix = int(getattr(model, "num_prefix_tokens", 1 + NUM_REG))
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
