"""omama-train: one readable loop over cached samples; resumable, validated every epoch.

`_train` reads top to bottom: set up the run, resume it, lay out the epoch's order, then per
epoch train, validate and keep the best, save; `Training` holds what those steps share."""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from pathlib import Path

import torch
from tqdm import tqdm

from omama import dist
from omama.cache.reader import Cache
from omama.cache.samples import SampleTable
from omama.config import flag_name, require
from omama.errors import bad_file
from omama.files import write_json, write_torch
from omama.loader.order import plan_order
from omama.loader.sampler import EpochSampler
from omama.loader.token_store import budget_bytes
from omama.loader.train_samples import TrainSamples
from omama.matcher.checkpoint import build_matcher, matcher_weights, save_matcher_state
from omama.metrics.groundtruth import build_gt_json
from omama.predict.evaluate import gt_samples, measure
from omama.predict.ranks import score_across_ranks
from omama.predict.scoring import fit_confidence, with_confidence
from omama.profiling import StepProfiler
from omama.train import ddp, guard
from omama.train.curves import plot_curves
from omama.train.options import RUN_DEFINING, TrainConfig, jsonable
from omama.train.saver import BackgroundSaver, Write
from omama.train.step import TrainStep, build_optimizer, train_loader
from omama.train.steplog import STEPS_FILE, StepLog

__all__ = ["TrainConfig", "run_train", "state_writes"]  # TrainConfig: from train/options.py

log = logging.getLogger(__name__)


def run_train(cfg: TrainConfig) -> dict:
    """Train; under torchrun, DDP over the ranks with the same samples per global step, the
    same global batch and schedule as one process, and rank 0 alone writing the run folder."""
    require(cfg, "cache", "out")
    cfg.check()
    with dist.session(cfg.device) as env:
        return _train(cfg, env)


def _train(cfg: TrainConfig, env: dist.DistEnv | None) -> dict:
    run = Training(cfg, env)  # data, model, optimiser and schedule of a fresh run
    run.resume()  # --resume: state.pt's weights, counters and history, its identity checked
    run.begin()  # init.pt, the sample order, loader, step, and validation's reader and GT
    # steps.jsonl, state.pt, log.json, curves and last/best.pt are written by one thread
    # behind the steps, in order; leaving the block (also by an exception) waits for the last
    with BackgroundSaver() as run.saver:
        while run.epoch < cfg.epochs:
            run.one_epoch()
            record = run.validate_and_keep_best()
            run.history["epochs"].append(record)
            run.save_state(
                Write(functools.partial(write_json, indent=1), run.history, run.out / "log.json"),
                Write(plot_curves, run.history, run.out / "curves.png"),
            )
        run.finish()
    return run.history


class Training:
    """One training run's objects and counters, shared by the steps of `_train`."""

    def __init__(self, cfg: TrainConfig, env: dist.DistEnv | None) -> None:
        self.cfg, self.env = cfg, env
        self.main = dist.is_main(env)
        self.device = device = dist.device_for(env, cfg.device)  # refuses cuda without one
        self.out = Path(cfg.out)
        guard.check_run_folder(self.out, cfg.resume)

        torch.manual_seed(cfg.seed)
        self.cache = cache = Cache(cfg.cache)
        self.data = TrainSamples(cache, cfg.direction, cfg.train_split, cfg.n_masks, cfg.seed)
        val: SampleTable | list = []
        if cfg.val_split != "none":
            val = cache.samples(cfg.direction, cfg.val_split)
            val = val[: cfg.val_limit] if cfg.val_limit else val
        self.val = val
        self.identity = guard.data_identity(cache, self.data.samples, val)
        grids = cache.role_grids(self.data.samples)
        self.model = build_matcher(*grids, cfg.init, cache.manifest.backbone).to(device)
        self.rank, self.world = (0, 1) if env is None else (env.rank, env.world)
        self.local_bs = ddp.local_batch_size(cfg.batch_size, env)
        self.steps_per_epoch = math.ceil(len(self.data) / cfg.batch_size)
        self.total = self.steps_per_epoch * cfg.epochs
        self.optimizer, self.schedule = build_optimizer(
            self.model, cfg.lr, cfg.weight_decay, cfg.min_lr, self.total
        )
        self.history: dict = {"config": jsonable(cfg), "steps": [], "epochs": []}
        self.steplog = StepLog(self.out / STEPS_FILE)  # the steps' records, appended at saves
        self.epoch, self.step, self.best_iou = 0, 0, -1.0
        self.carried = None  # the running loss sum and count of a log period a resume lands in
        self.running = torch.zeros((), device=device)  # the log period's loss sum, on device
        self.n_running = 0
        self.last_saved: int | None = None  # the step of the last state saved
        self.saver: BackgroundSaver | None = None

    def resume(self) -> None:
        """Continue from OUT/state.pt when --resume finds one: the same run-defining options
        and the same data, or a one-line refusal."""
        state_path = self.out / "state.pt"
        if not (self.cfg.resume and state_path.exists()):
            return
        state = _load_state(state_path)
        _check_same_run(self.cfg, state.get("history", {}).get("config", {}), state_path)
        guard.check_same_data(state.get("identity"), self.identity, state_path)
        self.carried = state.get("running")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.best_iou, self.history = state["best_iou"], state["history"]
        if "steps_log" in state:  # else an older state.pt holding them: the next save appends all
            self.steplog, self.history["steps"] = StepLog.resume(
                self.steplog.path, state["steps_log"]
            )
        torch.set_rng_state(state["torch_rng"])
        self.last_saved = self.step or None
        log.info("resumed from %s at epoch %d, step %d", state_path, self.epoch, self.step)

    def begin(self) -> None:
        """What the epochs need: the DDP wrapper, init.pt of a fresh run, the sample order
        (a resumed run keeps the one it began with), loader and step, the profiler, and the
        validation pairs' reader and ground truth, made once per run."""
        cfg, env, device, out = self.cfg, self.env, self.device, self.out
        # forward and backward go through `net`; `model` is saved and validated
        self.net = ddp.wrap(self.model, env, device)
        if self.step == 0 and self.main:  # a fresh run (also --resume killed before a save)
            try:
                out.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise bad_file(out, f"cannot create the run folder ({exc.strerror})") from None
            save_matcher_state(self.model, out / "init.pt")  # the untrained matcher
        begun = self.history.get("order", {})
        budget = begun.get("budget")
        if budget is None and cfg.token_store_gb != 0:  # one budget for all ranks: one order
            budget = dist.all_min(env, budget_bytes(cfg.token_store_gb, device), device)
        self.plan = plan_order(
            begun.get("order", cfg.order),
            self.cache,
            self.data.samples,
            device,
            cfg.token_store_gb,
            self.local_bs,
            budget,
        )
        self.history["order"] = self.plan.summary()
        self.sampler = EpochSampler(
            len(self.data),
            cfg.seed,
            rank=self.rank,
            num_replicas=self.world,
            blocks=self.plan.blocks,
        )
        if self.plan.store is not None:
            self.data.use_store(self.plan.store.rows)
        self.loader = train_loader(self.data, self.sampler, self.local_bs, cfg.workers, device)
        self.train_step = TrainStep(
            self.net, self.optimizer, self.schedule, device, cfg.precision, self.plan.store
        )
        self.train_step.steps = self.step
        profiled = cfg.profile if self.main else 0
        left = self.total - self.step
        self.prof = StepProfiler(profiled, out / "profile_trace.json", device, left)
        log.info(
            "%d train samples, %d val, %d steps/epoch, grids dst %s src %s, device %s",
            len(self.data),
            len(self.val),
            self.steps_per_epoch,
            self.model.grid_t,
            self.model.grid_q,
            device,
        )
        # each epoch scores the same pairs; the reader is what loader and post-processing
        # workers carry
        self.val_reader = self.cache.reader(self.val, cfg.direction) if self.val else None
        self.val_gt = (
            build_gt_json(gt_samples(self.val_reader, self.val)) if self.val and self.main else None
        )

    def one_epoch(self) -> None:
        """The rest of the current epoch's steps (all of them unless resumed inside it), the
        loss logged every --log-every steps and the state saved every --save-every."""
        cfg, env = self.cfg, self.env
        done_in_epoch = self.step - self.epoch * self.steps_per_epoch
        self.sampler.set_epoch(self.epoch, start=done_in_epoch * self.local_bs)
        self.plan.follow(self.sampler.order())  # the rolling store reads each next block ahead
        self.net.train()
        self.running = torch.zeros((), device=self.device)
        self.n_running, self.t0 = 0, time.perf_counter()
        if self.carried is not None:  # resumed inside a log period: its mean goes on
            self.running.fill_(self.carried[0] if self.main else 0.0)
            self.n_running, self.carried = int(self.carried[1]), None
        first = (self.epoch, int(self.sampler.order()[0]))
        filler = functools.partial(ddp.one_sample_batch, self.data, first)
        bar = tqdm(
            ddp.padded(self.loader, self.steps_per_epoch - done_in_epoch, filler),
            desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
            unit="step",
            initial=done_in_epoch,
            total=self.steps_per_epoch,
            dynamic_ncols=True,
            disable=not self.main,
        )
        for batch, is_filler in bar:
            weight = None
            if env is not None:  # DDP averages over ranks: make that the global batch mean
                k = self.step - self.epoch * self.steps_per_epoch
                n_global = ddp.global_count(len(self.data), cfg.batch_size, k)
                n_local = 0 if is_filler else len(batch["visible"])
                weight = ddp.loss_weight(n_local, env.world, n_global)
            loss = self.train_step(batch, weight)
            self.prof.step()
            self.step += 1
            self.running += loss if env is None else loss / env.world
            self.n_running += 1
            if self.step % cfg.log_every == 0 or self.step % self.steps_per_epoch == 0:
                self._log_period(bar)
            if self.step % cfg.save_every == 0:
                self.save_state()
        bar.close()
        self.plan.close()  # no read-ahead thread left for validation's workers to fork beside
        self.stop_if_nonfinite()
        self.epoch += 1

    def _log_period(self, bar: tqdm) -> None:
        """The mean loss of the log period into the history (every rank at the same steps)."""
        self.stop_if_nonfinite()
        dist.all_reduce_sum(self.env, self.running)
        mean = float(self.running) / self.n_running  # the only host sync, once per log period
        rate = self.n_running * self.cfg.batch_size / (time.perf_counter() - self.t0)
        self.history["steps"].append(
            {
                "step": self.step,
                "epoch": self.epoch,
                "loss": mean,
                "lr": self.schedule.get_last_lr()[0],
            }
        )
        bar.set_postfix(loss=f"{mean:.4f}", samples_s=f"{rate:.1f}")
        self.running.zero_()
        self.n_running, self.t0 = 0, time.perf_counter()

    def validate_and_keep_best(self) -> dict:
        """Score the validation pairs (all ranks), fit the visibility part on them, measure,
        and write last.pt, and best.pt when the IoU is the best so far; the epoch's record."""
        cfg, epoch, model, out = self.cfg, self.epoch, self.model, self.out
        record: dict = {"epoch": epoch, "step": self.step}
        val, reader = self.val, self.val_reader
        if not val:
            self.save_weights("last.pt")  # no validation (a no-op on ranks other than 0)
            return record
        scored = score_across_ranks(
            reader,
            model,
            cfg.direction,
            val,
            self.device,
            self.env,
            batch_size=cfg.batch_size,
            workers=cfg.workers,  # loader workers read the pairs in read order
        )
        if not self.main:
            self.save_weights("last.pt")  # a no-op on ranks other than 0
            return record
        head = model.visibility
        if fit_confidence(head, scored):  # fitted on val, scored on val: docs/visibility.md
            record["visibility_fit"] = [*head.weight.tolist(), head.bias.item()]  # w, b
        else:
            log.warning("epoch %d validation: one visibility class only", epoch)
        scored = with_confidence(scored, head, "visibility")
        _, _, metrics = measure(reader, cfg.direction, val, scored, cfg.workers, self.val_gt)
        record.update(metrics.as_dict())
        log.info("epoch %d validation: %s", epoch, json.dumps(metrics.as_dict()))
        iou = metrics.iou
        if math.isnan(iou):  # no visible pair among the validated ones: IoU undefined
            log.warning("epoch %d validation has no visible pair: IoU undefined", epoch)
            iou = float("-inf")
        self.save_weights("last.pt")  # after the fit: it carries the visibility part
        if iou > self.best_iou or not (out / "best.pt").exists():
            self.best_iou = max(self.best_iou, iou)
            self.save_weights("best.pt")
        return record

    def finish(self) -> None:
        """The profiler's trace; without validation, the last weights are the best."""
        self.prof.close()
        if not self.val:
            self.save_weights("best.pt")

    def stop_if_nonfinite(self) -> None:
        """Before anything is saved or validated: a non-finite step stops the run, its good
        checkpoints kept (NaN weights are never written)."""
        bad = self.train_step.first_nonfinite()
        if bad is None:
            return
        e, j = divmod(bad - 1, self.steps_per_epoch)
        self.sampler.set_epoch(e)
        samples = [self.data.samples[i] for i in self.sampler.batch(j, self.local_bs)]
        source = guard.nonfinite_source(self.cache, self.cfg.direction, samples)
        raise guard.nonfinite_error(self.out, bad, e + 1, source, self.last_saved)

    def save_state(self, *more: Write) -> None:
        """The new loss records and state.pt (and `more`) to the saver, after the non-finite
        check."""
        self.stop_if_nonfinite()
        # the log period's running loss, summed over the ranks: a resume continues its mean
        partial = self.running.detach().clone()
        dist.all_reduce_sum(self.env, partial)
        if self.main:
            extra = {"identity": self.identity, "running": [float(partial), self.n_running]}
            writes = state_writes(
                self.out,
                self.model,
                self.optimizer,
                self.schedule,
                self.epoch,
                self.step,
                self.best_iou,
                self.history,
                self.steplog,
                extra,
            )
            self.saver.save(*writes, *more)
        self.last_saved = self.step

    def save_weights(self, name: str) -> None:
        """The matcher's weights as OUT/NAME (rank 0), after the non-finite check."""
        self.stop_if_nonfinite()
        if self.main:
            self.saver.save(Write(write_torch, matcher_weights(self.model), self.out / name))


def state_writes(
    out: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    epoch: int,
    step: int,
    best_iou: float,
    history: dict,
    steplog: StepLog,
    extra: dict | None = None,
) -> tuple[Write, Write]:
    """What `--resume` needs, as writes for a `BackgroundSaver`: the loss records logged
    since the last save appended to OUT/steps.jsonl, then OUT/state.pt (model, optimiser,
    schedule, RNG, counters, the history but its steps, how much of steps.jsonl holds them,
    and `extra`: the data identity and the running loss of the log period)."""
    appended = steplog.append(history["steps"])
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "epoch": epoch,
        "step": step,
        "best_iou": best_iou,
        "history": {key: value for key, value in history.items() if key != "steps"},
        "steps_log": steplog.mark(),
        "torch_rng": torch.get_rng_state(),
        **(extra or {}),
    }
    return appended, Write(write_torch, state, out / "state.pt")


def _load_state(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise bad_file(path, f"unreadable training state ({type(exc).__name__})") from None


def _check_same_run(cfg: TrainConfig, saved: dict, path: Path) -> None:
    now = jsonable(cfg)
    for key in RUN_DEFINING:
        if key in saved and saved[key] != now[key]:
            raise bad_file(
                path,
                f"this run was started with {flag_name(key)} {saved[key]}, not "
                f"{now[key]}; resume with the same value, or start another --out with --init",
            )
