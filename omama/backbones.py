"""The backbones precompute can run, defined once: name, timm model, token width, patch size.

    name (Meta's hub)    timm model                      width  patch
    dinov2_vits14_reg4   vit_small_patch14_reg4_dinov2     384     14
    dinov2_vitb14_reg4   vit_base_patch14_reg4_dinov2      768     14   the default, as O-MaMa
    dinov2_vitl14_reg4   vit_large_patch14_reg4_dinov2    1024     14
    dinov2_vitg14_reg4   vit_giant_patch14_reg4_dinov2    1536     14   SwiGLU MLP, 1.1B params
    dinov3_vits16        vit_small_patch16_dinov3_qkvb     384     16
    dinov3_vitb16        vit_base_patch16_dinov3_qkvb      768     16
    dinov3_vitl16        vit_large_patch16_dinov3_qkvb    1024     16

The timm model name (`arch`) is what a cache's settings and a matcher checkpoint record as
`backbone`; a cache or checkpoint that records none is the default (the released O-MaMa
checkpoint is for DINOv2 ViT-B/14 reg4). Everything that has a width follows the backbone: a
patch token has `width` values, a mask descriptor `2 * width` (mask part + context part), the
matcher's layers are sized from `width`. DINOv3's timm models with a q/v bias (`_qkvb`) are
used so that Meta's files, which carry a qkv bias, load exactly; a timm file of the variant
without bias loads with zero biases (the same function).
"""

from __future__ import annotations

from dataclasses import dataclass

from omama.errors import OmamaError


@dataclass(frozen=True)
class Backbone:
    """One backbone and every fact about it the toolkit uses."""

    name: str  # CLI --backbone: Meta's hub name
    arch: str  # timm model name; recorded in cache settings and checkpoints
    family: str  # "dinov2" or "dinov3": the Meta key conventions of its released files
    width: int  # channels of a patch token
    depth: int  # transformer blocks
    patch: int  # pixels per patch side
    registers: int = 4
    swiglu: bool = False  # Meta's SwiGLU MLP (`mlp.w12`, `mlp.w3`; timm: `mlp.fc1`, `mlp.fc2`)

    @property
    def desc_dim(self) -> int:
        """A mask descriptor: mask-pooled part + context-pooled part."""
        return 2 * self.width

    @property
    def title(self) -> str:
        """How messages name it: 'DINOv2 ViT-B/14 reg4'."""
        size = {384: "S", 768: "B", 1024: "L", 1536: "g"}[self.width]
        reg = f" reg{self.registers}" if self.family == "dinov2" else ""
        return f"{self.family.replace('dino', 'DINO')} ViT-{size}/{self.patch}{reg}"


BACKBONE_TABLE = {
    b.name: b
    for b in (
        Backbone("dinov2_vits14_reg4", "vit_small_patch14_reg4_dinov2", "dinov2", 384, 12, 14),
        Backbone("dinov2_vitb14_reg4", "vit_base_patch14_reg4_dinov2", "dinov2", 768, 12, 14),
        Backbone("dinov2_vitl14_reg4", "vit_large_patch14_reg4_dinov2", "dinov2", 1024, 24, 14),
        Backbone(
            "dinov2_vitg14_reg4",
            "vit_giant_patch14_reg4_dinov2",
            "dinov2",
            1536,
            40,
            14,
            swiglu=True,
        ),
        Backbone("dinov3_vits16", "vit_small_patch16_dinov3_qkvb", "dinov3", 384, 12, 16),
        Backbone("dinov3_vitb16", "vit_base_patch16_dinov3_qkvb", "dinov3", 768, 12, 16),
        Backbone("dinov3_vitl16", "vit_large_patch16_dinov3_qkvb", "dinov3", 1024, 24, 16),
    )
}
BACKBONES = tuple(BACKBONE_TABLE)
DEFAULT_BACKBONE = BACKBONE_TABLE["dinov2_vitb14_reg4"]
_BY_ARCH = {b.arch: b for b in BACKBONE_TABLE.values()}


def backbone_info(name: str) -> Backbone:
    """The table row of `name` (a --backbone name or a timm model name); else one line."""
    found = BACKBONE_TABLE.get(name) or _BY_ARCH.get(name)
    if found is None:
        raise OmamaError(
            f"backbone: unknown backbone {name!r} (expected one of {', '.join(BACKBONES)})"
        )
    return found


def recorded_backbone(settings: dict, where: str) -> Backbone:
    """The backbone a cache's settings or a checkpoint record (`backbone`: timm model name);
    none recorded is the default. An unknown one is one line naming `where`."""
    arch = settings.get("backbone", DEFAULT_BACKBONE.arch)
    found = _BY_ARCH.get(arch) if isinstance(arch, str) else None
    if found is None:
        raise OmamaError(f"{where}: records backbone {arch!r}, which this omama does not know")
    return found
