"""Cross attention of a few mask descriptors over the dense tokens of an image.

The math is O-MaMa's context attention (docs/reference.md, Matcher): one LayerNorm for both inputs,
4 heads of 192, softmax(q k^T / sqrt(192)) v, an output projection, then y + MLP(LN(y)), with
no residual from the input.

Why two evaluation orders: an image has T ~ 2500 tokens but only Nq = 1..200 queries attend to
it. The standard order projects keys and values for every token (2 T C^2 multiply-adds). The
"fast" order moves the key projection onto the queries instead (q~ = W_k,h^T q_h, so the logits
are q~ . x) and applies the value projection after the attention-weighted sum of raw tokens
(sum_j a_j (W_v x_j + b_v) = W_v (sum_j a_j x_j) + b_v, since the weights sum to 1). Both
orders compute the same function; the fast one costs about 2 H Nq T C.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ATTENTION_ORDERS = ("auto", "fast", "standard")


def attention_macs(order: str, n_query: int, n_tokens: int, dim: int, heads: int) -> int:
    """Multiply-adds of the attention core (per batch element) for one evaluation order."""
    if order == "fast":
        # logits in token space + weighted token sums, plus the two small per-query projections
        return 2 * heads * n_query * n_tokens * dim + 2 * n_query * dim * dim
    if order == "standard":
        # key and value projections of all tokens + logits and weighted sums per head
        return 2 * n_tokens * dim * dim + 2 * n_query * n_tokens * dim
    raise ValueError(f"unknown attention order {order!r}")


def choose_order(order: str, n_query: int, n_tokens: int, dim: int, heads: int) -> str:
    """Resolve "auto" to the order with fewer multiply-adds for this call's sizes."""
    if order not in ATTENTION_ORDERS:
        raise ValueError(f"attention order must be one of {ATTENTION_ORDERS}, got {order!r}")
    if order != "auto":
        return order
    fast = attention_macs("fast", n_query, n_tokens, dim, heads)
    standard = attention_macs("standard", n_query, n_tokens, dim, heads)
    return "fast" if fast < standard else "standard"


class ContextAttention(nn.Module):
    """O-MaMa's `Context_Attn` with the same parameters and state_dict keys."""

    def __init__(self, dim: int = 768, heads: int = 4) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by {heads} heads")
        self.dim = dim
        self.heads = heads
        self.head_dim = dim // heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.project = nn.Sequential(nn.Linear(dim, dim))
        self.norm_input = nn.LayerNorm(dim)
        self.norm_output = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, desc: torch.Tensor, img: torch.Tensor, order: str = "auto") -> torch.Tensor:
        """desc [B, Nq, C] attends over img [B, T, C]; returns [B, Nq, C]."""
        b, n_query, _ = desc.shape
        n_tokens = img.shape[1]
        if order == "auto" and img.is_cuda and torch.is_autocast_enabled("cuda"):
            # Measured on an H200: under bf16 the step is bound by memory traffic and launches,
            # not multiply-adds, and the standard order is ~1.4 ms faster per batch of 24.
            order = "standard"
        order = choose_order(order, n_query, n_tokens, self.dim, self.heads)
        q_in = self.norm_input(desc)
        q = self.query(q_in).view(b, n_query, self.heads, self.head_dim).transpose(1, 2)
        if order == "fast" and not torch.is_autocast_enabled(img.device.type):
            y = self._attend_fast(q, img, fused=True)  # the image LayerNorm happens inside
        elif order == "fast":
            y = self._attend_fast(q, self.norm_input(img), fused=False)
        else:
            y = self._attend_standard(q, self.norm_input(img))
        y = y.transpose(1, 2).reshape(b, n_query, self.dim)
        y = self.project(y)
        return y + self.mlp(self.norm_output(y))

    def _attend_standard(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Project every token to keys/values, then ordinary attention: [B, H, Nq, d]."""
        b, n_tokens, _ = x.shape
        k = self.key(x).view(b, n_tokens, self.heads, self.head_dim).transpose(1, 2)
        v = self.value(x).view(b, n_tokens, self.heads, self.head_dim).transpose(1, 2)
        return F.scaled_dot_product_attention(q, k, v)

    def _attend_fast(self, q: torch.Tensor, x: torch.Tensor, fused: bool) -> torch.Tensor:
        """Attention with the key/value projections moved to the query side: [B, H, Nq, d].

        fused: x is the raw image (LayerNorm not yet applied) and the token-space core runs as
        one autograd function (see _TokenAttention); otherwise x is normalised and plain ops
        are used (under autocast, where the function's fixed dtypes would not fit).
        """
        b, heads, n_query, head_dim = q.shape
        scale = 1.0 / math.sqrt(head_dim)
        w_k = self.key.weight.view(heads, head_dim, self.dim)
        w_v = self.value.weight.view(heads, head_dim, self.dim)
        b_k = self.key.bias.view(heads, head_dim)
        b_v = self.value.bias.view(heads, head_dim)
        q = q * scale
        # q~_h = W_k,h^T q_h lives in token space; q_h . b_k,h is constant over the tokens
        # (softmax ignores it) but is kept so the function is literally the same.
        q_tok = torch.einsum("bhnd,hdc->bhnc", q, w_k).reshape(b, heads * n_query, self.dim)
        shift = torch.einsum("bhnd,hd->bhn", q, b_k).reshape(b, heads * n_query)
        if fused:
            ln = self.norm_input
            z = _TokenAttention.apply(x, q_tok, shift, ln.weight, ln.bias, ln.eps)
        else:
            # x @ q~^T rather than q~ @ x^T: the gradient w.r.t. the big token tensor then
            # comes out contiguous (no strided copy of a [B, T, C] tensor in the backward).
            logits = torch.bmm(x, q_tok.transpose(1, 2)).transpose(1, 2) + shift.unsqueeze(-1)
            attn = logits.softmax(dim=-1)
            z = torch.bmm(attn.to(x.dtype), x)
        z = z.view(b, heads, n_query, self.dim)
        return torch.einsum("bhnc,hdc->bhnd", z, w_v) + b_v.view(1, heads, 1, head_dim)


class _TokenAttention(torch.autograd.Function):
    """z = softmax(LN(x) q~^T + shift) LN(x): the token-space core of the fast order.

    Same function as LayerNorm followed by the two bmm of the plain fast order, with the
    backward written out so that the [B, T, C] tensors are touched as few times as possible:
    the LayerNorm's affine part is applied on the M = heads * Nq query rows instead of the T
    tokens (LN(x) q = xhat (g * q) + beta . q and sum a LN(x) = g * (sum a xhat) + beta, since
    the weights sum to 1), and the two gradients w.r.t. the tokens come out of one bmm.
    x [B, T, C] raw image tokens; q_tok [B, M, C]; shift [B, M]; returns [B, M, C].
    """

    @staticmethod
    def forward(ctx, x, q_tok, shift, weight, bias, eps):
        c = x.shape[-1]
        xhat, mean, rstd = torch.native_layer_norm(x, (c,), None, None, eps)
        qg = q_tok * weight
        const = shift + q_tok @ bias  # constant over the tokens: kept, the function is exact
        logits = torch.baddbmm(const.unsqueeze(-1), qg, xhat.transpose(1, 2))  # [B, M, T]
        attn = logits.softmax(dim=-1)
        y = torch.bmm(attn, xhat)
        ctx.save_for_backward(x, xhat, mean, rstd, attn, qg, q_tok, y, weight, bias)
        return torch.addcmul(bias, y, weight)

    @staticmethod
    def backward(ctx, dz):
        x, xhat, mean, rstd, attn, qg, q_tok, y, weight, bias = ctx.saved_tensors
        dy = dz * weight
        da = torch.bmm(dy, xhat.transpose(1, 2))
        dlogits = attn * (da - (attn * da).sum(dim=-1, keepdim=True))
        dconst = dlogits.sum(dim=-1)  # zero up to rounding (softmax is shift invariant)
        dqg = torch.bmm(dlogits, xhat)
        dxhat = torch.bmm(torch.cat([attn, dlogits], 1).transpose(1, 2), torch.cat([dy, qg], 1))
        dx = torch.ops.aten.native_layer_norm_backward(
            dxhat, x, (x.shape[-1],), mean, rstd, None, None, [True, False, False]
        )[0]
        dq_tok = torch.addcmul(dconst.unsqueeze(-1) * bias, dqg, weight)
        dweight = (dz * y).sum(dim=(0, 1)) + (dqg * q_tok).sum(dim=(0, 1))
        dbias = dz.sum(dim=(0, 1)) + (dconst.unsqueeze(-1) * q_tok).sum(dim=(0, 1))
        return dx, dq_tok, dconst, dweight, dbias, None
