"""A gate, not a guess: does recipe B clear a declared margin over A, one-sided at 95%?

`--margin` is a compute multiplier (`1.1x`: B must save at least 10% of A's compute, i.e. A
needs ≥ 1.1× B's compute for B's loss) or a loss gap (`0.01nats`: B's compute-optimal loss must
be at least 0.01 nats below A's). At each budget the bootstrap replicates give one-sided 95%
bounds (their 5th and 95th percentiles): adopt where the lower bound clears the margin, reject
where the upper bound is below it, undecided otherwise. Overall: adopt where every budget
adopts, reject where any budget rejects, else undecided.

An undecided budget gets a rough estimate of what would settle it: the one-sided interval must
shrink by the factor r = |estimate − margin| / (its half-width on the side of the margin); if an
interval's width fell as 1/√(runs), that takes about 1/r² times the runs (as seeds per point), if
the estimate stays where it is. None where the estimate sits on the margin. At those runs the
bound only just reaches the margin: even odds of a decision. The calibration harness
(`tools/bench_versus.py --settle`) found 6 of 10 undecided studies of the rotary-vs-learned
design decided (all rightly) when rerun at the suggested seeds; on a two-recipe grid at an
extrapolated budget it saw no narrowing with seeds at all (widths 16×, 37×, 16× at 1, 2, 4
seeds), where E and the exponents set the width: the factor is the least that could settle it.
"""

from __future__ import annotations

import math
import re

import numpy as np

MARGIN_PATTERN = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(x|nats)\s*$")
KINDS = {"x": "compute_multiplier", "nats": "loss_gap"}
ONE_SIDED = (5.0, 95.0)  # percentiles: the one-sided 95% bounds


def parse_margin(text: str) -> dict:
    """`1.1x` → compute multiplier 1.1; `0.01nats` → loss gap 0.01; anything else one ValueError line."""
    match = MARGIN_PATTERN.match(str(text))
    if not match:
        raise ValueError(f"--margin {text!r} is neither a compute multiplier nor a loss gap: write e.g. --margin 1.1x "
                         "(B saves ≥ 10%% of A's compute) or --margin 0.01nats (B's loss ≥ 0.01 nats lower)".replace("%%", "%"))
    value, unit = float(match.group(1)), match.group(2)
    if unit == "x" and not (math.isfinite(value) and value > 0):
        raise ValueError(f"--margin {text!r}: a compute multiplier must be a positive number, e.g. 1.1x")
    return {"kind": KINDS[unit], "value": value, "text": f"{value:g}{unit}"}


def one_sided_bounds(samples: np.ndarray) -> tuple[float, float]:
    """(lower, upper) one-sided 95% bounds of the replicates (5th and 95th percentiles)."""
    samples = np.asarray(samples, dtype=float)
    samples = samples[~np.isnan(samples)]
    method = "linear" if np.isfinite(samples).all() else "nearest"
    low, high = np.percentile(samples, ONE_SIDED, method=method)
    return float(low), float(high)


def _scale(value: float, kind: str) -> float:
    """Multipliers are compared in log (their intervals are ratios), gaps as they are."""
    if kind != "compute_multiplier":
        return value
    return math.log(value) if value > 0 else -math.inf


def runs_factor(estimate: float, bounds: tuple[float, float], margin: float, kind: str) -> float | None:
    """About how many times the runs would settle an undecided budget (module docstring), or None."""
    centre, target = _scale(estimate, kind), _scale(margin, kind)
    bound = _scale(bounds[0] if centre > target else bounds[1], kind)
    distance, half_width = abs(centre - target), abs(centre - bound)
    if not (math.isfinite(distance) and math.isfinite(half_width)) or distance == 0:
        return None
    return max(1.0, (half_width / distance) ** 2)


def budget_verdict(estimate: float, samples: np.ndarray, margin: dict, seeds_now: int) -> dict:
    """adopt / reject / undecided at one budget, its one-sided bounds, and what would settle it."""
    low, high = one_sided_bounds(samples)
    verdict = "adopt" if low > margin["value"] else "reject" if high < margin["value"] else "undecided"
    row = {"verdict": verdict, "one_sided_95": {"lower": low, "upper": high}}
    if verdict == "undecided":
        factor = runs_factor(estimate, (low, high), margin["value"], margin["kind"])
        row["to_settle"] = None if factor is None else {
            "runs_factor": factor, "seeds_per_point": math.ceil(seeds_now * factor - 1e-9), "seeds_per_point_now": seeds_now}
    return row


def gate(report: dict, margin: dict, seeds_now: int) -> dict:
    """fit.json's `versus.margin`: the verdict per budget and overall."""
    rows = []
    for index, budget_row in enumerate(report["budgets"]):
        samples = np.array([sample[margin["kind"]][index] for sample in report["samples"]], dtype=float)
        if samples.size < 2 or np.isnan(samples).all():
            raise ValueError("--margin needs the bootstrap's replicates: add --bootstrap K (e.g. 200)")
        estimate = budget_row[margin["kind"]]["value"]
        rows.append({"budget": budget_row["budget"], **budget_verdict(math.nan if estimate is None else estimate, samples, margin, seeds_now)})
    verdicts = [row["verdict"] for row in rows]
    overall = "adopt" if all(v == "adopt" for v in verdicts) else "reject" if "reject" in verdicts else "undecided"
    return {"margin": margin["text"], "kind": margin["kind"], "value": margin["value"], "test": "one-sided 95% (bootstrap 5th/95th percentiles)",
            "budgets": rows, "overall": overall}


def describe_gate(result: dict) -> str:
    """`margin 1.1x: adopt at 1e+15, undecided at 1e+16 (≈ 4 seeds per point would settle it); overall undecided`."""
    parts = []
    for row in result["budgets"]:
        text = f"{row['verdict']} at C={row['budget']:.3g}"
        settle = row.get("to_settle")
        if settle:
            text += f" (≈ {settle['seeds_per_point']} seeds per point, {settle['runs_factor']:.1f}× the runs, would settle it)"
        parts.append(text)
    return f"margin {result['margin']}: " + ", ".join(parts) + f"; overall {result['overall']}"
