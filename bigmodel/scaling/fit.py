"""Scaling-law fits: a power law, Chinchilla's Approach 3 and isoFLOP parabolas (Approach 2).

- `power`: L(X) = E + A·X^(−α), fitted as log L = LSE(a − α log X, e) (E = eᵉ, A = eᵃ).
- `chinchilla` (Hoffmann et al. 2022, Approach 3): log L = LSE(a − α log N, b − β log D, e),
  summed Huber loss (δ = 1e-3) of the log residual, L-BFGS from the full grid α, β ∈ {0, 0.5,
  …, 2}, e ∈ {−1, −0.5, …, 1}, a, b ∈ {0, 5, …, 25} (4,500 starts), best one kept. The power
  law uses the same objective and optimiser (`lbfgs.py`) from its own 270-start grid.
- `isoflop` (Approach 2, `isoflop.py`): per budget a parabola of loss in log10 N through the
  points nearest the minimum; its vertex is N_opt(C); power laws through the vertices give
  N_opt ∝ Cᵃ and D_opt ∝ Cᵇ; with few sizes per budget the vertices are biased, and `fit`
  removes that design bias on the Approach 3 fit of the same runs (`isoflop_bias.py`).

Every start runs a fixed number of L-BFGS iterations (no tolerance test: see `lbfgs.py`) in
float32 (2× faster on CPU; enough to find the basins), then the 16 best distinct end points are
polished in float64 with more iterations and the best is kept. Bootstrap replicates keep the design
and redraw its noise from the study's noise model (`noise.py`: a per-run part and a part shared by
the branches of one stable run; or resample the points, `--bootstrap_method points`) and start
from the full fit's distinct best end points (not the whole grid: a replicate is a small
perturbation of the data, so its optimum lies near one of them). E is poorly identified by
frontier data: read it with its interval, never alone; at its bound it gets a one-sided interval
(`intervals.py`).

A Chinchilla fit reports E, A, B, α, β, a = β/(α+β), b = α/(α+β) and, at `--budget C`, N_opt,
D_opt, D_opt/N_opt and the loss there, all with bootstrap intervals (`ci`, `se`). What a law
predicts and the allocation are in `laws.py`; the held-out check (`--holdout`) in `holdout.py`.
"""

from __future__ import annotations

import inspect
import itertools
import numbers

import numpy as np

from bigmodel.arguments import MAX_REPLICATES, is_positive_number, is_seed
from bigmodel.scaling import lbfgs
from bigmodel.scaling.allocation import BASES, describe_basis, flops_per_token_line, numerical_optimum
from bigmodel.scaling.intervals import describe_bounds, intervals as _intervals, lse_at_bound, percentile_interval, reaching_bound, snap_to_bound  # noqa: F401
from bigmodel.scaling.noise import (BOOTSTRAP_METHODS, DEFAULT_METHOD, bootstrap_targets, estimate_noise, log_prediction,  # noqa: F401
                                    raw_residual_targets, seed_variance)
from bigmodel.scaling.prediction import describe_predictions, parse_predict, predictions
from bigmodel.scaling.holdout import CHOICES as HOLDOUT_CHOICES, describe_holdout, held_out_mask, holdout_rows, what_is_held_out
from bigmodel.scaling.laws import chinchilla_loss, compute_optimal, estimate, law_loss, law_text, power_law  # noqa: F401 — fit.power_law etc. stay importable
from bigmodel.scaling.isoflop import ISOFLOP_POINTS_PER_PARABOLA, budget_vertex, fit_isoflop  # noqa: F401 — Approach 2, importable here as before
from bigmodel.scaling.isoflop_bias import correct_design_bias, describe_design_bias
from bigmodel.scaling.counts import DEFAULT_COUNT, check_count, count_words, counted, n_definition
from bigmodel.scaling.points import Points, check_points
from bigmodel.scaling.floor import compare_with_floor, describe_floor, known_floor
from bigmodel.scaling.registry import load_points
from bigmodel.scaling.seeds import describe_spread, seed_spread
from bigmodel.scaling.unique_data import describe_unique_data, runs_unique_tokens, unique_data

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


# ----------------------------------------------------------------------------- the LSE fits


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


def _at_least(starts: np.ndarray, count: int) -> np.ndarray:
    """`starts` topped up to `count` rows with copies of the first (the best), so a bootstrap from
    7 distinct end points has the shape of one from 8 and reuses its compiled program (a
    calibration's studies would otherwise compile anew whenever one found fewer). A copy ends
    where its original does, and the argmin of a replicate's objectives takes the first of equal
    values, so no replicate's pick changes."""
    return np.concatenate([starts, np.repeat(starts[:1], max(0, count - len(starts)), axis=0)])


def residual_targets(theta, features, log_loss, replicates: int, rng) -> np.ndarray:
    """(replicates, n): the old "residuals" method's targets (raw residuals with replacement)."""
    return raw_residual_targets(log_prediction(theta, features), log_loss, replicates, rng)


def _bootstrap_thetas(features, log_loss, starts, replicates: int, seed: int, reduction: str, method: str = DEFAULT_METHOD,
                      theta=None, groups=None, seeds=None, layout=None) -> tuple[np.ndarray, dict]:
    """One best parameter vector per replicate, and the noise model of the fit at `theta` (for the
    prediction intervals): each replicate resamples the points ("points") or keeps them and
    redraws their noise (`noise.bootstrap_targets`; `groups` and `seeds` shape the noise model).
    `layout`: a joint fit's (`noise.Layout`, `versus_fit.py`)."""
    rng = np.random.default_rng(seed)
    n_points = log_loss.size
    starts = _at_least(starts, BOOTSTRAP_STARTS)
    if method != "points":
        targets, model = bootstrap_targets(method, theta, features, log_loss, replicates, rng, groups, seeds, layout)
        counts = np.ones((replicates, n_points))
    else:
        counts, targets = rng.multinomial(n_points, np.full(n_points, 1.0 / n_points), size=replicates).astype(float), None
        model = estimate_noise(theta, features, log_loss, groups, seeds, layout)
    all_starts = np.tile(starts, (replicates, 1))
    all_weights = np.repeat(counts, len(starts), axis=0)
    all_targets = log_loss if targets is None else np.repeat(targets, len(starts), axis=0)
    thetas, values = lbfgs.minimise(all_starts, all_weights, features, all_targets, reduction=reduction, iterations=BOOTSTRAP_ITERATIONS,
                                    layout=layout)
    thetas, values = thetas.reshape(replicates, len(starts), -1), values.reshape(replicates, len(starts))
    return thetas[np.arange(replicates), np.argmin(values, axis=1)], model.to_json()


def _add_bootstrap(result: dict, model: dict, samples: list[dict], method: str) -> None:
    """The replicates' intervals (one-sided for a parameter at its bound), method and noise model."""
    result.update(_intervals(samples, result.get("at_bound")), bootstrap_method=method, noise=model)
    flags = reaching_bound(result)
    if flags:  # read as [0, high] (`intervals.reaching_bound`), so printed so
        result["interval_flags"] = flags
        result["ci"]["E"][0] = 0.0


def _power_parameters(theta) -> dict:
    e, a, alpha = theta
    return {"E": float(np.exp(e)), "A": float(np.exp(a)), "alpha": float(alpha)}


def fit_power(x, loss, *, bootstrap: int = 0, seed: int = 0, bootstrap_method: str = DEFAULT_METHOD, groups=None, seeds=None) -> dict:
    """L = E + A·x^(−α) by the Huber/L-BFGS method; `bootstrap` K adds ci, se and samples (as fit_chinchilla)."""
    x, loss = np.asarray(x, dtype=float), np.asarray(loss, dtype=float)
    check_points({"x": x, "loss": loss}, minimum=3)
    if np.unique(x).size < 3:
        raise ValueError(f"a power law needs at least 3 distinct x values, got {np.unique(x).size}")
    features, log_loss = np.log(x)[None, :], np.log(loss)
    theta, objective, starts = _fit_lse(features, log_loss, POWER_GRID)
    result = {"law": "power", **_power_parameters(theta), "objective": objective, "n_points": int(x.size)}
    result["at_bound"] = lse_at_bound(theta, features, ("E", "A", "alpha"))
    if bootstrap > 0:
        thetas, model = _bootstrap_thetas(features, log_loss, starts, bootstrap, seed, "sum", bootstrap_method, theta, groups, seeds)
        _add_bootstrap(result, model, snap_to_bound([_power_parameters(t) for t in thetas], thetas, features), bootstrap_method)
    return result


def _chinchilla_parameters(theta, budget=None, flops_line: dict | None = None) -> dict:
    """The law, its allocation exponents and, at `budget`, N_opt, D_opt, D/N and the loss there
    (under C = 6ND, or solved numerically on `flops_line`'s FLOPs per token: `allocation.py`)."""
    e, a, b, alpha, beta = (float(value) for value in theta)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # a degenerate bootstrap fit may put log A past float range:
        E, A, B = (float(np.exp(value)) for value in (e, a, b))  # A = inf (its interval unbounded), not a crash
        law = {"E": E, "A": A, "B": B, "alpha": alpha, "beta": beta}
        result = {**law, **compute_optimal(law["A"], law["B"], alpha, beta, budget)}
        if "n_opt" in result:
            result["loss_opt"] = float(chinchilla_loss(result["n_opt"], result["d_opt"], **law))
        if "n_opt" in result and flops_line is not None:
            result.update(numerical_optimum(law, budget, flops_line, result["n_opt"]))
    return result


def fit_chinchilla(non_embedding_params, tokens, loss, *, bootstrap: int = 0, seed: int = 0, budget: float | None = None,
                   reduction: str = "sum", bootstrap_method: str = DEFAULT_METHOD, groups=None, seeds=None,
                   flops_line: dict | None = None, definition: str = N_DEFINITION) -> dict:
    """Approach 3 (module docstring) plus the implied compute-optimal allocation.

    `bootstrap_method` (`noise.BOOTSTRAP_METHODS`): "noise" (default) or "wild" keep the design
    and redraw its noise, with one shared draw per group of `groups` (a label per point: the
    stable run a branch shares) and σ from `seeds` (`noise.seed_variance`) where given; "points"
    (Hoffmann et al.'s, resampling runs); "residuals" (raw residuals, the old design bootstrap).
    `flops_line` (`allocation.flops_per_token_line`): allocate on the study's FLOPs per token, not 6ND.
    `definition`: what the N given counts (fit.json `n_definition`; `counts.py`).

    `reduction="mean"` averages the Huber terms instead of summing them: the optimum must not
    move (the test for the Besiroglu et al. 2024 early-stopping failure); keep "sum" otherwise.
    """
    params, tokens, loss = (np.asarray(values, dtype=float) for values in (non_embedding_params, tokens, loss))
    check_points({"non_embedding_params": params, "tokens": tokens, "loss": loss}, minimum=6)
    if np.unique(params).size < 2 or np.unique(tokens).size < 2:
        raise ValueError("a Chinchilla fit needs at least 2 distinct non_embedding_params and 2 distinct token counts")
    features, log_loss = np.log(np.stack([params, tokens])), np.log(loss)
    theta, objective, starts = _fit_lse(features, log_loss, CHINCHILLA_GRID, reduction=reduction)
    result = {"law": "chinchilla", **_chinchilla_parameters(theta, budget, flops_line), "objective": objective, "n_points": int(loss.size),
              "n_definition": definition, "at_bound": lse_at_bound(theta, features, ("E", "A", "B", "alpha", "beta"))}
    if bootstrap > 0:
        thetas, model = _bootstrap_thetas(features, log_loss, starts, bootstrap, seed, reduction, bootstrap_method, theta, groups, seeds)
        samples = [_chinchilla_parameters(t, budget, flops_line) for t in thetas]
        for sample in samples:
            sample.pop("budget", None)  # a constant, not an estimate
        _add_bootstrap(result, model, snap_to_bound(samples, thetas, features), bootstrap_method)
    result["compute_basis"] = describe_basis(flops_line, count_words(definition))  # what C means, here and in the figures
    if flops_line is not None:  # the basis itself: the figures' compute axis, `recommend` at any other budget
        result["flops_per_token_line"] = dict(flops_line)
    return result


# ----------------------------------------------------------------------------- files → fits

LAWS = ("power", "chinchilla", "isoflop", "hyperparams")  # hyperparams: η_opt(C), B_opt(C) (hyperparams.py)
# --x for a power law → the Points field it fits against. "params" is the name older commands
# used for N; it means non-embedding params like everywhere else.
X_AXES = {"non_embedding_params": "non_embedding_params", "params": "non_embedding_params", "flops": "flops"}


def _chinchilla_summary(result: dict) -> str:
    """The law, its exponents and allocation with intervals; N is the non-embedding count."""
    text = (f"chinchilla ({result['n_points']} points, N = {count_words(result.get('n_definition'))} params): {law_text(result)}; α {estimate(result, 'alpha', '.3f')},"
            f" β {estimate(result, 'beta', '.3f')}, E {estimate(result, 'E', '.3g')}; N_opt ∝ C^{estimate(result, 'a', '.3f')},"
            f" D_opt ∝ C^{estimate(result, 'b', '.3f')}")
    if "n_opt" in result:
        basis = "6ND" if result.get("compute_basis", "6ND").startswith("6ND") else "the runs' FLOPs/token"
        text += (f"; at C={result['budget']:.3g} ({basis}): N_opt={estimate(result, 'n_opt', '.3g')}, D_opt={estimate(result, 'd_opt', '.3g')}"
                 f", {estimate(result, 'tokens_per_param', '.1f')} tokens/param")
    if "ci" in result:
        text += f" (95% intervals from {len(result['samples'])} bootstrap fits, {result['bootstrap_method']})"
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
        if bias := describe_design_bias(result):
            text += "; " + bias
    shown = next((name for name in ("alpha", "a") if name in result.get("ci", {})), None)
    if shown and law != "chinchilla":
        low, high = result["ci"][shown]
        dropped = f", {result['bootstrap_dropped']} dropped" if "bootstrap_dropped" in result else ""
        text += f"; 95% CI {shown} [{low:.3f}, {high:.3f}] ({len(result['samples'])} bootstrap fits, {result['bootstrap_method']}{dropped})"
    if result.get("at_bound") or result.get("interval_flags"):
        text += "; " + describe_bounds(result)
    if result.get("holdout"):
        text += "; " + describe_holdout(result["holdout"])
    if result.get("seed_spread"):
        text += "; " + describe_spread(result["seed_spread"])
    if result.get("known_floor"):
        text += "; " + describe_floor(result["known_floor"])
    if result.get("predictions"):
        text += "; " + describe_predictions(result["predictions"])
    if describe_unique_data(result.get("unique_data") or {}):
        text += "; " + describe_unique_data(result["unique_data"])
    return text


def check_options(law: str, x: str, bootstrap: int, budget: float | None, holdout: str | None,
                  bootstrap_method: str = DEFAULT_METHOD, predict=()) -> None:
    """Refuse option combinations that cannot apply, before any file is read."""
    if bootstrap_method not in BOOTSTRAP_METHODS:
        raise ValueError(f"unknown bootstrap method {bootstrap_method!r}: use one of {', '.join(BOOTSTRAP_METHODS)}")
    if bootstrap_method in ("wild", "residuals") and law not in ("chinchilla", "power"):
        raise ValueError(f"--bootstrap_method {bootstrap_method} applies to --law chinchilla or power only: use noise or points")
    if law not in LAWS:
        raise ValueError(f"unknown law {law!r}: use one of {', '.join(LAWS)}")
    if x not in X_AXES:
        raise ValueError(f"unknown x {x!r}: use non_embedding_params or flops")
    if holdout not in (None, *HOLDOUT_CHOICES):
        raise ValueError(f"unknown holdout {holdout!r}: the only choice is 'largest'")
    if holdout and law in ("isoflop", "hyperparams"):
        raise ValueError("holdout needs a law that predicts a loss: use --law power or chinchilla")
    if parse_predict(predict) and (law not in ("power", "chinchilla") or x != "non_embedding_params" and law == "power"):
        raise ValueError("--predict N,D needs a law of N and D: use --law chinchilla, or power with --x non_embedding_params")
    if budget is not None and law != "chinchilla":
        raise ValueError("--budget gives the Chinchilla compute-optimal allocation: use it with --law chinchilla")
    if budget is not None and not is_positive_number(budget):
        raise ValueError(f"budget must be a finite number of FLOPs > 0, got {budget!r}")
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, numbers.Integral) or not 0 <= bootstrap <= MAX_REPLICATES:
        raise ValueError(f"bootstrap must be 0 or a number of replicates up to {MAX_REPLICATES:,}, got {bootstrap!r}")


def check_request(law: str, x: str, bootstrap: int, seed: int, budget: float | None, holdout: str | None,
                  bootstrap_method: str, predict, compute_basis: str, count: str = DEFAULT_COUNT, unique_tokens: float | None = None) -> None:
    """Everything `fit_input` refuses before it reads a point."""
    check_options(law, x, bootstrap, budget, holdout, bootstrap_method, predict)
    if compute_basis not in BASES:
        raise ValueError(f"unknown compute basis {compute_basis!r}: use flops (the runs' own FLOPs per token) or 6ND")
    if not is_seed(seed):
        raise ValueError(f"seed must be a whole number from 0 to 2^32 - 1, got {seed!r}")
    check_count(count)
    if unique_tokens is not None and not (np.isfinite(unique_tokens) and unique_tokens > 0):
        raise ValueError(f"--unique_tokens must be a positive number of training tokens (the corpus's size), got {unique_tokens}")
    if count != DEFAULT_COUNT and law == "hyperparams":
        raise ValueError(f"--count {count} refits a law of N: use it with --law chinchilla, power or isoflop")


def check_fit_request(law: str, options: dict) -> None:
    """A fit asked for as data, `fit_input(path, law, **options)` (a Study's analysis): an unknown
    option or a value fit would refuse is a ValueError now, not after every run has trained."""
    try:
        bound = inspect.signature(fit_input).bind("", law, **options)
    except TypeError as error:
        names = [name for name in inspect.signature(fit_input).parameters if name not in ("path", "law")]
        raise ValueError(f"{error}: the options are law, {', '.join(names)}") from None
    bound.apply_defaults()
    checked = inspect.signature(check_request).parameters  # fit_input's other options are checked when the points are read
    check_request(**{name: value for name, value in bound.arguments.items() if name in checked})


def fit_points(points: Points, law: str, *, x: str = "non_embedding_params", bootstrap: int = 0, seed: int = 0,
               budget: float | None = None, bootstrap_method: str = DEFAULT_METHOD, compute_basis: str = "flops",
               count: str = DEFAULT_COUNT) -> dict:
    """Fit `law` to every point; `x` (power only) is non_embedding_params or flops. The bootstrap's
    noise model takes its groups from `points.groups` and its σ from their seed replicates.
    `compute_basis` "flops": a Chinchilla allocation on the points' FLOPs per token where they all
    have FLOPs (else, and with "6ND", C = 6ND). `count`: what `points`' N counts (`counts.counted`)."""
    noise = {"bootstrap_method": bootstrap_method, "groups": points.groups, "seeds": seed_variance(points)}
    if law == "power":
        result = fit_power(getattr(points, x), points.loss, bootstrap=bootstrap, seed=seed, **noise)
        result["x"] = x
        return result
    if law == "chinchilla":
        line = flops_per_token_line(points.non_embedding_params, points.tokens, points.flops) if compute_basis == "flops" else None
        return fit_chinchilla(points.non_embedding_params, points.tokens, points.loss, bootstrap=bootstrap, seed=seed, budget=budget,
                              flops_line=line, definition=n_definition(count), **noise)
    return fit_approach_2(points.non_embedding_params, points.tokens, points.loss, points.flops, bootstrap=bootstrap, seed=seed, **noise)


def fit_approach_2(non_embedding_params, tokens, loss, flops, **options) -> dict:
    """Approach 2 as `fit --law isoflop` reports it: `fit_isoflop(..., **options)` with its design
    bias removed on the Approach 3 fit of the same runs as the plug-in law (`isoflop_bias.py`)."""
    result = fit_isoflop(non_embedding_params, tokens, loss, flops, **options)
    try:
        plug_in = fit_chinchilla(non_embedding_params, tokens, loss)
    except ValueError as error:
        return {**result, "design_bias": {"applied": False, "why": f"no Approach 3 fit of these runs ({error})"}}
    return correct_design_bias(result, plug_in, non_embedding_params, tokens, flops)


def fit_input(path, law: str, *, x: str = "non_embedding_params", bootstrap: int = 0, seed: int = 0,
              budget: float | None = None, holdout: str | None = None, bootstrap_method: str = DEFAULT_METHOD, predict=(),
              compute_basis: str = "flops", count: str = DEFAULT_COUNT, unique_tokens: float | None = None) -> dict:
    """Load points from a CSV or sweep directory, fit `law`, return the JSON-ready result.

    `x` (power only): non_embedding_params (N; "params" is accepted for it) or flops.
    `holdout="largest"`: fit without the largest runs and report how well the law predicts them
    (`holdout.py`: the largest N for a power law, the largest-compute (N, D) for chinchilla).
    `predict`: "N,D" texts; fit.json's `predictions` gives the law's loss and intervals there.
    `count`: what N counts (`counts.py`: non_embedding, total, flops); fit.json's `n_definition`.
    `unique_tokens`: the training corpus's size, else what the sweep's runs recorded; fit.json's
    `unique_data` compares D_opt with it (`unique_data.py`).
    The result carries "summary", the line the CLI prints.
    """
    check_request(law, x, bootstrap, seed, budget, holdout, bootstrap_method, predict, compute_basis, count, unique_tokens)
    if law == "hyperparams":  # its points carry each run's lr and batch size, not N and D
        from bigmodel.scaling.hyperparams import fit_hyperparams_input

        return fit_hyperparams_input(path, bootstrap=bootstrap, seed=seed, bootstrap_method=bootstrap_method)
    x = X_AXES[x]
    points = counted(load_points(path), count, path)
    if (law == "isoflop" or (law == "power" and x == "flops")) and not np.all(np.isfinite(points.flops)):
        raise ValueError(f"{path}: every row needs a flops value for this fit (add a flops column: training FLOPs of the run)")
    held_out = held_out_mask(points, law) if holdout else np.zeros(len(points), dtype=bool)
    if held_out.all():
        raise ValueError(f"{path}: every row has {what_is_held_out(law)}, so nothing is left to fit: hold out nothing")
    fitted = points.select(~held_out)
    result = fit_points(fitted, law, x=x, bootstrap=bootstrap, seed=seed, budget=budget, bootstrap_method=bootstrap_method,
                        compute_basis=compute_basis, count=count)
    result.setdefault("n_definition", n_definition(count))  # a chinchilla fit wrote its own
    if holdout:
        result["holdout"] = holdout_rows(points, held_out, result)
    if predict:
        result["predictions"] = predictions(result, parse_predict(predict))
    spread = seed_spread(fitted)
    if spread:
        result["seed_spread"] = spread
    corpus = (unique_tokens, "--unique_tokens") if unique_tokens else (runs_unique_tokens(path, points.names), "the runs' summaries")
    if corpus[0] and law == "chinchilla":
        result["unique_data"] = unique_data(result, corpus[0], corpus[1], float(fitted.tokens.max()))
    floor = known_floor(path, fitted.names) if fitted.names else None
    if floor:
        result["known_floor"] = compare_with_floor(result, floor)
    result["input"] = str(path)
    result["loss_unit"] = points.loss_unit  # nats/byte where the runs' tokens are bytes (points.loss_unit)
    result["summary"] = summarize(result)
    return result
