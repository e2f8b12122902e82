"""scripts/gpu_check.sh without CUDA: every section rehearsed on the CPU, exit 0, both files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the real check runs")
def test_the_gpu_check_rehearses_on_the_cpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_SITE": str(tmp_path / "site")}
    env["WHEELHOUSE"] = str(tmp_path / "no_wheels")  # everything is installed here
    out = tmp_path / "out"
    res = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    result = json.loads((out / "gpu_check.json").read_text())
    assert res.returncode == 0, json.dumps(result["sections"], indent=1)[-3000:]
    assert result["cuda"] is False and result["missing"] == []
    assert list(result["sections"]) == ["tests", "end_to_end", "nccl", "bench"]
    for name, sec in result["sections"].items():
        assert sec["status"] == "rehearsed" and sec["failures"] == [], name
        assert sec["seconds"] > 0
    assert result["sections"]["tests"]["collected"] >= 5
    e2e = result["sections"]["end_to_end"]
    assert e2e["masks_differ"] == 0 and e2e["max_conf_diff"] <= 1e-4 and e2e["pairs"] > 0
    assert result["sections"]["nccl"] == {**result["sections"]["nccl"], "backend": "gloo"}
    assert [r["row"] for r in result["sections"]["bench"]["rows"]][0] == "6"
    md = (out / "gpu_check.md").read_text()
    assert "| end_to_end | rehearsed |" in md and "Bench rows" in md
