"""Baselines a held-out forecast must beat before a law is said to predict.

"As good as the largest fitted run" cannot fail where there is any scaling at all: a law that
merely knows loss falls with N and D beats it. So every held-out row also reports two baselines
that know that much and nothing of the Chinchilla form, each fitted to the same points as the law:

- `log_linear`: log L = c + s_N log N + s_D log D by least squares (three parameters: no floor E,
  no curvature). On the main job it predicts the held-out run at −1.4%, as well as Approach 3.
- `compute_frontier`: a power law L = k·C^s by least squares in log–log through the compute
  frontier (the fitted runs no cheaper run beats), extrapolated to the held-out run's C.
- `largest_run`: the mean loss of the fitted runs at the largest compute (the old naive guess).

`judge` names the best baseline and whether the law beats it (smaller mean |relative error| over
the held-out runs).
"""

from __future__ import annotations

import numpy as np

NAMES = ("log_linear", "compute_frontier", "largest_run")


def log_linear(params, tokens, loss) -> np.ndarray:
    """[c, s_N, s_D] of log L = c + s_N log N + s_D log D (least squares; minimum norm if D or N is constant)."""
    design = np.column_stack([np.ones(len(loss)), np.log(params), np.log(tokens)])
    return np.linalg.lstsq(design, np.log(loss), rcond=None)[0]


def frontier_mask(compute, loss) -> np.ndarray:
    """The runs on the compute frontier: lower loss than every cheaper run (ties in C: the best of them)."""
    order = np.lexsort((loss, compute))
    mask, best = np.zeros(len(loss), dtype=bool), np.inf
    for index in order:
        if loss[index] < best:
            mask[index], best = True, loss[index]
    return mask


def frontier_power_law(compute, loss) -> np.ndarray | None:
    """[log k, s] of L = k·C^s through the frontier runs; None with fewer than 2 distinct C on it."""
    on = frontier_mask(compute, loss)
    if np.unique(compute[on]).size < 2:
        return None
    slope, intercept = np.polyfit(np.log(compute[on]), np.log(loss[on]), 1)
    return np.array([intercept, slope])


def baseline_predictions(fitted, fitted_compute, held, held_compute) -> dict[str, np.ndarray]:
    """Each baseline's loss at the held-out points (`fitted`/`held` are `Points`)."""
    c, s_n, s_d = log_linear(fitted.non_embedding_params, fitted.tokens, fitted.loss)
    result = {"log_linear": np.exp(c + s_n * np.log(held.non_embedding_params) + s_d * np.log(held.tokens))}
    frontier = frontier_power_law(fitted_compute, fitted.loss)
    if frontier is not None:
        result["compute_frontier"] = np.exp(frontier[0] + frontier[1] * np.log(held_compute))
    largest = float(np.mean(fitted.loss[fitted_compute == fitted_compute.max()]))
    result["largest_run"] = np.full(len(held.loss), largest)
    return result


def judge(rows: list[dict]) -> dict:
    """The best baseline over the held-out rows (mean |relative error|) and whether the law beats it."""
    errors = {name: float(np.mean([abs(row["baselines"][name]["relative_error"]) for row in rows]))
              for name in NAMES if name in rows[0]["baselines"]}
    best = min(errors, key=errors.get)
    law = float(np.mean([abs(row["relative_error"]) for row in rows]))
    return {"best_baseline": best, "best_baseline_mean_abs_error": errors[best], "law_mean_abs_error": law,
            "law_beats_baselines": bool(law < errors[best])}
