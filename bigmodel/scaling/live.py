"""The sweep's one live line on an interactive terminal: counts, elapsed time and an ETA,
redrawn in place between the driver's own lines; nothing at all when output is a file or pipe."""

from __future__ import annotations

import sys
import time

from bigmodel.scaling.registry import DONE, FAILED, PENDING, RUNNING, STOPPED
from bigmodel.scaling.status import format_duration

CLEAR_LINE = "\r\033[K"


def summary_text(statuses: list[str], elapsed_s: float, eta_s: float | None) -> str:
    """"sweep: 2 done, 1 running, 3 pending · 1m05s · ETA ~4m10s" (statuses with no run left out;
    durations as `status` prints them)."""
    counts = [f"{statuses.count(status)} {status}" for status in (DONE, RUNNING, PENDING, STOPPED, FAILED) if status in statuses]
    eta = "" if eta_s is None else f" · ETA ~{format_duration(eta_s)}"
    return f"sweep: {', '.join(counts)} · {format_duration(elapsed_s)}{eta}"


def sweep_eta(running_etas: list[float | None], pending_estimates: list[float], concurrency: int) -> float | None:
    """The running runs' longest time left (at their logged pace) plus the pending runs'
    estimates shared over the concurrent slots; None while a running run has not logged yet."""
    if any(eta is None for eta in running_etas):
        return None
    return max(running_etas, default=0.0) + sum(pending_estimates) / max(concurrency, 1)


class LiveLine:
    """Redraws one line in place at most every `every_s` seconds; `clear()` before printing a
    normal line. Disabled unless the stream is a terminal."""

    def __init__(self, stream=None, enabled: bool | None = None, every_s: float = 1.0):
        self.stream = stream or sys.stdout
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.every_s, self.last_shown, self.visible = every_s, -float("inf"), False

    def due(self) -> bool:
        return self.enabled and time.monotonic() - self.last_shown >= self.every_s

    def show(self, text: str) -> None:
        if not self.enabled:
            return
        self.stream.write(CLEAR_LINE + text)
        self.stream.flush()
        self.last_shown, self.visible = time.monotonic(), True

    def clear(self) -> None:
        if self.visible:
            self.stream.write(CLEAR_LINE)
            self.stream.flush()
            self.visible = False
