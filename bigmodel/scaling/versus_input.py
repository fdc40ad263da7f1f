"""`fit A --versus B`: two recipes' runs → fit.json's `versus` object (and its one-line summary).

A and B are each a sweep directory, a CSV of points, or REGISTRY:'PATTERN' (the finished,
non-stable runs of a sweep directory or its runs.csv whose names match the shell pattern, with
their groups, so one sweep holding both recipes splits into two). Both must be measured on the
same data (their runs' config.json data settings, where there are run folders, and the same kind
of loss), and both are put on one compute basis: each recipe's own FLOPs per token where every
run of both has FLOPs (`--compute_basis flops`), else C = 6ND for both. The fit itself is
`versus_fit.py`; the multipliers, crossover and gap `versus.py`; the margin's verdict `versus_gate.py`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from pathlib import Path

import numpy as np

from bigmodel.scaling import versus, versus_gate
from bigmodel.scaling.allocation import BASES, flops_per_token_line
from bigmodel.scaling.intervals import intervals
from bigmodel.scaling.points import TOKEN_UNIT, Points, check_points
from bigmodel.scaling.registry import REGISTRY_FILE, load_points, sweep_points
from bigmodel.scaling.seeds import replicate_groups

VERSUS_OPTIONS = ("floor", "shared_exponents", "margin")  # flags that mean something only with --versus


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One side's points and the folder its runs live in (None for a CSV)."""

    spec: str
    points: Points
    directory: Path | None


def load_recipe(spec: str, side: str) -> Recipe:
    """A sweep directory, a CSV, or REGISTRY:'PATTERN' (module docstring); one ValueError line otherwise."""
    text = str(spec)
    if ":" in text and not Path(text).exists():
        source, pattern = text.rsplit(":", 1)
        directory = Path(source).parent if Path(source).name == REGISTRY_FILE else Path(source)
        if not (directory / REGISTRY_FILE).is_file():
            raise ValueError(f"{side} {text!r}: {source} is neither a sweep directory nor its {REGISTRY_FILE}; "
                             f"a :PATTERN selects runs of a sweep's registry, e.g. runs/sweep:'L2-*'")
        if not pattern:
            raise ValueError(f"{side} {text!r} gives no name pattern after ':': write {source}:'NAME_PATTERN'")
        points = sweep_points(directory)
        keep = np.array([fnmatch.fnmatchcase(name, pattern) for name in points.names])
        if not keep.any():
            raise ValueError(f"{side}: no finished run of {source} matches {pattern!r} (its names look like {', '.join(points.names[:2])})")
        return Recipe(text, points.select(keep), directory)
    points = load_points(text)
    return Recipe(text, points, Path(text) if Path(text).is_dir() else None)


def check_same_data(a: Recipe, b: Recipe) -> None:
    """Both recipes' losses must be measured alike: the same kind of loss and, where run folders
    have a config.json, the same data settings (`run_groups.DATA_KEYS`)."""
    from bigmodel.scaling.run_groups import RunLoss, check_same_validation_data

    if a.points.loss_name != b.points.loss_name:
        raise ValueError(f"A's losses are {a.points.loss_name} and B's {b.points.loss_name}: compare recipes on the same kind of loss")
    runs = [RunLoss(f"{side}:{name}", math.nan, recipe.directory / name)
            for side, recipe in (("A", a), ("B", b)) if recipe.directory is not None for name in recipe.points.names]
    try:
        check_same_validation_data(runs)
    except ValueError as error:
        raise ValueError(f"A and B were not measured on the same data: {error}; fit recipes of one data set") from None
    if a.directory is not None and b.directory is not None:
        shared = {(a.directory.resolve(), name) for name in a.points.names} & {(b.directory.resolve(), name) for name in b.points.names}
        if shared:
            raise ValueError(f"A and B both hold the run {min(shared)[1]}: select each recipe's own runs (e.g. SWEEP:'*-rope-*')")


def check_versus_options(law: str, x: str, budgets, bootstrap: int, bootstrap_method: str, floor: float | None, margin: str | None,
                         holdout, predict) -> dict | None:
    """Refuse what a two-recipe fit cannot do, before any file is read; the parsed margin."""
    if law not in versus.LAWS or (law == "power" and x != "flops"):
        raise ValueError(f"--versus compares laws of compute: use --law chinchilla, or --law power --x flops (the frontier L(C) = E + A·C^-γ); "
                         f"got --law {law}" + (f" --x {x}" if law == "power" else ""))
    if not budgets:
        raise ValueError("--versus needs at least one --budget C (FLOPs) at which to compare the recipes")
    for budget in budgets:
        if not (math.isfinite(budget) and budget > 0):
            raise ValueError(f"--budget {budget:g} is not a compute: give FLOPs in (0, inf), e.g. --budget 1e15")
    if bootstrap_method not in versus.METHODS:
        raise ValueError(f"--versus bootstraps with the noise model: use --bootstrap_method {' or '.join(versus.METHODS)}")
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be 0 or a positive number of replicates, got {bootstrap}")
    if holdout or predict:
        raise ValueError("--holdout and --predict fit one recipe: drop them with --versus (fit each recipe alone for them)")
    if floor is not None and not (math.isfinite(floor) and floor > 0):
        raise ValueError(f"--floor {floor:g} is not a loss floor: give the entropy floor E in (0, the lowest loss), in the loss's units")
    parsed = versus_gate.parse_margin(margin) if margin is not None else None
    if parsed and bootstrap < 2:
        raise ValueError("--margin judges the bootstrap's one-sided bounds: add --bootstrap K (e.g. 200)")
    return parsed


def on_one_basis(a: Points, b: Points, compute_basis: str) -> tuple[Points, Points, str]:
    """Both recipes' points on one basis: their FLOPs where both have every run's, else 6ND for both."""
    both = compute_basis == "flops" and np.isfinite(a.flops).all() and np.isfinite(b.flops).all()
    if both:
        return a, b, "flops"
    return _without_flops(a), _without_flops(b), "6ND"


def _without_flops(points: Points) -> Points:
    """The points with no FLOPs: their compute() is then 6ND."""
    return dataclasses.replace(points, flops=np.full(len(points), np.nan))


def _seeds_per_point(a: Points, b: Points) -> int:
    """The most seeds any (N, D) has in either recipe (1 without replicates)."""
    return max([1] + [members.size for points in (a, b) for members in replicate_groups(points)])


def _check_recipe(points: Points, law: str, side: str, floor: float | None) -> None:
    check_points({"non_embedding_params": points.non_embedding_params, "tokens": points.tokens, "loss": points.loss}, minimum=3)
    if law == "chinchilla" and (np.unique(points.non_embedding_params).size < 2 or np.unique(points.tokens).size < 2):
        raise ValueError(f"{side}: a Chinchilla fit needs at least 2 distinct sizes and 2 distinct token counts per recipe")
    if law == "power" and np.unique(points.compute()).size < 3:
        raise ValueError(f"{side}: the frontier L(C) needs at least 3 distinct compute values per recipe")
    if floor is not None and floor >= float(points.loss.min()):
        raise ValueError(f"--floor {floor:g} is not below {side}'s lowest loss {points.loss.min():.4g}: the floor must lie under every loss")


def _law_entry(fitted: dict, samples: list[dict], at_bound: dict, side: str) -> dict:
    bound = {name.split(".", 1)[-1]: entry for name, entry in at_bound.items() if name.startswith(f"{side}.") or name == "E"}
    entry = {**fitted, "at_bound": bound}
    if samples:
        entry.update(intervals(samples, bound))
    return entry


def fit_versus_input(path_a: str, path_b: str, law: str, budgets: list[float], *, x: str = "flops", bootstrap: int = 0, seed: int = 0,
                     bootstrap_method: str = "noise", compute_basis: str = "flops", shared_exponents: bool = False,
                     floor: float | None = None, margin: str | None = None, holdout=None, predict=()) -> dict:
    """The JSON-ready result of `fit A --versus B` (module docstring), with its "summary" line."""
    parsed_margin = check_versus_options(law, x, budgets, bootstrap, bootstrap_method, floor, margin, holdout, predict)
    if compute_basis not in BASES:
        raise ValueError(f"unknown compute basis {compute_basis!r}: use flops (the runs' own FLOPs per token) or 6ND")
    a, b = load_recipe(path_a, "A"), load_recipe(path_b, "B")
    check_same_data(a, b)
    points_a, points_b, _ = on_one_basis(a.points, b.points, compute_basis)
    result = fit_versus_points(points_a, points_b, law, budgets, bootstrap=bootstrap, seed=seed, bootstrap_method=bootstrap_method,
                               shared_exponents=shared_exponents, floor=floor, margin=parsed_margin)
    result.update(a=a.spec, b=b.spec)
    unit = shared_loss_unit(a.points, b.points)
    return {"law": "versus", "input": a.spec, "loss_unit": unit, "versus": result, "points": _points_json(points_a, points_b),
            "summary": describe_versus(result, unit)}


def shared_loss_unit(a: Points, b: Points) -> str:
    """Both recipes' loss unit (nats/byte where every run's tokens are bytes); per token unless both agree."""
    return a.loss_unit if a.loss_unit == b.loss_unit else TOKEN_UNIT


def fit_versus_points(points_a: Points, points_b: Points, law: str, budgets: list[float], *, bootstrap: int = 0, seed: int = 0,
                      bootstrap_method: str = "noise", shared_exponents: bool = False, floor: float | None = None,
                      margin: dict | None = None) -> dict:
    """fit.json's `versus` object for two recipes' points already on one basis (a FLOPs per token
    line per recipe where every run has FLOPs, else 6ND): what `fit --versus` and the calibration
    harness (`calibrate_versus.py`) both run."""
    for points, side in ((points_a, "A"), (points_b, "B")):
        _check_recipe(points, law, side, floor)
    from bigmodel.scaling import (
        versus_fit,  # loads JAX: only once the inputs passed every check
    )

    fitted = versus_fit.fit_recipes(points_a, points_b, law, shared_exponents=shared_exponents, floor=floor, bootstrap=bootstrap,
                                    seed=seed, bootstrap_method=bootstrap_method)
    joint = fitted["joint"]
    sample_laws = [{side: versus_fit.law_parameters(versus_fit.recipe_theta(theta, joint, side), law) for side in versus.SIDES}
                   for theta in fitted["thetas"]]
    lines = recipe_lines(points_a, points_b, law)
    compute = np.concatenate([points_a.compute(), points_b.compute()])
    report = versus.versus_report(fitted["laws"], sample_laws, law, lines, list(budgets), versus.search_range(compute, budgets), fitted["noise"])
    shared = ["E (pinned: --floor)" if floor is not None else "E"] + (list(versus.EXPONENT_NAMES[law]) if shared_exponents else [])
    result = {"law": law, "n_points": {"A": len(points_a), "B": len(points_b)}, "shared": shared,
              "compute_basis": versus.basis_names(lines, law), "flops_per_token": lines, "objective": fitted["objective"],
              "laws": {side: _law_entry(fitted["laws"][side], [s[side] for s in sample_laws], fitted["at_bound"], side) for side in versus.SIDES},
              **report}
    if floor is not None:
        result["floor"] = floor
    if bootstrap:
        result.update(bootstrap=bootstrap, bootstrap_method=bootstrap_method, noise=fitted["noise"])
    if margin:
        result["margin"] = versus_gate.gate(report, margin, _seeds_per_point(points_a, points_b))
    return result


def recipe_lines(points_a: Points, points_b: Points, law: str) -> dict:
    """Each recipe's FLOPs per token line where its runs have FLOPs (Chinchilla), else None (6ND)."""
    return {side: (flops_per_token_line(p.non_embedding_params, p.tokens, p.flops) if law == "chinchilla" else None)
            for side, p in (("A", points_a), ("B", points_b))}


def _points_json(a: Points, b: Points) -> dict:
    """The runs each recipe was fitted to (the figure draws them): N, D, C and loss."""
    return {side: {"non_embedding_params": p.non_embedding_params.tolist(), "tokens": p.tokens.tolist(), "compute": p.compute().tolist(),
                   "loss": p.loss.tolist()} for side, p in (("A", a), ("B", b))}


def _interval_text(entry: dict, digits: str) -> str:
    value = entry.get("value")
    text = "none" if value is None else f"{value:{digits}}"
    if entry.get("interval"):
        low, high = entry["interval"]
        text += f" [{'none' if low is None else format(low, digits)}, {'none' if high is None else format(high, digits)}]"
    return text


def describe_versus(result: dict, unit: str = TOKEN_UNIT) -> str:
    """One line: per budget the compute multiplier and gap with intervals, the crossover, the verdict."""
    parts = []
    for row in result["budgets"]:
        parts.append(f"at C={row['budget']:.3g} A needs {_interval_text(row['compute_multiplier'], '.3g')}× B's compute"
                     f" (loss gap A−B {_interval_text(row['loss_gap'], '.4f')} {unit})")
    crossover = result["crossover_flops"]
    low, high = crossover["searched"]
    parts.append(f"crossover {_interval_text(crossover, '.3g')} (searched {low:.2g}–{high:.2g} FLOPs)")
    # the laws' intervals under-cover (versus.CALIBRATION): their values only, the intervals in fit.json
    laws = "; ".join(f"{side}: α {result['laws'][side]['alpha']:.3f}" for side in versus.SIDES)
    text = f"versus ({result['law']}, shared {', '.join(result['shared'])}; {laws}): " + "; ".join(parts)
    if "margin" in result:
        text += "; " + versus_gate.describe_gate(result["margin"])
    return text
