"""O-MaMa's trainable matcher: context attention both ways, a shared MLP, cosine scores.

Parameter names match the reference `Attention_projector`, so the released checkpoint and our
own checkpoints load into it unchanged (see `checkpoint.py`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.init import trunc_normal_

from omama.backbones import DEFAULT_BACKBONE, Backbone
from omama.constants import TEMPERATURE
from omama.matcher.attention import ATTENTION_ORDERS, ContextAttention
from omama.matcher.visibility import VisibilityHead


class _SharedMLP(nn.Module):
    """Wrapper so the keys read `mlp.mlp.{0,2,4}` like the reference."""

    def __init__(self, dim_in: int, dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(dim_in, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class OMaMaMatcher(nn.Module):
    """Scores N destination candidates against one source mask (docs/reference.md, Matcher).

    grid_t is the destination patch grid (rows, cols) and grid_q the source grid; the position
    embeddings have one row per patch of each. Every width follows the backbone's token width C
    (768 for the reference's DINOv2 ViT-B/14): descriptors are 2C, the MLP maps 3C -> C.
    """

    def __init__(
        self,
        grid_t: tuple[int, int],
        grid_q: tuple[int, int],
        backbone: Backbone = DEFAULT_BACKBONE,
    ) -> None:
        super().__init__()
        self.grid_t = (int(grid_t[0]), int(grid_t[1]))
        self.grid_q = (int(grid_q[0]), int(grid_q[1]))
        self.backbone = backbone  # whose tokens it reads; checkpoints record it
        self.dim = dim = backbone.width
        self.attn_order = "auto"
        self.mlp = _SharedMLP(3 * dim, dim)
        # Present for checkpoint parity only: the reference never calls it, so it is frozen
        # (AdamW skips it either way; DDP would otherwise wait for its gradients).
        self.mlp_visible = nn.Sequential(
            nn.Linear(2 * dim, dim),
            nn.ReLU(),
            nn.Linear(dim, 256),
            nn.ReLU(),
            nn.Linear(256, 128),
            nn.ReLU(),
            nn.Linear(128, 2),
        ).requires_grad_(False)
        self.CROSS_context_attn = ContextAttention(dim)
        n_t = self.grid_t[0] * self.grid_t[1]
        n_q = self.grid_q[0] * self.grid_q[1]
        self.pos_embed_T = nn.Parameter(torch.zeros(1, n_t, dim))
        self.pos_embed_Q = nn.Parameter(torch.zeros(1, n_q, dim))
        trunc_normal_(self.pos_embed_T, std=0.02)
        trunc_normal_(self.pos_embed_Q, std=0.02)
        self.visibility = VisibilityHead()  # fitted on validation scores (visibility.py)

    def forward(
        self,
        src_desc: torch.Tensor,
        cand_desc: torch.Tensor,
        src_tokens: torch.Tensor,
        dst_tokens: torch.Tensor,
        attn_order: str | None = None,
    ) -> torch.Tensor:
        """Cosine similarity [B, N] of the source mask with each candidate.

        src_desc [B, 2C], cand_desc [B, N, 2C], src_tokens [B, Tq, C] (source grid,
        row-major), dst_tokens [B, Tt, C] (destination grid). Tokens may be fp16 storage.
        """
        order = self.attn_order if attn_order is None else attn_order
        if order not in ATTENTION_ORDERS:
            raise ValueError(f"attn_order must be one of {ATTENTION_ORDERS}, got {order!r}")
        dtype = self.pos_embed_T.dtype
        c = self.dim
        if dst_tokens.shape[1] != self.pos_embed_T.shape[1]:
            raise ValueError(
                f"destination tokens: {dst_tokens.shape[1]} != grid {self.grid_t} "
                f"({self.pos_embed_T.shape[1]})"
            )
        if src_tokens.shape[1] != self.pos_embed_Q.shape[1]:
            raise ValueError(
                f"source tokens: {src_tokens.shape[1]} != grid {self.grid_q} "
                f"({self.pos_embed_Q.shape[1]})"
            )
        src = src_desc.to(dtype).unsqueeze(1)  # [B, 1, 2C]
        cand = cand_desc.to(dtype)  # [B, N, 2C]
        dst_img = dst_tokens.to(dtype) + self.pos_embed_T
        src_img = src_tokens.to(dtype) + self.pos_embed_Q
        q_ctx = self.CROSS_context_attn(src[..., :c], dst_img, order=order)
        t_ctx = self.CROSS_context_attn(cand[..., :c], src_img, order=order)
        q = F.normalize(self.mlp(torch.cat([q_ctx, src], dim=-1)), p=2, dim=-1)
        t = F.normalize(self.mlp(torch.cat([t_ctx, cand], dim=-1)), p=2, dim=-1)
        return F.cosine_similarity(q, t, dim=-1)


def matching_loss(
    sims: torch.Tensor,
    pos_index: torch.Tensor,
    visible: torch.Tensor,
    temperature: float = TEMPERATURE,
) -> torch.Tensor:
    """Batch mean of CE(sims / temperature, positive) * visible.

    Invisible samples contribute 0 yet stay in the denominator, as in the reference.
    """
    if sims.dtype in (torch.float16, torch.bfloat16):
        sims = sims.float()  # the loss of low-precision scores is taken in fp32
    per_sample = F.cross_entropy(sims / temperature, pos_index.long(), reduction="none")
    return (per_sample * visible.to(per_sample.dtype)).mean()


def predict(
    sims: torch.Tensor, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best candidate, its confidence sigmoid(max sim), and the top-5 candidate indices.

    Padded candidates (valid False) are never chosen. A row with fewer than 5 valid
    candidates reports the best index five times, like the reference; a row with none gets
    index 0 and confidence 0.
    """
    scores = sims.detach().float()
    if valid is not None:
        scores = scores.masked_fill(~valid.bool(), float("-inf"))
        n_valid = valid.bool().sum(dim=1)
    else:
        n_valid = torch.full((scores.shape[0],), scores.shape[1], device=scores.device)
    best_sim, best = scores.max(dim=1)
    confidence = torch.sigmoid(best_sim)
    k = min(5, scores.shape[1])
    top = scores.topk(k, dim=1).indices
    if k < 5:
        top = torch.cat([top, top[:, :1].expand(-1, 5 - k)], dim=1)
    top5 = torch.where((n_valid < 5).unsqueeze(1), best.unsqueeze(1).expand(-1, 5), top)
    return best, confidence, top5
