"""What the scaling plots read: the points (`registry.load_points`), each run's curves, the fit.

A sweep directory gives points, one curve per finished run (its metrics.jsonl: training lines
with step, loss, tokens_seen; eval lines with step, eval_loss) and its fit.json; a CSV gives
points only. Everything is read through `bigmodel.scaling.registry`, so fit and plot accept
exactly the same inputs and agree on which runs count.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from bigmodel.scaling import registry
from bigmodel.scaling.points import Points


@dataclasses.dataclass(frozen=True)
class RunCurve:
    """One run's losses against tokens seen: training lines and eval points."""

    name: str
    non_embedding_params: float  # the size the plots colour by
    tokens: np.ndarray
    loss: np.ndarray
    eval_tokens: np.ndarray
    eval_loss: np.ndarray
    flops_per_token: float  # training FLOPs per token: C = tokens × this

    @property
    def has_eval(self) -> bool:
        return len(self.eval_loss) > 0

    def compute_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(training compute, loss) for the loss the run's final point reports: validation
        where the run evaluated, else training."""
        tokens, loss = (self.eval_tokens, self.eval_loss) if self.has_eval else (self.tokens, self.loss)
        keep = (tokens > 0) & np.isfinite(loss)
        return tokens[keep] * self.flops_per_token, loss[keep]


@dataclasses.dataclass(frozen=True)
class PlotInput:
    points: Points
    curves: list[RunCurve]  # empty for a CSV
    fit: dict | None  # the sweep's fit.json, when it has one


def split_metrics(records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """metrics.jsonl records → (training [step, tokens, loss], eval [step, tokens, loss]) rows.

    A resumed run logs again the steps after its last checkpoint; the later line of a step wins
    (it led to the final weights). Eval lines carry a step but no token count: it is read off
    the training curve.
    """
    train, evals = {}, {}
    for record in records:
        step = record.get("step", len(train) + len(evals))
        if "loss" in record and "tokens_seen" in record:
            train[step] = (step, record["tokens_seen"], record["loss"])
        if "eval_loss" in record:
            evals[step] = (step, record.get("tokens_seen", math.nan), record["eval_loss"])
    train_rows = np.array(sorted(train.values()), dtype=float).reshape(-1, 3)
    eval_rows = np.array(sorted(evals.values()), dtype=float).reshape(-1, 3)
    missing = np.isnan(eval_rows[:, 1])
    if missing.any() and len(train_rows):
        eval_rows[missing, 1] = np.interp(eval_rows[missing, 0], train_rows[:, 0], train_rows[:, 1])
    return train_rows, eval_rows


def run_curve(directory: Path, points: Points, index: int) -> RunCurve | None:
    """The curve of the `index`-th point's run, or None when it logged no training line."""
    name = points.names[index]
    train, evals = split_metrics(registry.run_metrics(directory, name))
    if not len(train):
        return None
    summary = registry.run_summary(directory, name) or {}
    flops_per_token = float(summary.get("flops_per_token", points.flops[index] / points.tokens[index]))
    return RunCurve(name=name, non_embedding_params=float(points.non_embedding_params[index]),
                    tokens=train[:, 1], loss=train[:, 2], eval_tokens=evals[:, 1], eval_loss=evals[:, 2],
                    flops_per_token=flops_per_token)


def load_input(path: str | Path) -> PlotInput:
    """A sweep directory (points, curves, its fit.json) or a points CSV (points only)."""
    path = Path(path)
    points = registry.load_points(path)
    if not path.is_dir():
        return PlotInput(points=points, curves=[], fit=None)
    curves = [run_curve(path, points, index) for index in range(len(points))]
    return PlotInput(points=points, curves=[curve for curve in curves if curve is not None], fit=registry.read_sweep_fit(path))
