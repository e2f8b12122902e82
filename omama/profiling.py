"""`--profile N`: where the time of N training steps or scoring batches goes, on any machine.

    prof = StepProfiler(cfg.profile, out / "profile_trace.json", device, total=n_steps)
    for batch in loader:
        work(batch)
        prof.step()  # after each step: starts, and later stops, the recording by itself
    prof.close()  # stops a recording the run ended inside of (fewer steps than asked)

The first `WARMUP` steps are skipped when there are enough (`total`) to still record N after
them: first steps pay for worker start-up, allocator growth and kernel selection. The N steps
are recorded with torch.profiler (CPU always, CUDA too on a cuda device); the trace is written
atomically as plain JSON that chrome://tracing and https://ui.perfetto.dev open, and the
operators taking the most self time are logged as a table. Recording only observes: losses
and predictions are the same with or without it. N = 0 makes every call a no-op.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from omama.files import atomic_path

log = logging.getLogger(__name__)

WARMUP = 2  # steps skipped before recording, when the run has enough of them
TOP_ROWS = 15  # operators in the logged table


class StepProfiler:
    """Records `steps` consecutive steps (after a short warm-up) and writes `trace`."""

    def __init__(
        self, steps: int, trace: Path, device: torch.device, total: int | None = None
    ) -> None:
        self.steps, self.trace, self.device = steps, Path(trace), torch.device(device)
        self.skip = WARMUP if total is None else min(WARMUP, max(0, total - steps))
        self.done = 0  # steps finished so far
        self.table = ""  # the logged summary, once written
        self._prof: profile | None = None
        if steps and self.skip == 0:
            self._start()

    def step(self) -> None:
        """Call once after each step."""
        if not self.steps or self.done >= self.skip + self.steps:
            return
        self.done += 1
        if self._prof is not None:
            self._prof.step()
        if self.done == self.skip:
            self._start()
        elif self.done == self.skip + self.steps:
            self._finish()

    def close(self) -> None:
        """Write what was recorded if the run ended inside the recording; idempotent."""
        if self._prof is not None:
            log.warning(
                "profile: the run ended after %d of %d recorded steps",
                self.done - self.skip,
                self.steps,
            )
            self._finish()

    def _start(self) -> None:
        activities = [ProfilerActivity.CPU]
        if self.device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        self._prof = profile(activities=activities)
        self._prof.start()

    def _finish(self) -> None:
        prof, self._prof = self._prof, None
        assert prof is not None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the last kernels belong to the last step
        prof.stop()
        with atomic_path(self.trace) as tmp:
            prof.export_chrome_trace(str(tmp))
        sort = "self_cuda_time_total" if self.device.type == "cuda" else "self_cpu_time_total"
        self.table = prof.key_averages().table(sort_by=sort, row_limit=TOP_ROWS)
        log.info(
            "profile of %d steps after %d warm-up: trace %s (open in https://ui.perfetto.dev "
            "or chrome://tracing); top operators by self time:\n%s",
            self.done - self.skip,
            self.skip,
            self.trace,
            self.table,
        )
