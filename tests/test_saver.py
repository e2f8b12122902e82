"""The background saver: snapshots that training cannot change, the bytes of a synchronous
save, writes in the order asked, failures raised at the next save, the last save awaited."""

from __future__ import annotations

import functools
import io
import json
import threading
from pathlib import Path

import pytest
import torch

from omama.cache.reader import Cache
from omama.cli import train as train_cli
from omama.errors import OmamaError, bad_file
from omama.files import write_torch
from omama.matcher.checkpoint import build_matcher, matcher_weights, save_matcher_state
from omama.matcher.model import OMaMaMatcher
from omama.train import loop
from omama.train.saver import BackgroundSaver, Write, snapshot
from omama.train.step import build_optimizer
from omama.train.steplog import StepLog


def saved_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def trained_state() -> dict:
    """A small matcher after one AdamW step, its state as state.pt holds it, and tensors that
    share storages (a view with an offset, a transposed view, the same tensor twice)."""
    model = OMaMaMatcher(grid_t=(4, 4), grid_q=(3, 5))
    optimizer, schedule = build_optimizer(model, 1e-3, 0.01, 1e-6, 10)
    out = model(
        torch.randn(2, 1536),
        torch.randn(2, 5, 1536),
        torch.randn(2, 15, 768),
        torch.randn(2, 16, 768),
    )
    out.square().mean().backward()
    optimizer.step()
    schedule.step()
    base = torch.arange(24.0).reshape(4, 6)
    history = {"steps": [{"step": 1, "loss": 0.5}], "config": {"seed": 3}}
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "history": history,
        "also_history": history,
        "views": [base, base[1:3], base.t(), base[:, 2]],
        "torch_rng": torch.get_rng_state(),
    }


def test_snapshot_saves_the_same_bytes_and_keeps_sharing():
    state = trained_state()
    copied, event, _ = snapshot(state)
    assert event is None  # nothing on a GPU
    assert saved_bytes(copied) == saved_bytes(state)
    views = copied["views"]
    assert views[1].untyped_storage().data_ptr() == views[0].untyped_storage().data_ptr()
    assert views[0].untyped_storage().data_ptr() != state["views"][0].untyped_storage().data_ptr()
    assert copied["also_history"] is copied["history"]


def test_snapshot_does_not_follow_training():
    state = trained_state()
    want = saved_bytes(state)
    copied, _, _ = snapshot(state)
    for value in state["model"].values():
        value.add_(1.0)
    for per_param in state["optimizer"]["state"].values():
        per_param["exp_avg"].mul_(2.0)
    state["views"][0].zero_()
    state["history"]["steps"].append({"step": 2, "loss": 0.4})
    state["schedule"]["last_epoch"] = 99
    assert saved_bytes(state) != want
    assert saved_bytes(copied) == want


class Gate:
    """A writer that records what it wrote and waits until the test opens the gate."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.started = threading.Event()
        self.order: list[tuple[str, float]] = []

    def __call__(self, obj: torch.Tensor, path: Path) -> None:
        self.started.set()
        assert self.open.wait(60)
        self.order.append((path.name, float(obj.sum())))
        write_torch(obj, path)


def test_the_file_holds_the_values_at_save_time(tmp_path):
    gate = Gate()
    weights = torch.ones(1000)
    with BackgroundSaver() as saver:
        saver.save(Write(gate, weights, tmp_path / "a.pt"))
        assert gate.started.wait(60)
        weights.mul_(3.0)  # training goes on while the save is in flight
        assert not (tmp_path / "a.pt").exists()
        gate.open.set()
    assert torch.equal(torch.load(tmp_path / "a.pt"), torch.ones(1000))


def test_saves_reach_the_disk_in_order(tmp_path):
    gate = Gate()
    weights = torch.zeros(10)
    with BackgroundSaver() as saver:
        for value in (1.0, 2.0, 3.0):
            weights.fill_(value)
            if value == 2.0:
                gate.open.set()  # the second save waited for the first
            saver.save(
                Write(gate, weights, tmp_path / "same.pt"), Write(gate, weights, tmp_path / "b.pt")
            )
            assert gate.started.wait(60)
    assert gate.order == [(name, v * 10) for v in (1.0, 2.0, 3.0) for name in ("same.pt", "b.pt")]
    assert torch.equal(torch.load(tmp_path / "same.pt"), torch.full((10,), 3.0))


def failing(obj, path: Path) -> None:
    raise bad_file(path, "write failed (No space left on device); the previous file is intact")


def test_a_failed_save_is_raised_at_the_next_save_and_at_close(tmp_path):
    saver = BackgroundSaver()
    saver.save(Write(failing, torch.ones(3), tmp_path / "state.pt"))
    with pytest.raises(OmamaError, match="No space left on device"):
        saver.save(Write(write_torch, torch.ones(3), tmp_path / "next.pt"))
    assert not (tmp_path / "next.pt").exists()  # nothing written after a failure
    saver.save(Write(failing, torch.ones(3), tmp_path / "state.pt"))
    with pytest.raises(OmamaError, match="No space left on device"):
        saver.close()
    with pytest.raises(OmamaError, match="No space left on device"), BackgroundSaver() as saver:
        saver.save(Write(failing, torch.ones(3), tmp_path / "state.pt"))


def test_an_exception_leaving_the_block_waits_and_is_not_hidden(tmp_path, caplog):
    gate = Gate()
    with pytest.raises(KeyError, match="from the loop"), BackgroundSaver() as saver:
        saver.save(Write(gate, torch.ones(4), tmp_path / "a.pt"))
        gate.open.set()
        saver.save(Write(failing, torch.ones(4), tmp_path / "b.pt"))
        raise KeyError("from the loop")
    assert (tmp_path / "a.pt").exists()
    assert "the last save failed too" in caplog.text and "No space left" in caplog.text


def test_synchronous_saver_writes_before_returning(tmp_path):
    weights = torch.ones(5)
    saver = BackgroundSaver(background=False)
    saver.save(Write(write_torch, weights, tmp_path / "a.pt"))
    assert torch.equal(torch.load(tmp_path / "a.pt"), weights)
    saver.close()


def test_background_run_writes_the_bytes_of_a_synchronous_run(cache_dir, tmp_path, monkeypatch):
    """One epoch with the saver thread, one with every file written in the loop from the live
    objects (the trainer before the saver): the same bytes in every file."""

    def train(out: Path) -> None:
        argv = ["--cache", cache_dir, "--out", out, "--epochs", 1, "--batch-size", 6]
        argv += ["--n-masks", 4, "--save-every", 1, "--val-limit", 3, "--seed", 3]
        assert train_cli.main([str(a) for a in argv + ["--device", "cpu", "--workers", 0]]) == 0

    run = tmp_path / "run"  # one folder for both: log.json and state.pt hold its path
    train(run)
    background = run.rename(tmp_path / "background")
    with monkeypatch.context() as m:
        m.setattr(loop, "BackgroundSaver", functools.partial(BackgroundSaver, background=False))
        train(run)
    names = sorted(p.name for p in run.iterdir())
    want = ["best.pt", "curves.png", "init.pt", "last.pt", "log.json", "state.pt", "steps.jsonl"]
    assert names == want
    assert sorted(p.name for p in background.iterdir()) == names
    for name in names:
        assert (background / name).read_bytes() == (run / name).read_bytes(), name

    # and last.pt is what save_matcher_state writes for the same weights
    cache = Cache(cache_dir)
    model = build_matcher(*cache.role_grids(cache.samples("exo2ego", "train")))
    model.load_state_dict(torch.load(run / "last.pt", weights_only=True))
    assert list(matcher_weights(model)) == list(model.state_dict())
    save_matcher_state(model, tmp_path / "again.pt")
    assert (tmp_path / "again.pt").read_bytes() == (run / "last.pt").read_bytes()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_snapshot_of_cuda_tensors_is_pinned_and_not_overwritten():
    state = {"w": torch.arange(1 << 20, dtype=torch.float32, device="cuda"), "step": 3}
    state["view"] = state["w"][10:20]
    host = state["w"].cpu()
    want = {"w": host, "step": 3, "view": host[10:20]}  # the same storage and key order
    copied, event, _ = snapshot(state)
    state["w"].mul_(-1.0)  # queued after the copy on the same stream
    assert event is not None
    event.synchronize()
    assert copied["w"].device.type == "cpu" and copied["w"].is_pinned()
    assert copied["view"].untyped_storage().data_ptr() == copied["w"].untyped_storage().data_ptr()
    assert saved_bytes(copied) == saved_bytes(want)


def rows(*steps: int) -> list[dict]:
    return [{"step": i, "epoch": 0, "loss": 1.0 / i, "lr": 1e-4} for i in steps]


def test_step_log_appends_only_new_records_and_resumes_at_the_saved_mark(tmp_path):
    path, history = tmp_path / "steps.jsonl", rows(1, 2)
    log = StepLog(path)
    for write in (log.append(history), log.append(history)):  # the second: nothing new
        write.writer(write.obj, write.path)
    mark = log.mark()
    assert mark == {"lines": 2, "bytes": path.stat().st_size}
    history += rows(3, 4)
    write = log.append(history)
    assert write.obj[0] == mark["bytes"] and write.obj[1].count(b"\n") == 2
    write.writer(write.obj, write.path)  # written, but killed before its state.pt

    resumed, got = StepLog.resume(path, mark)  # the state.pt of the save before
    assert got == history[:2] and resumed.mark() == mark
    again = resumed.append(rows(1, 2, 3))  # the resumed run logs step 3 again, once
    again.writer(again.obj, again.path)
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows(1, 2, 3)


def test_step_log_shorter_than_its_state_is_one_line(tmp_path):
    path = tmp_path / "steps.jsonl"
    log = StepLog(path)
    write = log.append(rows(1, 2))
    write.writer(write.obj, write.path)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(OmamaError, match=r"steps\.jsonl: does not hold the 2 loss records"):
        StepLog.resume(path, log.mark())
    with pytest.raises(OmamaError, match=r"shorter than the \d+ bytes state.pt counts"):
        more = log.append(rows(1, 2, 3))
        more.writer(more.obj, more.path)
    path.unlink()
    with pytest.raises(OmamaError, match="cannot read the run's loss log"):
        StepLog.resume(path, log.mark())
