"""Rows 2 and 2e: the matcher's attention order against the standard one, which projects keys
and values for every image token. 2: forward+backward per training sample (fp32), scores and
every gradient compared; 2e: scoring 200 candidates at evaluation, no gradient."""

from __future__ import annotations

from collections.abc import Callable

import torch

from bench.common import TRAIN, Ctx, Row, fmt_ms, interleaved, rel_err
from omama.backbones import DEFAULT_BACKBONE
from omama.matcher.attention import choose_order
from omama.matcher.model import OMaMaMatcher, matching_loss

EVAL_CANDIDATES = 200


def matcher_inputs(
    gen: torch.Generator,
    b: int,
    n: int,
    grids: tuple[tuple[int, int], tuple[int, int]],
    dev: torch.device,
) -> tuple[torch.Tensor, ...]:
    """Random (source descriptor, candidate descriptors, source tokens, destination tokens)
    for `b` samples of `n` candidates; tokens in fp16, as the cache stores them."""
    (dh, dw), (sh, sw) = grids
    return (
        torch.randn(b, DEFAULT_BACKBONE.desc_dim, generator=gen).to(dev),
        torch.randn(b, n, DEFAULT_BACKBONE.desc_dim, generator=gen).to(dev),
        torch.randn(b, sh * sw, DEFAULT_BACKBONE.width, generator=gen).half().to(dev),
        torch.randn(b, dh * dw, DEFAULT_BACKBONE.width, generator=gen).half().to(dev),
    )


def auto_order(model: OMaMaMatcher, n: int, n_tokens: int) -> str:
    attn = model.CROSS_context_attn
    return choose_order("auto", n, n_tokens, attn.dim, attn.heads)


def project_vs_standard(ctx: Ctx, call: Callable[[str | None], object], reps: int) -> dict:
    """Median seconds of `call(None)` (the project's automatic order) and of
    `call("standard")`, interleaved."""
    return interleaved(
        {"project": lambda: call(None), "standard": lambda: call("standard")},
        {"project": reps, "standard": reps},
        ctx.sync,
    )


def order_row(
    ctx: Ctx, row: str, what: str, t: dict, batch: int, order: str, standard: str, at_least: float
) -> Row:
    """A row of times per item, the project's order against the standard one, met so far if
    the standard one takes `at_least` times as long; the caller completes the target, `met`
    and `note` once the errors are known."""
    ratio = t["standard"] / t["project"]
    return Row(
        row=row,
        what=f"{what}, fp32, batch {batch}, {ctx.device.type}",
        project=f"{fmt_ms(t['project'] / batch)} (auto -> {order})",
        baseline=f"{fmt_ms(t['standard'] / batch)} ({standard})",
        ratio=ratio,
        target=f">= {at_least:g}x",
        met=ratio >= at_least,
        command=ctx.command("2"),
        details={"seconds": t["_all"], "batch": batch},
    )


def training_row(ctx: Ctx, model: OMaMaMatcher, gen: torch.Generator, grids: tuple) -> Row:
    """Forward+backward at the training candidate count; scores and every gradient compared."""
    p, dev = ctx.plan, ctx.device
    b, n = p.mm_batch, TRAIN.n_masks
    x = matcher_inputs(gen, b, n, grids, dev)
    pos = torch.randint(0, n, (b,), generator=gen).to(dev)
    vis = torch.ones(b, device=dev)

    def step(order: str | None) -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        sims = model(*x, attn_order=order)
        matching_loss(sims, pos, vis).backward()
        return sims

    def grads() -> dict[str, torch.Tensor]:
        return {
            k: v.grad.detach().clone() for k, v in model.named_parameters() if v.grad is not None
        }

    model.train()
    sims_p, grads_p = step(None).detach(), grads()
    sims_s, grads_s = step("standard").detach(), grads()
    out_err = rel_err(sims_p, sims_s)
    flat_p = torch.cat([grads_p[k].flatten() for k in sorted(grads_s)])
    flat_s = torch.cat([grads_s[k].flatten() for k in sorted(grads_s)])
    grad_err = rel_err(flat_p, flat_s)
    floor = 1e-6 * float(flat_s.norm())  # key.bias: exactly zero in exact arithmetic
    worst = max(
        (float((grads_p[k] - g).norm() / max(float(g.norm()), floor)), k)
        for k, g in grads_s.items()
    )
    t = project_vs_standard(ctx, step, p.mm_reps)
    one = {}
    if dev.type == "cpu" and torch.get_num_threads() > 1:  # the same without thread contention
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            one = project_vs_standard(ctx, step, max(2, p.mm_reps // 2))
        finally:
            torch.set_num_threads(threads)
    one_text = (
        f"; with 1 thread: {fmt_ms(one['project'] / b)} vs {fmt_ms(one['standard'] / b)} "
        f"({one['standard'] / one['project']:.2f}x)"
        if one
        else ""
    )
    what = f"matcher forward+backward per training sample, N={n}"
    order = auto_order(model, n, x[2].shape[1])
    row = order_row(ctx, "2", what, t, b, order, "standard: K,V of every token", 4)
    row.target += f" at N={n}, outputs and gradients within 1e-4 relative"
    row.met = row.met and out_err <= 1e-4 and grad_err <= 1e-4
    row.note = (
        f"relative error: scores {out_err:.1e}, all gradients {grad_err:.1e}, worst "
        f"parameter {worst[1]} {worst[0]:.1e}{one_text}"
    )
    row.details |= {
        "score_rel_err": out_err,
        "grad_rel_err": grad_err,
        "worst_param": list(worst),
        "one_thread_seconds": one.get("_all"),
    }
    return row


def scoring_row(ctx: Ctx, model: OMaMaMatcher, gen: torch.Generator, grids: tuple) -> Row:
    """Scoring at evaluation: 200 candidates, no gradient."""
    b, n = ctx.plan.mm_eval_batch, EVAL_CANDIDATES
    x = matcher_inputs(gen, b, n, grids, ctx.device)
    model.eval()
    with torch.inference_mode():
        err = rel_err(model(*x), model(*x, attn_order="standard"))
        t = project_vs_standard(ctx, lambda order: model(*x, attn_order=order), ctx.plan.mm_reps)
    what = f"matcher scoring per pair, N={n} candidates (eval)"
    row = order_row(ctx, "2e", what, t, b, auto_order(model, n, x[2].shape[1]), "standard", 1)
    row.target += f" (never slower at {n} candidates)"
    row.met = row.met and err <= 1e-4
    row.note = f"scores relative error {err:.1e}"
    row.details["score_rel_err"] = err
    return row


def run(ctx: Ctx) -> list[Row]:
    grids = ((16, 16), (15, 20)) if ctx.plan.small else ((50, 50), (38, 68))
    torch.manual_seed(0)
    model = OMaMaMatcher(*grids).to(ctx.device)
    gen = torch.Generator().manual_seed(2)
    return [training_row(ctx, model, gen, grids), scoring_row(ctx, model, gen, grids)]
