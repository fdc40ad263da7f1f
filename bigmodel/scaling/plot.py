"""`plot_all`: every scaling figure an input supports, with the fit it is given drawn as itself.

The input is a sweep directory or a CSV of points (`plot_data.load_input`); the fit is a
fit.json path or dict (default: the sweep's own fit.json). Each law goes to the figure it
describes: a power law in N or a Chinchilla law on loss_vs_params, a power law in C on
loss_vs_compute, an isoFLOP fit on isoflop; a Chinchilla fit on an (N, D) grid also gets
loss_vs_tokens, compute_frontier and isoflop_slices (`plot_surface`). Only where no fit was
given does this module fit one itself (a power law in N for loss_vs_params, parabolas for
isoflop), and it says so.
Figures are written as PNG (150 dpi) and SVG; figures the data cannot support are skipped
with a `note(...)` saying why. Every bad input is a one-line ValueError raised before any file
is written.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from bigmodel.scaling import fit as fitting
from bigmodel.scaling.counts import count_words
from bigmodel.scaling.fit import N_DEFINITION
from bigmodel.scaling.laws import law_text
from bigmodel.scaling.plot_data import PlotInput, load_input
from bigmodel.scaling.plot_hyperparams import hyperparams_fit, plot_hyperparams
from bigmodel.scaling.plot_figures import plot_isoflop, plot_loss_vs_compute, plot_loss_vs_params, plot_training_curves
from bigmodel.scaling.plot_style import save_figure
from bigmodel.scaling.plot_surface import plot_compute_optimal_frontier, plot_isoflop_slices, plot_loss_vs_tokens, with_allocation
from bigmodel.scaling.registry import group_budgets, read_fit

BOOTSTRAP_FOR_PLOTS = 200  # replicates when plot_all fits the band itself
MIN_POINTS_FOR_POWER_FIT = 4  # three parameters need at least one degree of freedom
MIN_POINTS_PER_BUDGET = 3  # a parabola through fewer points is exact, not a fit
REQUIRED_FIT_KEYS = {
    "power": ("E", "A", "alpha"),
    "chinchilla": ("E", "A", "B", "alpha", "beta"),
    "isoflop": ("a", "budgets"),
}
MIN_SIZES_WITH_SEVERAL_TOKENS = 2  # loss-vs-D curves need sizes trained to several D: a grid, not one D per N
SURFACE_FIGURES = ("loss_vs_tokens", "compute_frontier", "isoflop_slices")
REQUIRED_BUDGET_KEYS = ("flops", "n_opt", "loss_opt", "parabola")
REQUIRED_HOLDOUT_KEYS = ("non_embedding_params", "measured_loss", "predicted_loss")


# ----------------------------------------------------------------------------- the fit to draw


def missing_in_rows(rows, keys: tuple[str, ...], name: str) -> list[str]:
    """`name[].key` for each key that some row of a fit's list (budgets, holdout) lacks."""
    rows = rows if isinstance(rows, list) else [None]
    return [f"{name}[].{key}" for key in keys if not all(isinstance(row, dict) and key in row for row in rows)]


def check_fit(fit, source: str) -> dict:
    """`fit` if it is a fit this module can draw, else a one-line ValueError naming `source`."""
    if not isinstance(fit, dict):
        raise ValueError(f"{source} is not a JSON object: pass the fit.json that `bigmodel fit` wrote")
    law = fit.get("law")
    if law not in REQUIRED_FIT_KEYS:
        raise ValueError(f"{source}: unknown law {law!r}: a fit.json from `bigmodel fit` has law power, chinchilla or isoflop")
    missing = [key for key in REQUIRED_FIT_KEYS[law] if key not in fit]
    if law == "isoflop" and not missing:
        missing = missing_in_rows(fit["budgets"], REQUIRED_BUDGET_KEYS, "budgets")
    if "holdout" in fit and not missing:
        holdout = fit["holdout"]
        missing = missing_in_rows([holdout] if isinstance(holdout, dict) else holdout, REQUIRED_HOLDOUT_KEYS, "holdout")
    if missing:
        raise ValueError(f"{source}: the {law} fit has no {', '.join(missing)}: refit with `bigmodel fit`")
    return fit


def given_fit(fit: dict | str | Path | None, data: PlotInput) -> dict | None:
    """The fit to draw: the argument (a dict or a fit.json path), else the sweep's fit.json."""
    if isinstance(fit, (str, Path)):
        if not Path(fit).is_file():
            raise ValueError(f"fit file {fit} not found: pass the JSON that `bigmodel fit` wrote")
        return check_fit(read_fit(fit), str(fit))
    if fit is not None:
        return check_fit(fit, "the fit")
    return None if data.fit is None else check_fit(data.fit, "the sweep's fit.json")


def is_law_in_params(fit: dict | None) -> bool:
    """A law loss_vs_params draws: a power law in N or a Chinchilla law."""
    return fit is not None and (fit["law"] == "chinchilla" or (fit["law"] == "power" and fit.get("x") != "flops"))


def fresh_power_fit(data: PlotInput, note) -> dict | None:
    """A bootstrap power law in N through the points, for a sweep that has no fit; None if too few."""
    points = data.points
    if len(points) < MIN_POINTS_FOR_POWER_FIT:
        note(f"only {len(points)} runs: loss_vs_params shows points without a fitted law (needs {MIN_POINTS_FOR_POWER_FIT})")
        return None
    try:
        power = fitting.fit_power(points.non_embedding_params, points.loss, bootstrap=BOOTSTRAP_FOR_PLOTS, seed=0)
    except ValueError as error:  # a failed fit should not cost the other figures
        note(f"power-law fit failed ({error}): loss_vs_params shows points only")
        return None
    note(f"no fit given, fitted here: {law_text(power)} ({BOOTSTRAP_FOR_PLOTS} bootstrap refits)")
    return {**power, "x": "non_embedding_params"}


def params_figure_law(data: PlotInput, fit: dict | None, is_isoflop_grid: bool, note) -> tuple[bool, dict | None]:
    """Whether loss_vs_params is drawn, and the law it draws."""
    if is_law_in_params(fit):
        if fit["law"] == "power" and not fit.get("samples"):
            note("the fit has no bootstrap samples, so loss_vs_params has no band (fit with --bootstrap K)")
        return True, fit
    if is_isoflop_grid:
        note("loss_vs_params skipped: isoFLOP data is not one curve in N (see isoflop)")
        return False, None
    if fit is not None:
        figure = "isoflop" if fit["law"] == "isoflop" else "loss_vs_compute"
        note(f"loss_vs_params shows points only: the given {fit['law']} fit is drawn on {figure}")
        return True, None
    return True, fresh_power_fit(data, note)


def isoflop_figure_fit(data: PlotInput, fit: dict | None, in_budget: np.ndarray, note) -> dict | None:
    """The given isoFLOP fit, else one fitted here on the runs that share budgets."""
    if fit is not None and fit["law"] == "isoflop":
        return fit
    points = data.points.select(in_budget)
    try:
        isoflop = fitting.fit_isoflop(points.non_embedding_params, points.tokens, points.loss, points.flops)
    except ValueError as error:
        note(f"isoflop skipped: {error}")
        return None
    note(f"isoflop: no isoflop fit given, fitted here: N_opt ∝ C^{isoflop['a']:.3f} (the parabola vertices as they are;"
         " `fit --law isoflop` also removes their design bias)")
    return isoflop


def sizes_with_several_tokens(points) -> int:
    """How many model sizes have runs at two or more token counts."""
    return sum(np.unique(points.tokens[points.non_embedding_params == n]).size >= 2 for n in np.unique(points.non_embedding_params))


def surface_figures(data: PlotInput, fit: dict | None, out_dir, note) -> list[Path]:
    """The Chinchilla surface's figures (`plot_surface`), for a chinchilla fit on an (N, D) grid."""
    points = data.points
    several = sizes_with_several_tokens(points)
    if fit is None or fit["law"] != "chinchilla":
        if several >= MIN_SIZES_WITH_SEVERAL_TOKENS:
            note(f"{', '.join(SURFACE_FIGURES)} skipped: they draw a chinchilla fit (fit with --law chinchilla)")
        return []
    if several < MIN_SIZES_WITH_SEVERAL_TOKENS:
        note(f"{', '.join(SURFACE_FIGURES)} skipped: {several} model size(s) with runs at several D "
             f"(needs {MIN_SIZES_WITH_SEVERAL_TOKENS}: an (N, D) grid)")
        return []
    arrays = (points.non_embedding_params, points.tokens)
    names = dict(params_name=params_axis_name(points, fit), loss_name=points.loss_name, unit=points.loss_unit)
    written = save_figure(plot_loss_vs_tokens(*arrays, points.loss, fit, **names), out_dir, "loss_vs_tokens")
    if not math.isfinite(with_allocation(fit)["G"]):  # α or β ≤ 0: the law puts all compute into N or D
        note(f"compute_frontier, isoflop_slices skipped: α = {fit['alpha']:.3g}, β = {fit['beta']:.3g} give no compute-optimal allocation")
        return written
    written += save_figure(plot_compute_optimal_frontier(*arrays, points.loss, fit, flops=points.flops, **names), out_dir, "compute_frontier")
    written += save_figure(plot_isoflop_slices(*arrays, fit, loss=points.loss, flops=points.flops, **names), out_dir, "isoflop_slices")
    return written


def params_axis_name(points, fit: dict | None = None) -> str:
    """The N axis's label: a sweep's N is the non-embedding count, a CSV's what its author counted;
    a fit under another count (`fit --count`) names that one."""
    counted = (fit or {}).get("n_definition", N_DEFINITION)
    if counted != N_DEFINITION:
        return f"parameters N ({count_words(counted)} count)"
    return "non-embedding parameters N" if points.names else "parameters N"


# ----------------------------------------------------------------------------- all figures


def plot_all(input_path: str | Path, out_dir: str | Path, fit: dict | str | Path | None = None, *, note=print) -> list[Path]:
    """Every figure the input supports, as PNG + SVG in `out_dir`; returns the paths written."""
    hyperparams = hyperparams_fit(input_path, fit)  # a fit of η_opt(C), B_opt(C) draws its own figures
    if hyperparams is not None:
        return plot_hyperparams(hyperparams, out_dir)
    data = load_input(input_path)
    fit = given_fit(fit, data)
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise ValueError(f"--out {out_dir} is a file: pass a directory for the PNG and SVG files")
    points = data.points
    budgets = group_budgets(points.flops, min_points=MIN_POINTS_PER_BUDGET)
    n_budgets = len(set(budgets[budgets >= 0]))
    is_isoflop_grid = n_budgets >= 2 and (budgets >= 0).mean() >= 0.5
    params_name = params_axis_name(points, fit)
    unit = points.loss_unit
    written: list[Path] = []

    draw, law = params_figure_law(data, fit, is_isoflop_grid, note)
    if draw:
        figure = plot_loss_vs_params(points.non_embedding_params, points.tokens, points.loss, law,
                                     params_name=params_name, loss_name=points.loss_name, unit=unit)
        written += save_figure(figure, out_dir, "loss_vs_params")

    if np.isfinite(points.flops).any():
        compute_law = fit if fit is not None and fit["law"] == "power" and fit.get("x") == "flops" else None
        figure = plot_loss_vs_compute(points.flops, points.loss, points.non_embedding_params, data.curves, fit=compute_law,
                                      loss_name=points.loss_name, params_name=params_name, unit=unit)
        written += save_figure(figure, out_dir, "loss_vs_compute")
    else:
        note("loss_vs_compute skipped: the input has no flops column")

    if n_budgets >= 2 or (fit is not None and fit["law"] == "isoflop"):
        isoflop = isoflop_figure_fit(data, fit, budgets >= 0, note)
        if isoflop is not None:
            in_budget = points.select(budgets >= 0)
            figure = plot_isoflop(in_budget.non_embedding_params, in_budget.loss, in_budget.flops, isoflop,
                                  loss_name=points.loss_name, params_name=params_name, unit=unit)
            written += save_figure(figure, out_dir, "isoflop")
    elif n_budgets == 1:  # one budget's runs: an isoFLOP study begun; none (a size × tokens grid): none asked for
        note(f"isoflop skipped: needs ≥2 compute budgets with ≥{MIN_POINTS_PER_BUDGET} runs each (found {n_budgets})")

    written += surface_figures(data, fit, out_dir, note)

    if data.curves:
        written += save_figure(plot_training_curves(data.curves, params_name=params_name, unit=unit), out_dir, "training_curves")
    else:
        note("training_curves skipped: no run folders with metrics.jsonl (a CSV has none)")
    return written
