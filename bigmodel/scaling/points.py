"""Read the (params, tokens, loss, flops) points a scaling fit needs, from a CSV or a sweep.

Two inputs:
- a CSV with columns `params,tokens,loss` and optionally `flops` (other columns are ignored;
  lines starting with `#` are comments, so a file can carry its attribution);
- a sweep directory holding `runs.csv` (the registry the sweep runner writes). Only rows with
  status `done` count. `params` is the `non_embedding_params` column: Kaplan's N, the count the
  scaling literature fits against (embeddings are a lookup, not FLOPs); the loss is
  `final_eval_loss`, or `final_loss` for a run that never evaluated.

Every problem is one `ValueError` line naming the file, the line or column, and the fix.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

POINT_COLUMNS = ("params", "tokens", "loss")
SWEEP_REGISTRY = "runs.csv"
SWEEP_COLUMNS = ("status", "non_embedding_params", "tokens", "flops", "final_loss", "final_eval_loss")


def read_table(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and (line number, row) pairs of a CSV, skipping blank and `#` comment lines."""
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror}") from None
    numbered = [(number, line) for number, line in enumerate(lines, start=1) if line.strip() and not line.lstrip().startswith("#")]
    if not numbered:
        raise ValueError(f"{path} is empty: write a header line params,tokens,loss[,flops] and one row per run")
    reader = csv.reader(line for _, line in numbered)
    header = [name.strip() for name in next(reader)]
    rows = []
    for (number, _), values in zip(numbered[1:], reader):
        rows.append((number, dict(zip(header, (value.strip() for value in values)))))
    return header, rows


def _require_columns(path: Path, header: list[str], required: tuple[str, ...], hint: str) -> None:
    missing = [name for name in required if name not in header]
    if missing:
        raise ValueError(f"{path} has no {', '.join(repr(name) for name in missing)} column (it has {', '.join(header) or 'none'}): {hint}")


def parse_number(path: Path, line: int, column: str, text: str | None, *, positive: bool = True) -> float:
    """A finite (positive) float from one cell, or a one-line error that points at the cell."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or (positive and value <= 0):
        kind = "a positive number" if positive else "a number"
        raise ValueError(f"{path} line {line}: column {column!r} is {text!r}, not {kind}: fix or delete that row")
    return value


def _optional_number(path: Path, line: int, column: str, text: str | None) -> float:
    """Empty cell → NaN (the value is optional); anything else must parse."""
    return math.nan if text in (None, "") else parse_number(path, line, column, text)


def _points_from_csv(path: Path) -> dict[str, np.ndarray]:
    header, rows = read_table(path)
    _require_columns(path, header, POINT_COLUMNS, "a points CSV needs columns params,tokens,loss and optionally flops")
    points = {name: [] for name in (*POINT_COLUMNS, "flops")}
    for line, row in rows:
        for name in POINT_COLUMNS:
            points[name].append(parse_number(path, line, name, row.get(name)))
        points["flops"].append(_optional_number(path, line, "flops", row.get("flops")))
    return {name: np.asarray(values, dtype=float) for name, values in points.items()}


def _points_from_sweep(directory: Path) -> dict[str, np.ndarray]:
    path = directory / SWEEP_REGISTRY
    if not path.is_file():
        raise ValueError(f"{directory} has no {SWEEP_REGISTRY}: pass a sweep directory (python -m bigmodel sweep ...) or a CSV of points")
    header, rows = read_table(path)
    _require_columns(path, header, SWEEP_COLUMNS, "this is not a sweep registry; pass a CSV with params,tokens,loss instead")
    points = {name: [] for name in (*POINT_COLUMNS, "flops")}
    for line, row in rows:
        if row.get("status") != "done":
            continue
        loss_text = row.get("final_eval_loss") or row.get("final_loss")
        points["params"].append(parse_number(path, line, "non_embedding_params", row.get("non_embedding_params")))
        points["tokens"].append(parse_number(path, line, "tokens", row.get("tokens")))
        points["loss"].append(parse_number(path, line, "final_eval_loss/final_loss", loss_text))
        points["flops"].append(_optional_number(path, line, "flops", row.get("flops")))
    if not points["loss"]:
        raise ValueError(f"{path} has no finished runs (status 'done'): run or resume the sweep first")
    return {name: np.asarray(values, dtype=float) for name, values in points.items()}


def load_points(path: str | Path) -> dict[str, np.ndarray]:
    """`{"params", "tokens", "loss", "flops"}` float arrays from a CSV or a sweep directory.

    `flops` is NaN where the input has none. Raises ValueError (one line) on a missing path,
    a missing column or a cell that is not a positive number.
    """
    path = Path(path)
    if path.is_dir():
        return _points_from_sweep(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist: pass a CSV with params,tokens,loss[,flops] or a sweep directory with {SWEEP_REGISTRY}")
    points = _points_from_csv(path)
    if not len(points["loss"]):
        raise ValueError(f"{path} has a header but no rows: add one row per run")
    return points
