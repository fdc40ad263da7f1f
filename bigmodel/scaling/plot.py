"""Scaling plots: loss vs size, loss vs compute, isoFLOP profiles, training curves.

Each figure has one public function that takes plain arrays (so tests and notebooks can call
it) and returns a `matplotlib.figure.Figure`; `plot_all` reads a sweep directory or a CSV
(see `plot_data`), draws every figure the data supports and writes PNG (150 dpi) and SVG.

Figures are built with `matplotlib.figure.Figure` directly, never `pyplot`: no global figure
state, no GUI backend (PNG goes through Agg), nothing to close. Artists carry a `gid`
("run", "parabola", "fit", ...) so tests can count what was drawn.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bigmodel.scaling import fit as fitting
from bigmodel.scaling.plot_data import RunCurve, SweepData, group_budgets, load_input, smooth
from bigmodel.scaling.plot_style import (
    BUDGET_COLORMAP,
    SIZE_COLORMAP,
    STYLE,
    UNITS,
    WIDE_FIGURE_SIZE_INCHES,
    fit_loss_limits,
    format_coefficient,
    label_loss_axis,
    law_label,
    log_grid,
    new_figure,
    save_figure,
    size_colors,
    tidy_log_axis,
    window_on_late_training,
    window_on_minima,
)

__all__ = [
    "RunCurve", "law_label", "load_input", "plot_all", "plot_isoflop", "plot_loss_vs_compute",
    "plot_loss_vs_params", "plot_training_curves", "save_figure",
]

BOOTSTRAP_FOR_PLOTS = 200  # replicates when plot_all fits the band itself
MIN_POINTS_FOR_POWER_FIT = 4  # three parameters need at least one degree of freedom
MIN_POINTS_PER_BUDGET = 3  # a parabola through fewer points is exact, not a fit


def smoothing_window(n_points: int) -> int:
    """Moving-average width for training losses on loss_vs_compute, where batch noise would
    otherwise carve a jagged frontier: a fifteenth of the curve, at least 3 points."""
    return max(3, n_points // 15) if n_points >= 9 else 1


# ----------------------------------------------------------------------------- helpers

def _power_band(fit: dict, x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """2.5th and 97.5th percentile of the bootstrap laws at x, or None without samples."""
    samples = fit.get("samples") or []
    if len(samples) < 10:
        return None
    irreducible, scale, alpha = (np.array([sample[key] for sample in samples], dtype=float)[:, None] for key in ("E", "A", "alpha"))
    with np.errstate(over="ignore", invalid="ignore"):
        curves = fitting.power_law(x[None, :], irreducible, scale, alpha)
    return np.nanpercentile(curves, 2.5, axis=0), np.nanpercentile(curves, 97.5, axis=0)


def _interval_text(fit: dict) -> str | None:
    """"α = 0.35 [0.31, 0.40]" lines for each law parameter, from `ci` or the samples."""
    intervals = dict(fit.get("ci") or {})
    samples = fit.get("samples") or []
    lines = []
    for key, symbol, digits in (("alpha", "α", ".3f"), ("A", "A", ".3g"), ("E", "E", ".2f")):
        if key not in intervals and len(samples) >= 10:
            intervals[key] = np.nanpercentile([sample[key] for sample in samples], [2.5, 97.5])
        if key in intervals:
            low, high = intervals[key]
            lines.append(f"{symbol} = {fit[key]:{digits}}  [{low:{digits}}, {high:{digits}}]")
    return "95% bootstrap intervals\n" + "\n".join(lines) if lines else None


def _holdout_rows(fit: dict | None) -> list[dict]:
    holdout = (fit or {}).get("holdout") or []
    return [holdout] if isinstance(holdout, dict) else list(holdout)


# ----------------------------------------------------------------------------- figures

def plot_loss_vs_params(
    params, loss, fit: dict | None = None, *, params_name: str = "non-embedding parameters N",
    loss_name: str = "validation loss",
) -> Figure:
    """Final loss vs N (log-log), the fitted power law, its 95% bootstrap band, the hold-out.

    `fit` is a `fit_power` result (E, A, alpha, optional samples and holdout); points whose
    params match a holdout row are drawn as held out, with the law's prediction beside them.
    """
    params, loss = np.asarray(params, dtype=float), np.asarray(loss, dtype=float)
    holdout = _holdout_rows(fit)
    held_out = np.zeros(len(params), dtype=bool)
    for row in holdout:
        held_out |= np.isclose(params, float(row["params"]), rtol=1e-6)
    with matplotlib.rc_context(STYLE):
        figure = new_figure()
        axes = figure.add_subplot()
        axes.scatter(params[~held_out], loss[~held_out], s=55, color="tab:blue", edgecolor="black", zorder=3,
                     label=f"runs{' in the fit' if held_out.any() else ''} ({(~held_out).sum()})", gid="points")
        if fit is not None:
            grid = log_grid(params)
            band = _power_band(fit, grid)
            if band is not None:
                axes.fill_between(grid, *band, color="tab:blue", alpha=0.18, linewidth=0, gid="band",
                                  label=f"95% bootstrap band ({len(fit['samples'])} refits)")
            axes.plot(grid, fitting.power_law(grid, fit["E"], fit["A"], fit["alpha"]), color="tab:blue",
                      linewidth=2, gid="fit", label=law_label(fit))
            intervals = _interval_text(fit)
            if intervals:  # E especially: poorly identified, so never shown without its interval
                axes.text(0.02, 0.03, intervals, transform=axes.transAxes, fontsize=10, va="bottom", ha="left",
                          bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.7", "alpha": 0.9})
        for index, row in enumerate(holdout):
            measured, predicted = float(row["measured_loss"]), float(row["predicted_loss"])
            n = float(row["params"])
            axes.plot([n, n], [measured, predicted], color="tab:red", linestyle="--", linewidth=1, gid="holdout-gap")
            axes.scatter([n], [measured], marker="*", s=220, color="tab:red", edgecolor="black", zorder=4,
                         gid="holdout", label="held out: measured" if index == 0 else None)
            axes.scatter([n], [predicted], marker="D", s=70, facecolor="none", edgecolor="tab:red", linewidth=2,
                         zorder=4, gid="holdout-prediction", label="held out: predicted by the fit" if index == 0 else None)
            error = row.get("relative_error", (predicted - measured) / measured)
            axes.annotate(f"{100 * float(error):+.1f}%", (n, (measured * predicted) ** 0.5), xytext=(12, 0),
                          textcoords="offset points", color="tab:red", fontsize=11, va="center")
        axes.set(xscale="log", yscale="log", xlabel=params_name, ylabel=f"{loss_name} ({UNITS})",
                 title="Loss vs model size")
        fit_loss_limits(axes, np.concatenate([loss, [float(r["predicted_loss"]) for r in holdout]]))
        label_loss_axis(axes)
        tidy_log_axis(axes.xaxis)
        axes.legend(loc="upper right")
    return figure


def _pareto_front(compute: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The lower envelope: points no cheaper (or equally cheap) point beats."""
    order = np.lexsort((loss, compute))  # by compute, ties by loss: only a tie's best can be kept
    compute, loss = compute[order], loss[order]
    best = np.minimum.accumulate(loss)
    keep = np.concatenate([[True], best[1:] < best[:-1]])
    return compute[keep], loss[keep]


def plot_loss_vs_compute(
    flops, loss, params, curves: list[RunCurve] | None = None, *, fit: dict | None = None,
    loss_name: str = "validation loss", params_name: str = "non-embedding parameters N",
) -> Figure:
    """Loss vs training compute C (log-log): runs coloured by N and the compute-optimal frontier.

    With `curves`, each run is also drawn as training loss (smoothed) against cumulative FLOPs =
    tokens_seen × flops_per_token, and the frontier is the lower envelope of those curves;
    otherwise it is the lower envelope of the final points. `fit`: a power law over FLOPs.
    """
    flops, loss, params = (np.asarray(a, dtype=float) for a in (flops, loss, params))
    curves = [c for c in (curves or []) if np.isfinite(c.flops_per_token)]
    norm, mappable = size_colors(np.concatenate([params, [c.params for c in curves]]))
    front_compute, front_loss = [], []
    with matplotlib.rc_context(STYLE):
        figure = new_figure()
        axes = figure.add_subplot()
        for curve in curves:
            keep = (curve.tokens > 0) & np.isfinite(curve.loss)
            compute = curve.tokens[keep] * curve.flops_per_token
            smoothed = smooth(curve.loss[keep], smoothing_window(keep.sum()))
            axes.plot(compute, smoothed, color=mappable.to_rgba(curve.params), linewidth=1.2, alpha=0.75, gid="run")
            front_compute.append(compute)
            front_loss.append(smoothed)
        axes.scatter(flops, loss, c=params, cmap=SIZE_COLORMAP, norm=norm, s=60, edgecolor="black", zorder=3, gid="points")
        axes.scatter([], [], color="0.6", edgecolor="black", s=60, label=f"final {loss_name}, one point per run")
        if curves:
            front = _pareto_front(np.concatenate(front_compute), np.concatenate(front_loss))
            front_label = "compute-optimal frontier (envelope of training curves)"
        else:
            finite = np.isfinite(flops) & np.isfinite(loss)
            front = _pareto_front(flops[finite], loss[finite])
            front_label = "compute-optimal frontier (best run at ≤ C)"
        axes.plot(*front, color="black", linewidth=2.2, linestyle="--", gid="frontier", label=front_label, zorder=4)
        if fit is not None:
            grid = log_grid(flops)
            axes.plot(grid, fitting.power_law(grid, fit["E"], fit["A"], fit["alpha"]), color="tab:red",
                      linewidth=1.8, gid="fit", label=law_label(fit, "C"))
        axes.set(xscale="log", yscale="log", xlabel="training compute C (FLOPs)", ylabel=f"loss ({UNITS})",
                 title="Loss vs training compute")
        if curves:
            axes.plot([], [], color="gray", linewidth=1.2, label="training loss (smoothed), one line per run")
        fit_loss_limits(axes, np.concatenate([loss, *front_loss]) if curves else loss)
        label_loss_axis(axes)
        tidy_log_axis(axes.xaxis)
        axes.legend(loc="best")
        tidy_log_axis(figure.colorbar(mappable, ax=axes, label=params_name).ax.yaxis)
    return figure


def _isoflop_fit_line(fit: dict, budgets: list[dict]) -> tuple[float, np.ndarray, np.ndarray]:
    """N_opt = k·C^a through the vertices: the fit's k, else least squares in log space at its a."""
    compute = np.array([b["flops"] for b in budgets], dtype=float)
    n_opt = np.array([b["n_opt"] for b in budgets], dtype=float)
    scale = fit.get("n_coefficient") or 10 ** np.mean(np.log10(n_opt) - fit["a"] * np.log10(compute))
    grid = log_grid(compute, margin=1.5)
    return scale, grid, scale * grid ** fit["a"]


def _budget_members(flops: np.ndarray, budget_flops: np.ndarray, relative_tolerance: float = 0.1) -> np.ndarray:
    """Index of the fitted budget each point belongs to; -1 for points of a skipped budget."""
    distance = np.abs(np.log(flops)[:, None] - np.log(budget_flops)[None, :])
    nearest = np.argmin(distance, axis=1)
    return np.where(distance[np.arange(len(flops)), nearest] <= np.log1p(relative_tolerance), nearest, -1)


def plot_isoflop(
    params, loss, flops, fit: dict, *, loss_name: str = "loss", params_name: str = "parameters N",
) -> Figure:
    """IsoFLOP profiles (Chinchilla Approach 2) and N_opt vs C, side by side.

    Left: loss vs N per budget with its fitted parabola in log10 N, drawn over the points it was
    fitted to (the budget's `n_points` lowest), and the vertex marked; linear loss axis, since
    the model is a parabola in loss. Points of budgets the fit skipped (no bracketed minimum)
    are hollow. Right: the vertices N_opt(C) and the law N_opt = k·C^a. `fit` is a
    `fit_isoflop` result. Colour encodes the budget in both panels.
    """
    params, loss, flops = (np.asarray(a, dtype=float) for a in (params, loss, flops))
    budgets = sorted(fit["budgets"], key=lambda b: b["flops"])
    member_of = _budget_members(flops, np.array([b["flops"] for b in budgets], dtype=float))
    norm = LogNorm(vmin=np.nanmin(flops) / 1.5, vmax=np.nanmax(flops) * 1.5)
    mappable = ScalarMappable(norm=norm, cmap=BUDGET_COLORMAP)
    with matplotlib.rc_context(STYLE):
        figure = new_figure(WIDE_FIGURE_SIZE_INCHES)
        profiles, optimum = figure.subplots(1, 2, width_ratios=[1.35, 1])
        fitted_loss = []
        for index, budget in enumerate(budgets):
            color = mappable.to_rgba(budget["flops"])
            mine = np.flatnonzero(member_of == index)
            profiles.scatter(params[mine], loss[mine], color=color, edgecolor="black", s=45, zorder=3, gid="points")
            fitted = mine[np.argsort(loss[mine])[: budget.get("n_points", len(mine))]]
            fitted_loss.extend(loss[fitted])
            grid = log_grid(params[fitted], margin=1.15, count=100)
            profiles.plot(grid, np.polyval(budget["parabola"], np.log10(grid)), color=color, linewidth=1.8, gid="parabola")
            profiles.scatter([budget["n_opt"]], [budget["loss_opt"]], marker="*", s=260, color=color,
                             edgecolor="black", linewidth=1, zorder=4, gid="vertex")
            optimum.scatter([budget["flops"]], [budget["n_opt"]], marker="*", s=220, color=color,
                            edgecolor="black", zorder=3, gid="n-opt")
        skipped = member_of < 0
        if skipped.any():
            profiles.scatter(params[skipped], loss[skipped], facecolor="none", edgecolor=mappable.to_rgba(flops[skipped]),
                             linewidth=1.5, s=45, zorder=3, gid="skipped", label="budget skipped: optimum not bracketed")
            profiles.legend(loc="lower left")  # low loss needs large N: this corner stays empty
        profiles.set(xscale="log", xlabel=params_name, ylabel=f"{loss_name} ({UNITS})",
                     title="IsoFLOP profiles: a parabola in log N per budget")
        window_on_minima(profiles, loss, np.array(fitted_loss))
        # Profiles fill their panel, so the main legend lives in the N_opt panel (stars in both).
        optimum.scatter([], [], marker="*", s=180, color="white", edgecolor="black", label=r"parabola vertex $N_{opt}(C)$")
        if len(budgets) >= 2 and np.isfinite(fit.get("a", math.nan)):
            scale, grid, line = _isoflop_fit_line(fit, budgets)
            label = rf"$N_{{opt}} = {format_coefficient(scale)}\,C^{{{fit['a']:.3f}}}$"
            if np.isfinite(fit.get("b", math.nan)):
                label += "\n" + rf"($D_{{opt}} \propto C^{{{fit['b']:.3f}}}$)"
            optimum.plot(grid, line, color="black", linewidth=1.8, gid="fit", label=label)
        optimum.legend(loc="upper left")
        optimum.set(xscale="log", yscale="log", xlabel="training compute C (FLOPs)",
                    ylabel=rf"$N_{{opt}}$ ({params_name.removesuffix(' N')})", title="Compute-optimal model size")
        colorbar = figure.colorbar(mappable, ax=[profiles, optimum], label="compute budget C (FLOPs)", pad=0.01)
        for axis in (profiles.xaxis, optimum.xaxis, optimum.yaxis, colorbar.ax.yaxis):
            tidy_log_axis(axis)
    return figure


def plot_training_curves(
    curves: list[RunCurve], *, params_name: str = "non-embedding parameters N",
) -> Figure:
    """Loss vs tokens (log x) for every run, coloured by N; eval points as markers."""
    norm, mappable = size_colors(np.array([c.params for c in curves], dtype=float))
    with matplotlib.rc_context(STYLE):
        figure = new_figure()
        axes = figure.add_subplot()
        for curve in sorted(curves, key=lambda c: c.params):
            color = mappable.to_rgba(curve.params)
            keep = curve.tokens > 0
            axes.plot(curve.tokens[keep], curve.loss[keep], color=color, linewidth=1.2, alpha=0.85, gid="run")
            has_eval = curve.eval_tokens > 0
            if has_eval.any():
                axes.scatter(curve.eval_tokens[has_eval], curve.eval_loss[has_eval], color=color, edgecolor="black",
                             s=40, zorder=3, gid="eval")
        legend = [Line2D([], [], color="gray", linewidth=1.2, label="training loss"),
                  Line2D([], [], color="gray", marker="o", markeredgecolor="black", linestyle="", label="validation loss")]
        axes.legend(handles=legend, loc="upper right")
        axes.set(xscale="log", xlabel="tokens seen D", ylabel=f"loss ({UNITS})", title=f"Training curves ({len(curves)} runs)")
        window_on_late_training(axes, curves)
        tidy_log_axis(axes.xaxis)
        tidy_log_axis(figure.colorbar(mappable, ax=axes, label=params_name).ax.yaxis)
    return figure


# ----------------------------------------------------------------------------- all figures

def _read_fit(fit: dict | str | Path | None, data: SweepData) -> dict | None:
    """The fit to draw: the argument (a dict or a fit.json path), else the sweep's fit.json."""
    if isinstance(fit, (str, Path)):
        path = Path(fit)
        if not path.is_file():
            raise ValueError(f"fit file {path} not found: pass the JSON that tools/fit_scaling.py wrote")
        return json.loads(path.read_text())
    return fit if fit is not None else data.fit


def _power_fit_for_params(data: SweepData, fit: dict | None, note) -> dict | None:
    """The given power-over-params fit, else a fresh bootstrap fit, else None (too few points)."""
    if fit is not None and fit.get("law") == "power" and fit.get("x", "params") == "params":
        if not fit.get("samples"):
            note("the fit has no bootstrap samples, so loss_vs_params has no band (fit with --bootstrap K)")
        return fit
    finite = np.isfinite(data.params) & np.isfinite(data.loss)
    if finite.sum() < MIN_POINTS_FOR_POWER_FIT:
        note(f"only {finite.sum()} runs: loss_vs_params shows points without a fitted law (needs {MIN_POINTS_FOR_POWER_FIT})")
        return None
    try:
        power = fitting.fit_power(data.params[finite], data.loss[finite], bootstrap=BOOTSTRAP_FOR_PLOTS, seed=0)
    except (ValueError, RuntimeError) as error:  # a failed fit should not cost the other figures
        note(f"power-law fit failed ({error}): loss_vs_params shows points only")
        return None
    note(f"no power-law fit given, fitted here: L = {power['E']:.3f} + {power['A']:.4g}·N^-{power['alpha']:.4f} "
         f"({BOOTSTRAP_FOR_PLOTS} bootstrap refits)")
    return power


def plot_all(input_path: str | Path, out_dir: str | Path, fit: dict | str | Path | None = None, *, note=print) -> list[Path]:
    """Every figure the input supports, as PNG + SVG in `out_dir`; returns the paths written.

    `input_path`: a sweep directory (runs.csv + run folders) or a CSV of points. `fit`: a fit
    dict or fit.json path (default: the sweep's own fit.json); a power law over params is drawn
    on loss_vs_params (else one is fitted here, with a bootstrap band), a power law over FLOPs on
    loss_vs_compute, an isoflop fit on isoflop (else one is fitted here). Figures the data cannot
    support are skipped with a `note(...)` saying why.
    """
    data = load_input(input_path)
    fit = _read_fit(fit, data)
    written: list[Path] = []
    budgets = group_budgets(data.flops, min_points=MIN_POINTS_PER_BUDGET)
    n_budgets = len(set(budgets[budgets >= 0]))
    is_isoflop_grid = n_budgets >= 2 and (budgets >= 0).mean() >= 0.5
    finite = np.isfinite(data.params) & np.isfinite(data.loss)

    if not finite.any():
        raise ValueError(f"{input_path} has no finished runs with a loss: nothing to plot")
    if is_isoflop_grid:
        note("loss_vs_params skipped: isoFLOP data is not one curve in N (see isoflop)")
    else:
        power = _power_fit_for_params(data, fit, note)
        figure = plot_loss_vs_params(data.params[finite], data.loss[finite], power,
                                     params_name=data.params_name, loss_name=data.loss_name)
        written += save_figure(figure, out_dir, "loss_vs_params")

    if np.isfinite(data.flops).any():
        compute_fit = fit if fit is not None and fit.get("law") == "power" and fit.get("x") == "flops" else None
        figure = plot_loss_vs_compute(data.flops, data.loss, data.params, data.curves, fit=compute_fit,
                                      loss_name=data.loss_name, params_name=data.params_name)
        written += save_figure(figure, out_dir, "loss_vs_compute")
    else:
        note("loss_vs_compute skipped: the input has no flops column")

    if n_budgets >= 2:
        in_budget = budgets >= 0
        isoflop = fit if fit is not None and fit.get("law") == "isoflop" else None
        if isoflop is None:
            try:
                isoflop = fitting.fit_isoflop(data.params[in_budget], data.tokens[in_budget], data.loss[in_budget], data.flops[in_budget])
            except ValueError as error:
                note(f"isoflop skipped: {error}")
        if isoflop is not None:
            figure = plot_isoflop(data.params[in_budget], data.loss[in_budget], data.flops[in_budget], isoflop,
                                  loss_name=data.loss_name, params_name=data.params_name)
            written += save_figure(figure, out_dir, "isoflop")
    else:
        note(f"isoflop skipped: needs ≥2 compute budgets with ≥{MIN_POINTS_PER_BUDGET} runs each (found {n_budgets})")

    if data.curves:
        written += save_figure(plot_training_curves(data.curves, params_name=data.params_name), out_dir, "training_curves")
    else:
        note("training_curves skipped: no run folders with metrics.jsonl (a CSV has none)")
    return written
