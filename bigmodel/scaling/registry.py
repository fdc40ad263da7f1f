"""The run registry of a sweep directory, and the one way fit and plot read a sweep.

A sweep directory holds `runs.csv` (one row per run, `COLUMNS`), one folder per run (the
trainer's `metrics.jsonl` and `summary.json`) and, after the analysis, `fit.json`. The runner
writes the registry through `write_registry` (atomic: a reader never sees half a table); fit and
plot read it through `load_points`, `run_metrics` and `read_sweep_fit`, never by hand.

Statuses: pending → running → done | failed | stopped. `stopped` is a run whose trainer exited
with `bigmodel.exit_codes.STOPPED` (75: stopped by a signal after checkpointing): the next sweep
resumes it like a pending run, and it is not a failure. Only `done` rows are points.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from bigmodel import files
from bigmodel.metrics import read_metrics
from bigmodel.scaling.points import Points, loss_unit, parse_number, points_from_csv, read_table, require_columns

REGISTRY_FILE = "runs.csv"
FIT_FILE = "fit.json"
SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.jsonl"
COLUMNS = (
    "name", "status", "params", "non_embedding_params", "tokens", "flops",
    "final_loss", "final_eval_loss", "eval_bpb", "wall_time_s", "error", "role", "parent",
    "backend", "job_id", "host", "attempts", "started_at", "finished_at",
)
# A BranchGrid's rows: role "stable" (a warmup-stable run: the branches' start, not a point of
# any fit) or "branch" (a cooldown from `parent`, the stable run's name); "" for other runs.
# Registries written before these columns existed read them as "", like the launch columns.
ROLE_COLUMNS = ("role", "parent")
STABLE = "stable"
RUNG = "rung"  # a ladder's run (`ladder.py`): a forecast to check, never a point of the fit
# Where and how a run was last launched: the backend (local, slurm, ...), its handle there (a pid,
# a Slurm job id), the host, how many times it was launched, and ISO-8601 UTC timestamps. A
# restarted sweep reads them to re-attach to runs still in flight. Registries written before
# these columns existed still load: a missing column reads as "".
LAUNCH_COLUMNS = ("backend", "job_id", "host", "attempts", "started_at", "finished_at")
PENDING, RUNNING, DONE, FAILED, STOPPED = "pending", "running", "done", "failed", "stopped"
STATUSES = (PENDING, RUNNING, DONE, FAILED, STOPPED)
PLANNED_COUNTS = ("params", "non_embedding_params", "tokens", "flops")  # the trainer's summary replaces them
RESULTS = ("final_loss", "final_eval_loss", "eval_bpb")

# Runs whose FLOPs agree this well share a compute budget. A sweep rounds each isoFLOP run to
# whole steps, which moves its FLOPs by at most half a step (5% at 10 steps) either way, and
# budgets are spaced 2× or more, so 10% groups every budget's runs and never two budgets.
BUDGET_RELATIVE_TOLERANCE = 0.10


# ----------------------------------------------------------------------------- rows


def row_for_run(run, status: str, summary: dict | None = None, error: str = "", wall_time_s: float | None = None) -> dict:
    """The registry row of a `sweep.Run`: its planned counts, replaced by the trainer's own
    numbers (`summary`) once it has written them."""
    summary = summary or {}
    row = {"name": run.name, "status": status, "error": error, "role": run.role, "parent": run.parent}
    for key in PLANNED_COUNTS:
        row[key] = summary.get(key, getattr(run, key))
    for key in RESULTS:
        value = summary.get(key)
        row[key] = "" if value is None else value
    wall = summary.get("wall_time_s", wall_time_s)
    row["wall_time_s"] = "" if wall is None else round(float(wall), 2)
    row.update(dict.fromkeys(LAUNCH_COLUMNS, ""))
    return row


def write_registry(directory: str | Path, rows: list[dict]) -> None:
    """Rewrite `directory/runs.csv` atomically with `rows` (dicts keyed by `COLUMNS`)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    files.write_atomically(Path(directory) / REGISTRY_FILE, buffer.getvalue())


def read_registry(directory: str | Path) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) pairs of `directory/runs.csv`, every row's status checked."""
    directory = Path(directory)
    path = directory / REGISTRY_FILE
    if not path.is_file():
        raise ValueError(f"{directory} has no {REGISTRY_FILE}: pass a sweep directory (python -m bigmodel sweep ...) or a CSV of points")
    header, rows = read_table(path)
    require_columns(path, header, ("name", "status", "non_embedding_params", "tokens", "flops", "final_loss", "final_eval_loss"),
                    "this is not a bigmodel sweep registry; pass a CSV with params,tokens,loss instead")
    for line, row in rows:
        for column in ROLE_COLUMNS + LAUNCH_COLUMNS:
            row.setdefault(column, "")
        if row["status"] not in STATUSES:
            raise ValueError(f"{path} line {line}: status {row['status']!r} is not one of {', '.join(STATUSES)}")
    return rows


# ----------------------------------------------------------------------------- run folders


def run_summary(directory: str | Path, name: str) -> dict | None:
    """A run's summary.json (written only once it finished), or None."""
    return files.read_json(Path(directory) / name / SUMMARY_FILE)


def run_metrics(directory: str | Path, name: str) -> list[dict]:
    """A run's metrics.jsonl records ([] without one; `bigmodel.metrics.read_metrics`)."""
    return read_metrics(Path(directory) / name)


def read_sweep_fit(directory: str | Path) -> dict | None:
    """The sweep's fit.json, or None when the analysis has not written one. One that is not a
    whole JSON object (cut short, edited) is a ValueError: drawing another law instead would hide it."""
    path = Path(directory) / FIT_FILE
    return read_fit(path) if path.exists() else None


def read_fit(path: str | Path) -> dict:
    """A fit.json that `bigmodel fit` (or a sweep's analysis) wrote; ValueError if it is not a
    whole JSON object (cut short, edited)."""
    fit = files.read_json(path)
    if fit is None:
        raise ValueError(f"{path} is not a whole JSON object (cut short?): write it again with python -m bigmodel fit ... --out {path}, "
                         "or delete it")
    return fit


# ----------------------------------------------------------------------------- the points view


def loss_name(uses_validation: np.ndarray) -> str:
    """What the points' loss is, for axis labels: validation loss wherever a run evaluated."""
    if uses_validation.all():
        return "validation loss"
    if not uses_validation.any():
        return "training loss"
    return f"validation loss ({(~uses_validation).sum()} runs without eval: training loss)"


def sweep_points(directory: str | Path, rungs: bool = False) -> Points:
    """One point per `done` row but stable runs (their loss is not cooled down: a branch of
    theirs is the point) and ladder rungs (forecasts to check): N = non_embedding_params, loss =
    final_eval_loss, else final_loss. A branch's group is its parent (the branches of one stable
    run share its noise). `rungs=True`: the done ladder rungs alone."""
    path = Path(directory) / REGISTRY_FILE
    values = {"non_embedding_params": [], "tokens": [], "flops": [], "loss": [], "total_params": []}
    names, groups, uses_validation, bytes_per_token = [], [], [], []
    for line, row in read_registry(directory):
        if row["status"] != DONE or row["role"] == STABLE or (row["role"] == RUNG) != rungs:
            continue
        validation = row["final_eval_loss"] != ""
        for field in ("non_embedding_params", "tokens", "flops"):
            values[field].append(parse_number(path, line, field, row[field]))
        values["total_params"].append(parse_number(path, line, "params", row["params"]) if row.get("params") else math.nan)
        loss_column = "final_eval_loss" if validation else "final_loss"
        values["loss"].append(parse_number(path, line, loss_column, row[loss_column]))
        names.append(row["name"])
        groups.append(row["parent"])
        uses_validation.append(validation)
        bytes_per_token.append(run_bytes_per_token(row))
    if not names and not rungs:
        raise ValueError(f"{path} has no finished runs (status {DONE!r}): run or resume the sweep first")
    arrays = {field: np.asarray(column, dtype=float) for field, column in values.items()}
    return Points(**arrays, loss_name=loss_name(np.array(uses_validation)), names=tuple(names), groups=tuple(groups),
                  loss_unit=loss_unit(bytes_per_token))


def run_bytes_per_token(row: dict[str, str]) -> float:
    """Bytes per token of a registry row (or a run's summary.json: the same keys), from its eval
    loss and bits per byte (NaN without them)."""
    try:
        return float(row["final_eval_loss"]) / math.log(2) / float(row.get("eval_bpb", ""))
    except (TypeError, ValueError, ZeroDivisionError):
        return math.nan


def load_points(path: str | Path) -> Points:
    """Points from a sweep directory (its registry) or a CSV of the user's own runs."""
    path = Path(path)
    if path.is_dir():
        return sweep_points(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist: pass a CSV with params,tokens,loss[,flops] or a sweep directory with {REGISTRY_FILE}")
    return points_from_csv(path)


# ----------------------------------------------------------------------------- compute budgets


def group_budgets(flops, min_points: int = 1) -> np.ndarray:
    """The one rule for runs that share a compute budget: a label per run (0, 1, … by FLOPs).

    Sorted by FLOPs, a run joins the current budget when its FLOPs are within
    `BUDGET_RELATIVE_TOLERANCE` of that budget's smallest run, else it starts the next budget.
    Measuring from the smallest (not the previous) run keeps a chain of near neighbours from
    growing into one wide budget. Runs without positive finite FLOPs, and budgets of fewer than
    `min_points` runs, get -1; the kept budgets are numbered 0, 1, … again.
    """
    flops = np.asarray(flops, dtype=float)
    labels = np.full(len(flops), -1)
    valid = np.flatnonzero(np.isfinite(flops) & (flops > 0))
    group, start = -1, math.nan
    for index in valid[np.argsort(flops[valid], kind="stable")]:
        if not flops[index] <= start * (1 + BUDGET_RELATIVE_TOLERANCE):  # also true for the first run (NaN start)
            group, start = group + 1, flops[index]
        labels[index] = group
    if group < 0:
        return labels
    sizes = np.bincount(labels[labels >= 0], minlength=group + 1)
    new_label = np.where(sizes >= min_points, np.cumsum(sizes >= min_points) - 1, -1)
    return np.where(labels >= 0, new_label[np.maximum(labels, 0)], -1)


def budget_flops(flops) -> float:
    """A budget's compute: its runs' FLOPs when they agree exactly, else their geometric mean."""
    flops = np.asarray(flops, dtype=float)
    return float(flops[0] if np.all(flops == flops[0]) else np.exp(np.mean(np.log(flops))))
