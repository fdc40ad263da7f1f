"""What the scaling plots read: a sweep directory (runs.csv + per-run metrics) or a points CSV.

A sweep directory `runs/<study>/` holds `runs.csv` (one row per run), an optional `fit.json`,
and one folder per run with `metrics.jsonl` (training lines: step, loss, tokens_seen, ...;
eval lines: step, eval_loss) and `summary.json`. A CSV holds bare points
(params, tokens, loss[, flops]) and is read by `bigmodel.scaling.fit.load_points`, so both tools
accept exactly the same files.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Only finished runs are points: a failed or unfinished run's last loss is not its final loss.
# The sweep runner writes "finished"; "done" is what hand-made registries (and fit.py) use.
DONE_STATUSES = ("done", "finished")


@dataclass
class RunCurve:
    """One run's training curve: loss against tokens seen, plus its eval points."""

    name: str
    params: float  # non-embedding parameters N (Kaplan), the size the plots colour by
    tokens: np.ndarray
    loss: np.ndarray
    eval_tokens: np.ndarray = field(default_factory=lambda: np.zeros(0))
    eval_loss: np.ndarray = field(default_factory=lambda: np.zeros(0))
    flops_per_token: float = math.nan  # training FLOPs/token: C = tokens × this


@dataclass
class SweepData:
    """Points (one per finished run or CSV row) and, for sweep directories, training curves."""

    params: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray
    flops: np.ndarray
    loss_name: str  # "validation loss", "training loss" or "loss" (a CSV does not say)
    params_name: str  # axis label for params
    curves: list[RunCurve] = field(default_factory=list)
    fit: dict | None = None  # the sweep's fit.json, when it has one


def _number(text: str | None) -> float:
    """A CSV cell as a float; empty or unparseable cells are NaN (a run without eval, say)."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def read_metrics(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """`metrics.jsonl` → (training {step, tokens, loss}, eval {step, tokens, loss}) arrays.

    Lines that are not JSON objects are skipped: a run killed mid-write leaves a partial last
    line, and one torn line should not cost the whole curve. A resumed run logs again the steps
    after its last checkpoint; the later line of a step wins (it led to the final weights).
    """
    train, evals = {}, {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict):
            continue
        step = record.get("step", len(train) + len(evals))
        if "loss" in record and "tokens_seen" in record:
            train[step] = (step, record["tokens_seen"], record["loss"])
        if "eval_loss" in record:
            evals[step] = (step, record.get("tokens_seen", math.nan), record["eval_loss"])
    train_array = np.array(sorted(train.values()), dtype=float).reshape(-1, 3)
    eval_array = np.array(sorted(evals.values()), dtype=float).reshape(-1, 3)
    # Eval lines carry a step but usually no token count: read it off the training curve.
    missing = np.isnan(eval_array[:, 1])
    if missing.any() and len(train_array):
        eval_array[missing, 1] = np.interp(eval_array[missing, 0], train_array[:, 0], train_array[:, 1])
    as_dict = lambda array: {"step": array[:, 0], "tokens": array[:, 1], "loss": array[:, 2]}  # noqa: E731
    return as_dict(train_array), as_dict(eval_array)


def read_run_curve(run_dir: Path, params: float, flops_per_token: float) -> RunCurve | None:
    """A run folder's curve, or None when it has no metrics.jsonl."""
    metrics_path = run_dir / "metrics.jsonl"
    if not metrics_path.is_file():
        return None
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        flops_per_token = float(summary.get("flops_per_token", flops_per_token))
    train, evals = read_metrics(metrics_path)
    return RunCurve(
        name=run_dir.name,
        params=params,
        tokens=train["tokens"],
        loss=train["loss"],
        eval_tokens=evals["tokens"],
        eval_loss=evals["loss"],
        flops_per_token=flops_per_token,
    )


def load_sweep_dir(sweep_dir: Path) -> SweepData:
    """`runs.csv` rows with status "done" → points; each run folder's metrics → curves."""
    registry = sweep_dir / "runs.csv"
    if not registry.is_file():
        raise ValueError(f"{sweep_dir} has no runs.csv: pass a sweep directory (runs/<study>) or a CSV of points")
    with registry.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("status", "done") in DONE_STATUSES]
    needed = {"name", "non_embedding_params", "tokens", "flops", "final_loss"}
    if rows and not needed <= set(rows[0]):
        raise ValueError(f"{registry} lacks columns {sorted(needed - set(rows[0]))}: is it a bigmodel sweep registry?")
    eval_loss = np.array([_number(row.get("final_eval_loss")) for row in rows])
    train_loss = np.array([_number(row["final_loss"]) for row in rows])
    use_eval = ~np.isnan(eval_loss)
    params = np.array([_number(row["non_embedding_params"]) for row in rows])
    tokens = np.array([_number(row["tokens"]) for row in rows])
    flops = np.array([_number(row["flops"]) for row in rows])
    curves = []
    for row, n, d, c in zip(rows, params, tokens, flops, strict=True):
        curve = read_run_curve(sweep_dir / row["name"], n, c / d if d else math.nan)
        if curve is not None and len(curve.tokens):
            curves.append(curve)
    fit_path = sweep_dir / "fit.json"
    return SweepData(
        params=params,
        tokens=tokens,
        loss=np.where(use_eval, eval_loss, train_loss),
        flops=flops,
        loss_name="validation loss" if use_eval.all() else "training loss" if not use_eval.any() else "final loss (validation where measured)",
        params_name="non-embedding parameters N",
        curves=curves,
        fit=json.loads(fit_path.read_text()) if fit_path.is_file() else None,
    )


def load_input(path: str | Path) -> SweepData:
    """A sweep directory or a points CSV (params, tokens, loss[, flops]) as `SweepData`."""
    path = Path(path)
    if path.is_dir():
        return load_sweep_dir(path)
    if not path.is_file():
        raise ValueError(f"{path} not found: pass a sweep directory (runs/<study>) or a CSV of points")
    from bigmodel.scaling.fit import load_points

    points = load_points(path)
    return SweepData(
        params=np.asarray(points["params"], dtype=float),
        tokens=np.asarray(points["tokens"], dtype=float),
        loss=np.asarray(points["loss"], dtype=float),
        flops=np.asarray(points["flops"], dtype=float),
        loss_name="loss",
        params_name="parameters N",
    )


def group_budgets(flops: np.ndarray, relative_tolerance: float = 0.1, min_points: int = 1) -> np.ndarray:
    """Label runs that share a compute budget: a budget index, or -1 for none.

    A sweep's isoFLOP runs only approximately share C (steps are rounded to whole batches), so
    budgets are runs of sorted FLOPs within `relative_tolerance` of their group's smallest.
    Budgets with fewer than `min_points` runs are dropped (-1) and the rest renumbered.
    """
    labels = np.full(len(flops), -1)
    order = [index for index in np.argsort(flops) if np.isfinite(flops[index]) and flops[index] > 0]
    group, start = -1, None
    for index in order:
        if start is None or flops[index] > start * (1 + relative_tolerance):
            group, start = group + 1, flops[index]
        labels[index] = group
    kept = [label for label in range(group + 1) if (labels == label).sum() >= min_points]
    return np.array([kept.index(label) if label in kept else -1 for label in labels], dtype=int)


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average that keeps the length (shorter windows at the edges)."""
    if window <= 1 or len(values) < 3:
        return np.asarray(values, dtype=float)
    kernel = np.ones(window)
    total = np.convolve(values, kernel, mode="same")
    count = np.convolve(np.ones(len(values)), kernel, mode="same")
    return total / count
