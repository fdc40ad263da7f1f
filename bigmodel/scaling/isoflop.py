"""Chinchilla's Approach 2: per isoFLOP budget a parabola of loss in log10 N through the points
nearest the minimum; its vertex is N_opt(C); power laws through the vertices give N_opt ∝ Cᵃ and
D_opt ∝ Cᵇ.

The bootstrap (`bootstrap_method="noise"`, the default) keeps every budget in every replicate:
it redraws each chosen point's loss about its budget's parabola from the noise model (relative
noise σ from the parabolas' pooled residuals, or from seed replicates; one shared draw per group
of runs that share training, `noise.py`) and refits the same points. Resampling runs instead
("points", the old method) can leave a budget without a bracketed minimum: on
experiments/isoflop_results 51 of 100 such replicates lost a budget, and the survivors mixed
two- with three-budget slopes. A "noise" replicate can lose a budget only if its parabola turns
over (opens downward); such a replicate is dropped whole, never refitted on fewer budgets, and
counted in `bootstrap_dropped`.
"""

from __future__ import annotations

import numpy as np

from bigmodel.scaling.intervals import intervals
from bigmodel.scaling.noise import ASSUMED_SHARED_SHARE, group_labels
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


def parabola_noise(params, loss, labels, budgets: list[dict], groups, seeds) -> dict:
    """The relative noise about the budgets' parabolas: σ_run and σ_shared (as `noise.NoiseModel`)."""
    residuals, dof = [], 0
    for budget in budgets:
        members = np.flatnonzero(labels == budget["label"])
        chosen = members[chosen_points(loss[members])]
        fitted = np.polyval(budget["parabola"], np.log10(params[chosen]))
        residuals.append(loss[chosen] / fitted - 1.0)
        dof += chosen.size - 3
    rss = float(np.sum(np.concatenate(residuals) ** 2))
    total, source = (seeds[0], "seeds") if seeds is not None else ((rss / dof, "residuals") if dof > 0 else (np.nan, "none"))
    grouped = np.bincount(group_labels(groups, len(loss))).max() >= 2
    shared = ASSUMED_SHARED_SHARE * total if grouped else 0.0  # a parabola sees a group's shift as ordinary noise
    return {"model": "loss = parabola × exp(shared (per group) + per run)", "sigma_run": float(np.sqrt(total - shared)),
            "sigma_shared": float(np.sqrt(shared)), "sigma_total": float(np.sqrt(total)), "total_source": source,
            "shared_source": "assumed" if grouped else "none", "residual_dof": int(dof)}


def noise_replicates(params, tokens, loss, labels, budgets: list[dict], noise: dict, groups, replicates: int, rng) -> tuple[list[dict], int]:
    """Exponent samples from `replicates` redraws about every budget's parabola, and how many were dropped."""
    group = group_labels(groups, len(loss))
    shared = rng.normal(0.0, noise["sigma_shared"], size=(replicates, group.max() + 1))[:, group]
    drawn = np.exp(rng.normal(0.0, noise["sigma_run"], size=(replicates, len(loss))) + shared)
    log_n_opt = np.empty((replicates, len(budgets)))
    for index, budget in enumerate(budgets):
        members = np.flatnonzero(labels == budget["label"])
        chosen = members[chosen_points(loss[members])]
        x = np.log10(params[chosen])
        curves = np.polyfit(x, (np.polyval(budget["parabola"], x) * drawn[:, chosen]).T, 2)  # (3, replicates)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_n_opt[:, index] = np.where(curves[0] > 0, -curves[1] / (2 * curves[0]), np.nan)
    kept = np.all(np.isfinite(log_n_opt), axis=1)
    samples = []
    for row in log_n_opt[kept]:
        replicate = []
        for budget, log_n in zip(budgets, row):
            members = labels == budget["label"]
            slope, intercept = np.polyfit(np.log10(params[members]), np.log10(tokens[members]), 1)
            replicate.append({"flops": budget["flops"], "n_opt": 10**log_n, "d_opt": 10 ** (intercept + slope * log_n)})
        exponents = isoflop_exponents(replicate)
        samples.append({"a": exponents["a"], "b": exponents["b"]})
    return samples, int(replicates - kept.sum())


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
            noise = result["noise"] = parabola_noise(params, loss, labels, budgets, groups, seeds)
            samples, dropped = ([], 0) if noise["total_source"] == "none" else noise_replicates(
                params, tokens, loss, labels, budgets, noise, groups, bootstrap, rng)
        else:
            samples, dropped = point_replicates(params, tokens, loss, flops, labels, bootstrap, rng)
        result["bootstrap_dropped"] = dropped
        if len(samples) >= 2:
            result.update(intervals(samples))
    for budget in budgets:
        del budget["label"]
    return result
