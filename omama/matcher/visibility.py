"""Visibility that is not chance: a confidence fitted to "is the object in the destination?".

The challenge scores visibility as the balanced accuracy of `confidence > 0.5`. O-MaMa's
confidence is sigmoid(s1), s1 the best candidate's cosine similarity, so the decision is
s1 > 0, true for almost every pair: its balanced accuracy is 50 % by construction.

The matcher already says what visibility needs. When the object is in the destination,
one candidate is it and scores high, well above the rest; when it is not, the best
candidate is only the most similar other object. So each pair gets three features of its
candidate scores s (valid candidates only):

    x = (s1, s1 - s2, p1),   p1 = softmax(s / T)[best] = 1 / sum_j exp((s_j - s1) / T),

s2 the second best (s1 - s2 = 0 with a single candidate) and T the matching loss's
temperature, so p1 is the trained model's own probability that the best candidate is the
positive. A logistic model p(visible | x) = sigmoid(w . x + b) is fitted on the validation
split's scores after each epoch, weighting both classes equally (the metric is balanced),
with a small L2 penalty on w:

    min_{w,b}  sum_i c_{y_i} * BCE(w . x_i + b, y_i) + lam * |w|^2,  c_y = 1 / (2 n_y).

The problem is convex; Newton's method on it (float64, a fixed number of steps) is exact to
rounding and deterministic. The confidence written is that probability, so
`confidence > 0.5` is the fitted decision w . x + b > 0. The matching itself (scores, the
chosen mask, IoU) is untouched.

Differences from the reference: the reference writes sigmoid(s1); `--confidence reference`
restores it, and a checkpoint without a fitted part (the released one) falls back to it.
"""

from __future__ import annotations

import torch
from torch import nn

from omama.constants import TEMPERATURE

CONFIDENCES = ("visibility", "reference")  # what omama-eval --confidence writes
N_FEATURES = 3  # (s1, s1 - s2, p1)
_L2 = 1e-3
_NEWTON_STEPS = 50


def visibility_features(sims: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """[B, N] candidate scores -> [B, 3] float32 (s1, s1 - s2, p1) over the valid candidates
    (p1 at the matching loss's temperature). A row with one valid candidate has margin 0 and
    p1 = 1; a row with none gets (0, 0, 0)."""
    scores = sims.detach().float()
    ok = torch.ones_like(scores, dtype=torch.bool) if valid is None else valid.bool()
    scores = scores.masked_fill(~ok, float("-inf"))
    k = min(2, scores.shape[1])
    top = scores.topk(k, dim=1).values
    n = ok.sum(dim=1)
    s1 = torch.where(n > 0, top[:, 0], torch.zeros_like(top[:, 0]))
    s2 = top[:, 1] if k == 2 else s1
    margin = torch.where(n > 1, s1 - s2, torch.zeros_like(s1))
    p1 = torch.softmax(scores / TEMPERATURE, dim=1).amax(dim=1)
    p1 = torch.where(n > 0, p1, torch.zeros_like(p1))
    return torch.stack([s1, margin, p1], dim=1)


def fit_visibility(x: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, float] | None:
    """Class-balanced, L2-penalised logistic regression of `visible` on the features `x`
    [n, F] by Newton's method in float64. Returns (w [F], b), or None when the labels hold
    one class only (nothing to separate)."""
    xd = x.detach().to(torch.float64).cpu()
    y = visible.detach().to(torch.float64).cpu().flatten()
    n_pos, n_neg = float(y.sum()), float((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    c = torch.where(y > 0.5, 1 / (2 * n_pos), 1 / (2 * n_neg))
    a = torch.cat([xd, torch.ones(len(y), 1, dtype=torch.float64)], dim=1)  # [n, 3]
    penalty = torch.diag(torch.tensor([_L2] * xd.shape[1] + [0.0], dtype=torch.float64))
    theta = torch.zeros(a.shape[1], dtype=torch.float64)
    for _ in range(_NEWTON_STEPS):
        p = torch.sigmoid(a @ theta)
        grad = a.T @ (c * (p - y)) + 2 * penalty @ theta
        hess = (a * (c * p * (1 - p))[:, None]).T @ a + 2 * penalty
        theta = theta - torch.linalg.solve(hess, grad)
    return theta[:-1].to(torch.float32), float(theta[-1])


class VisibilityHead(nn.Module):
    """The fitted logistic model, kept in the checkpoint as `visibility.weight` [3],
    `visibility.bias` [1] and `visibility.fitted_flag` [1] (a checkpoint without them loads
    unfitted, and the confidence stays the reference's)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("weight", torch.zeros(N_FEATURES))
        self.register_buffer("bias", torch.zeros(1))
        self.register_buffer("fitted_flag", torch.zeros(1))  # 1.0 once fitted

    @property
    def fitted(self) -> bool:
        return bool(self.fitted_flag.item() == 1.0)

    def reset(self) -> None:
        self.weight.zero_()
        self.bias.zero_()
        self.fitted_flag.zero_()

    def set(self, w: torch.Tensor, b: float) -> None:
        self.weight.copy_(w)
        self.bias.fill_(b)
        self.fitted_flag.fill_(1.0)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """[B, 3] features -> [B] probability that the object is visible."""
        w = self.weight.to(features.device, torch.float32)
        b = self.bias.to(features.device, torch.float32)
        return torch.sigmoid(features.float() @ w + b)
