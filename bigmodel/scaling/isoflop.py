"""Chinchilla's Approach 2: per isoFLOP budget a parabola of loss in log10 N through the points
nearest the minimum; its vertex is N_opt(C); power laws through the vertices give N_opt ∝ Cᵃ and
D_opt ∝ Cᵇ.

The bootstrap (`bootstrap_method="noise"`, the default) keeps every budget and every run in every
replicate: it redraws each run's loss about its budget's parabola (the parabola's value at the
runs it goes through; the measured loss at the far runs, which only compete to be chosen) from
the noise model, then applies the estimator again: the lowest points, their parabola, its vertex
(`replicate_log_optimum`: held to the sizes trained, the lowest run where the parabola opens
downward, so every replicate has every budget and `bootstrap_dropped` is 0 by design). σ is
relative, from seed replicates, else from the pooled residuals of a least-squares polynomial of
degree min(4, runs − 2) in log N through each budget's runs (the parabola's own residuals
underestimate it: its points are chosen for their low loss); runs that share training (one
stable run's branches) share one draw (`noise.py`). That σ rests on few degrees of freedom (3
on experiments/isoflop_results), so the replicates draw with σ × t₀.₉₇₅(dof)/z₀.₉₇₅
(`noise.sigma_inflation`, fit.json's `noise.replicate_widening`: 1.62 at 3 dof): with σ̂ as it
came, the intervals covered their own estimator's noise-free value in only 0.845 of 200
simulated studies of that design, the narrow ones where σ̂ came out low. (The Chinchilla fits
do not widen their replicates: their near-L1 residuals already run high, `noise.py`.) The
vertices' design bias is removed by `isoflop_bias.py`, where `fit` calls it. Resampling runs instead ("points", the old
method) can leave a budget without a bracketed minimum: on experiments/isoflop_results about
half of such replicates lose one, and the old code then mixed two- with three-budget slopes;
"points" now drops such a replicate whole and counts it in `bootstrap_dropped`.

Coverage (docs/scaling/calibration.md, K = 200): on experiments/isoflop_results' design, with the
design bias removed and σ widened, a and b cover 0.97 (before either, a 0.53 and b 0.415); on a
synthetic grid of 7 sizes bracketing each optimum evenly, 0.985 at twice the estimator's own spread.
"""

from __future__ import annotations

import numpy as np

from bigmodel.scaling.intervals import intervals
from bigmodel.scaling.noise import ASSUMED_SHARED_SHARE, group_labels, sigma_inflation
from bigmodel.scaling.points import check_points
from bigmodel.scaling.registry import budget_flops, group_budgets

ISOFLOP_POINTS_PER_PARABOLA = 5  # the lowest-loss points of a budget; far points bend away from a parabola
ISOFLOP_METHODS = ("noise", "points")


def chosen_points(loss, points_per_parabola: int = ISOFLOP_POINTS_PER_PARABOLA) -> np.ndarray:
    """Indices of the points a budget's parabola goes through: its lowest-loss ones, in input order."""
    return np.sort(np.argsort(loss)[:points_per_parabola])


def budget_vertex(params, tokens, loss, counts=None, points_per_parabola: int = ISOFLOP_POINTS_PER_PARABOLA) -> dict | str:
    """The parabola vertex of one isoFLOP curve, or the reason there is none.

    The parabola goes through the `points_per_parabola` lowest-loss distinct sizes (weighted by
    `counts` in a bootstrap). A curve whose lowest loss sits at its smallest or largest size is
    skipped: its vertex would be an extrapolation. D_opt comes from the curve's own tokens:
    log D is linear in log N along a budget (D = C/(k·N)), evaluated at N_opt, so it agrees
    with whatever FLOPs formula made the budget (exactly C/(6 N_opt) for 6ND data).
    """
    counts = np.ones(len(params)) if counts is None else np.asarray(counts, dtype=float)
    keep = counts > 0
    params, tokens, loss, counts = params[keep], tokens[keep], loss[keep], counts[keep]
    if np.unique(params).size < 3:
        return f"{np.unique(params).size} model sizes (a parabola needs 3)"
    order = np.argsort(params)
    lowest = int(np.argmin(loss[order]))
    if lowest in (0, len(order) - 1):
        return f"lowest loss at the {'smallest' if lowest == 0 else 'largest'} model: the optimum is not bracketed"
    chosen = chosen_points(loss, points_per_parabola)
    if np.unique(params[chosen]).size < 3:
        return "fewer than 3 distinct sizes near the minimum"
    log_params = np.log10(params)
    parabola = np.polyfit(log_params[chosen], loss[chosen], 2, w=np.sqrt(counts[chosen]))
    if parabola[0] <= 0:
        return "the parabola through the lowest points opens downward"
    log_n_opt = -parabola[1] / (2 * parabola[0])
    slope, intercept = np.polyfit(log_params, np.log10(tokens), 1)
    return {
        "n_opt": float(10**log_n_opt),
        "d_opt": float(10 ** (intercept + slope * log_n_opt)),
        "loss_opt": float(np.polyval(parabola, log_n_opt)),
        "parabola": [float(c) for c in parabola],
        "n_points": int(chosen.size),
    }


def isoflop_exponents(budgets: list[dict]) -> dict:
    """Least squares in log space: N_opt = n_coefficient·Cᵃ, D_opt = d_coefficient·Cᵇ."""
    log_flops = np.log10([b["flops"] for b in budgets])
    a, log_n = np.polyfit(log_flops, np.log10([b["n_opt"] for b in budgets]), 1)
    b, log_d = np.polyfit(log_flops, np.log10([b["d_opt"] for b in budgets]), 1)
    return {"a": float(a), "b": float(b), "n_coefficient": float(10**log_n), "d_coefficient": float(10**log_d)}


def isoflop_budgets(params, tokens, loss, flops, labels, counts=None) -> tuple[list[dict], list[dict]]:
    budgets, skipped = [], []
    for label in np.unique(labels):
        members = labels == label
        budget = budget_flops(flops[members])
        vertex = budget_vertex(params[members], tokens[members], loss[members], None if counts is None else counts[members])
        if isinstance(vertex, str):
            skipped.append({"flops": budget, "reason": vertex})
        else:
            budgets.append({"flops": budget, **vertex, "label": int(label)})
    return budgets, skipped


def smooth_curve(log_params, loss) -> np.ndarray:
    """A budget's mean loss at its runs: least squares polynomial of degree min(4, runs − 2) in log N."""
    degree = max(min(4, log_params.size - 2), 0)
    return np.polyval(np.polyfit(log_params, loss, degree), log_params) if degree else np.full(loss.size, loss.mean())


def parabola_noise(params, loss, labels, budgets: list[dict], groups, seeds) -> tuple[dict, np.ndarray]:
    """The relative noise about the budgets' curves (as `noise.NoiseModel`) and the mean loss each
    replicate redraws about: the parabola at its chosen runs, the measured loss elsewhere."""
    curve, squares, dof = loss.copy(), 0.0, 0
    for budget in budgets:
        members = np.flatnonzero(labels == budget["label"])
        smooth = smooth_curve(np.log10(params[members]), loss[members])
        squares += float(np.sum((loss[members] / smooth - 1.0) ** 2))
        chosen = members[chosen_points(loss[members])]
        curve[chosen] = np.polyval(budget["parabola"], np.log10(params[chosen]))
        dof += members.size - 1 - max(min(4, members.size - 2), 0)
    total, source = (seeds[0], "seeds") if seeds is not None else ((squares / dof, "residuals") if dof > 0 else (np.nan, "none"))
    sigma_dof = seeds[1] if seeds is not None else dof
    grouped = np.bincount(group_labels(groups, len(loss))).max() >= 2
    shared = ASSUMED_SHARED_SHARE * total if grouped else 0.0  # a curve sees a group's shift as ordinary noise
    noise = {"model": "loss = budget curve × exp(shared (per group) + per run)", "sigma_run": float(np.sqrt(total - shared)),
             "sigma_shared": float(np.sqrt(shared)), "sigma_total": float(np.sqrt(total)), "total_source": source,
             "shared_source": "assumed" if grouped else "none", "residual_dof": int(dof), "dof": int(sigma_dof),
             "replicate_widening": sigma_inflation(int(sigma_dof))}
    return noise, curve


def replicate_log_optimum(log_params, loss) -> float:
    """A replicate budget's log10 N_opt: the vertex of the parabola through its lowest points,
    held to the sizes the budget trained (a flatter replicate parabola cannot fling its vertex
    decades away), or its lowest run where the parabola opens downward. Defined for every
    replicate, so none is dropped and every one keeps every budget."""
    chosen = chosen_points(loss)
    parabola = np.polyfit(log_params[chosen], loss[chosen], 2)
    if parabola[0] <= 0:
        return float(log_params[np.argmin(loss)])
    return float(np.clip(-parabola[1] / (2 * parabola[0]), log_params.min(), log_params.max()))


def noise_replicates(params, tokens, curve, labels, budgets: list[dict], noise: dict, groups, replicates: int, rng) -> tuple[list[dict], int]:
    """Exponent samples from `replicates` redraws about every budget's curve, and how many were dropped (0)."""
    group, widening = group_labels(groups, len(curve)), noise.get("replicate_widening", 1.0)
    shared = rng.normal(0.0, widening * noise["sigma_shared"], size=(replicates, group.max() + 1))[:, group]
    drawn = curve * np.exp(rng.normal(0.0, widening * noise["sigma_run"], size=(replicates, len(curve))) + shared)
    lines = []
    for budget in budgets:
        members = labels == budget["label"]
        log_params = np.log10(params[members])
        slope, intercept = np.polyfit(log_params, np.log10(tokens[members]), 1)
        lines.append((members, log_params, slope, intercept))
    samples = []
    for loss in drawn:
        replicate = []
        for budget, (members, log_params, slope, intercept) in zip(budgets, lines):
            log_n = replicate_log_optimum(log_params, loss[members])
            replicate.append({"flops": budget["flops"], "n_opt": 10**log_n, "d_opt": 10 ** (intercept + slope * log_n)})
        exponents = isoflop_exponents(replicate)
        samples.append({"a": exponents["a"], "b": exponents["b"]})
    return samples, 0


def point_replicates(params, tokens, loss, flops, labels, replicates: int, rng) -> tuple[list[dict], int]:
    """The old method: resample runs within each budget; a replicate that loses any budget is dropped."""
    samples, dropped, n_budgets = [], 0, None
    for _ in range(replicates):
        counts = np.zeros(len(loss))
        for label in np.unique(labels):
            members = np.flatnonzero(labels == label)
            np.add.at(counts, rng.choice(members, size=members.size), 1.0)
        replicate, _ = isoflop_budgets(params, tokens, loss, flops, labels, counts)
        n_budgets = n_budgets or len(isoflop_budgets(params, tokens, loss, flops, labels)[0])
        if len(replicate) < n_budgets:
            dropped += 1
            continue
        exponents = isoflop_exponents(replicate)
        samples.append({"a": exponents["a"], "b": exponents["b"]})
    return samples, dropped


def fit_isoflop(non_embedding_params, tokens, loss, flops, *, bootstrap: int = 0, seed: int = 0, bootstrap_method: str = "noise",
                groups=None, seeds=None) -> dict:
    """Approach 2 (module docstring); runs share a budget by `registry.group_budgets`.

    Budgets without a bracketed minimum are listed under "skipped" with the reason. `bootstrap`
    K replicates give ci/se for a and b, `bootstrap_dropped` and (noise) the noise model.
    """
    params, tokens, loss, flops = (np.asarray(values, dtype=float) for values in (non_embedding_params, tokens, loss, flops))
    check_points({"non_embedding_params": params, "tokens": tokens, "loss": loss, "flops": flops}, minimum=6)
    if bootstrap_method not in ISOFLOP_METHODS:
        raise ValueError(f"unknown isoflop bootstrap method {bootstrap_method!r}: use {' or '.join(ISOFLOP_METHODS)}")
    labels = group_budgets(flops)
    budgets, skipped = isoflop_budgets(params, tokens, loss, flops, labels)
    if len(budgets) < 2:
        reasons = "; ".join(f"C={s['flops']:.3g}: {s['reason']}" for s in skipped)
        raise ValueError(f"an isoflop fit needs 2 budgets with a bracketed minimum, found {len(budgets)} ({reasons}): add sizes on both sides of each optimum")
    result = {"law": "isoflop", **isoflop_exponents(budgets), "n_points": int(loss.size), "budgets": budgets, "skipped": skipped}
    if bootstrap > 0:
        rng = np.random.default_rng(seed)
        result["bootstrap_method"] = bootstrap_method
        if bootstrap_method == "noise":
            noise, curve = parabola_noise(params, loss, labels, budgets, groups, seeds)
            result["noise"] = noise
            samples, dropped = ([], 0) if noise["total_source"] == "none" else noise_replicates(
                params, tokens, curve, labels, budgets, noise, groups, bootstrap, rng)
        else:
            samples, dropped = point_replicates(params, tokens, loss, flops, labels, bootstrap, rng)
        result["bootstrap_dropped"] = dropped
        if len(samples) >= 2:
            result.update(intervals(samples))
    for budget in budgets:
        del budget["label"]
    return result
