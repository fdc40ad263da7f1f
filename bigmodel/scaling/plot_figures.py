"""The scaling figures: loss vs size, loss vs compute, isoFLOP profiles, training curves.

Each figure is one function that takes plain arrays (so tests and notebooks can call it) and
the fit to draw, and returns a `matplotlib.figure.Figure`. A figure draws the law it is given,
as that law: a power law as its curve, a Chinchilla law as L(N, D) at the runs' own D, an
isoFLOP fit as its parabolas and N_opt line. It never fits a law of its own.

Figures are built with `matplotlib.figure.Figure` directly, never `pyplot`: no global figure
state, no GUI backend (PNG goes through Agg), nothing to close. Artists carry a `gid`
("points", "fit", "frontier", "parabola", ...) so tests can count what was drawn.
"""

from __future__ import annotations

import math

import matplotlib
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bigmodel.scaling.expand import format_number
from bigmodel.scaling.laws import law_loss
from bigmodel.scaling.plot_data import RunCurve
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
    size_colors,
    tidy_log_axis,
    window_on_late_training,
    window_on_minima,
)
from bigmodel.scaling.registry import group_budgets

# A Chinchilla law is drawn as one curve per distinct D up to this many (one colour each);
# with more D values (an isoFLOP grid) it is drawn as its loss at each run's (N, D).
TOKEN_COLORS = ("tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:olive")
MIN_SAMPLES_FOR_BAND = 10


# ----------------------------------------------------------------------------- helpers


def _band(fit: dict, non_embedding_params, tokens, flops) -> tuple[np.ndarray, np.ndarray] | None:
    """2.5th and 97.5th percentile of the bootstrap laws' loss, or None without enough samples."""
    samples = fit.get("samples") or []
    if len(samples) < MIN_SAMPLES_FOR_BAND:
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        curves = np.array([law_loss(fit, non_embedding_params, tokens, flops, sample) for sample in samples])
    return np.nanpercentile(curves, 2.5, axis=0), np.nanpercentile(curves, 97.5, axis=0)


def interval_text(fit: dict) -> str | None:
    """"α = 0.35 [0.31, 0.40]" lines for each law parameter, from `ci` or the samples; a parameter
    at its bound (fit.json `at_bound`) reads "E at bound (not identified)", never an interval."""
    intervals = dict(fit.get("ci") or {})
    samples = fit.get("samples") or []
    at_bound = fit.get("at_bound") or {}
    lines = []
    for key, symbol, digits in (("alpha", "α", ".3f"), ("beta", "β", ".3f"), ("A", "A", ".3g"), ("B", "B", ".3g"), ("E", "E", ".2f")):
        if key not in fit:
            continue
        if key in at_bound:
            lines.append(f"{symbol} at bound (not identified)")
            continue
        if key not in intervals and len(samples) >= MIN_SAMPLES_FOR_BAND:
            intervals[key] = np.nanpercentile([sample[key] for sample in samples], [2.5, 97.5])
        if key in intervals:
            low, high = intervals[key]
            lines.append(f"{symbol} = {fit[key]:{digits}}  [{low:{digits}}, {high:{digits}}]")
    return "95% bootstrap intervals\n" + "\n".join(lines) if lines else None


def holdout_rows(fit: dict | None) -> list[dict]:
    holdout = (fit or {}).get("holdout") or []
    return [holdout] if isinstance(holdout, dict) else list(holdout)


def held_out_points(fit: dict | None, non_embedding_params: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Which points the fit held out: those at a holdout row's N (power law), or at its N and D
    (Chinchilla, which holds out the largest-compute (N, D): the same N at smaller D was fitted)."""
    held_out = np.zeros(len(non_embedding_params), dtype=bool)
    by_tokens = fit is not None and fit["law"] == "chinchilla"
    for row in holdout_rows(fit):
        here = np.isclose(non_embedding_params, float(row["non_embedding_params"]), rtol=1e-6)
        if by_tokens and "tokens" in row:
            here &= np.isclose(tokens, float(row["tokens"]), rtol=1e-6)
        held_out |= here
    return held_out


def compute_frontier(compute, loss) -> tuple[np.ndarray, np.ndarray]:
    """The lowest loss reached at ≤ C, from the cheapest point to the most expensive one.

    Non-increasing by construction; it keeps the points where it drops and ends at the largest
    compute even when that run is no better (the frontier is then flat up to it).
    """
    compute, loss = np.asarray(compute, dtype=float), np.asarray(loss, dtype=float)
    finite = np.isfinite(compute) & np.isfinite(loss) & (compute > 0)
    compute, loss = compute[finite], loss[finite]
    if not len(compute):
        return compute, loss
    order = np.lexsort((loss, compute))  # by compute, ties by loss: only a tie's best can be kept
    compute, best = compute[order], np.minimum.accumulate(loss[order])
    keep = np.concatenate([[True], best[1:] < best[:-1]])
    if not keep[np.flatnonzero(compute == compute[-1])].any():  # the largest run improves nothing: end flat at it
        keep[-1] = True
    return compute[keep], best[keep]


# ----------------------------------------------------------------------------- loss vs size


def _draw_power_law(axes, fit: dict, non_embedding_params: np.ndarray) -> None:
    grid = log_grid(non_embedding_params)
    band = _band(fit, grid, None, None)
    if band is not None:
        axes.fill_between(grid, *band, color="tab:blue", alpha=0.18, linewidth=0, gid="band",
                          label=f"95% bootstrap band ({len(fit['samples'])} refits)")
    axes.plot(grid, law_loss(fit, grid, None, None), color="tab:blue", linewidth=2, gid="fit", label=law_label(fit))


def _draw_chinchilla_law(axes, fit: dict, non_embedding_params: np.ndarray, tokens: np.ndarray) -> None:
    """L(N, D) at the runs' own D: a curve per D (points coloured alike), or the law at each point."""
    distinct_tokens = np.unique(tokens)
    if len(distinct_tokens) > len(TOKEN_COLORS):
        axes.scatter(non_embedding_params, law_loss(fit, non_embedding_params, tokens, None), marker="D", s=45,
                     facecolor="none", edgecolor="tab:orange", linewidth=1.5, zorder=4, gid="fit",
                     label=f"{law_label(fit)}\nat each run's N and D")
        return
    several = len(distinct_tokens) > 1
    if several:  # the law once in the legend; each curve's D is in its points' legend entry
        axes.plot([], [], color="gray", linewidth=2, label=f"{law_label(fit)}\nat each D (curve colour = its runs')")
    for color, token_count in zip(TOKEN_COLORS, distinct_tokens):
        at_d = tokens == token_count
        grid = log_grid(non_embedding_params[at_d])
        band = _band(fit, grid, token_count, None)
        if band is not None:
            axes.fill_between(grid, *band, color=color, alpha=0.15, linewidth=0, gid="band")
        label = None if several else f"{law_label(fit)}\nat D = {format_number(token_count)} tokens"
        axes.plot(grid, law_loss(fit, grid, token_count, None), color=color, linewidth=2, gid="fit", label=label)


def draw_known_floor(axes, fit: dict | None) -> list[float]:
    """The true entropy rate of a markov sweep's corpus as a dotted line (`scaling.floor`): the
    floor the fitted E should find. Returns its loss (to keep in frame), or [] without one."""
    floor = (fit or {}).get("known_floor")
    if not floor:
        return []
    axes.axhline(floor["loss"], color="0.25", linestyle=":", linewidth=1.6, gid="known-floor",
                 label=f"true entropy rate {floor['loss']:.4f} ({floor['dataset']})")
    return [floor["loss"]]


def plot_loss_vs_params(
    non_embedding_params, tokens, loss, fit: dict | None = None, *, params_name: str = "non-embedding parameters N",
    loss_name: str = "validation loss", unit: str = UNITS,
) -> Figure:
    """Final loss vs N (log-log), the given law (power or Chinchilla), its 95% band, the hold-out.

    Points whose N matches a holdout row of the fit are drawn as held out, with the law's
    prediction beside them. With a Chinchilla law at a few D values, each D gets a colour
    shared by its points and its curve.
    """
    params, tokens, loss = (np.asarray(values, dtype=float) for values in (non_embedding_params, tokens, loss))
    holdout = holdout_rows(fit)
    held_out = held_out_points(fit, params, tokens)
    distinct_tokens = np.unique(tokens)
    colour_by_tokens = fit is not None and fit["law"] == "chinchilla" and 1 < len(distinct_tokens) <= len(TOKEN_COLORS)
    with matplotlib.rc_context(STYLE):
        figure = new_figure()
        axes = figure.add_subplot()
        if colour_by_tokens:
            for color, token_count in zip(TOKEN_COLORS, distinct_tokens):
                mine = (tokens == token_count) & ~held_out
                axes.scatter(params[mine], loss[mine], s=55, color=color, edgecolor="black", zorder=3, gid="points",
                             label=f"runs at D = {format_number(token_count)} ({mine.sum()})")
        else:
            axes.scatter(params[~held_out], loss[~held_out], s=55, color="tab:blue", edgecolor="black", zorder=3,
                         label=f"runs{' in the fit' if held_out.any() else ''} ({(~held_out).sum()})", gid="points")
        if fit is not None and fit["law"] == "chinchilla":
            _draw_chinchilla_law(axes, fit, params, tokens)
        elif fit is not None:
            _draw_power_law(axes, fit, params)
        floor = draw_known_floor(axes, fit)
        intervals = interval_text(fit) if fit is not None else None
        if intervals:  # E especially: poorly identified, so never shown without its interval
            axes.text(0.02, 0.03, intervals, transform=axes.transAxes, fontsize=10, va="bottom", ha="left",
                      bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.7", "alpha": 0.9})
        for index, row in enumerate(holdout):
            measured, predicted = float(row["measured_loss"]), float(row["predicted_loss"])
            n = float(row["non_embedding_params"])
            axes.plot([n, n], [measured, predicted], color="tab:red", linestyle="--", linewidth=1, gid="holdout-gap")
            axes.scatter([n], [measured], marker="*", s=220, color="tab:red", edgecolor="black", zorder=4,
                         gid="holdout", label="held out: measured" if index == 0 else None)
            axes.scatter([n], [predicted], marker="D", s=70, facecolor="none", edgecolor="tab:red", linewidth=2,
                         zorder=4, gid="holdout-prediction", label="held out: predicted by the fit" if index == 0 else None)
            error = row.get("relative_error", (predicted - measured) / measured)
            axes.annotate(f"{100 * float(error):+.1f}%", (n, (measured * predicted) ** 0.5), xytext=(12, 0),
                          textcoords="offset points", color="tab:red", fontsize=11, va="center")
        axes.set(xscale="log", yscale="log", xlabel=params_name, ylabel=f"{loss_name} ({unit})", title="Loss vs model size")
        shown = [loss, [float(row["predicted_loss"]) for row in holdout], floor]
        if fit is not None and fit["law"] == "chinchilla":  # its markers or curves pass through the runs' (N, D)
            shown.append(law_loss(fit, params, tokens, None))
        fit_loss_limits(axes, np.concatenate(shown))
        label_loss_axis(axes)
        tidy_log_axis(axes.xaxis)
        if colour_by_tokens:  # a curve per D fills the frame: the legend goes beside it
            axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
        else:
            axes.legend(loc="upper right")
    return figure


# ----------------------------------------------------------------------------- loss vs compute


def plot_loss_vs_compute(
    flops, loss, non_embedding_params, curves: list[RunCurve] | None = None, *, fit: dict | None = None,
    loss_name: str = "validation loss", params_name: str = "non-embedding parameters N", unit: str = UNITS,
) -> Figure:
    """Loss vs training compute C (log-log): runs coloured by N and the compute frontier.

    Every line, point and the frontier show the same loss: each run's validation curve where
    it evaluated (its eval points against tokens × FLOPs/token), else its training curve. The
    frontier is the lowest of them at ≤ C (`compute_frontier`), curves and final points
    together, so it is non-increasing and reaches the largest run. `fit`: a power law over C.
    """
    flops, loss, params = (np.asarray(values, dtype=float) for values in (flops, loss, non_embedding_params))
    curves = [curve for curve in (curves or []) if np.isfinite(curve.flops_per_token)]
    norm, mappable = size_colors(np.concatenate([params, [curve.non_embedding_params for curve in curves]]))
    curve_compute, curve_loss = [flops], [loss]
    with matplotlib.rc_context(STYLE):
        figure = new_figure()
        axes = figure.add_subplot()
        drawn = []
        for curve in curves:
            compute, values = curve.compute_curve()
            curve_compute.append(compute)
            curve_loss.append(values)
            if len(values) < 2:  # a run evaluated only at its end: its curve is its final point
                continue
            marker = "o" if curve.has_eval else None  # eval points are few: show where they were taken
            axes.plot(compute, values, color=mappable.to_rgba(curve.non_embedding_params), linewidth=1.2, alpha=0.75,
                      marker=marker, markersize=3, gid="run")
            drawn.append(curve)
        axes.scatter(flops, loss, c=params, cmap=SIZE_COLORMAP, norm=norm, s=60, edgecolor="black", zorder=3, gid="points")
        axes.scatter([], [], color="0.6", edgecolor="black", s=60, label=f"final {loss_name}, one point per run")
        for kind, has_eval in (("validation loss during training", True), ("training loss", False)):
            if any(curve.has_eval == has_eval for curve in drawn):
                axes.plot([], [], color="gray", linewidth=1.2, marker="o" if has_eval else None, markersize=3,
                          label=f"{kind}, one line per run")
        front = compute_frontier(np.concatenate(curve_compute), np.concatenate(curve_loss))
        axes.plot(*front, color="black", linewidth=2.2, linestyle="--", drawstyle="steps-post", gid="frontier", zorder=4,
                  label="compute frontier: lowest loss reached at ≤ C")
        if fit is not None:
            grid = log_grid(flops)
            axes.plot(grid, law_loss(fit, None, None, grid), color="tab:red", linewidth=1.8, gid="fit", label=law_label(fit, "C"))
        axes.set(xscale="log", yscale="log", xlabel="training compute C (FLOPs)", ylabel=f"{loss_name} ({unit})",
                 title="Loss vs training compute")
        fit_loss_limits(axes, np.concatenate(curve_loss))
        label_loss_axis(axes)
        tidy_log_axis(axes.xaxis)
        axes.legend(loc="best")
        tidy_log_axis(figure.colorbar(mappable, ax=axes, label=params_name).ax.yaxis)
    return figure


# ----------------------------------------------------------------------------- isoFLOP profiles


def _isoflop_fit_line(fit: dict, budgets: list[dict]) -> tuple[float, np.ndarray, np.ndarray]:
    """N_opt = k·C^a through the vertices: the fit's k, else least squares in log space at its a."""
    compute = np.array([budget["flops"] for budget in budgets], dtype=float)
    n_opt = np.array([budget["n_opt"] for budget in budgets], dtype=float)
    scale = fit.get("n_coefficient") or 10 ** np.mean(np.log10(n_opt) - fit["a"] * np.log10(compute))
    grid = log_grid(compute, margin=1.5)
    return scale, grid, scale * grid ** fit["a"]


def budget_members(flops: np.ndarray, budget_flops: np.ndarray) -> np.ndarray:
    """Index of the fitted budget each point belongs to; -1 for points of a skipped budget.

    Points and fitted budgets are grouped together by the one rule (`registry.group_budgets`):
    a point belongs to the budget that lands in its group.
    """
    labels = group_budgets(np.concatenate([flops, budget_flops]))
    point_labels, budget_labels = labels[: len(flops)], labels[len(flops):]
    members = np.full(len(flops), -1)
    for index, label in enumerate(budget_labels):
        members[(point_labels == label) & (label >= 0)] = index
    return members


def plot_isoflop(
    non_embedding_params, loss, flops, fit: dict, *, loss_name: str = "loss", params_name: str = "parameters N", unit: str = UNITS,
) -> Figure:
    """IsoFLOP profiles (Chinchilla Approach 2) and N_opt vs C, side by side.

    Left: loss vs N per budget with its fitted parabola in log10 N, drawn over the points it was
    fitted to (the budget's `n_points` lowest), and the vertex marked; linear loss axis, since
    the model is a parabola in loss. Points of budgets the fit skipped (no bracketed minimum)
    are hollow. Right: the vertices N_opt(C), each vertex less its design bias where `fit`
    removed it (hollow circles, `isoflop_bias.py`), and the law N_opt = k·C^a. `fit` is a
    `fit_isoflop` result (or `fit.fit_approach_2`'s). Colour encodes the budget in both panels.
    """
    params, loss, flops = (np.asarray(values, dtype=float) for values in (non_embedding_params, loss, flops))
    budgets = sorted(fit["budgets"], key=lambda budget: budget["flops"])
    member_of = budget_members(flops, np.array([budget["flops"] for budget in budgets], dtype=float))
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
            grid = log_grid(params[fitted] if len(fitted) else [budget["n_opt"]], margin=1.15, count=100)
            profiles.plot(grid, np.polyval(budget["parabola"], np.log10(grid)), color=color, linewidth=1.8, gid="parabola")
            profiles.scatter([budget["n_opt"]], [budget["loss_opt"]], marker="*", s=260, color=color,
                             edgecolor="black", linewidth=1, zorder=4, gid="vertex")
            optimum.scatter([budget["flops"]], [budget["n_opt"]], marker="*", s=220, color=color,
                            edgecolor="black", zorder=3, gid="n-opt")
            if "n_opt_corrected" in budget:  # the vertex less the design's bias (`isoflop_bias.py`): what the law runs through
                optimum.scatter([budget["flops"]], [budget["n_opt_corrected"]], marker="o", s=70, facecolor="none",
                                edgecolor=color, linewidth=2, zorder=3, gid="n-opt-corrected")
        skipped = member_of < 0
        if skipped.any():
            profiles.scatter(params[skipped], loss[skipped], facecolor="none", edgecolor=mappable.to_rgba(flops[skipped]),
                             linewidth=1.5, s=45, zorder=3, gid="skipped", label="budget skipped: optimum not bracketed")
            profiles.legend(loc="lower left")  # low loss needs large N: this corner stays empty
        profiles.set(xscale="log", xlabel=params_name, ylabel=f"{loss_name} ({unit})",
                     title="IsoFLOP profiles: a parabola in log N per budget")
        window_on_minima(profiles, loss, np.array(fitted_loss))
        # Profiles fill their panel, so the main legend lives in the N_opt panel (stars in both).
        optimum.scatter([], [], marker="*", s=180, color="white", edgecolor="black", label=r"parabola vertex $N_{opt}(C)$")
        if any("n_opt_corrected" in budget for budget in budgets):
            optimum.scatter([], [], marker="o", s=70, facecolor="none", edgecolor="black", linewidth=2,
                            label="vertex less its design bias")
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


# ----------------------------------------------------------------------------- training curves


def plot_training_curves(curves: list[RunCurve], *, params_name: str = "non-embedding parameters N", unit: str = UNITS) -> Figure:
    """Loss vs tokens (log x) for every run, coloured by N; eval points as markers."""
    norm, mappable = size_colors(np.array([curve.non_embedding_params for curve in curves], dtype=float))
    with matplotlib.rc_context(STYLE):
        figure = new_figure()
        axes = figure.add_subplot()
        for curve in sorted(curves, key=lambda curve: curve.non_embedding_params):
            color = mappable.to_rgba(curve.non_embedding_params)
            keep = curve.tokens > 0
            axes.plot(curve.tokens[keep], curve.loss[keep], color=color, linewidth=1.2, alpha=0.85, gid="run")
            has_eval = curve.eval_tokens > 0
            if has_eval.any():
                axes.scatter(curve.eval_tokens[has_eval], curve.eval_loss[has_eval], color=color, edgecolor="black",
                             s=40, zorder=3, gid="eval")
        legend = [Line2D([], [], color="gray", linewidth=1.2, label="training loss"),
                  Line2D([], [], color="gray", marker="o", markeredgecolor="black", linestyle="", label="validation loss")]
        axes.legend(handles=legend, loc="upper right")
        axes.set(xscale="log", xlabel="tokens seen D", ylabel=f"loss ({unit})", title=f"Training curves ({len(curves)} runs)")
        window_on_late_training(axes, curves)
        tidy_log_axis(axes.xaxis)
        tidy_log_axis(figure.colorbar(mappable, ax=axes, label=params_name).ax.yaxis)
    return figure
