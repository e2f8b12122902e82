"""Faults injected for real: SIGKILL mid-run, a second writer, a full disk, unwritable folders,
concurrent readers, and seeded determinism. Every command runs as users run it.

Kept small (the session's synthetic dataset, CPU, workers 0) so the file takes a few minutes.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from cli_lines import error_line
from torch.utils.data import DataLoader

from omama.cache.manifest import load_manifest
from omama.cache.reader import Cache
from omama.cache.samples import read_samples, write_samples
from omama.cache.verify import verify_cache
from omama.cli import eval as eval_cli
from omama.cli import precompute as precompute_cli
from omama.cli import train as train_cli
from omama.loader.train_samples import TrainSamples
from omama.matcher.checkpoint import save_matcher_state
from omama.matcher.model import OMaMaMatcher


def cli(module: str, *args) -> list[str]:
    """The command a user types, as this interpreter runs it."""
    return [sys.executable, "-m", f"omama.cli.{module}", *(str(a) for a in args)]


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file below `folder` (the lock file's pid aside)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


# ---------------------------------------------------------------------------- precompute


@pytest.fixture(scope="module")
def data(synth_root, tmp_path_factory) -> Path:
    return Path(shutil.copytree(synth_root, tmp_path_factory.mktemp("faults") / "data"))


def precompute_cmd(data: Path, cache: Path, weights: Path, split: str = "train") -> list[str]:
    return cli(
        "precompute",
        *("--root", data, "--cache", cache, "--weights", weights, "--split", split),
        *("--workers", 0, "--batch-size", 2, "--shard-records", 3, "--device", "cpu"),
    )


@pytest.fixture(scope="module")
def single_run(data, weights, tmp_path_factory) -> Path:
    """The reference: the train split cached by one uninterrupted run."""
    cache = tmp_path_factory.mktemp("single") / "cache"
    done = run(precompute_cmd(data, cache, weights))
    assert done.returncode == 0, done.stderr
    return cache


def records(cache: Path) -> dict[str, bytes]:
    """Bytes of every cached array, by record path (shard names and layout aside)."""
    manifest = load_manifest(cache)
    out: dict[str, bytes] = {}
    listed = [(f"img/{k}", s) for k, s in manifest.images.items()]
    for direction, table in manifest.candidates.items():
        listed += [(f"cand/{direction}/{k}", s) for k, s in table.items()]
    for path, shard in listed:
        with h5py.File(cache / "shards" / shard, "r") as f:
            g = f[path]
            for name, ds in g.items():
                value = ds[()]
                out[f"{path}/{name}"] = value.tobytes() if value.dtype != object else repr(value)
            for name, value in g.attrs.items():
                out[f"{path}@{name}"] = np.asarray(value).tobytes()
    return out


def holds_lock(cache: Path, pid: int) -> bool:
    try:
        return (cache / ".lock").read_text().strip() == str(pid)
    except OSError:
        return False


def listed_shards(cache: Path) -> int:
    try:
        return len(json.loads((cache / "manifest.json").read_text())["shards"])
    except (OSError, ValueError, KeyError):
        return 0


# Where a kill lands: a point the run must pass, then a random extra delay. Time alone would
# miss the run on a busy machine; these points cover the backbone load, a shard being
# written, and the gaps between published shards.
KILL_POINTS = {
    0: ("lock held, backbone loading", lambda cache, pid: holds_lock(cache, pid), 2.0),
    1: ("first shard half written", lambda cache, pid: any(cache.glob("shards/*.tmp")), 0.5),
    2: ("two shards published", lambda cache, pid: listed_shards(cache) >= 2, 0.5),
}


def kill_midway(cmd: list[str], cache: Path, seed: int, capsys, log_path: Path) -> None:
    """Start the run, check a second writer is refused, SIGKILL it at the seed's point."""
    _, reached, spread = KILL_POINTS[seed]
    extra = random.Random(seed).uniform(0.0, spread)
    for _ in range(4):  # a run faster than the chosen delay: try again with a shorter one
        shutil.rmtree(cache, ignore_errors=True)
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=log)
            while proc.poll() is None and not holds_lock(cache, proc.pid):
                time.sleep(0.01)
            assert proc.poll() is None, log_path.read_text()
            # a second writer meanwhile is refused, and writes nothing
            second = precompute_cli.main([str(a) for a in cmd[3:]])
            line = error_line(capsys.readouterr().err, "omama-precompute")
            assert second == 2 and "another omama-precompute is writing this cache" in line
            while proc.poll() is None and not reached(cache, proc.pid):
                time.sleep(0.01)
            time.sleep(extra)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        if proc.returncode == -signal.SIGKILL:
            return
        assert proc.returncode == 0, log_path.read_text()
        extra /= 4
    raise AssertionError("the run always finished before it could be killed")


@pytest.mark.parametrize("seed", sorted(KILL_POINTS))
def test_precompute_killed_at_random_points_resumes_to_the_same_cache(
    seed, data, weights, single_run, tmp_path, capsys
):
    ref_cache = single_run
    cache = tmp_path / "cache"
    cmd = precompute_cmd(data, cache, weights)
    kill_midway(cmd, cache, seed, capsys, tmp_path / "killed.log")

    # what the killed run left is never read as good: only whole shards are listed
    manifest = load_manifest(cache)
    if manifest is not None:
        assert all(name.endswith(".h5") for name in manifest.shards)
        assert verify_cache(cache).problems == []

    done = run(cmd)  # the same command again
    assert done.returncode == 0, done.stderr
    assert not list((cache / "shards").glob("*.tmp"))
    assert verify_cache(cache).problems == []
    want, got = records(ref_cache), records(cache)
    assert sorted(got) == sorted(want)
    for path in want:
        assert got[path] == want[path], path
    samples = cache / "samples" / "exo2ego_train.npz"
    assert samples.read_bytes() == (ref_cache / "samples" / "exo2ego_train.npz").read_bytes()


def test_verify_reports_a_damaged_cache(single_run, tmp_path, capsys):
    ref_cache = single_run
    assert precompute_cli.main(["--verify", "--cache", str(ref_cache)]) == 0
    assert "OK" in capsys.readouterr().out

    cache = Path(shutil.copytree(ref_cache, tmp_path / "cache"))
    manifest = load_manifest(cache)
    first, second = sorted(manifest.shards)[:2]
    with open(cache / "shards" / first, "r+b") as fh:  # one flipped byte in the middle
        fh.seek(fh.seek(0, os.SEEK_END) // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0xFF]))
    (cache / "shards" / second).unlink()
    assert precompute_cli.main(["--verify", "--cache", str(cache)]) == 2
    line = error_line(capsys.readouterr().err, "omama-precompute")
    assert f"{cache / 'shards' / first}: sha256 differs from the manifest" in line
    assert "(2 problems in all)" in line
    problems = verify_cache(cache).problems
    assert f"{cache / 'shards' / second}: shard listed in the manifest is missing" in problems

    # a record gone from a shard whose checksum was updated to match: found by the record walk
    cache2 = Path(shutil.copytree(ref_cache, tmp_path / "cache2"))
    key, shard = sorted(load_manifest(cache2).images.items())[0]
    with h5py.File(cache2 / "shards" / shard, "r+") as f:
        del f[f"img/{key}/obj_desc"]
    data = json.loads((cache2 / "manifest.json").read_text())
    path = cache2 / "shards" / shard
    data["shards"][shard] = {
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "bytes": path.stat().st_size,
    }
    (cache2 / "manifest.json").write_text(json.dumps(data))
    assert verify_cache(cache2).problems == [
        f"{path}: img/{key}: obj_desc missing",
        f"{path}: toc disagrees with the datasets of img/{key}",  # its table still lists it
    ]


def _limit_file_size(limit: int):
    def apply() -> None:  # in the child: writes past `limit` bytes fail with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_disk_full_while_precomputing_keeps_the_cache(data, weights, single_run, tmp_path):
    """Adding ego2exo candidates to a cache when the disk fills: one clear line, every
    existing file byte-identical, and the same command later finishes the job."""
    ref_cache = single_run
    cache = Path(shutil.copytree(ref_cache, tmp_path / "cache"))
    before = snapshot(cache)
    cmd = precompute_cmd(data, cache, weights) + ["--direction", "ego2exo", "--shard-records", "64"]
    done = run(cmd, preexec_fn=_limit_file_size(64 * 1024))
    assert done.returncode == 2
    line = error_line(done.stderr, "omama-precompute")
    assert "cannot write cache shard (File too large)" in line, line
    assert "the shards already listed in manifest.json are intact, rerun to continue" in line
    assert snapshot(cache) == before
    assert precompute_cli.main([str(a) for a in cmd[3:]]) == 0
    assert verify_cache(cache).problems == []
    assert load_manifest(cache).candidates["ego2exo"]


def test_unwritable_output_folders_are_one_line(cache_dir, data, weights, tmp_path, capsys):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a regular file where a folder should be")
    argv = precompute_cmd(data, blocker / "cache", weights)[3:]
    assert precompute_cli.main(argv) == 2
    line = error_line(capsys.readouterr().err, "omama-precompute")
    assert f"{blocker / 'cache'}: cannot create the folder ({blocker} is not a directory)" in line

    train = ["--cache", cache_dir, "--out", blocker / "run", "--device", "cpu", "--workers", 0]
    assert train_cli.main([str(a) for a in train]) == 2
    line = error_line(capsys.readouterr().err, "omama-train")
    assert f"{blocker / 'run'}: cannot create the folder ({blocker} is not a directory)" in line

    ev = ["--cache", cache_dir, "--baseline", "random", "--out", blocker / "pred.json"]
    assert eval_cli.main([str(a) for a in ev + ["--device", "cpu", "--workers", 0]]) == 2
    line = error_line(capsys.readouterr().err, "omama-eval")
    assert f"{blocker / 'pred.json'}: cannot write here ({blocker} is not a directory)" in line


# ---------------------------------------------------------------------------- training


def train_cmd(cache: Path, out: Path, *extra) -> list[str]:
    """2 epochs of 4 steps; state saved every 2 steps, the loss logged every step."""
    return cli(
        "train",
        *("--cache", cache, "--out", out, "--epochs", 2, "--batch-size", 3, "--n-masks", 8),
        *("--save-every", 2, "--log-every", 1, "--val-limit", 3, "--seed", 7),
        *("--workers", 0, "--device", "cpu", *extra),
    )


def logged_steps(out: Path) -> list[int]:
    """The steps of the loss records steps.jsonl holds (appended at each save)."""
    try:
        lines = (out / "steps.jsonl").read_text().splitlines()
        return [json.loads(line)["step"] for line in lines]
    except (OSError, ValueError, KeyError):
        return []


def curve(rows: list[dict], *keys: str) -> list[tuple]:
    return [(row["step"], *(row[k] for k in keys)) for row in rows]


@pytest.fixture(scope="module")
def reference_run(cache_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "reference"
    done = run(train_cmd(cache_dir, out))
    assert done.returncode == 0, done.stderr
    return out


def test_training_killed_mid_epoch_resumes_where_it_stopped(
    cache_dir, reference_run, tmp_path, monkeypatch, capsys
):
    ref = json.loads((reference_run / "log.json").read_text())
    total = ref["steps"][-1]["step"]
    assert [s["step"] for s in ref["steps"]] == list(range(1, total + 1))
    out = tmp_path / "run"
    cmd = train_cmd(cache_dir, out)
    kill_after = 6  # the save inside epoch 2: epoch 1's validation and best.pt are behind it
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        while proc.poll() is None and max(logged_steps(out), default=0) < kill_after:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()
    saved = logged_steps(out)
    assert kill_after <= saved[-1] < total and (out / "state.pt").exists()

    # the disk fills at the next save: one clear line, and the run folder stays as it was
    before = snapshot(out)

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", no_space)
    assert train_cli.main(cmd[3:] + ["--resume"]) == 2
    line = error_line(capsys.readouterr().err, "omama-train")
    assert "write failed (No space left on device); the previous file is intact" in line, line
    assert snapshot(out) == before
    monkeypatch.undo()

    # resuming with another batch size would silently train another schedule: refused
    assert train_cli.main(cmd[3:] + ["--resume", "--batch-size", "4"]) == 2
    line = error_line(capsys.readouterr().err, "omama-train")
    assert f"{out / 'state.pt'}: this run was started with --batch-size 3, not 4" in line, line
    assert snapshot(out) == before

    done = run(cmd + ["--resume"])
    assert done.returncode == 0, done.stderr
    log = json.loads((out / "log.json").read_text())
    assert [s["step"] for s in log["steps"]] == list(range(1, total + 1))  # no gap, no repeat
    # the loss curve continues where it stopped, and validation agrees
    assert curve(log["steps"], "loss", "lr") == curve(ref["steps"], "loss", "lr")
    assert curve(log["epochs"], "iou", "balanced_acc") == curve(
        ref["epochs"], "iou", "balanced_acc"
    )
    for name in ("last.pt", "best.pt"):
        want = torch.load(reference_run / name, weights_only=True)
        got = torch.load(out / name, weights_only=True)
        assert want.keys() == got.keys()
        for key in want:
            assert torch.equal(want[key], got[key]), (name, key)
        assert (out / name).read_bytes() == (reference_run / name).read_bytes()


# omama-train with its file writes patched: the Nth write of state.pt stops (temp file made
# but empty, or written whole but not yet renamed), says so in a marker file, and hangs there.
HANG_IN_SAVE = """
import contextlib, sys, time
from pathlib import Path
import omama.files
from omama.cli import train

marker, when, nth = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
plain, seen = omama.files.atomic_path, []

@contextlib.contextmanager
def hanging(path):
    with plain(path) as tmp:
        if Path(path).name == "state.pt":
            seen.append(path)
        hang = Path(path).name == "state.pt" and len(seen) == nth
        if hang and when == "created":
            marker.write_text(str(tmp))
            time.sleep(600)
        yield tmp
        if hang and when == "written":
            marker.write_text(str(tmp))
            time.sleep(600)

omama.files.atomic_path = hanging
sys.exit(train.main(sys.argv[4:]))
"""


@pytest.mark.parametrize("when", ["created", "written"])
def test_training_killed_during_a_background_save_keeps_the_previous_files(
    when, cache_dir, reference_run, tmp_path
):
    """Checkpoints are written behind the steps: SIGKILL while the save of step 6 is in
    flight leaves epoch 1's state.pt, log.json, last.pt and best.pt whole and agreeing, and
    --resume finishes the run as if nothing happened."""
    out, marker = tmp_path / "run", tmp_path / "in_flight"
    cmd = train_cmd(cache_dir, out)
    # state.pt saves: step 2, step 4, end of epoch 1 (step 4), step 6 <- hangs
    hang = [sys.executable, "-c", HANG_IN_SAVE, marker, when, 4, *cmd[3:]]
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen([str(a) for a in hang], stdout=log, stderr=log)
        while proc.poll() is None and not marker.exists():
            time.sleep(0.02)
        assert proc.poll() is None, (tmp_path / "killed.log").read_text()
        time.sleep(0.2)  # the steps go on meanwhile, up to the next save, which waits
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert Path(marker.read_text()).exists()  # the killed save's temp file, never renamed

    state = torch.load(out / "state.pt", map_location="cpu", weights_only=False)
    assert (state["epoch"], state["step"]) == (1, 4)
    assert state["steps_log"]["lines"] == 4 and logged_steps(out)[:4] == [1, 2, 3, 4]
    assert [s["step"] for s in json.loads((out / "log.json").read_text())["steps"]] == [1, 2, 3, 4]
    last = torch.load(out / "last.pt", weights_only=True)  # written at the same step
    assert last.keys() == state["model"].keys()
    for key in last:
        assert torch.equal(last[key], state["model"][key]), key
    assert torch.load(out / "best.pt", weights_only=True).keys() == last.keys()
    if when == "created":  # a state.pt of an older omama: its loss records inside, no steps.jsonl
        state["history"]["steps"] = json.loads((out / "log.json").read_text())["steps"]
        del state["steps_log"]
        torch.save(state, out / "state.pt")
        (out / "steps.jsonl").unlink()

    done = run(cmd + ["--resume"])
    assert done.returncode == 0, done.stderr
    ref = json.loads((reference_run / "log.json").read_text())
    got = json.loads((out / "log.json").read_text())
    assert curve(got["steps"], "loss", "lr") == curve(ref["steps"], "loss", "lr")
    assert [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()] == (
        got["steps"]
    )
    for name in ("last.pt", "best.pt"):
        assert (out / name).read_bytes() == (reference_run / name).read_bytes(), name


def test_same_seed_same_checkpoint_bytes(cache_dir, tmp_path):
    def train(out: Path) -> None:
        argv = ["--cache", cache_dir, "--out", out, "--epochs", 1, "--batch-size", 6]
        argv += ["--n-masks", 4, "--val-split", "none", "--seed", 3, "--device", "cpu"]
        assert train_cli.main([str(a) for a in argv + ["--workers", 0]]) == 0

    train(tmp_path / "a")
    train(tmp_path / "b")
    for name in ("init.pt", "last.pt", "best.pt"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    steps = [json.loads((tmp_path / r / "log.json").read_text())["steps"] for r in "ab"]
    assert steps[0] == steps[1]


# ---------------------------------------------------------------------------- readers


def test_concurrent_readers_read_correctly(cache_dir, tmp_path, capsys):
    """Eval in another process and a 2-worker DataLoader in this one read the same shards at
    once; both get exactly what a lone single-process reader gets."""
    cache = Cache(cache_dir)
    samples = cache.samples("exo2ego", "test")
    torch.manual_seed(0)
    ckpt = tmp_path / "matcher.pt"
    save_matcher_state(OMaMaMatcher(*cache.role_grids(samples)), ckpt)

    def eval_argv(out: Path, workers: int) -> list[str]:
        argv = ["--cache", cache_dir, "--split", "test", "--checkpoint", ckpt, "--out", out]
        return [str(a) for a in argv + ["--device", "cpu", "--workers", workers]]

    assert eval_cli.main(eval_argv(tmp_path / "alone.json", 0)) == 0
    capsys.readouterr()

    data = TrainSamples(cache, "exo2ego", "train", n_masks=8, seed=5)
    index = [(epoch, i) for epoch in range(3) for i in range(len(data))]
    want = [data[ix] for ix in index]  # this process has the shards open before the fork
    with open(tmp_path / "eval.log", "w") as log:
        other = subprocess.Popen(
            cli("eval", *eval_argv(tmp_path / "together.json", 2)), stdout=log, stderr=log
        )
        loader = DataLoader(data, batch_size=None, sampler=index, num_workers=2)
        got = list(loader)
        assert other.wait(timeout=300) == 0, (tmp_path / "eval.log").read_text()
    for a, b in zip(want, got, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key
    alone = json.loads((tmp_path / "alone.json").read_text())
    together = json.loads((tmp_path / "together.json").read_text())
    assert alone == together
    cache.close()


# omama-train that SIGKILLs itself just before step N runs, once the state of step N - 1 is on
# disk (so the kill lands at a known point: inside a log period, after a save).
KILL_BEFORE_STEP = """
import os, signal, sys, time
from pathlib import Path
import torch
from omama.cli import train
from omama.train.step import TrainStep

state, kill_at = Path(sys.argv[1]), int(sys.argv[2])
plain = TrainStep.__call__

def stepping(self, batch, weight=None):
    if self.steps + 1 == kill_at:
        while True:
            try:
                if torch.load(state, map_location="cpu", weights_only=False)["step"] == kill_at - 1:
                    break
            except Exception:
                pass
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGKILL)
    return plain(self, batch, weight)

TrainStep.__call__ = stepping
sys.exit(train.main(sys.argv[3:]))
"""


def test_resume_inside_a_log_period_gives_the_same_log_and_checkpoints(cache_dir, tmp_path, capsys):
    """8 steps, the mean loss logged at 4, 5 and 8, the state saved at 3, 4 and 6: killed
    before step 7, the resumed run's log (the mean of steps 6-8 included) and checkpoints
    are the uninterrupted run's, byte for byte. On the way, resuming on another cache or
    validation split, and a run folder whose state.pt is gone, are refused untouched."""
    opts = ["--val-split", "none", "--save-every", 3, "--log-every", 5]
    ref = tmp_path / "ref"
    done = run(train_cmd(cache_dir, ref, *opts))
    assert done.returncode == 0, done.stderr
    out = tmp_path / "run"
    cmd = train_cmd(cache_dir, out, *opts)
    kill = [sys.executable, "-c", KILL_BEFORE_STEP, out / "state.pt", 7, *cmd[3:]]
    killed = run([str(a) for a in kill])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    state = torch.load(out / "state.pt", map_location="cpu", weights_only=False)
    assert state["step"] == 6 and state["running"][1] == 1  # step 6's loss, not yet logged
    before = snapshot(out)

    # another cache (one training pair fewer) or another validation split: refused
    other = Path(shutil.copytree(cache_dir, tmp_path / "other"))
    samples = other / "samples" / "exo2ego_train.npz"
    write_samples(samples, read_samples(samples)[1:])
    argv = [a if a != str(cache_dir) else str(other) for a in cmd[3:]] + ["--resume"]
    assert train_cli.main(argv) == 2
    line = error_line(capsys.readouterr().err, "omama-train")
    assert f"{out / 'state.pt'}: this run was started on {cache_dir}; {other} holds other " in line
    assert train_cli.main(cmd[3:] + ["--resume", "--val-split", "test"]) == 2
    line = error_line(capsys.readouterr().err, "omama-train")
    assert "this run was started with --val-split none, not test" in line, line
    assert snapshot(out) == before

    # a run folder whose state.pt is gone is still a run: neither started over nor resumed
    gone = Path(shutil.copytree(ref, tmp_path / "gone"))
    (gone / "state.pt").unlink()
    kept = snapshot(gone)
    argv = [a if a != str(out) else str(gone) for a in cmd[3:]]
    assert train_cli.main(argv) == 2
    line = error_line(capsys.readouterr().err, "omama-train")
    assert f"{gone}: a run already lives here (log.json, last.pt, best.pt, init.pt" in line, line
    assert train_cli.main(argv + ["--resume"]) == 2
    line = error_line(capsys.readouterr().err, "omama-train")
    assert f"{gone / 'state.pt'}: missing, but the run folder holds log.json, last.pt" in line
    assert snapshot(gone) == kept

    done = run(cmd + ["--resume"])
    assert done.returncode == 0, done.stderr
    want = json.loads((ref / "log.json").read_text())
    got = json.loads((out / "log.json").read_text())
    assert [s["step"] for s in got["steps"]] == [4, 5, 8]
    assert got["steps"] == want["steps"]
    for name in ("last.pt", "best.pt"):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    # state.pt holds the same values but two: the run folder it names, and the global RNG
    # state, which a DataLoader draws from whenever an epoch's iterator starts (a resumed run
    # starts one more); no sample, weight or loss depends on it (the files above are equal)
    a, b = (torch.load(d / "state.pt", weights_only=False) for d in (out, ref))
    assert a["history"]["config"].pop("out") == str(out)
    assert b["history"]["config"].pop("out") == str(ref)
    del a["torch_rng"], b["torch_rng"]
    assert same_values(a, b)
    assert (out / "steps.jsonl").read_bytes() == (ref / "steps.jsonl").read_bytes()


def same_values(a, b) -> bool:
    """Equal nested dicts, lists and tuples, tensors equal element by element."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return (
            isinstance(b, dict) and a.keys() == b.keys() and all(same_values(a[k], b[k]) for k in a)
        )
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same_values, a, b))
    return a == b
