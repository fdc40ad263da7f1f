"""Hyperparameter scaling laws: the best learning rate and batch size per compute budget,
η_opt(C) = k_η·C^a_η and B_opt(C) = k_B·C^a_B (DeepSeek LLM 2024, §3.1: η_opt = 0.3118·C^−0.125,
B_opt = 0.2920·C^0.3271, B in tokens).

Input (`hyperparam_points.py`): a sweep whose runs differ in lr (and batch size) at several
budgets (`Study(learning_rates=[...], batch_sizes=[...])` on an IsoFlopGrid; experiments/hparams.py),
a CSV with columns flops,learning_rate,batch_size,seq_len,loss, or an earlier fit.json. Runs share
a budget by `registry.group_budgets`.
B is counted in tokens (batch_size × seq_len), as DeepSeek's is, so the coefficient compares.

Per budget the optimum is the vertex of a quadratic in (log10 η, log10 B), least squares through
the budget's lowest two thirds of runs (more where a swept value would be missing): far runs, a
diverging lr above all, bend away from a quadratic. Not DeepSeek's near-optimal set (runs within
0.25% of the minimum) as the optimum: on a grid 2× apart the set moves in whole grid steps, while
over 10× in C DeepSeek's law moves η_opt 0.75× and B_opt 2.1×; and 0.25% is below one run's
noise here (the quadratics' residuals are 1.5–2.5% of the loss), so the set is the argmin plus
noise. The vertex interpolates. The near-optimal set is still reported, with a power law through
its points (DeepSeek's own procedure) as a check. A vertex outside the swept range or a surface
that is not convex is no optimum: that budget is skipped with the reason. An lr-only sweep fits a
parabola in log η and no batch law.

The laws are least-squares lines in (log10 C, log10 optimum); 95% intervals come from a bootstrap
that keeps every run and budget and redraws each run's loss about its budget's quadratic (the
surface at the runs it goes through, the measured loss elsewhere) with relative noise σ from the
surfaces' pooled residuals, then refits everything (`bootstrap_method="noise"`, the default); a
replicate's optimum is held to the grid swept (the lowest run where its surface is not convex),
so no replicate loses a budget. σ from the chosen runs' residuals is low by their selection for
low loss. The old method resamples runs within each budget ("points"): replicates in which a
budget loses its optimum are dropped and counted; past 5% dropped the intervals are conditional
on the rest, and `intervals_reliable` is false. `fitted_rule` turns a fit.json into a Study's lr rule and
batch size. Plots: `plot_hyperparams.py`.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from bigmodel import files
from bigmodel.config import ConfigError
from bigmodel.scaling import registry
from bigmodel.scaling.hyperparam_points import LAW, HyperparamPoints, load_hyperparam_points
from bigmodel.scaling.laws import estimate

DEEPSEEK = {"k_eta": 0.3118, "a_eta": -0.125, "k_batch": 0.2920, "a_batch": 0.3271,
            "source": "DeepSeek LLM (2024) §3.1; C = non-embedding FLOPs/token × tokens, B in tokens"}
NEAR_OPTIMAL_TOLERANCE = 0.0025  # DeepSeek's: within 0.25% of the budget's minimum loss
SURFACE_SHARE = 2 / 3  # of a budget's runs, lowest loss first, through which the quadratic goes
MIN_DISTINCT = 3  # values of each swept hyperparameter among them: a parabola needs 3
RELIABLE_DROPPED_SHARE = 0.05  # more bootstrap replicates than this without an optimum: intervals unreliable


# ----------------------------------------------------------------------------- one budget's optimum


def surface_points(coordinates: np.ndarray, loss: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Indices of the runs the quadratic goes through: the lowest SURFACE_SHARE of the kept ones,
    extended in loss order until every swept coordinate has MIN_DISTINCT values among them."""
    order = [index for index in np.argsort(loss, kind="stable") if keep[index]]
    count = max(math.ceil(SURFACE_SHARE * len(order)), n_coefficients(coordinates.shape[1]) + 2)  # 2 degrees of freedom left
    while count < len(order) and any(np.unique(coordinates[order[:count], d]).size < MIN_DISTINCT for d in range(coordinates.shape[1])):
        count += 1
    return np.array(order[:count])


def quadratic_terms(z: np.ndarray) -> np.ndarray:
    """Columns 1, z_d, z_d², and z_0·z_1 for two dimensions."""
    columns = [np.ones(len(z))] + [z[:, d] for d in range(z.shape[1])] + [z[:, d] ** 2 for d in range(z.shape[1])]
    if z.shape[1] == 2:
        columns.append(z[:, 0] * z[:, 1])
    return np.stack(columns, axis=1)


def n_coefficients(dims: int) -> int:
    return 1 + 2 * dims + (dims == 2)  # the columns of quadratic_terms


def surface_value(surface: dict, coordinates: np.ndarray) -> np.ndarray:
    """The fitted quadratic at (log10 η[, log10 B]) rows: what the plots draw."""
    z = np.atleast_2d(coordinates) - np.asarray(surface["center"])
    return quadratic_terms(z) @ np.asarray(surface["coefficients"])


def budget_optimum(coordinates: np.ndarray, loss: np.ndarray, counts: np.ndarray | None = None, hold_to_grid: bool = False) -> dict | str:
    """The vertex of one budget's quadratic surface, or the reason there is none.

    coordinates: (runs, 1 or 2) log10 η and, when batch sizes were swept, log10 B (tokens).
    counts: bootstrap multiplicities (weights; 0 drops a run). `hold_to_grid` (a noise replicate):
    a vertex beyond the grid is clipped to it and a surface that is not convex gives its lowest run."""
    counts = np.ones(len(loss)) if counts is None else counts
    dims = coordinates.shape[1]
    keep = counts > 0
    for d, what in zip(range(dims), ("learning rates", "batch sizes")):
        if np.unique(coordinates[keep, d]).size < MIN_DISTINCT:
            return f"{np.unique(coordinates[keep, d]).size} distinct {what} (a parabola needs {MIN_DISTINCT})"
    if keep.sum() < n_coefficients(dims) + 2:
        return f"{int(keep.sum())} runs (a quadratic in {dims} variable(s) needs {n_coefficients(dims) + 2})"
    chosen = surface_points(coordinates, loss, keep)
    center = coordinates[chosen].mean(axis=0)
    weights = np.sqrt(counts[chosen])
    design = quadratic_terms(coordinates[chosen] - center)
    coefficients = np.linalg.lstsq(design * weights[:, None], loss[chosen] * weights, rcond=None)[0]
    gradient = coefficients[1 : 1 + dims]
    hessian = np.diag(2 * coefficients[1 + dims : 1 + 2 * dims])
    if dims == 2:
        hessian[0, 1] = hessian[1, 0] = coefficients[-1]
    surface = {"center": center.tolist(), "coefficients": coefficients.tolist()}
    if hold_to_grid:
        convex = np.all(np.linalg.eigvalsh(hessian) > 0)
        vertex = center - np.linalg.solve(hessian, gradient) if convex else coordinates[chosen[np.argmin(loss[chosen])]]
        vertex = np.clip(vertex, coordinates.min(axis=0), coordinates.max(axis=0))
        return {"log_optimum": vertex.tolist(), "loss_opt": float(surface_value(surface, vertex)[0]), "n_points": int(chosen.size), "surface": surface}
    if np.any(np.linalg.eigvalsh(hessian) <= 0):
        return "the quadratic through the lowest runs is not convex: no minimum inside the grid"
    vertex = center - np.linalg.solve(hessian, gradient)
    for d, what in zip(range(dims), ("learning rate", "batch size")):  # the grid as designed, also in a bootstrap replicate
        low, high = coordinates[:, d].min(), coordinates[:, d].max()
        if not low <= vertex[d] <= high:
            side = "smallest" if vertex[d] < low else "largest"
            return f"the optimum lies beyond the {side} {what} swept (extrapolated {10 ** vertex[d]:.3g}): extend the grid"
    return {"log_optimum": vertex.tolist(), "loss_opt": float(surface_value(surface, vertex)[0]),
            "n_points": int(chosen.size), "surface": surface}


# ----------------------------------------------------------------------------- laws over budgets


def power_law(flops, values) -> tuple[float, float]:
    """(k, a) of values = k·C^a by least squares in log10–log10."""
    a, log_k = np.polyfit(np.log10(flops), np.log10(values), 1)
    return float(10**log_k), float(a)


def budget_groups(points: HyperparamPoints) -> list[np.ndarray]:
    """Run indices per compute budget, smallest budget first."""
    labels = registry.group_budgets(points.flops)
    return [np.flatnonzero(labels == label) for label in range(labels.max() + 1)]


def coordinates_of(points: HyperparamPoints, with_batch: bool) -> np.ndarray:
    columns = [np.log10(points.learning_rate)] + ([np.log10(points.batch_tokens)] if with_batch else [])
    return np.stack(columns, axis=1)


def near_optimal(points: HyperparamPoints, members: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray:
    """DeepSeek's near-optimal set: the budget's runs within NEAR_OPTIMAL_TOLERANCE of its minimum."""
    present = members if counts is None else members[counts[members] > 0]
    best = points.loss[present].min()
    return present[points.loss[present] <= best * (1 + NEAR_OPTIMAL_TOLERANCE)]


def fit_laws(points: HyperparamPoints, groups: list[np.ndarray], with_batch: bool, counts: np.ndarray | None = None,
             hold_to_grid: bool = False) -> dict | None:
    """Optimum per budget, then the laws; None when a budget has no optimum (a bootstrap replicate)."""
    coordinates, optima, flops = coordinates_of(points, with_batch), [], []
    for members in groups:
        optimum = budget_optimum(coordinates[members], points.loss[members], None if counts is None else counts[members], hold_to_grid)
        if isinstance(optimum, str):
            return None
        optima.append(optimum["log_optimum"])
        flops.append(registry.budget_flops(points.flops[members]))
    optima = 10 ** np.array(optima)
    result = dict(zip(("k_eta", "a_eta"), power_law(flops, optima[:, 0])))
    near = np.concatenate([near_optimal(points, members, counts) for members in groups])
    result.update(dict(zip(("near_k_eta", "near_a_eta"), power_law(points.flops[near], points.learning_rate[near]))))
    if with_batch:
        result.update(dict(zip(("k_batch", "a_batch"), power_law(flops, optima[:, 1]))))
        result.update(dict(zip(("near_k_batch", "near_a_batch"), power_law(points.flops[near], points.batch_tokens[near]))))
    for index in range(len(groups)):
        result[f"eta_{index}"] = float(optima[index, 0])
        if with_batch:
            result[f"batch_{index}"] = float(optima[index, 1])
    return result


def check_design(points: HyperparamPoints, groups: list[np.ndarray]) -> bool:
    """Whether batch sizes were swept; a design no law can come from is one ValueError line."""
    budgets = ", ".join(f"C={registry.budget_flops(points.flops[g]):.3g}" for g in groups)
    if len(groups) < 2:
        raise ValueError(f"a hyperparameter fit needs runs at 2 or more compute budgets, found {len(groups)} ({budgets}): add budgets to the grid")
    swept = [np.unique(points.batch_tokens[g]).size > 1 for g in groups]
    for members in groups:
        lrs = np.unique(points.learning_rate[members])
        if lrs.size < MIN_DISTINCT:
            raise ValueError(f"the budget C={registry.budget_flops(points.flops[members]):.3g} has {lrs.size} distinct learning rate(s) "
                             f"({', '.join(f'{lr:g}' for lr in lrs)}): sweep learning_rates=[...] with {MIN_DISTINCT} or more values")
    if any(swept) and not all(swept):
        raise ValueError("batch sizes vary at some budgets and not at others: sweep the same batch_sizes=[...] at every budget")
    return all(swept)


def fit_hyperparams(points: HyperparamPoints, *, bootstrap: int = 0, seed: int = 0, bootstrap_method: str = "noise") -> dict:
    """The JSON-ready result: per-budget optima, the laws, and with `bootstrap` K their 95% intervals."""
    groups = budget_groups(points)
    with_batch = check_design(points, groups)
    coordinates, budgets, skipped = coordinates_of(points, with_batch), [], []
    for members in groups:
        flops = registry.budget_flops(points.flops[members])
        optimum = budget_optimum(coordinates[members], points.loss[members])
        if isinstance(optimum, str):
            skipped.append({"flops": flops, "reason": optimum})
            continue
        near = near_optimal(points, members)
        budgets.append({"flops": flops, "learning_rate": 10 ** optimum["log_optimum"][0],
                        "batch_tokens": 10 ** optimum["log_optimum"][1] if with_batch else None, **optimum,
                        "n_runs": int(members.size), "min_loss": float(points.loss[members].min()),
                        "near_optimal": [int(i) for i in near], "members": [int(i) for i in members]})
    if len(budgets) < 2:
        reasons = "; ".join(f"C={s['flops']:.3g}: {s['reason']}" for s in skipped)
        raise ValueError(f"a hyperparameter fit needs 2 budgets with an optimum inside the grid, found {len(budgets)} ({reasons})")
    fitted_groups = [np.array(b["members"]) for b in budgets]
    laws = fit_laws(points, fitted_groups, with_batch)
    result = {"law": LAW, "optimum": "quadratic in (log10 lr, log10 batch tokens) per budget" if with_batch else "parabola in log10 lr per budget",
              "batch_unit": "tokens", "with_batch": with_batch, **{k: v for k, v in laws.items() if not k[-1].isdigit()},
              "near_optimal_tolerance": NEAR_OPTIMAL_TOLERANCE, "deepseek": DEEPSEEK, "budgets": budgets, "skipped": skipped,
              "flops_range": [budgets[0]["flops"], budgets[-1]["flops"]], "n_points": len(points.loss), "loss_name": points.loss_name,
              "points": [{"name": points.names[i] if points.names else "", "flops": float(points.flops[i]),
                          "learning_rate": float(points.learning_rate[i]), "batch_size": int(points.batch_size[i]),
                          "seq_len": int(points.seq_len[i]), "loss": float(points.loss[i])} for i in range(len(points.loss))]}
    if bootstrap > 0:
        result.update(bootstrap_intervals(points, fitted_groups, with_batch, bootstrap, seed, bootstrap_method))
        result["intervals_reliable"] = "ci" in result and result["bootstrap_dropped"] <= RELIABLE_DROPPED_SHARE * bootstrap
    for index, budget in enumerate(budgets if "ci" in result else []):
        budget["ci"] = {"learning_rate": result["ci"][f"eta_{index}"]}
        if with_batch:
            budget["ci"]["batch_tokens"] = result["ci"][f"batch_{index}"]
    return result


def surface_noise(points: HyperparamPoints, groups: list[np.ndarray], with_batch: bool) -> tuple[dict, np.ndarray]:
    """Relative σ of the runs about their budgets' quadratics, and the loss each replicate redraws
    about: the surface at the runs it goes through, the measured loss elsewhere."""
    coordinates, mean, squares, dof = coordinates_of(points, with_batch), points.loss.copy(), 0.0, 0
    for members in groups:
        chosen = members[surface_points(coordinates[members], points.loss[members], np.ones(members.size, dtype=bool))]
        optimum = budget_optimum(coordinates[members], points.loss[members], hold_to_grid=True)
        mean[chosen] = surface_value(optimum["surface"], coordinates[chosen])
        squares += float(np.sum((points.loss[chosen] / mean[chosen] - 1.0) ** 2))
        dof += chosen.size - n_coefficients(coordinates.shape[1])
    sigma = math.sqrt(squares / dof) if dof > 0 else math.nan
    return {"model": "loss = budget quadratic × exp(per run)", "sigma_run": sigma, "residual_dof": int(dof)}, mean


def bootstrap_intervals(points: HyperparamPoints, groups: list[np.ndarray], with_batch: bool, replicates: int, seed: int,
                        method: str = "noise") -> dict:
    """Refit every budget and law per replicate (module docstring: "noise" redraws each run's loss,
    "points" resamples runs within each budget): 2.5/97.5 percentiles, standard errors, the
    samples, and how many replicates lost a budget's optimum (0 for "noise")."""
    if method not in ("noise", "points"):
        raise ValueError(f"unknown hyperparams bootstrap method {method!r}: use noise or points")
    rng, samples, dropped = np.random.default_rng(seed), [], 0
    noise, mean = surface_noise(points, groups, with_batch) if method == "noise" else (None, None)
    if noise is not None and not math.isfinite(noise["sigma_run"]):
        return {"bootstrap_dropped": 0, "bootstrap_method": method, "noise": noise}
    for _ in range(replicates):
        if noise is not None:
            drawn = dataclasses.replace(points, loss=mean * np.exp(rng.normal(0.0, noise["sigma_run"], size=mean.size)))
            laws = fit_laws(drawn, groups, with_batch, hold_to_grid=True)
        else:
            counts = np.zeros(len(points.loss))
            for members in groups:
                np.add.at(counts, rng.choice(members, size=members.size), 1.0)
            laws = fit_laws(points, groups, with_batch, counts)
        if laws is None:
            dropped += 1
        else:
            samples.append(laws)
    extra = {"bootstrap_dropped": dropped, "bootstrap_method": method, **({"noise": noise} if noise else {})}
    if len(samples) < 2:
        return extra
    table = {key: np.array([sample[key] for sample in samples]) for key in samples[0]}
    return {"ci": {key: [float(v) for v in np.percentile(values, [2.5, 97.5])] for key, values in table.items()},
            "se": {key: float(np.std(values, ddof=1)) for key, values in table.items()},
            "samples": samples, **extra}


# ----------------------------------------------------------------------------- summary, CLI entry


def summarize(result: dict) -> str:
    """One line: the laws with intervals, DeepSeek's exponents beside them."""
    budgets = f"{len(result['budgets'])} of {len(result['budgets']) + len(result['skipped'])} budgets"
    text = (f"hyperparams ({budgets}, {result['n_points']} runs; optimum per budget: {result['optimum']}): "
            f"η_opt = {result['k_eta']:.3g}·C^{result['a_eta']:.3f}, a_η {estimate(result, 'a_eta', '.3f')}")
    if result["with_batch"]:
        text += f"; B_opt = {result['k_batch']:.3g}·C^{result['a_batch']:.3f} tokens, a_B {estimate(result, 'a_batch', '.3f')}"
    text += f"; DeepSeek 2024: a_η {DEEPSEEK['a_eta']}, a_B {DEEPSEEK['a_batch']}"
    near = f"a_η {result['near_a_eta']:.3f}" + (f", a_B {result['near_a_batch']:.3f}" if result["with_batch"] else "")
    text += f"; near-optimal set (within {NEAR_OPTIMAL_TOLERANCE:.2%}): {near}"
    if "samples" not in result and "bootstrap_dropped" in result:
        text += f" (no intervals: {result['bootstrap_dropped']} bootstrap replicates all lost a budget's optimum)"
    if "samples" in result:
        text += f" (95% intervals from {len(result['samples'])} bootstrap fits"
        dropped = result["bootstrap_dropped"]
        if dropped:
            text += f"; {dropped} of {dropped + len(result['samples'])} lost a budget's optimum"
        text += ")" if result["intervals_reliable"] else ": UNRELIABLE, conditional on the replicates that kept every optimum)"
    if result["skipped"]:
        skipped = "; ".join(f"C={entry['flops']:.3g}: {entry['reason']}" for entry in result["skipped"])
        text += f"; skipped {skipped}"
    return text


def fit_hyperparams_input(path, *, bootstrap: int = 0, seed: int = 0, bootstrap_method: str = "noise") -> dict:
    """`python -m bigmodel fit PATH --law hyperparams`: load, fit, add input and summary."""
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be 0 or a positive number of replicates, got {bootstrap}")
    result = fit_hyperparams(load_hyperparam_points(path), bootstrap=bootstrap, seed=seed, bootstrap_method=bootstrap_method)
    result["input"] = str(path)
    result["summary"] = summarize(result)
    return result


# ----------------------------------------------------------------------------- the fitted rule


@dataclasses.dataclass(frozen=True)
class FittedRule:
    """η_opt(C) and B_opt(C) of a fit.json as a Study's rule and batch size.

    hp = fitted_rule("experiments/hparams_results/fit.json")
    Study(..., grid=IsoFlopGrid(...), batch_size=hp.batch_size,
          rules=lambda plan: {**hp(plan), "optim.warmup_steps": max(1, plan.steps // 10)})

    `hp(plan)` is {"optim.lr": η_opt(C)} with C = plan.tokens × plan.flops_per_token (3
    significant digits, as run names print it). `hp.batch_size(stats)` is B_opt(C) / seq_len
    sequences, rounded in log space to the nearest of `batch_choices` (default: powers of two,
    which every power-of-two data-parallel mesh divides); the sweep passes it the run's wanted
    flops and seq_len (SizeGrid, IsoFlopGrid). Beyond `flops_range` the laws extrapolate.
    """

    k_eta: float
    a_eta: float
    k_batch: float | None = None
    a_batch: float | None = None
    batch_choices: tuple[int, ...] | None = None
    flops_range: tuple[float, float] | None = None

    def learning_rate(self, flops: float) -> float:
        return float(f"{self.k_eta * flops**self.a_eta:.3g}")

    def batch_tokens(self, flops: float) -> float:
        if self.k_batch is None:
            raise ConfigError("this fit has no batch-size law (its sweep varied only the lr): keep a batch_size of your own")
        return self.k_batch * flops**self.a_batch

    def batch_size(self, stats: dict) -> int:
        if stats.get("flops") is None or stats.get("seq_len") is None:
            raise ConfigError("a fitted batch size needs the run's flops and seq_len: use it with a SizeGrid or IsoFlopGrid")
        wanted = max(self.batch_tokens(stats["flops"]) / stats["seq_len"], 1.0)
        choices = self.batch_choices or tuple(2**power for power in range(int(math.log2(wanted)) + 2))
        return int(min(choices, key=lambda choice: abs(math.log(choice / wanted))))

    def __call__(self, plan) -> dict:
        return {"optim.lr": self.learning_rate(plan.tokens * plan.flops_per_token)}


def fitted_rule(path: str | Path, batch_choices=None) -> FittedRule:
    """The rule of a `--law hyperparams` fit.json (see FittedRule); a bad file is one ConfigError."""
    fit = files.read_json(path) if Path(path).is_file() else None
    if not isinstance(fit, dict) or fit.get("law") != LAW:
        raise ConfigError(f"{path} is not a hyperparams fit.json: write one with python -m bigmodel fit DIR --law hyperparams --out {path}")
    choices = tuple(sorted(int(c) for c in batch_choices)) if batch_choices else None
    return FittedRule(fit["k_eta"], fit["a_eta"], fit.get("k_batch"), fit.get("a_batch"), choices, tuple(fit["flops_range"]))
