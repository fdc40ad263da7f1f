"""Scaling-law fits: a power law, Chinchilla's Approach 3 and isoFLOP parabolas (Approach 2).

- `power`: L(X) = E + A·X^(−α), fitted as log L = LSE(a − α log X, e) (E = eᵉ, A = eᵃ).
- `chinchilla` (Hoffmann et al. 2022, Approach 3): log L = LSE(a − α log N, b − β log D, e),
  summed Huber loss (δ = 1e-3) of the log residual, L-BFGS from the full grid α, β ∈ {0, 0.5,
  …, 2}, e ∈ {−1, −0.5, …, 1}, a, b ∈ {0, 5, …, 25} (4,500 starts), best one kept. The power
  law uses the same objective and optimiser (`lbfgs.py`) from its own 270-start grid.
- `isoflop` (Approach 2): per budget a parabola of loss in log10 N through the points nearest
  the minimum; its vertex is N_opt(C); power laws through the vertices give N_opt ∝ Cᵃ and
  D_opt ∝ Cᵇ.

Every start runs a fixed number of L-BFGS iterations (no tolerance test: see `lbfgs.py`) in
float32 (2× faster on CPU; enough to find the basins), then the 16 best distinct end points are
polished in float64 with more iterations and the best is kept. Bootstrap replicates resample the
points with replacement and start from the full fit's distinct best end points (not the whole
grid: a replicate is a small perturbation of the data, so its optimum lies near one of them).
E is poorly identified by frontier data: read it with its interval, never alone.

A Chinchilla fit reports E, A, B, α, β, a = β/(α+β), b = α/(α+β) and, at `--budget C`, N_opt,
D_opt, D_opt/N_opt and the loss there, all with bootstrap intervals (`ci`, `se`). What a law
predicts and the allocation are in `laws.py`; the held-out check (`--holdout`) in `holdout.py`.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from bigmodel.scaling import lbfgs
from bigmodel.scaling.holdout import CHOICES as HOLDOUT_CHOICES, describe_holdout, held_out_mask, holdout_rows, what_is_held_out
from bigmodel.scaling.laws import chinchilla_loss, compute_optimal, estimate, law_loss, law_text, power_law  # noqa: F401 — fit.power_law etc. stay importable
from bigmodel.scaling.points import Points
from bigmodel.scaling.floor import compare_with_floor, describe_floor, known_floor
from bigmodel.scaling.registry import budget_flops, group_budgets, load_points
from bigmodel.scaling.seeds import describe_spread, seed_spread

CHINCHILLA_GRID = {  # order = the optimiser's layout [e, a, b, alpha, beta]
    "e": np.arange(-1.0, 1.01, 0.5),
    "a": np.arange(0.0, 25.1, 5.0),
    "b": np.arange(0.0, 25.1, 5.0),
    "alpha": np.arange(0.0, 2.01, 0.5),
    "beta": np.arange(0.0, 2.01, 0.5),
}
POWER_GRID = {"e": np.arange(-1.0, 1.01, 0.5), "a": np.arange(0.0, 25.1, 5.0), "alpha": np.arange(0.0, 2.01, 0.25)}
GRID_ITERATIONS = 100  # float32, every grid start: on 96 synthetic points ~20% of starts reach the optimum by then
POLISH_STARTS, POLISH_ITERATIONS = 16, 300
BOOTSTRAP_STARTS, BOOTSTRAP_ITERATIONS = 8, 200
# What N is in a Chinchilla fit (and so in N_opt and D_opt/N_opt): the Kaplan count a sweep
# records; a CSV's params column is read as it. Written into fit.json so nobody compares it
# with a total-parameter ratio such as Hoffmann et al.'s ~20 tokens/param unawares.
N_DEFINITION = "non_embedding_params"
ISOFLOP_POINTS_PER_PARABOLA = 5  # the lowest-loss points of a budget; far points bend away from a parabola


# ----------------------------------------------------------------------------- the LSE fits


def log_prediction(theta, features) -> np.ndarray:
    """log L at every point: LSE(e, a − α log N, b − β log D) (one term per feature row)."""
    n_terms = features.shape[0]
    terms = np.vstack([np.full(features.shape[1], theta[0]), theta[1 : 1 + n_terms, None] - theta[1 + n_terms :, None] * features])
    return np.logaddexp.reduce(terms, axis=0)


def summed_objective(theta, features, log_loss) -> float:
    """Σ Huber(prediction − log L) at `theta` (the reported objective, whatever the reduction)."""
    residual = log_prediction(theta, features) - log_loss
    size, delta = np.abs(residual), lbfgs.HUBER_DELTA
    return float(np.sum(np.where(size <= delta, 0.5 * residual**2, delta * (size - 0.5 * delta))))


def _grid_starts(grid: dict[str, np.ndarray]) -> np.ndarray:
    return np.array(list(itertools.product(*grid.values())), dtype=float)


def _distinct_best(thetas: np.ndarray, values: np.ndarray, count: int) -> np.ndarray:
    """The `count` lowest-objective end points, skipping ones within 1e-3 of a kept one."""
    kept: list[np.ndarray] = []
    for index in np.argsort(values):
        if not np.isfinite(values[index]) or len(kept) == count:
            break
        if all(np.max(np.abs(thetas[index] - other)) > 1e-3 for other in kept):
            kept.append(thetas[index])
    return np.array(kept)


def _fit_lse(features, log_loss, grid, *, reduction: str = "sum") -> tuple[np.ndarray, float, np.ndarray]:
    """Best parameters, their summed objective, and the distinct best end points (for bootstrap)."""
    starts = _grid_starts(grid)
    weights = np.ones((len(starts), log_loss.size))
    thetas, values = lbfgs.minimise(starts, weights, features, log_loss, reduction=reduction, iterations=GRID_ITERATIONS, dtype="float32")
    candidates = _distinct_best(thetas, values, POLISH_STARTS)
    if not len(candidates):
        raise ValueError("no start reached a finite objective: check the data for extreme values")
    weights = np.ones((len(candidates), log_loss.size))
    polished, values = lbfgs.minimise(candidates, weights, features, log_loss, reduction=reduction, iterations=POLISH_ITERATIONS)
    best = polished[np.argmin(values)]
    return best, summed_objective(best, features, log_loss), _distinct_best(polished, values, BOOTSTRAP_STARTS)


BOOTSTRAP_METHODS = ("points", "residuals")


def residual_targets(theta, features, log_loss, replicates: int, rng) -> np.ndarray:
    """(replicates, n) log-losses: the fit's predictions plus its residuals drawn with replacement.

    The residual bootstrap of a designed experiment: the sizes and token counts are the
    experimenter's choice, not a sample, so every replicate keeps them all and only the noise is
    redrawn. Resampling points instead can drop a whole size from a small grid (3 sizes × 4 token
    counts: 2.3% of replicates), whose refits then fly off and set the interval's tail."""
    fitted = log_prediction(theta, features)
    residuals = log_loss - fitted
    return fitted + residuals[rng.integers(0, log_loss.size, size=(replicates, log_loss.size))]


def _bootstrap_thetas(features, log_loss, starts, replicates: int, seed: int, reduction: str,
                      method: str = "points", theta=None) -> np.ndarray:
    """One best parameter vector per replicate: each resamples the points with replacement
    ("points"), or keeps them and redraws the fit's residuals ("residuals", needs `theta`)."""
    rng = np.random.default_rng(seed)
    n_points = log_loss.size
    if method == "residuals":
        counts, targets = np.ones((replicates, n_points)), residual_targets(theta, features, log_loss, replicates, rng)
    else:
        counts, targets = rng.multinomial(n_points, np.full(n_points, 1.0 / n_points), size=replicates).astype(float), None
    all_starts = np.tile(starts, (replicates, 1))
    all_weights = np.repeat(counts, len(starts), axis=0)
    all_targets = log_loss if targets is None else np.repeat(targets, len(starts), axis=0)
    thetas, values = lbfgs.minimise(all_starts, all_weights, features, all_targets, reduction=reduction, iterations=BOOTSTRAP_ITERATIONS)
    thetas, values = thetas.reshape(replicates, len(starts), -1), values.reshape(replicates, len(starts))
    return thetas[np.arange(replicates), np.argmin(values, axis=1)]


def percentile_interval(values: np.ndarray) -> list[float]:
    """The 2.5th and 97.5th percentiles; with infinite replicates, the nearest samples (linear
    interpolation towards inf gives NaN), so an unbounded side reads inf."""
    method = "linear" if np.isfinite(values[~np.isnan(values)]).all() else "nearest"
    return [float(v) for v in np.nanpercentile(values, [2.5, 97.5], method=method)]


def _intervals(samples: list[dict]) -> dict:
    """2.5/97.5 percentiles and standard errors of every key the samples share."""
    names = samples[0].keys()
    table = {name: np.array([sample[name] for sample in samples], dtype=float) for name in names}
    with np.errstate(over="ignore", invalid="ignore"):  # an unbounded replicate (A = inf) leaves the SE inf or NaN
        return {
            "ci": {name: percentile_interval(values) for name, values in table.items()},
            "se": {name: float(np.nanstd(values, ddof=1)) for name, values in table.items()},
            "samples": samples,
        }


def _check_points(name_to_values: dict[str, np.ndarray], minimum: int) -> None:
    lengths = sorted({len(values) for values in name_to_values.values()})
    if len(lengths) != 1:
        raise ValueError(f"{', '.join(name_to_values)} must have the same length, got lengths {lengths}")
    for name, values in name_to_values.items():
        if not np.all(np.isfinite(values) & (values > 0)):
            raise ValueError(f"{name} must be positive and finite everywhere: drop runs without a value")
    if lengths[0] < minimum:
        raise ValueError(f"need at least {minimum} points for this fit, got {lengths[0]}: run more sizes or budgets")


def _power_parameters(theta) -> dict:
    e, a, alpha = theta
    return {"E": float(np.exp(e)), "A": float(np.exp(a)), "alpha": float(alpha)}


def fit_power(x, loss, *, bootstrap: int = 0, seed: int = 0) -> dict:
    """L = E + A·x^(−α) by the Huber/L-BFGS method; `bootstrap` K adds ci, se and samples."""
    x, loss = np.asarray(x, dtype=float), np.asarray(loss, dtype=float)
    _check_points({"x": x, "loss": loss}, minimum=3)
    if np.unique(x).size < 3:
        raise ValueError(f"a power law needs at least 3 distinct x values, got {np.unique(x).size}")
    features, log_loss = np.log(x)[None, :], np.log(loss)
    theta, objective, starts = _fit_lse(features, log_loss, POWER_GRID)
    result = {"law": "power", **_power_parameters(theta), "objective": objective, "n_points": int(x.size)}
    if bootstrap > 0:
        thetas = _bootstrap_thetas(features, log_loss, starts, bootstrap, seed, "sum")
        result.update(_intervals([_power_parameters(t) for t in thetas]))
    return result


def _chinchilla_parameters(theta, budget=None) -> dict:
    """The law, its allocation exponents and, at `budget`, N_opt, D_opt, D/N and the loss there."""
    e, a, b, alpha, beta = (float(value) for value in theta)
    with np.errstate(over="ignore", invalid="ignore"):  # a degenerate bootstrap fit may put log A past float range:
        E, A, B = (float(np.exp(value)) for value in (e, a, b))  # A = inf (its interval unbounded), not a crash
        law = {"E": E, "A": A, "B": B, "alpha": alpha, "beta": beta}
        result = {**law, **compute_optimal(law["A"], law["B"], alpha, beta, budget)}
        if "n_opt" in result:
            result["loss_opt"] = float(chinchilla_loss(result["n_opt"], result["d_opt"], **law))
    return result


def fit_chinchilla(non_embedding_params, tokens, loss, *, bootstrap: int = 0, seed: int = 0, budget: float | None = None,
                   reduction: str = "sum", bootstrap_method: str = "points") -> dict:
    """Approach 3 (module docstring) plus the implied compute-optimal allocation.

    `bootstrap_method`: "points" (Hoffmann et al.'s, resampling runs) or "residuals" (a designed
    N × D grid: see `residual_targets`).

    `reduction="mean"` averages the Huber terms instead of summing them: the optimum must not
    move (the test for the Besiroglu et al. 2024 early-stopping failure); keep "sum" otherwise.
    """
    params, tokens, loss = (np.asarray(values, dtype=float) for values in (non_embedding_params, tokens, loss))
    _check_points({"non_embedding_params": params, "tokens": tokens, "loss": loss}, minimum=6)
    if np.unique(params).size < 2 or np.unique(tokens).size < 2:
        raise ValueError("a Chinchilla fit needs at least 2 distinct non_embedding_params and 2 distinct token counts")
    features, log_loss = np.log(np.stack([params, tokens])), np.log(loss)
    theta, objective, starts = _fit_lse(features, log_loss, CHINCHILLA_GRID, reduction=reduction)
    result = {"law": "chinchilla", **_chinchilla_parameters(theta, budget), "objective": objective, "n_points": int(loss.size),
              "n_definition": N_DEFINITION}
    if bootstrap > 0:
        result["bootstrap_method"] = bootstrap_method
    if bootstrap > 0:
        thetas = _bootstrap_thetas(features, log_loss, starts, bootstrap, seed, reduction, bootstrap_method, theta)
        samples = [_chinchilla_parameters(t, budget) for t in thetas]
        for sample in samples:
            sample.pop("budget", None)  # a constant, not an estimate
        result.update(_intervals(samples))
    return result


# ----------------------------------------------------------------------------- isoFLOP (Approach 2)


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
    chosen = np.sort(np.argsort(loss)[:points_per_parabola])
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


def _isoflop_exponents(budgets: list[dict]) -> dict:
    """Least squares in log space: N_opt = n_coefficient·Cᵃ, D_opt = d_coefficient·Cᵇ."""
    log_flops = np.log10([b["flops"] for b in budgets])
    a, log_n = np.polyfit(log_flops, np.log10([b["n_opt"] for b in budgets]), 1)
    b, log_d = np.polyfit(log_flops, np.log10([b["d_opt"] for b in budgets]), 1)
    return {"a": float(a), "b": float(b), "n_coefficient": float(10**log_n), "d_coefficient": float(10**log_d)}


def _isoflop_budgets(params, tokens, loss, flops, labels, counts=None) -> tuple[list[dict], list[dict]]:
    budgets, skipped = [], []
    for label in np.unique(labels):
        members = labels == label
        budget = budget_flops(flops[members])
        vertex = budget_vertex(params[members], tokens[members], loss[members], None if counts is None else counts[members])
        if isinstance(vertex, str):
            skipped.append({"flops": budget, "reason": vertex})
        else:
            budgets.append({"flops": budget, **vertex})
    return budgets, skipped


def fit_isoflop(non_embedding_params, tokens, loss, flops, *, bootstrap: int = 0, seed: int = 0) -> dict:
    """Approach 2 (module docstring); runs share a budget by `registry.group_budgets`.

    Budgets without a bracketed minimum are listed under "skipped" with the reason. `bootstrap`
    K resamples the points of each budget with replacement and refits: ci/se for a and b.
    """
    params, tokens, loss, flops = (np.asarray(values, dtype=float) for values in (non_embedding_params, tokens, loss, flops))
    _check_points({"non_embedding_params": params, "tokens": tokens, "loss": loss, "flops": flops}, minimum=6)
    labels = group_budgets(flops)
    budgets, skipped = _isoflop_budgets(params, tokens, loss, flops, labels)
    if len(budgets) < 2:
        reasons = "; ".join(f"C={s['flops']:.3g}: {s['reason']}" for s in skipped)
        raise ValueError(f"an isoflop fit needs 2 budgets with a bracketed minimum, found {len(budgets)} ({reasons}): add sizes on both sides of each optimum")
    result = {"law": "isoflop", **_isoflop_exponents(budgets), "n_points": int(loss.size), "budgets": budgets, "skipped": skipped}
    if bootstrap > 0:
        rng, samples = np.random.default_rng(seed), []
        for _ in range(bootstrap):
            counts = np.zeros(len(loss))
            for label in np.unique(labels):
                members = np.flatnonzero(labels == label)
                np.add.at(counts, rng.choice(members, size=members.size), 1.0)
            replicate, _ = _isoflop_budgets(params, tokens, loss, flops, labels, counts)
            if len(replicate) >= 2:
                exponents = _isoflop_exponents(replicate)
                samples.append({"a": exponents["a"], "b": exponents["b"]})
        if len(samples) >= 2:
            result.update(_intervals(samples))
    return result


# ----------------------------------------------------------------------------- files → fits

LAWS = ("power", "chinchilla", "isoflop", "hyperparams")  # hyperparams: η_opt(C), B_opt(C) (hyperparams.py)
# --x for a power law → the Points field it fits against. "params" is the name older commands
# used for N; it means non-embedding params like everywhere else.
X_AXES = {"non_embedding_params": "non_embedding_params", "params": "non_embedding_params", "flops": "flops"}


def _chinchilla_summary(result: dict) -> str:
    """The law, its exponents and allocation with intervals; N is the non-embedding count."""
    text = (f"chinchilla ({result['n_points']} points, N = non-embedding params): {law_text(result)}; α {estimate(result, 'alpha', '.3f')},"
            f" β {estimate(result, 'beta', '.3f')}, E {estimate(result, 'E', '.3g')}; N_opt ∝ C^{estimate(result, 'a', '.3f')},"
            f" D_opt ∝ C^{estimate(result, 'b', '.3f')}")
    if "n_opt" in result:
        text += (f"; at C={result['budget']:.3g} (=6ND): N_opt={estimate(result, 'n_opt', '.3g')}, D_opt={estimate(result, 'd_opt', '.3g')}"
                 f", {estimate(result, 'tokens_per_param', '.1f')} tokens/param")
    if "ci" in result:
        text += f" (95% intervals from {len(result['samples'])} bootstrap fits)"
    return text


def summarize(result: dict) -> str:
    """One human line: the law with its numbers (and the held-out check)."""
    law = result["law"]
    if law == "power":
        variable = "C" if result.get("x") == "flops" else "N"
        text = f"power ({result['n_points']} points): {law_text(result, variable)}"
    elif law == "chinchilla":
        text = _chinchilla_summary(result)
    else:
        text = (f"isoflop ({len(result['budgets'])} budgets, {result['n_points']} points): "
                f"N_opt = {result['n_coefficient']:.3g}·C^{result['a']:.3f}, D_opt = {result['d_coefficient']:.3g}·C^{result['b']:.3f}")
        if result["skipped"]:
            text += f" ({len(result['skipped'])} budgets skipped: no bracketed minimum)"
    if "ci" in result and law != "chinchilla":
        shown = "alpha" if "alpha" in result["ci"] else "a"
        low, high = result["ci"][shown]
        text += f"; 95% CI {shown} [{low:.3f}, {high:.3f}] ({len(result['samples'])} bootstrap fits)"
    if result.get("holdout"):
        text += "; " + describe_holdout(result["holdout"])
    if result.get("seed_spread"):
        text += "; " + describe_spread(result["seed_spread"])
    if result.get("known_floor"):
        text += "; " + describe_floor(result["known_floor"])
    return text


def check_options(law: str, x: str, bootstrap: int, budget: float | None, holdout: str | None,
                  bootstrap_method: str = "points") -> None:
    """Refuse option combinations that cannot apply, before any file is read."""
    if bootstrap_method not in BOOTSTRAP_METHODS:
        raise ValueError(f"unknown bootstrap method {bootstrap_method!r}: use {' or '.join(BOOTSTRAP_METHODS)}")
    if bootstrap_method != "points" and law != "chinchilla":
        raise ValueError("--bootstrap_method residuals applies to --law chinchilla (a designed N × D grid) only")
    if law not in LAWS:
        raise ValueError(f"unknown law {law!r}: use one of {', '.join(LAWS)}")
    if x not in X_AXES:
        raise ValueError(f"unknown x {x!r}: use non_embedding_params or flops")
    if holdout not in (None, *HOLDOUT_CHOICES):
        raise ValueError(f"unknown holdout {holdout!r}: the only choice is 'largest'")
    if holdout and law in ("isoflop", "hyperparams"):
        raise ValueError("holdout needs a law that predicts a loss: use --law power or chinchilla")
    if budget is not None and law != "chinchilla":
        raise ValueError("--budget gives the Chinchilla compute-optimal allocation: use it with --law chinchilla")
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be 0 or a positive number of replicates, got {bootstrap}")


def fit_points(points: Points, law: str, *, x: str = "non_embedding_params", bootstrap: int = 0, seed: int = 0,
               budget: float | None = None, bootstrap_method: str = "points") -> dict:
    """Fit `law` to every point; `x` (power only) is non_embedding_params or flops."""
    if law == "power":
        result = fit_power(getattr(points, x), points.loss, bootstrap=bootstrap, seed=seed)
        result["x"] = x
        return result
    if law == "chinchilla":
        return fit_chinchilla(points.non_embedding_params, points.tokens, points.loss, bootstrap=bootstrap, seed=seed, budget=budget,
                              bootstrap_method=bootstrap_method)
    return fit_isoflop(points.non_embedding_params, points.tokens, points.loss, points.flops, bootstrap=bootstrap, seed=seed)


def fit_input(path, law: str, *, x: str = "non_embedding_params", bootstrap: int = 0, seed: int = 0,
              budget: float | None = None, holdout: str | None = None, bootstrap_method: str = "points") -> dict:
    """Load points from a CSV or sweep directory, fit `law`, return the JSON-ready result.

    `x` (power only): non_embedding_params (N; "params" is accepted for it) or flops.
    `holdout="largest"`: fit without the largest runs and report how well the law predicts them
    (`holdout.py`: the largest N for a power law, the largest-compute (N, D) for chinchilla).
    The result carries "summary", the line the CLI prints.
    """
    check_options(law, x, bootstrap, budget, holdout, bootstrap_method)
    if law == "hyperparams":  # its points carry each run's lr and batch size, not N and D
        from bigmodel.scaling.hyperparams import fit_hyperparams_input

        return fit_hyperparams_input(path, bootstrap=bootstrap, seed=seed)
    x = X_AXES[x]
    points = load_points(path)
    if (law == "isoflop" or (law == "power" and x == "flops")) and not np.all(np.isfinite(points.flops)):
        raise ValueError(f"{path}: every row needs a flops value for this fit (add a flops column: training FLOPs of the run)")
    held_out = held_out_mask(points, law) if holdout else np.zeros(len(points), dtype=bool)
    if held_out.all():
        raise ValueError(f"{path}: every row has {what_is_held_out(law)}, so nothing is left to fit: hold out nothing")
    fitted = points.select(~held_out)
    result = fit_points(fitted, law, x=x, bootstrap=bootstrap, seed=seed, budget=budget, bootstrap_method=bootstrap_method)
    if holdout:
        result["holdout"] = holdout_rows(points, held_out, result)
    spread = seed_spread(fitted)
    if spread:
        result["seed_spread"] = spread
    floor = known_floor(path, fitted.names) if fitted.names else None
    if floor:
        result["known_floor"] = compare_with_floor(result, floor)
    result["input"] = str(path)
    result["summary"] = summarize(result)
    return result
