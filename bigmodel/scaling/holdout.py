"""The held-out check (`fit --holdout largest`): fit without the largest runs, then predict them.

Which runs "largest" holds out depends on what the law extrapolates in:
- power (a curve in N, usually at one D): every run of the largest N, its seeds included.
- chinchilla (a surface in N and D): every run of the (N, D) whose training compute is the
  largest (all of them when several configurations tie exactly, as an isoFLOP budget does). On an
  (N, D) grid the largest N also has short runs, cheaper than fitted runs of smaller N: holding
  those out would test interpolation in D, not the prediction of a bigger run.

Compute C is the input's flops, or 6·N·D where it has none (`Points.compute`): a sweep and a CSV
of its runs with their flops column give one ratio; a CSV without flops gives a 6ND one, so the
basis is named wherever the ratio is. Each held-out row reports, beside the law's prediction and
its relative error:
- `flops` and `compute_ratio`: its C, and C ÷ the largest fitted run's C (how far out it is), on
  `compute_basis` ("flops": the runs' own; "6ND");
- `mean_interval` (also under its old name `interval`): the 2.5/97.5 percentiles of the bootstrap
  laws' predictions, where the law's mean lies (one-sided, `mean_interval_one_sided`, its low end
  0, where E's interval reaches its bound: `prediction.mean_is_one_sided`); `prediction_interval`:
  where one run there lands (the same plus one run's noise, `prediction.py`), and
  `inside_prediction_interval`, the verdict
  on the measured run (only with `--bootstrap K`);
- `baselines`: the loss and relative error of each baseline fitted to the same points
  (`baselines.py`: log-linear in (log N, log D), a power law through the compute frontier, the
  largest fitted run); `naive_loss`, `naive_relative_error` are the last one under its old name.
  `verdict` (`baselines.judge`) says which baseline predicted best and whether the law beat it:
  a law that does not shows no predictive power.
"""

from __future__ import annotations

import numpy as np

from bigmodel.scaling.baselines import baseline_predictions, judge
from bigmodel.scaling.laws import law_loss
from bigmodel.scaling.points import Points
from bigmodel.scaling.prediction import intervals_at, mean_is_one_sided, mean_words

CHOICES = ("largest",)


def held_out_mask(points: Points, law: str) -> np.ndarray:
    """The runs `--holdout largest` keeps out of a `law` fit (module docstring)."""
    if law != "chinchilla":
        return points.non_embedding_params == points.non_embedding_params.max()
    compute = points.compute()
    largest = np.flatnonzero(compute == compute.max())
    configurations = {(points.non_embedding_params[i], points.tokens[i]) for i in largest}
    return np.array([(n, d) in configurations for n, d in zip(points.non_embedding_params, points.tokens)], dtype=bool)


def what_is_held_out(law: str) -> str:
    """The words for what `held_out_mask` selects, for messages."""
    return "the largest-compute (N, D)" if law == "chinchilla" else "the largest non_embedding_params"


def holdout_rows(points: Points, held_out: np.ndarray, result: dict) -> dict | list[dict]:
    """Measured vs predicted (and naive) loss of the held-out points; one dict, or a list for several.

    `points` are all the points and `held_out` marks the ones the fit `result` did not see.
    """
    compute = points.compute()  # over all points, so held-out and fitted share one basis
    held, fitted = points.select(held_out), points.select(~held_out)
    largest_fitted = float(compute[~held_out].max())
    baselines = baseline_predictions(fitted, compute[~held_out], held, compute[held_out])
    predicted = law_loss(result, held.non_embedding_params, held.tokens, held.flops)
    mean_intervals, run_intervals = intervals_at(result, held.non_embedding_params, held.tokens, held.flops)
    rows = []
    for index, (n, d, c, measured, guess) in enumerate(zip(held.non_embedding_params, held.tokens, compute[held_out], held.loss, predicted)):
        naive = float(baselines["largest_run"][index])
        row = {"non_embedding_params": float(n), "tokens": float(d), "flops": float(c),
               "measured_loss": float(measured), "predicted_loss": float(guess),
               "relative_error": float((guess - measured) / measured), "compute_ratio": float(c / largest_fitted),
               "compute_basis": points.compute_basis(),
               "naive_loss": naive, "naive_relative_error": float((naive - measured) / measured),
               "baselines": {name: {"loss": float(values[index]), "relative_error": float((values[index] - measured) / measured)}
                             for name, values in baselines.items()}}
        if mean_intervals is not None:
            row["interval"] = row["mean_interval"] = [float(value) for value in mean_intervals[index]]
            if mean_is_one_sided(result):
                row["mean_interval_one_sided"] = True
        if run_intervals is not None:
            row["prediction_interval"] = [float(value) for value in run_intervals[index]]
            row["inside_prediction_interval"] = bool(run_intervals[index][0] <= measured <= run_intervals[index][1])
        rows.append(row)
    verdict = judge(rows)
    for row in rows:
        row["verdict"] = verdict
    return rows[0] if len(rows) == 1 else rows


def describe_verdict(verdict: dict | None) -> str:
    """`; beats the best baseline (log_linear 1.40%)` or `; does NOT beat ...`."""
    if not verdict:
        return ""
    beats = "predicts: beats" if verdict["law_beats_baselines"] else "does NOT predict: no better than"
    return f"; {beats} the best baseline ({verdict['best_baseline']} {100 * verdict['best_baseline_mean_abs_error']:.2f}%)"


def basis_words(row: dict) -> str:
    """`, runs' FLOPs` or `, 6ND`: the basis of a held-out row's compute ratio (none for older fits)."""
    basis = row.get("compute_basis")
    return "" if basis is None else ", runs' FLOPs" if basis == "flops" else f", {basis}"


def describe_holdout(holdout: dict | list[dict]) -> str:
    """The held-out part of a fit's summary line."""
    if isinstance(holdout, dict):
        interval = holdout.get("prediction_interval") or holdout.get("interval")
        which = "a run" if "prediction_interval" in holdout else "mean"
        band = "" if not interval else f" ({mean_words(holdout)})" if which == "mean" else f" (a run [{interval[0]:.4f}, {interval[1]:.4f}])"
        inside = "" if "inside_prediction_interval" not in holdout else (
            " inside" if holdout["inside_prediction_interval"] else " OUTSIDE")
        return (f"held out N={holdout['non_embedding_params']:.3g}, D={holdout['tokens']:.3g} "
                f"({holdout['compute_ratio']:.2g}× the largest fitted compute{basis_words(holdout)}): predicted {holdout['predicted_loss']:.4f}{band}"
                f" vs measured {holdout['measured_loss']:.4f}{inside} ({100 * holdout['relative_error']:+.2f}%;"
                f" naive {100 * holdout['naive_relative_error']:+.2f}%){describe_verdict(holdout.get('verdict'))}")
    errors = np.array([row["relative_error"] for row in holdout])
    naive = np.array([row["naive_relative_error"] for row in holdout])
    sizes = sorted({row["non_embedding_params"] for row in holdout})
    size = f"{sizes[0]:.3g}" if len(sizes) == 1 else f"{sizes[0]:.3g}–{sizes[-1]:.3g}"
    ratios = sorted({f"{row['compute_ratio']:.2g}" for row in holdout}, key=float)
    ratio = ratios[0] if len(ratios) == 1 else f"{ratios[0]}–{ratios[-1]}"
    return (f"held out N={size} ({len(holdout)} runs) at {ratio}× the largest fitted compute{basis_words(holdout[0])}: mean |error| "
            f"{100 * np.mean(np.abs(errors)):.2f}%, worst {100 * errors[np.argmax(np.abs(errors))]:+.2f}%"
            f" (naive mean |error| {100 * np.mean(np.abs(naive)):.2f}%){describe_verdict(holdout[0].get('verdict'))}")
