"""omama-train: one readable loop over cached samples; resumable, validated every epoch."""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from omama import dist
from omama.cache.reader import Cache
from omama.cache.samples import SampleTable
from omama.config import default_device, default_workers, opt, require
from omama.constants import DIRECTIONS, SPLITS
from omama.errors import OmamaError, bad_file
from omama.files import write_json, write_torch
from omama.loader.order import ORDERS, plan_order
from omama.loader.sampler import EpochSampler
from omama.loader.token_store import budget_bytes
from omama.loader.train_samples import TrainSamples
from omama.matcher.checkpoint import build_matcher, matcher_weights, save_matcher_state
from omama.metrics.groundtruth import build_gt_json
from omama.precision import PRECISIONS
from omama.predict.evaluate import gt_samples, measure
from omama.predict.ranks import score_across_ranks
from omama.predict.scoring import fit_confidence, with_confidence
from omama.profiling import StepProfiler
from omama.train import distributed as ddp
from omama.train import guard
from omama.train.curves import plot_curves
from omama.train.saver import BackgroundSaver, Write
from omama.train.step import TrainStep, build_optimizer, train_loader

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    cache: Path | None = opt(None, "cache folder made by omama-precompute")
    direction: str = opt("exo2ego", "exo2ego or ego2exo", DIRECTIONS)
    out: Path | None = opt(None, "run folder: checkpoints, log.json, curves.png")
    train_split: str = opt("train", "split to train on", SPLITS)
    val_split: str = opt(
        "val", "split validated after each epoch ('none' to skip)", (*SPLITS, "none")
    )
    epochs: int = opt(3, "epochs", low=1)
    batch_size: int = opt(24, "samples per step (global: split evenly over torchrun ranks)", low=1)
    workers: int = opt(default_workers(), "DataLoader workers reading the cache", low=0)
    lr: float = opt(8e-5, "AdamW learning rate (cosine-annealed per step)", low=0)
    min_lr: float = opt(1e-6, "learning rate at the last step", low=0)
    weight_decay: float = opt(0.01, "AdamW weight decay", low=0)
    n_masks: int = opt(32, "candidates per sample (1 positive + N-1 negatives)", low=2)
    init: Path | None = opt(None, "start from these matcher weights (e.g. the released O-MaMa .pt)")
    resume: bool = opt(False, "continue from OUT/state.pt (model, optimizer, schedule, step)")
    seed: int = opt(42, "seed of initialisation, shuffling and candidate sampling")
    device: str = opt(default_device(), "cpu or cuda", ("cpu", "cuda"))
    precision: str = opt(
        "auto",
        "number format of the training step: auto (bf16 on CUDA, fp32 elsewhere), fp32 or "
        "bf16; validation always scores in fp32, as omama-eval does by default",
        ("auto", *PRECISIONS),
    )
    token_store_gb: float = opt(
        -1.0,
        "memory for the split's tokens resident on the training device, read once and "
        "gathered by the step (-1: half the free memory; 0: off, tokens read per batch; a "
        "split that does not fit is trained in blocks of takes, see --order)",
    )
    order: str = opt(
        "auto",
        "sample order: shuffle (a seeded full shuffle per epoch), blocks (blocks of whole "
        "takes that fit half the token store, shuffled across and within blocks, the store "
        "holding two blocks) or auto (shuffle when the split's tokens fit the store or it is "
        "off, blocks when they do not)",
        ORDERS,
    )
    save_every: int = opt(200, "also save the resumable state every this many steps", low=1)
    log_every: int = opt(10, "log the mean loss every this many steps", low=1)
    val_limit: int = opt(0, "validate on the first N val pairs only (0 = all)", low=0)
    profile: int = opt(
        0,
        "record N training steps with torch.profiler (after a short warm-up): writes "
        "OUT/profile_trace.json (Chrome/Perfetto) and logs the top operators (0 = off)",
        low=0,
    )

    def check(self) -> None:
        """Options that only make sense together (OmamaError, one line)."""
        if self.min_lr > self.lr:
            raise OmamaError(
                f"--min-lr {self.min_lr} is above --lr {self.lr}: the schedule anneals from "
                "--lr down to --min-lr"
            )


def run_train(cfg: TrainConfig) -> dict:
    """Train; under torchrun, DDP over the ranks with the same samples per global step, the
    same global batch and schedule as one process, and rank 0 alone writing the run folder."""
    require(cfg, "cache", "out")
    cfg.check()
    with dist.session(cfg.device) as env:
        return _train(cfg, env)


def _train(cfg: TrainConfig, env: dist.DistEnv | None) -> dict:
    main = dist.is_main(env)
    device = dist.device_for(env, cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OmamaError("--device cuda: no CUDA device is available here")
    out = Path(cfg.out)
    state_path = out / "state.pt"
    guard.check_run_folder(out, cfg.resume)

    torch.manual_seed(cfg.seed)
    cache = Cache(cfg.cache)
    data = TrainSamples(cache, cfg.direction, cfg.train_split, cfg.n_masks, cfg.seed)
    val: SampleTable | list = []
    if cfg.val_split != "none":
        val = cache.samples(cfg.direction, cfg.val_split)
        val = val[: cfg.val_limit] if cfg.val_limit else val
    identity = guard.data_identity(cache, data.samples, val)
    grids = cache.role_grids(data.samples)
    model = build_matcher(*grids, cfg.init, cache.manifest.backbone).to(device)
    local_bs = ddp.local_batch_size(cfg.batch_size, env)
    steps_per_epoch = math.ceil(len(data) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    optimizer, schedule = build_optimizer(model, cfg.lr, cfg.weight_decay, cfg.min_lr, total)
    history: dict = {"config": _jsonable(cfg), "steps": [], "epochs": []}
    epoch, step, best_iou = 0, 0, -1.0
    carried = None  # the running loss sum and count of a log period a resume lands inside
    if cfg.resume and state_path.exists():
        state = _load_state(state_path)
        _check_same_run(cfg, state.get("history", {}).get("config", {}), state_path)
        guard.check_same_data(state.get("identity"), identity, state_path)
        carried = state.get("running")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        epoch, step, best_iou, history = (
            state["epoch"],
            state["step"],
            state["best_iou"],
            state["history"],
        )
        torch.set_rng_state(state["torch_rng"])
        log.info("resumed from %s at epoch %d, step %d", state_path, epoch, step)

    net = ddp.wrap(model, env, device)  # forward and backward; `model` is saved and validated
    if step == 0 and main:  # a fresh run (also --resume killed before its first save)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise bad_file(out, f"cannot create the run folder ({exc.strerror})") from None
        save_matcher_state(model, out / "init.pt")  # the untrained matcher, for comparison
    rank, world = (0, 1) if env is None else (env.rank, env.world)
    begun = history.get("order", {})  # a resumed run keeps the order it began with
    budget = begun.get("budget")
    if budget is None and cfg.token_store_gb != 0:  # one budget for all ranks: one order
        budget = dist.all_min(env, budget_bytes(cfg.token_store_gb, device), device)
    plan = plan_order(
        begun.get("order", cfg.order),
        cache,
        data.samples,
        device,
        cfg.token_store_gb,
        local_bs,
        budget,
    )
    history["order"] = plan.summary()
    sampler = EpochSampler(len(data), cfg.seed, rank=rank, num_replicas=world, blocks=plan.blocks)
    if plan.store is not None:
        data.use_store(plan.store.rows)
    loader = train_loader(data, sampler, local_bs, cfg.workers, device)
    train_step = TrainStep(net, optimizer, schedule, device, cfg.precision, plan.store)
    train_step.steps = step
    saved_at: list[int] = [step] if step else []  # the step of the last state saved
    prof = StepProfiler(
        cfg.profile if main else 0, out / "profile_trace.json", device, total - step
    )

    def stop_if_nonfinite() -> None:
        """Before anything is saved or validated: a non-finite step stops the run, its good
        checkpoints kept (NaN weights are never written)."""
        bad = train_step.first_nonfinite()
        if bad is None:
            return
        e, j = divmod(bad - 1, steps_per_epoch)
        sampler.set_epoch(e)
        picked = guard.batch_indices(sampler.order(), rank, world, local_bs, j)
        source = guard.nonfinite_source(cache, cfg.direction, [data.samples[i] for i in picked])
        raise guard.nonfinite_error(out, bad, e + 1, source, saved_at[-1] if saved_at else None)

    def save_state(*more: Write) -> None:
        stop_if_nonfinite()
        # the log period's running loss, summed over the ranks: a resume continues its mean
        partial = running.detach().clone()
        dist.all_reduce_sum(env, partial)
        if main:
            extra = {"identity": identity, "running": [float(partial), n_running]}
            saver.save(
                *state_writes(
                    out, model, optimizer, schedule, epoch, step, best_iou, history, extra
                ),
                *more,
            )
        saved_at.append(step)

    def save_weights(name: str) -> None:
        stop_if_nonfinite()
        if main:
            saver.save(Write(write_torch, matcher_weights(model), out / name))

    log.info(
        "%d train samples, %d val, %d steps/epoch, grids dst %s src %s, device %s",
        len(data),
        len(val),
        steps_per_epoch,
        model.grid_t,
        model.grid_q,
        device,
    )
    # the validation pairs' reader and ground truth, made once per run (each epoch scores the
    # same pairs); the reader is what loader and post-processing workers carry
    val_reader = cache.reader(val, cfg.direction) if val else None
    val_gt = build_gt_json(gt_samples(val_reader, val)) if val and main else None
    # state.pt, log.json, curves and last/best.pt are written by one thread behind the steps,
    # in order; leaving the block (also by an exception) waits for the last of them
    with BackgroundSaver() as saver:
        while epoch < cfg.epochs:
            done_in_epoch = step - epoch * steps_per_epoch
            sampler.set_epoch(epoch, start=done_in_epoch * local_bs)
            plan.follow(sampler.order())  # the rolling store reads each next block ahead
            net.train()
            running = torch.zeros((), device=device)
            n_running, t0 = 0, time.perf_counter()
            if carried is not None:  # resumed inside a log period: its mean goes on
                running.fill_(carried[0] if main else 0.0)
                n_running, carried = int(carried[1]), None
            filler = functools.partial(ddp.one_sample_batch, data, (epoch, int(sampler.order()[0])))
            bar = tqdm(
                ddp.padded(loader, steps_per_epoch - done_in_epoch, filler),
                desc=f"epoch {epoch + 1}/{cfg.epochs}",
                unit="step",
                initial=done_in_epoch,
                total=steps_per_epoch,
                dynamic_ncols=True,
                disable=not main,
            )
            for batch, is_filler in bar:
                weight = None
                if env is not None:  # DDP averages over ranks: make that the global batch mean
                    k = step - epoch * steps_per_epoch
                    n_global = ddp.global_count(len(data), cfg.batch_size, k)
                    n_local = 0 if is_filler else len(batch["visible"])
                    weight = ddp.loss_weight(n_local, env.world, n_global)
                loss = train_step(batch, weight)
                prof.step()
                step += 1
                running += loss if env is None else loss / env.world
                n_running += 1
                if step % cfg.log_every == 0 or step % steps_per_epoch == 0:
                    stop_if_nonfinite()
                    dist.all_reduce_sum(env, running)  # every rank logs at the same steps
                    mean = float(running) / n_running  # the only host sync, once per log period
                    rate = n_running * cfg.batch_size / (time.perf_counter() - t0)
                    history["steps"].append(
                        {
                            "step": step,
                            "epoch": epoch,
                            "loss": mean,
                            "lr": schedule.get_last_lr()[0],
                        }
                    )
                    bar.set_postfix(loss=f"{mean:.4f}", samples_s=f"{rate:.1f}")
                    running.zero_()
                    n_running, t0 = 0, time.perf_counter()
                if step % cfg.save_every == 0:
                    save_state()
            bar.close()
            stop_if_nonfinite()
            epoch += 1
            record: dict = {"epoch": epoch, "step": step}
            if val:
                scored = score_across_ranks(
                    val_reader,
                    model,
                    cfg.direction,
                    val,
                    device,
                    env,
                    batch_size=cfg.batch_size,
                    workers=cfg.workers,  # loader workers read the pairs in read order
                )
            if val and main:
                head = model.visibility
                if fit_confidence(head, scored):  # fitted on val, scored on val: docs/visibility.md
                    record["visibility_fit"] = [*head.weight.tolist(), head.bias.item()]  # w, b
                else:
                    log.warning("epoch %d validation: one visibility class only", epoch)
                scored = with_confidence(scored, head, "visibility")
                _, _, metrics = measure(val_reader, cfg.direction, val, scored, cfg.workers, val_gt)
                record.update(metrics.as_dict())
                log.info("epoch %d validation: %s", epoch, json.dumps(metrics.as_dict()))
                iou = metrics.iou
                if math.isnan(iou):  # no visible pair among the validated ones: IoU undefined
                    log.warning("epoch %d validation has no visible pair: IoU undefined", epoch)
                    iou = float("-inf")
                save_weights("last.pt")  # after the fit: it carries the visibility part
                if iou > best_iou or not (out / "best.pt").exists():
                    best_iou = max(best_iou, iou)
                    save_weights("best.pt")
            else:
                save_weights("last.pt")  # no validation (a no-op on ranks other than 0)
            history["epochs"].append(record)
            save_state(Write(plot_curves, history, out / "curves.png"))
        prof.close()
        if not val:
            save_weights("best.pt")
    return history


def state_writes(
    out: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    epoch: int,
    step: int,
    best_iou: float,
    history: dict,
    extra: dict | None = None,
) -> tuple[Write, Write]:
    """What `--resume` needs (OUT/state.pt: model, optimiser, schedule, RNG, counters, the
    history and `extra`: the data identity and the running loss of the log period) and
    OUT/log.json, as writes for a `BackgroundSaver`."""
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "epoch": epoch,
        "step": step,
        "best_iou": best_iou,
        "history": history,
        "torch_rng": torch.get_rng_state(),
        **(extra or {}),
    }
    return (
        Write(write_torch, state, out / "state.pt"),
        Write(functools.partial(write_json, indent=1), history, out / "log.json"),
    )


def _load_state(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise bad_file(path, f"unreadable training state ({type(exc).__name__})") from None


# What fixes a run's batches and schedule: resuming with other values would silently train
# on other samples with another learning-rate curve.
_RUN_DEFINING = (
    "direction",
    "train_split",
    "val_split",
    "val_limit",
    "epochs",
    "batch_size",
    "n_masks",
    "seed",
    "lr",
    "min_lr",
    "weight_decay",
    "order",
)


def _check_same_run(cfg: TrainConfig, saved: dict, path: Path) -> None:
    now = _jsonable(cfg)
    for key in _RUN_DEFINING:
        if key in saved and saved[key] != now[key]:
            raise bad_file(
                path,
                f"this run was started with --{key.replace('_', '-')} {saved[key]}, not "
                f"{now[key]}; resume with the same value, or start another --out with --init",
            )


def _jsonable(cfg: TrainConfig) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
