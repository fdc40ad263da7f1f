"""Run outputs: metrics.jsonl, TensorBoard scalars (and Weights & Biases when configured), a progress bar.

Only process 0 writes; other processes get writers whose methods do nothing.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from tqdm import tqdm

from bigmodel.files import read_jsonl, write_jsonl_atomic

METRICS_FILE = "metrics.jsonl"


def is_metrics_record(record) -> bool:
    """A JSON object with an integer step: what MetricsLog writes."""
    return isinstance(record, dict) and isinstance(record.get("step"), int) and not isinstance(record["step"], bool)


def read_metrics(workdir: Path) -> list[dict]:
    """metrics.jsonl's records, each with its step (a torn last line from a killed process is
    skipped with a warning; a bad line elsewhere is a ConfigError naming it)."""
    return read_jsonl(Path(workdir) / METRICS_FILE, is_metrics_record)


def truncate_metrics_after(workdir: Path, step: int) -> None:
    """Drop lines logged after `step`: a resumed run re-logs them, so the curve stays single-valued."""
    path = Path(workdir) / METRICS_FILE
    if path.exists():
        write_jsonl_atomic(path, [record for record in read_metrics(workdir) if record.get("step", 0) <= step])


def scalars(record: dict) -> dict:
    """The finite numbers of a record, step aside: what TensorBoard and W&B plot."""
    return {key: value for key, value in record.items() if key != "step" and isinstance(value, (int, float)) and math.isfinite(value)}


def summary_writer_class():
    """tensorboardX's SummaryWriter, imported without PyTorch. tensorboardX tries `import torch`
    only to accept torch tensors (a run logs Python floats), and where torch is installed (the
    HF export's extra) that import costs about 2 CPU-seconds and far more wall time of every
    trainer's start. With "torch" marked absent while tensorboardX loads, it falls back to NumPy;
    a process that has torch already loaded keeps it."""
    if "tensorboardX.writer" not in sys.modules and "torch" not in sys.modules:
        sys.modules["torch"] = None  # `import torch` raises ImportError, as if not installed
        try:
            import tensorboardX.writer  # noqa: F401 — loaded once, here
        finally:
            del sys.modules["torch"]
    from tensorboardX import SummaryWriter

    return SummaryWriter


class MetricsLog:
    """Appends one JSON object per record to metrics.jsonl and mirrors scalars to TensorBoard,
    and to W&B when the run's config names a project (`config.logging.wandb`, see wandb_log.py)."""

    def __init__(self, workdir: Path, enabled: bool = True, config=None):
        self.enabled = enabled
        if not enabled:
            return
        from bigmodel import wandb_log

        project = wandb_log.project_of(config) if config is not None else ""
        self._wandb = wandb_log.WandbRun(project, Path(workdir), config.to_dict()) if project else None
        self._file = open(Path(workdir) / METRICS_FILE, "a")
        self._tensorboard = summary_writer_class()(str(Path(workdir) / "tensorboard"))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        values = scalars(record)
        for key, value in values.items():
            self._tensorboard.add_scalar(key, value, record["step"])
        if self._wandb is not None:
            self._wandb.log(values, record["step"])

    def summarize(self, summary: dict | None) -> None:
        """The finished run's summary.json (None: unfinished), for W&B's run summary (train writes the file)."""
        if self.enabled and self._wandb is not None and summary is not None:
            self._wandb.summarize(summary)

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            self._tensorboard.close()
            if self._wandb is not None:
                self._wandb.close()
                self._wandb = None


class Progress:
    """A tqdm bar (steps, loss, tokens/s, ETA) on a terminal; plain log lines otherwise."""

    def __init__(self, total_steps: int, start_step: int, enabled: bool = True):
        self.enabled = enabled
        self.total_steps = total_steps
        self.interactive = enabled and sys.stderr.isatty()
        self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True) if self.interactive else None
        self._start_time, self._start_step = time.perf_counter(), start_step

    def update(self, step: int, record: dict) -> None:
        if not self.enabled:
            return
        loss, rate = record.get("loss"), record.get("tokens_per_s")
        if self._bar is not None:
            self._bar.n = step
            self._bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{rate:,.0f}", refresh=False)
            self._bar.refresh()
            return
        elapsed = time.perf_counter() - self._start_time
        done = max(step - self._start_step, 1)
        eta = elapsed / done * (self.total_steps - step)
        print(f"step {step}/{self.total_steps} loss {loss:.4f} tokens/s {rate:,.0f} eta {eta:.0f}s", flush=True)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        (self._bar.write if self._bar is not None else print)(text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
