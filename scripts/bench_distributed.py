"""Distributed and storage figures for BENCHMARKS.md ("Distributed and storage").

  .venv/bin/python scripts/bench_distributed.py [--out bench_out/dist] [--procs 2] [--repeat 2]

On the demo's synthetic set (omama-synth --small --takes 9 --frames 5, random-init backbone):
1. scaling: precompute (train split), training (per epoch, from 1- and 3-epoch runs) and
   evaluation (test split, whole command) as 1 process with 1 thread (one worker), 1 process
   with every core, and --procs gloo processes under torchrun with 1 thread each; wall-clock
   seconds, best of --repeat interleaved runs; and checks that the results agree (same
   records, same losses, same prediction JSON);
2. storage: the same cache with fp16 and with int8 tokens: bytes, token and descriptor
   differences, and the test metrics of a matcher trained (demo settings) on each, evaluated
   on both caches.
Prints a JSON summary and writes it to OUT/summary.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

PY = sys.executable
CFG = "configs/demo.yaml"


def run(cmd: list, env_extra: dict | None = None) -> float:
    """Run a command to completion; return its wall-clock seconds."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(env_extra or {})
    t0 = time.perf_counter()
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{done.stderr[-3000:]}")
    return time.perf_counter() - t0


def cli(module: str, procs: int, *args) -> list:
    if procs == 1:
        return [PY, "-m", module, *args]
    launch = [PY, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
    return [*launch, "-m", module, *args]


def shard_bytes(cache: Path) -> int:
    return sum(p.stat().st_size for p in (cache / "shards").glob("*.h5"))


def token_and_descriptor_diffs(a: Path, b: Path) -> dict:
    """fp16 cache `a` vs int8 cache `b`: the same records read both ways."""
    from omama.cache.reader import Cache

    ca, cb = Cache(a), Cache(b)
    tok_abs, tok_ref, desc_abs, desc_ref, cos = [], [], [], [], []
    for key in sorted(ca.manifest.images):
        ta, tb = ca.tokens(key).astype(np.float64), cb.tokens(key).astype(np.float64)
        tok_abs.append(np.abs(ta - tb).ravel())
        tok_ref.append(np.abs(ta).ravel())
        pairs = [(ca.whole(ca.image(key), "obj_desc"), cb.whole(cb.image(key), "obj_desc"))]
        for direction, table in ca.manifest.candidates.items():
            if key in table:
                pairs.append(
                    (
                        ca.whole(ca.cands(direction, key), "desc"),
                        cb.whole(cb.cands(direction, key), "desc"),
                    )
                )
        for da, db in pairs:
            if not len(da):
                continue
            desc_abs.append(np.abs(da - db).ravel())
            desc_ref.append(np.abs(da).ravel())
            na, nb = np.linalg.norm(da, axis=1), np.linalg.norm(db, axis=1)
            ok = (na > 0) & (nb > 0)
            cos.append((da[ok] * db[ok]).sum(1) / (na[ok] * nb[ok]))
    t, tr = np.concatenate(tok_abs), np.concatenate(tok_ref)
    d, dr = np.concatenate(desc_abs), np.concatenate(desc_ref)
    c = np.concatenate(cos)
    return {
        "tokens_max_abs": float(t.max()),
        "tokens_mean_abs": float(t.mean()),
        "tokens_mean_abs_value": float(tr.mean()),
        "desc_max_abs": float(d.max()),
        "desc_mean_abs": float(d.mean()),
        "desc_mean_abs_value": float(dr.mean()),
        "desc_min_cosine": float(c.min()),
        "desc_mean_cosine": float(c.mean()),
        "descriptors": int(len(c)),
    }


def samples_of(cache: Path, split: str, what: str = "samples") -> int:
    """Samples of a split, or (what="images") its unique images."""
    rows = json.loads((cache / "samples" / f"exo2ego_{split}.json").read_text())
    if what == "images":
        return len({r["src"] for r in rows} | {r["dst"] for r in rows})
    return len(rows)


def same_records(a: Path, b: Path, split: str) -> bool:
    """Every record the split uses holds the same bytes in both caches."""
    ma = json.loads((a / "manifest.json").read_text())
    mb = json.loads((b / "manifest.json").read_text())
    samples = json.loads((a / "samples" / f"exo2ego_{split}.json").read_text())
    if samples != json.loads((b / "samples" / f"exo2ego_{split}.json").read_text()):
        return False
    paths = {
        f"img/{s[r]}": (ma["images"][s[r]], mb["images"][s[r]])
        for s in samples
        for r in ("src", "dst")
    }
    for s in samples:
        paths[f"cand/exo2ego/{s['dst']}"] = (
            ma["candidates"]["exo2ego"][s["dst"]],
            mb["candidates"]["exo2ego"][s["dst"]],
        )
    for path, (sa, sb) in paths.items():
        with h5py.File(a / "shards" / sa) as fa, h5py.File(b / "shards" / sb) as fb:
            ga, gb = fa[path], fb[path]
            if set(ga) != set(gb) or any(not np.array_equal(ga[n][()], gb[n][()]) for n in ga):
                return False
    return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("bench_out/dist"))
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    p.add_argument(
        "--storage-only", action="store_true", help="redo part 2 on the caches already in --out"
    )
    args = p.parse_args()
    out, k = args.out, args.procs
    if args.storage_only:
        summary = json.loads((out / "summary.json").read_text())
        summary = {key: v for key, v in summary.items() if not key.startswith("metrics_")}
        storage(out, summary, args.seeds)
        return
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    data, summary = out / "data", {"procs": k, "cpu_count": os.cpu_count()}
    synth = ["--out", data, "--seed", "0", "--small", "--takes", "9", "--frames", "5"]
    run([PY, "-m", "omama.cli.synth", *synth])
    weights = out / "weights.pth"  # made once, so no timed run pays for writing it
    run(
        [
            PY,
            "-c",
            f"from omama.precompute.backbone import save_random_init as s; s({str(weights)!r}, 0)",
        ]
    )
    pre = [
        "--config",
        CFG,
        "--root",
        data,
        "--workers",
        "0",
        "--no-random-init",
        "--weights",
        weights,
    ]

    # --- the fp16 and int8 caches of every split
    for feats in ("fp16", "int8"):
        for split in ("train", "val", "test"):
            run(
                cli(
                    "omama.cli.precompute",
                    1,
                    *pre,
                    "--cache",
                    out / feats,
                    "--split",
                    split,
                    "--features",
                    feats,
                )
            )
    summary["images_train"] = samples_of(out / "fp16", "train", "images")
    plan = subprocess.run(
        [PY, "-m", "omama.cli.precompute", *map(str, pre), "--split", "train", "--dry-run"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    summary["dry_run_train_bytes"] = int(plan.split("total")[1].split("(")[1].split(" bytes")[0])
    summary["actual_train_bytes"] = sum(
        f.stat().st_size for f in (out / "fp16" / "shards").glob("exo2ego-train-*.h5")
    )

    # --- scaling: (1 process, 1 thread) is one worker; (1 process, all threads) and
    # (k processes, 1 thread each) use every core. Runs interleave; the best of --repeat counts.
    setups = {"1x1": (1, 1), f"1x{os.cpu_count()}": (1, os.cpu_count()), f"{k}x1": (k, 1)}

    def timed(name: str, make) -> None:
        for label, (procs, n_threads) in setups.items():
            key = f"{name}_{label}_s"
            t = make(procs, {"OMP_NUM_THREADS": str(n_threads)})
            summary[key] = min(summary.get(key, t), t)

    def precompute(procs: int, env: dict) -> float:
        shutil.rmtree(out / "cache_k", ignore_errors=True)
        return run(
            cli(
                "omama.cli.precompute", procs, *pre, "--cache", out / "cache_k", "--split", "train"
            ),
            env,
        )

    def train(procs: int, env: dict, epochs: int, cache: Path, run_dir: Path, *extra) -> float:
        shutil.rmtree(run_dir, ignore_errors=True)
        a = [
            "--config",
            CFG,
            "--cache",
            cache,
            "--out",
            run_dir,
            "--epochs",
            epochs,
            "--workers",
            "0",
            *extra,
        ]
        return run(cli("omama.cli.train", procs, *a), env)

    def evaluate(procs: int, env: dict) -> float:
        ev = ["--config", CFG, "--cache", out / "fp16", "--checkpoint", out / "t1" / "last.pt"]
        ev += ["--visualize", "0", "--workers", "0", "--out", out / f"e{procs}" / "pred.json"]
        return run(cli("omama.cli.eval", procs, *ev), env)

    for _ in range(args.repeat):
        timed("precompute_train", precompute)
        timed(
            "train_1epoch",
            lambda p, e: train(p, e, 1, out / "fp16", out / f"t{p}", "--val-split", "none"),
        )
        timed(
            "train_3epochs",
            lambda p, e: train(p, e, 3, out / "fp16", out / f"t{p}", "--val-split", "none"),
        )
        timed("eval_test", evaluate)
    summary["precompute_same_records"] = same_records(out / "fp16", out / "cache_k", "train")
    n_train = samples_of(out / "fp16", "train")
    for label in setups:
        per_epoch = (summary[f"train_3epochs_{label}_s"] - summary[f"train_1epoch_{label}_s"]) / 2
        summary[f"train_samples_per_s_{label}"] = n_train / per_epoch
        summary[f"precompute_images_per_s_{label}"] = (
            summary["images_train"] / summary[f"precompute_train_{label}_s"]
        )
    l1 = [s["loss"] for s in json.loads((out / "t1" / "log.json").read_text())["steps"]]
    lk = [s["loss"] for s in json.loads((out / f"t{k}" / "log.json").read_text())["steps"]]
    summary["train_max_loss_diff"] = float(np.max(np.abs(np.array(l1) - np.array(lk))))
    summary["eval_same_json"] = (out / "e1" / "pred.json").read_bytes() == (
        out / f"e{k}" / "pred.json"
    ).read_bytes()

    storage(out, summary, args.seeds)


def storage(out: Path, summary: dict, seeds: list[int]) -> None:
    """fp16 vs int8 caches: bytes, differences, and matchers trained (demo settings, several
    seeds: the seed-to-seed spread is the yardstick) on each and evaluated on both."""
    summary["bytes_fp16"] = shard_bytes(out / "fp16")
    summary["bytes_int8"] = shard_bytes(out / "int8")
    summary.update(token_and_descriptor_diffs(out / "fp16", out / "int8"))
    for feats in ("fp16", "int8"):
        for seed in seeds:
            run_dir = out / f"run_{feats}_{seed}"
            shutil.rmtree(run_dir, ignore_errors=True)
            a = ["--config", CFG, "--cache", out / feats, "--out", run_dir, "--seed", seed]
            run(cli("omama.cli.train", 1, *a, "--workers", "0"))
            for cache in ("fp16", "int8"):
                pred = out / f"eval_{feats}_{seed}_on_{cache}" / "pred.json"
                ck = run_dir / "best.pt"
                a = ["--config", CFG, "--cache", out / cache, "--checkpoint", ck, "--out", pred]
                run(cli("omama.cli.eval", 1, *a, "--visualize", "0", "--workers", "0"))
                m = json.loads(pred.with_name("pred_metrics.json").read_text())
                summary[f"metrics_trained_{feats}_seed{seed}_eval_{cache}"] = m
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
