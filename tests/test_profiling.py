"""--profile N: a Chrome/Perfetto JSON trace and a logged table of the top operators, from
omama-train and omama-eval, without changing what they compute."""

from __future__ import annotations

import json
import logging

from omama.cli.eval import main as eval_main
from omama.cli.train import main as train_main


def _check_trace(path) -> None:
    trace = json.loads(path.read_text())
    events = trace["traceEvents"]
    assert isinstance(events, list) and len(events) > 10
    assert any(e.get("ph") == "X" and e.get("name", "").startswith("aten::") for e in events)


def _check_table(caplog) -> None:
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "omama.profiling")
    assert "top operators by self time" in text and "Self CPU" in text
    assert "aten::" in text  # names the operators


def test_train_and_eval_profile(cache_dir, tmp_path, caplog, capsys):
    caplog.set_level(logging.INFO, logger="omama.profiling")
    base = ["--cache", str(cache_dir), "--workers", "0", "--device", "cpu"]
    train = ["--epochs", "1", "--batch-size", "4", "--n-masks", "8", "--val-split", "none"]
    logs = {}
    for name, extra in (("plain", []), ("profiled", ["--profile", "2"])):
        out = tmp_path / name
        assert train_main([*base, *train, "--out", str(out), *extra]) == 0
        logs[name] = json.loads((out / "log.json").read_text())["steps"]
    assert logs["profiled"] == logs["plain"]  # same losses and learning rates
    assert not (tmp_path / "plain" / "profile_trace.json").exists()
    _check_trace(tmp_path / "profiled" / "profile_trace.json")
    _check_table(caplog)

    caplog.clear()
    ckpt = [
        "--checkpoint",
        str(tmp_path / "profiled" / "last.pt"),
        "--split",
        "test",
        "--batch-size",
        "4",
    ]
    preds = {}
    for name, extra in (("plain", []), ("profiled", ["--profile", "1"])):
        out = tmp_path / f"{name}.json"
        assert eval_main([*base, *ckpt, "--out", str(out), *extra]) == 0
        preds[name] = json.loads(out.read_text())
    assert preds["profiled"] == preds["plain"]
    _check_trace(tmp_path / "profiled_profile_trace.json")
    _check_table(caplog)
    capsys.readouterr()


def test_profile_flag_is_explained(capsys):
    for main in (train_main, eval_main):
        try:
            main(["--help"])
        except SystemExit:
            pass
        text = capsys.readouterr().out
        assert "--profile PROFILE" in text and "torch.profiler" in text
