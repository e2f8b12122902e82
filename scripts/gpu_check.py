"""The GPU check's driver (scripts/gpu_check.sh OUT_DIR runs it): four sections, each timed,
each failure recorded while the rest still run; writes OUT_DIR/gpu_check.json and .md.

  tests       the CUDA tests (pytest -k cuda); a skip counts as a failure on a GPU
  end_to_end  synthetic data -> precompute -> train with the token store -> train with
              --order blocks and a tiny store -> fp32 evaluation on the device and on the CPU
              (TF32 off): the same chosen masks, confidences within 1e-4
  nccl        training under torchrun over NCCL with one rank (OMAMA_DIST=1), two with two GPUs
  bench       scripts/bench rows 3, 5, 6, 7 at steady-state sizes (BENCHMARKS_GPU.md's rows)

Without CUDA every step is rehearsed on the CPU at tiny sizes (tests collected, not run;
gloo for the process group; bench --quick) and the exit code is 0 when the rehearsal passes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
CONF_TOL = 1e-4


def run(cmd: list[str], log: Path, env: dict | None = None, timeout: float = 600) -> str:
    """A command with its output in `log`; raises with the output's tail when it fails."""
    res = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT
    )
    log.write_text(res.stdout + res.stderr)
    if res.returncode:
        raise RuntimeError(
            f"{' '.join(map(str, cmd[:6]))} ... exit {res.returncode}: "
            + (res.stdout + res.stderr)[-1500:]
        )
    return res.stdout + res.stderr


def cuda_test_files() -> list[str]:
    """The test files that hold a CUDA test (a test named *cuda*)."""
    pattern = re.compile(r"^def test_\w*cuda", re.M)
    files = sorted((ROOT / "tests").glob("test_*.py"))
    return [str(f.relative_to(ROOT)) for f in files if pattern.search(f.read_text())]


def section_tests(ctx: dict) -> dict:
    out = Path(ctx["out"]) / "tests.log"
    base = [sys.executable, "-m", "pytest", *cuda_test_files(), "-k", "cuda", "-q", "-rs"]
    base += ["-p", "no:cacheprovider"]
    if not ctx["cuda"]:
        text = run([*base, "--collect-only"], out)
        n = sum(int(m) for m in re.findall(r"^tests/\S+: (\d+)$", text, re.M))
        if n == 0:
            raise RuntimeError("no CUDA test collected")
        return {"collected": n, "note": "rehearsal: collected, not run (no CUDA)"}
    xml = Path(ctx["out"]) / "tests.xml"
    try:
        run([*base, f"--junitxml={xml}"], out, timeout=300)
    finally:
        text = xml.read_text() if xml.exists() else ""
    counts = {k: int(v) for k, v in re.findall(r'(tests|failures|errors|skipped)="(\d+)"', text)}
    if counts.get("skipped", 0):
        raise RuntimeError(f"{counts['skipped']} CUDA tests skipped on a GPU: {counts}")
    return {"counts": counts}


def _synth_cache(ctx: dict, device: str) -> tuple[Path, Path]:
    from omama.backbones import backbone_info
    from omama.precompute.backbone import save_random_init
    from omama.precompute.options import PrecomputeConfig
    from omama.precompute.run import run_precompute
    from omama.synth import SynthConfig, generate

    work = Path(ctx["work"])
    root, cache = work / "data", work / "cache"
    tiny = not ctx["cuda"]
    generate(
        SynthConfig(
            seed=0,
            small=tiny,
            takes=4,
            frames=1 if tiny else 3,
            objects=2 if tiny else 3,
        ),
        root,
    )
    # the rehearsal: ViT-S (4x less CPU than the ViT-B of a GPU run), no validation split
    name = "dinov2_vits14_reg4" if tiny else "dinov2_vitb14_reg4"
    weights = save_random_init(work / f"{name}.pth", seed=0, backbone=backbone_info(name))
    for split in ("train", "test") if tiny else ("train", "val", "test"):
        run_precompute(
            PrecomputeConfig(
                root=root,
                cache=cache,
                weights=weights,
                backbone=name,
                split=split,
                device=device,
                workers=0 if tiny else 4,
            )
        )
    return root, cache


def val_args(ctx: dict) -> list[str]:
    """Validation of a few pairs on a GPU; none in the rehearsal (its cache has no val)."""
    return ["--val-limit", "4"] if ctx["cuda"] else ["--val-split", "none"]


def train_argv(cache: Path, out: Path, device: str, *extra: str) -> list[str]:
    """omama-train's flags for one small epoch of the check."""
    flags = ["--cache", cache, "--out", out, "--epochs", 1, "--batch-size", 4, "--n-masks", 8]
    return [str(a) for a in (*flags, "--workers", 0, "--device", device, *extra)]


def _train(cache: Path, out: Path, device: str, *extra: str) -> Path:
    from omama.cli.train import main as train_main

    if train_main(train_argv(cache, out, device, *extra)) != 0:
        raise RuntimeError(f"omama-train {' '.join(extra)} failed")
    return out / "last.pt"


def _scores(cache: Path, ckpt: Path, device: torch.device) -> list:
    from omama.cache.reader import Cache
    from omama.matcher.checkpoint import build_matcher, load_matcher_state
    from omama.predict.scoring import score_samples

    c = Cache(cache)
    samples = c.samples("exo2ego", "test")
    model = build_matcher(*c.role_grids(samples), None, c.manifest.backbone).to(device)
    load_matcher_state(model, ckpt)
    return score_samples(c, model, "exo2ego", samples, device, 4, 0, False, None, "fp32")


def section_end_to_end(ctx: dict) -> dict:
    from omama.cache.reader import Cache
    from omama.loader.token_store import GB, TokenStore

    dev = "cuda" if ctx["cuda"] else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    _, cache = _synth_cache(ctx, dev)
    ctx["cache"] = cache
    t["precompute_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ckpt = _train(cache, Path(ctx["work"]) / "run_store", dev, *val_args(ctx))
    t["train_store_s"] = time.perf_counter() - t0
    c = Cache(cache)
    samples = c.samples("exo2ego", "train")
    per_take = {}
    for s in samples:
        per_take.setdefault(s.take, []).append(s)
    largest = max(TokenStore.bytes_needed(c, v) for v in per_take.values())
    t0 = time.perf_counter()
    _train(
        cache,
        Path(ctx["work"]) / "run_blocks",
        dev,
        "--order",
        "blocks",
        "--token-store-gb",
        f"{(2 * largest + 2**16) / GB:.12f}",  # the largest take is just under half of it
        *val_args(ctx),
    )
    t["train_blocks_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    on_dev = _scores(cache, ckpt, torch.device(dev))
    on_cpu = _scores(cache, ckpt, torch.device("cpu"))
    t["eval_s"] = time.perf_counter() - t0
    diff_best = sum(a.best != b.best for a, b in zip(on_dev, on_cpu, strict=True))
    max_conf = max(abs(a.confidence - b.confidence) for a, b in zip(on_dev, on_cpu, strict=True))
    if diff_best or max_conf > CONF_TOL:
        raise RuntimeError(
            f"{dev} vs cpu fp32: {diff_best} masks differ, max confidence "
            f"difference {max_conf:.2e} (tolerance {CONF_TOL})"
        )
    return {**t, "pairs": len(on_cpu), "masks_differ": diff_best, "max_conf_diff": max_conf}


def section_nccl(ctx: dict) -> dict:
    cache = ctx.get("cache")
    if cache is None:
        raise RuntimeError("no cache: the end-to-end section failed before precompute ended")
    n = min(2, torch.cuda.device_count()) if ctx["cuda"] else 1
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMAMA_DIST"] = "1"
    dev = "cuda" if ctx["cuda"] else "cpu"
    out = Path(ctx["work"]) / f"run_ranks{n}"
    text = run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={n}",
            "-m",
            "omama.cli.train",
            *train_argv(cache, out, dev, *val_args(ctx)),
        ],
        Path(ctx["out"]) / "nccl.log",
        env=env,
    )
    backend = "nccl" if ctx["cuda"] else "gloo"
    if f"joined the {backend} process group" not in text:
        raise RuntimeError(f"the ranks did not report joining a {backend} group")
    return {"ranks": n, "backend": backend}


def section_bench(ctx: dict) -> dict:
    out = Path(ctx["out"])
    dev = "cuda" if ctx["cuda"] else "cpu"
    cmd = [
        sys.executable,
        "scripts/bench",
        "--device",
        dev,
        "--rows",
        "3,5,6,7",
        "--quiet-wait",
        "0",
        "--out",
        ctx["work"] / "bench",
        "--md",
        out / "bench.md",
        "--json",
        out / "bench.json",
    ]
    if not ctx["cuda"]:
        cmd[4:6] = ["--rows", "6"]
        cmd.append("--quick")
    run(cmd, out / "bench.log", timeout=420)
    rows = json.loads((out / "bench.json").read_text())["rows"]
    return {
        "rows": [
            {k: r[k] for k in ("row", "what", "project", "baseline", "ratio", "target", "met")}
            for r in rows
        ]
    }


SECTIONS: dict[str, Callable[[dict], dict]] = {
    "tests": section_tests,
    "end_to_end": section_end_to_end,
    "nccl": section_nccl,
    "bench": section_bench,
}


def markdown(result: dict) -> str:
    lines = [
        f"# GPU check: {result['device']}",
        "",
        f"`scripts/gpu_check.sh` ({result['date']}), torch {result['torch']}, "
        f"CUDA {'yes' if result['cuda'] else 'no (CPU rehearsal)'}.",
        "",
        "| section | status | seconds | failures |",
        "| --- | --- | --- | --- |",
    ]
    for name, s in result["sections"].items():
        fails = "; ".join(f.splitlines()[0][:120] for f in s["failures"]) or "-"
        lines.append(f"| {name} | {s['status']} | {s['seconds']:.1f} | {fails} |")
    bench = result["sections"].get("bench", {}).get("rows", [])
    if bench:
        lines += [
            "",
            f"Bench rows on {result['device']}:",
            "",
            "| row | what | project | baseline | ratio | target |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for r in bench:
            ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
            lines.append(
                f"| {r['row']} | {r['what']} | {r['project']} | {r['baseline']} | "
                f"{ratio} | {r['target']} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder for gpu_check.json, gpu_check.md and logs")
    ap.add_argument("--missing", default="", help="packages the wheelhouse could not supply")
    ap.add_argument("--sections", default=",".join(SECTIONS), help="a subset, e.g. tests,nccl")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    name = torch.cuda.get_device_name(0) if cuda else "CPU (no CUDA device)"
    result = {
        "cuda": cuda,
        "device": name,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "missing": args.missing.split(),
        "sections": {},
    }
    with tempfile.TemporaryDirectory(prefix="omama_gpu_check_") as work:
        ctx = {"cuda": cuda, "out": args.out, "work": Path(work)}
        for sec in args.sections.split(","):
            t0 = time.perf_counter()
            try:
                info, failures = SECTIONS[sec](ctx), []
            except Exception as exc:  # recorded; the next section still runs
                info, failures = {}, [f"{type(exc).__name__}: {exc}", traceback.format_exc()]
            status = "failed" if failures else ("passed" if cuda else "rehearsed")
            result["sections"][sec] = {
                "status": status,
                "seconds": time.perf_counter() - t0,
                **info,
                "failures": failures,
            }
            print(f"gpu_check: {sec} {status} in {time.perf_counter() - t0:.1f} s", flush=True)
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=1, default=str))
    (args.out / "gpu_check.md").write_text(markdown(result))
    ok = all(s["status"] != "failed" for s in result["sections"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
