"""`python -m bigmodel status DIR [--watch S] [--json]`: where every run of a sweep stands.

Reads only what the sweep and its trainers already write, so it works while the sweep runs (from
any machine that sees the shared workdir) and after it: the registry (`runs.csv`: status,
backend, host), each run's `config.json` (its planned steps) and `metrics.jsonl` (the last
logged step, loss, tokens/s and step time; a torn last line is skipped). It never writes.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from bigmodel import files
from bigmodel.scaling import registry
from bigmodel.scaling.registry import DONE, FAILED, PENDING, RUNNING, STATUSES, STOPPED

CONFIG_FILE = "config.json"
MIN_WATCH_S, MAX_WATCH_S = 0.1, 86_400  # below 0.1 s a refresh only spins the CPU and floods the terminal
COLUMNS = ("run", "status", "where", "step", "loss", "eval loss", "tokens/s", "ETA")


def planned_steps(run_dir: Path) -> int | None:
    """train.steps from the config.json the trainer wrote at its start (None before that)."""
    config = files.read_json(run_dir / CONFIG_FILE)
    try:
        return int(config["train"]["steps"])
    except (TypeError, KeyError, ValueError):
        return None


def last_records(metrics: list[dict]) -> tuple[dict | None, dict | None]:
    """The last training record (has `loss`) and the last evaluation (has `eval_loss`)."""
    train = next((record for record in reversed(metrics) if "loss" in record), None)
    evaluation = next((record for record in reversed(metrics) if "eval_loss" in record), None)
    return train, evaluation


def registry_number(text: str | None) -> float | None:
    """A result cell of runs.csv ("" until the run has one); used when a run's folder is gone."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def eta_seconds(status: str, step: int | None, steps: int | None, step_time_s: float | None) -> float | None:
    """Time left for a running run at its last logged pace; 0 once done; None when unknown."""
    if status == DONE:
        return 0.0
    if status != RUNNING or None in (step, steps, step_time_s):
        return None
    return max(steps - step, 0) * step_time_s


def run_status(directory: Path, row: dict) -> dict:
    """One run's line of the table, as plain values (the --json record)."""
    run_dir = directory / row["name"]
    steps = planned_steps(run_dir)
    train, evaluation = last_records(registry.run_metrics(directory, row["name"]))
    step = train["step"] if train else None
    if row["status"] == DONE and steps is not None:
        step = steps
    step_time_s = train.get("step_time_s") if train else None
    return {
        "run": row["name"],
        "status": row["status"],
        "backend": row.get("backend") or "",
        "host": row.get("host") or "",
        "job_id": row.get("job_id") or "",
        "step": step,
        "steps": steps,
        "loss": train["loss"] if train else registry_number(row.get("final_loss")),
        "eval_loss": evaluation["eval_loss"] if evaluation else registry_number(row.get("final_eval_loss")),
        "tokens_per_s": train.get("tokens_per_s") if train else None,
        "eta_s": eta_seconds(row["status"], step, steps, step_time_s),
        "error": row.get("error") or "",
    }


def sweep_status(directory: str | Path) -> list[dict]:
    """Every run of the sweep in registry order (a missing or foreign runs.csv: ValueError)."""
    directory = Path(directory)
    return [run_status(directory, row) for _, row in registry.read_registry(directory)]


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def table_cells(record: dict) -> tuple[str, ...]:
    where = "/".join(part for part in (record["backend"], record["host"]) if part) or "-"
    step = "-" if record["step"] is None else f"{record['step']}/{record['steps'] if record['steps'] is not None else '?'}"
    number = lambda value, spec: "-" if value is None else format(value, spec)  # noqa: E731
    return (record["run"], record["status"], where, step, number(record["loss"], ".4f"),
            number(record["eval_loss"], ".4f"), number(record["tokens_per_s"], ",.0f"), format_duration(record["eta_s"]))


def summary_line(records: list[dict]) -> str:
    """"6 runs: 2 done, 1 running, 3 pending; ETA of running runs 4m10s"."""
    counts = {status: sum(record["status"] == status for record in records) for status in STATUSES}
    parts = [f"{counts[status]} {status}" for status in (DONE, RUNNING, PENDING, STOPPED, FAILED) if counts[status]]
    running_etas = [record["eta_s"] for record in records if record["status"] == RUNNING and record["eta_s"] is not None]
    eta = f"; running runs finish in {format_duration(max(running_etas))}" if running_etas else ""
    return f"{len(records)} runs: {', '.join(parts)}{eta}"


def format_table(records: list[dict]) -> str:
    rows = [COLUMNS] + [table_cells(record) for record in records]
    widths = [max(len(row[column]) for row in rows) for column in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) if column < 3 else cell.rjust(width)
                       for column, (cell, width) in enumerate(zip(row, widths))).rstrip() for row in rows]
    failures = [f"  {record['run']}: {record['error']}" for record in records if record["status"] == FAILED and record["error"]]
    return "\n".join(lines + ([summary_line(records)] + (["failed:"] + failures if failures else [])))


def status_command(directory: str, watch_s: float | None, as_json: bool) -> int:
    """Print the table (or JSON lines) once, or every `watch_s` seconds until Ctrl-C."""
    from bigmodel.config import ConfigError

    if watch_s is not None and not MIN_WATCH_S <= watch_s <= MAX_WATCH_S:  # also NaN; time.sleep refuses NaN and overflows on inf
        raise ConfigError(f"--watch takes a positive number of seconds, from {MIN_WATCH_S} (watch(1)'s floor) to {MAX_WATCH_S:,} (a day), got {watch_s}")
    if not Path(directory).is_dir():
        raise ConfigError(f"{directory} is not a directory: pass the --workdir of a sweep")
    if not (Path(directory) / registry.REGISTRY_FILE).is_file():
        raise ConfigError(f"{directory} has no {registry.REGISTRY_FILE}: pass the --workdir of a sweep (python -m bigmodel sweep ...)")
    try:
        while True:
            try:
                records = sweep_status(directory)
            except ValueError as error:
                raise ConfigError(str(error)) from None
            text = "\n".join(json.dumps(record) for record in records) if as_json else format_table(records)
            if watch_s is None:
                print(text, flush=True)
                return 0
            clear = "\033[H\033[2J" if sys.stdout.isatty() else ""
            print(f"{clear}{directory}  {time.strftime('%H:%M:%S')}  (every {watch_s:g}s; Ctrl-C to quit)\n{text}", flush=True)
            time.sleep(watch_s)
    except KeyboardInterrupt:
        return 0
