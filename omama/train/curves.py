"""Training curves as a PNG next to log.json: loss per step, validation metrics per epoch.

Drawn on a `Figure` of its own, not through pyplot's global figure list, so the run's saver
thread may draw while the main thread goes on."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from omama.files import atomic_path


def plot_curves(history: dict, path: Path) -> None:
    fig = Figure(figsize=(10, 3.6))
    ax_loss, ax_val = fig.subplots(1, 2)
    steps = history.get("steps", [])
    ax_loss.plot([s["step"] for s in steps], [s["loss"] for s in steps], color="tab:blue")
    ax_loss.set(xlabel="step", ylabel="training loss", title="loss")
    epochs = [e for e in history.get("epochs", []) if "iou" in e]
    for name, colour in (
        ("iou", "tab:green"),
        ("shape_acc", "tab:orange"),
        ("balanced_acc", "tab:purple"),
    ):
        ax_val.plot(
            [e["epoch"] for e in epochs], [e[name] for e in epochs], "o-", color=colour, label=name
        )
    ax_val.set(xlabel="epoch", ylim=(0, 1), title="validation")
    if epochs:
        ax_val.legend(loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
