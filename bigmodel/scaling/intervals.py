"""Bootstrap samples → 95% intervals, and the parameters a fit left at a bound.

A parameter at its bound is not estimated, only bounded: the demo's E sits at ~1e-15, where the
term E contributes nothing to any fitted loss. Its two-sided percentile interval ("E = 0.00
[0.00, 0.00]") would read as a measurement, and so would a one-sided one: every replicate is
refitted from the fit's own end points and stays at the bound, so its 95th percentile (6e-15 on
the demo) is the optimiser's start, not the data (the calibration harness saw a median width of
1e-12 whatever the truth). Such a parameter gets no interval at all (no `ci` or `se` entry) and
fit.json's `at_bound` names it: the data do not identify it.
"""

from __future__ import annotations

import numpy as np

from bigmodel.scaling.noise import log_prediction_jacobian

# E's term is at its bound 0 where it is under this share of every fitted loss (e⁻³⁴ in the demo).
BOUND_SHARE = 1e-4
EXPONENT_FLOOR = 1e-3  # an exponent this close to 0 (or below): the term is flat, its exponent at the bound 0


def percentile_interval(values: np.ndarray) -> list[float]:
    """The 2.5th and 97.5th percentiles; with infinite replicates, the nearest samples (linear
    interpolation towards inf gives NaN), so an unbounded side reads inf."""
    method = "linear" if np.isfinite(values[~np.isnan(values)]).all() else "nearest"
    return [float(v) for v in np.nanpercentile(values, [2.5, 97.5], method=method)]


def intervals(samples: list[dict], at_bound: dict | None = None) -> dict:
    """2.5/97.5 percentiles and standard errors of every key the samples share, except the
    `at_bound` names, which are not identified (see the module's docstring)."""
    names, at_bound = samples[0].keys(), at_bound or {}
    table = {name: np.array([sample[name] for sample in samples], dtype=float) for name in names if name not in at_bound}
    with np.errstate(over="ignore", invalid="ignore"):  # an unbounded replicate (A = inf) leaves the SE inf or NaN
        return {
            "ci": {name: percentile_interval(values) for name, values in table.items()},
            "se": {name: float(np.nanstd(values, ddof=1)) for name, values in table.items()},
            "samples": samples,
        }


def lse_at_bound(theta, features, names: tuple[str, ...]) -> dict:
    """Parameters of an LSE law fit at a bound: E (the constant term, `names[0]`) where its share
    of every fitted loss is under BOUND_SHARE; an exponent (the last K names) at or below ~0."""
    theta, n_terms = np.asarray(theta, dtype=float), np.shape(features)[0]
    share = log_prediction_jacobian(theta, features)[:, 0]  # ∂ log L/∂e: E's share of each fitted loss
    flagged = {}
    if np.max(share) < BOUND_SHARE:
        flagged[names[0]] = {"bound": 0.0, "why": f"its term is under {BOUND_SHARE:.0e} of every fitted loss: only an upper bound is measured"}
    for name, exponent in zip(names[-n_terms:], theta[1 + n_terms :]):
        if exponent < EXPONENT_FLOOR:
            flagged[name] = {"bound": 0.0, "why": "the fitted term is flat (exponent ≤ 0): no scaling measured"}
    return flagged


def snap_to_bound(samples: list[dict], thetas, features, name: str = "E") -> list[dict]:
    """The replicates whose constant term is at its bound (`lse_at_bound`'s test) carry the bound
    itself, 0, not the optimiser's leftover ~1e-12: where the truth is at the bound, an interval
    whose low end came from such replicates would otherwise exclude it by rounding alone."""
    features = np.asarray(features, dtype=float)
    shares = [np.max(log_prediction_jacobian(np.asarray(theta, dtype=float), features)[:, 0]) for theta in thetas]
    return [{**sample, name: 0.0} if share < BOUND_SHARE else sample for sample, share in zip(samples, shares)]


def describe_bounds(result: dict) -> str:
    """`E at its bound 0: not identified, no interval` for each flagged parameter, or ''."""
    return "; ".join(f"{name} at its bound {entry['bound']:g}: not identified, no interval" for name, entry in result.get("at_bound", {}).items())
