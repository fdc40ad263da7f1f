"""The figures of a Chinchilla fit L(N, D) = E + A/N^α + B/D^β on an (N, D) grid (Approach 3).

- `plot_loss_vs_tokens`: loss vs D, one colour per N, each size's points with the fitted
  surface's curve L(N, ·) through them: how well one surface explains every run.
- `plot_compute_optimal_frontier`: loss vs C of every run, their lower envelope, and the law's
  compute-optimal loss L(N_opt(C), D_opt(C)), the best any allocation of C could do by the fit.
- `plot_isoflop_slices`: the surface along C = 6ND at a few budgets spanning the data (loss vs
  N), each slice's optimum N_opt(C) marked with its bootstrap interval.

C is the count the fit allocated on (`allocation.py`): the runs' own FLOPs where the fit has
their FLOPs-per-token line (fit.json `flops_per_token_line`), else 6·N·D. On one axis, points
and the fitted optimum use one count, and the axis label names it (`compute_axis_label`).

Where the data ends: the fitted optimum is drawn dashed wherever its N_opt or D_opt lies outside
the sizes and token counts the fitted runs trained (or C outside their compute), solid only
where both are inside; compute beyond the fitted runs is shaded, and so are sizes outside them
on the slices, whose optima there are hollow. Same conventions as `plot_figures`: plain arrays
in, a `Figure` out, artists tagged with a `gid`, nothing fitted here.
"""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.legend_handler import HandlerTuple
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from bigmodel.scaling.allocation import basis_line, compute_axis_label, frontier_on_basis, run_compute, tokens_for
from bigmodel.scaling.counts import count_words
from bigmodel.scaling.expand import format_number
from bigmodel.scaling.laws import compute_optimal, estimate, law_loss
from bigmodel.scaling.plot_figures import (MIN_SAMPLES_FOR_BAND, compute_frontier, draw_known_floor, held_out_points, holdout_rows,
                                          interval_text)
from bigmodel.scaling.plot_style import (
    BUDGET_COLORMAP,
    EXTRAPOLATED_KEY,
    STYLE,
    UNITS,
    fit_loss_limits,
    label_loss_axis,
    law_label,
    log_grid,
    new_figure,
    shade_beyond,
    size_colors,
    tidy_log_axis,
)

MAX_ANNOTATED_HOLDOUTS = 2
SLICES = 5  # isoFLOP budgets drawn, log-spaced from the cheapest fitted run's C to the dearest's
BOX = {"boxstyle": "round", "facecolor": "white", "edgecolor": "0.7", "alpha": 0.9}


def training_compute(non_embedding_params, tokens, fit: dict | None = None, flops=None) -> np.ndarray:
    """Each run's C on the fit's basis (module docstring); 6·N·D for a fit without a FLOPs line."""
    return run_compute(basis_line(fit or {}), non_embedding_params, tokens, flops)


def fitted_ranges(params: np.ndarray, tokens: np.ndarray, compute: np.ndarray, fitted: np.ndarray) -> dict:
    """(low, high) of N, D and C over the fitted runs: where the law was measured."""
    return {name: (float(values[fitted].min()), float(values[fitted].max()))
            for name, values in (("N", params), ("D", tokens), ("C", compute))}


def inside(values, bounds: tuple[float, float]) -> np.ndarray:
    """Within the fitted range, with a hair of slack for rounding (a run's own N is inside)."""
    values = np.asarray(values, dtype=float)
    return (values >= bounds[0] * (1 - 1e-9)) & (values <= bounds[1] * (1 + 1e-9))




def with_allocation(fit: dict) -> dict:
    """The fit with a, b and G filled in from its law where it lacks them (a hand-written fit)."""
    return {**compute_optimal(fit["A"], fit["B"], fit["alpha"], fit["beta"]), **fit}


def _samples(fit: dict) -> list[dict]:
    """The bootstrap laws, when there are enough for a 95% band."""
    samples = fit.get("samples") or []
    return samples if len(samples) >= MIN_SAMPLES_FOR_BAND else []


def _optimal_band(fit: dict, compute: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """2.5/97.5 percentiles over the bootstrap laws of (N_opt(C), L_opt(C)) on the fit's basis, or None."""
    samples = _samples(fit)
    if not samples:
        return None
    line = basis_line(fit)
    lines = np.array([frontier_on_basis({**fit, **sample}, compute, line, points=301)[::2] for sample in samples])  # (K, [N_opt, L_opt], C)
    low, high = np.nanpercentile(lines, [2.5, 97.5], axis=0)
    return (low[0], high[0]), low[1], high[1]


def _draw_holdout(axes, fit: dict, x_of_row) -> list[tuple]:
    """Held-out runs: measured (star), predicted (diamond) with its bootstrap interval, the gap.

    Returns the legend entry, one (handles, label) for both markers. Each prediction's error is
    written beside it for one or two runs; for more (an isoFLOP budget held out whole) the
    labels would overprint, so the legend gives the mean instead.
    """
    rows = holdout_rows(fit)
    if not rows:
        return []
    errors = [float(row.get("relative_error", row["predicted_loss"] / row["measured_loss"] - 1)) for row in rows]
    annotate = len(rows) <= MAX_ANNOTATED_HOLDOUTS
    for row, error in zip(rows, errors):
        x, measured, predicted = x_of_row(row), float(row["measured_loss"]), float(row["predicted_loss"])
        axes.plot([x, x], [measured, predicted], color="tab:red", linestyle="--", linewidth=1, gid="holdout-gap")
        star = axes.scatter([x], [measured], marker="*", s=240, color="tab:red", edgecolor="black", zorder=5, gid="holdout")
        band = row.get("prediction_interval") or row.get("interval")  # where a run lands; older fits: the mean's interval
        if band:
            low, high = band
            # From its middle: a percentile interval need not contain the point estimate.
            axes.errorbar([x], [(low + high) / 2], yerr=[(high - low) / 2], fmt="none", ecolor="tab:red",
                          capsize=4, linewidth=1.5, zorder=4, gid="holdout-interval")
        diamond = axes.scatter([x], [predicted], marker="D", s=70, facecolor="white", edgecolor="tab:red", linewidth=2, zorder=5,
                               gid="holdout-prediction")
        if annotate:
            axes.annotate(f"{100 * error:+.1f}%", (x, (measured * predicted) ** 0.5), xytext=(10, 0),
                          textcoords="offset points", color="tab:red", fontsize=11, va="center")
    kind = "95% prediction interval" if rows[0].get("prediction_interval") else "95% interval"
    label = "held out: measured, predicted" + (f"\n({kind})" if rows[0].get("prediction_interval") or rows[0].get("interval") else "")
    if not annotate:
        label += f"\nmean |error| {100 * np.mean(np.abs(errors)):.1f}% over {len(rows)} runs"
    return [((star, diamond), label)]


def _legend(where, entries: list[tuple], **options):
    """A legend from (handle or tuple of handles, label) pairs; a tuple draws its markers side by side."""
    handles, labels = zip(*entries)
    return where.legend(handles, labels, handler_map={tuple: HandlerTuple(ndivide=None, pad=0.6)}, **options)


def _allocation_text(fit: dict) -> str:
    """a and b with intervals, and the named budget's allocation, for a corner box."""
    lines = [rf"$N_{{opt}} \propto C^a$, a = {estimate(fit, 'a', '.3f')}", rf"$D_{{opt}} \propto C^b$, b = {estimate(fit, 'b', '.3f')}"]
    if "n_opt" in fit:
        lines += [f"at C = {format_number(fit['budget'], scientific=True)}: " + rf"$N_{{opt}}$ = {format_number(fit['n_opt'])},"
                  + rf" $D_{{opt}}$ = {format_number(fit['d_opt'])}", f"D/N = {estimate(fit, 'tokens_per_param', '.1f')} (N: {count_words(fit.get('n_definition'))})"]
    if fit.get("ci"):
        lines.append(f"[95% bootstrap intervals, {len(fit.get('samples') or [])} refits]")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- loss vs D per N


def plot_loss_vs_tokens(
    non_embedding_params, tokens, loss, fit: dict, *, params_name: str = "non-embedding parameters N",
    loss_name: str = "validation loss", unit: str = UNITS,
) -> Figure:
    """Loss vs D (log-log), one colour per N: the runs and the fitted L(N, D) along each N's D range."""
    params, tokens, loss = (np.asarray(values, dtype=float) for values in (non_embedding_params, tokens, loss))
    held_out = held_out_points(fit, params, tokens)
    norm, mappable = size_colors(params)
    with matplotlib.rc_context(STYLE):
        figure = new_figure()
        axes = figure.add_subplot()
        for size in np.unique(params):
            mine, color = params == size, mappable.to_rgba(size)
            grid = log_grid(tokens[mine], margin=1.25, count=100)
            axes.plot(grid, law_loss(fit, size, grid, None), color=color, linewidth=1.6, gid="fit")
            fitted = mine & ~held_out
            axes.scatter(tokens[fitted], loss[fitted], color=color, edgecolor="black", s=45, zorder=3, gid="points")
        entries = [(Line2D([], [], color="gray", marker="o", markeredgecolor="black", linestyle=""), f"runs ({(~held_out).sum()} fitted)"),
                   (Line2D([], [], color="gray", linewidth=1.6), f"fitted {law_label(fit)}\none curve per N (same colour)")]
        entries += _draw_holdout(axes, fit, lambda row: float(row["tokens"]))
        floor = draw_known_floor(axes, fit)
        if floor:
            entries.append((Line2D([], [], color="0.25", linestyle=":", linewidth=1.6), f"true entropy rate {floor[0]:.4f}"))
        _legend(axes, entries, loc="upper right")
        axes.set(xscale="log", yscale="log", xlabel="training tokens D", ylabel=f"{loss_name} ({unit})",
                 title="Loss vs data: the fitted surface at each model size")
        shown = [loss, [float(row["predicted_loss"]) for row in holdout_rows(fit)], floor]
        fit_loss_limits(axes, np.concatenate(shown))
        label_loss_axis(axes)
        tidy_log_axis(axes.xaxis)
        intervals = interval_text(fit)
        if intervals:
            axes.text(0.02, 0.03, intervals, transform=axes.transAxes, fontsize=10, va="bottom", ha="left", bbox=BOX)
        tidy_log_axis(figure.colorbar(mappable, ax=axes, label=params_name).ax.yaxis)
    return figure


# ----------------------------------------------------------------------------- the compute frontier


def _frontier_grid(compute: np.ndarray, fit: dict) -> np.ndarray:
    """C values spanning the runs, stretched to the named budget when it lies within 10× of them."""
    low, high = compute.min() / 1.5, compute.max() * 1.5
    budget = fit.get("budget")
    if budget and low / 10 <= budget <= high * 10:
        low, high = min(low, budget / 1.5), max(high, budget * 1.5)
    return np.geomspace(low, high, 200)


def _budget_text(fit: dict, ranges: dict) -> str:
    """How far the named budget lies beyond the fitted runs' compute, and its D_opt beyond the
    unique data (fit.json `unique_data`), for the corner box."""
    budget, text = fit.get("budget"), ""
    if budget and not inside(budget, ranges["C"]):
        ratio = budget / ranges["C"][1] if budget > ranges["C"][1] else ranges["C"][0] / budget
        text += f"\n(C is {format_number(ratio)}× {'beyond' if budget > ranges['C'][1] else 'below'} the fitted runs: extrapolated)"
    unique = fit.get("unique_data") or {}
    if unique.get("repeated"):
        text += f"\n($D_{{opt}}$ is {format_number(unique['d_opt_over_unique'])}× the unique data: repeated epochs)"
    return text


def plot_compute_optimal_frontier(
    non_embedding_params, tokens, loss, fit: dict, *, flops=None, params_name: str = "non-embedding parameters N",
    loss_name: str = "validation loss", unit: str = UNITS,
) -> Figure:
    """Loss vs C of every run (on the fit's compute basis), their lower envelope, and the fit's
    compute-optimal loss line: solid where N_opt and D_opt lie within the fitted runs' sizes and
    token counts, dashed where they do not, compute beyond the fitted runs shaded."""
    params, tokens, loss = (np.asarray(values, dtype=float) for values in (non_embedding_params, tokens, loss))
    fit = with_allocation(fit)
    line_basis = basis_line(fit)
    compute = training_compute(params, tokens, fit, flops)
    held_out = held_out_points(fit, params, tokens)
    ranges = fitted_ranges(params, tokens, compute, ~held_out)
    norm, mappable = size_colors(params)
    grid = _frontier_grid(compute, fit)
    n_opt, d_opt, optimal_loss = frontier_on_basis(fit, grid, line_basis)
    supported = inside(n_opt, ranges["N"]) & inside(d_opt, ranges["D"]) & inside(grid, ranges["C"])
    with matplotlib.rc_context(STYLE):
        figure = new_figure()
        axes = figure.add_subplot()
        axes.scatter(compute[~held_out], loss[~held_out], c=params[~held_out], cmap=mappable.cmap, norm=norm, s=45,
                     edgecolor="black", zorder=3, gid="points")
        entries = [(Line2D([], [], color="0.6", marker="o", markeredgecolor="black", linestyle=""),
                    f"runs ({(~held_out).sum()} fitted; colour = N)")]
        (envelope,) = axes.plot(*compute_frontier(compute, loss), color="black", linewidth=2, linestyle="--",
                                drawstyle="steps-post", zorder=4, gid="frontier")
        entries.append((envelope, "lower envelope of the runs"))
        band = _optimal_band(fit, grid)
        (line,) = axes.plot(grid, optimal_loss, color="tab:red", linewidth=1.6, linestyle=(0, (4, 3)), gid="fit")
        label = r"fitted optimum $L(N_{opt}, D_{opt})$" + (", 95% band" if band is not None else "")
        if band is not None:
            patch = axes.fill_between(grid, band[1], band[2], color="tab:red", alpha=0.15, linewidth=0, gid="band")
            entries.append(((patch, line), label))
        else:
            entries.append((line, label))
        entries.append((Line2D([], [], color="tab:red", linewidth=1.6, linestyle=(0, (4, 3))),
                        r"dashed: extrapolated ($N_{opt}$ or $D_{opt}$ outside the fitted runs')"))
        if supported.any():
            (solid,) = axes.plot(grid, np.where(supported, optimal_loss, np.nan), color="tab:red", linewidth=2.4, gid="fit-supported")
            entries.append((solid, "solid: both within the fitted runs'"))
        if "loss_opt" in fit and grid[0] <= fit["budget"] <= grid[-1]:
            marker = axes.scatter([fit["budget"]], [fit["loss_opt"]], marker="P", s=130, color="tab:red", edgecolor="black",
                                  zorder=5, gid="budget")
            entries.append((marker, f"the optimum at the named budget C = {format_number(fit['budget'], scientific=True)}"))
        entries += _draw_holdout(axes, fit, lambda row: float(np.ravel(training_compute([row["non_embedding_params"]], [row["tokens"]],
                                                                                         fit, [row.get("flops", np.nan)]))[0]))
        axes.set(xscale="log", yscale="log", xlabel=compute_axis_label(fit), ylabel=f"{loss_name} ({unit})",
                 title="Compute frontier and the fitted compute-optimal loss")
        axes.set_xlim(grid[0], grid[-1])
        if shade_beyond(axes, *ranges["C"], (grid[0], grid[-1]), "extrapolated"):
            entries.append((Patch(**EXTRAPOLATED_KEY), "shaded: C beyond the fitted runs'"))
        shown = [loss, optimal_loss[(grid >= compute.min()) & (grid <= compute.max())]]
        fit_loss_limits(axes, np.concatenate(shown))
        label_loss_axis(axes)
        tidy_log_axis(axes.xaxis)
        # Runs scatter over every part of this frame (off-optimal ones far above the envelope),
        # so the legend goes below it; the top right keeps the headroom `fit_loss_limits` leaves.
        _legend(figure, entries, loc="outside lower center", ncols=2, fontsize=9)
        axes.text(0.98, 0.97, _allocation_text(fit) + _budget_text(fit, ranges), transform=axes.transAxes, fontsize=10, va="top",
                  ha="right", bbox=BOX)
        tidy_log_axis(figure.colorbar(mappable, ax=axes, label=params_name).ax.yaxis)
    return figure


# ----------------------------------------------------------------------------- isoFLOP slices


def slice_budgets(compute, count: int = SLICES) -> np.ndarray:
    """`count` budgets log-spaced from the cheapest run's C to the dearest's (C on the fit's basis)."""
    compute = np.asarray(compute, dtype=float)
    return np.geomspace(compute.min(), compute.max(), count)


def _slice_limits(axes, losses: np.ndarray) -> None:
    """Y limits around the optima and the runs: the slices rise steeply away from them, and that
    rise is not what the figure is for."""
    low, high = float(np.nanmin(losses)), float(np.nanmax(losses))
    span = max(high - low, 0.05 * high)
    axes.set_ylim(low - 0.15 * span, high + 0.6 * span)


def plot_isoflop_slices(
    non_embedding_params, tokens, fit: dict, *, loss=None, flops=None, params_name: str = "non-embedding parameters N",
    loss_name: str = "validation loss", unit: str = UNITS,
) -> Figure:
    """The fitted surface along C = const at `SLICES` budgets spanning the fitted runs (loss vs N,
    D = C / FLOPs-per-token(N) on the fit's basis), each slice's optimum marked, the runs drawn
    (coloured by their own C) where `loss` is given, sizes outside the fitted runs' shaded and the
    optima there hollow."""
    params, tokens = (np.asarray(values, dtype=float) for values in (non_embedding_params, tokens))
    fit = with_allocation(fit)
    line_basis = basis_line(fit)
    compute = training_compute(params, tokens, fit, flops)
    held_out = held_out_points(fit, params, tokens)
    ranges = fitted_ranges(params, tokens, compute, ~held_out)
    budgets = slice_budgets(compute[~held_out])
    n_opt, _, optimal_loss = frontier_on_basis(fit, budgets, line_basis)
    band = _optimal_band(fit, budgets)
    measured = inside(n_opt, ranges["N"])
    finite_optima = n_opt[np.isfinite(n_opt)]
    grid = log_grid(np.concatenate([params, finite_optima]), margin=3.0, count=300)
    norm = LogNorm(vmin=min(budgets.min(), compute.min()) / 1.5, vmax=max(budgets.max(), compute.max()) * 1.5)
    mappable = ScalarMappable(norm=norm, cmap=BUDGET_COLORMAP)
    per_token = "6N" if line_basis is None else "fpt(N)"
    with matplotlib.rc_context(STYLE):
        figure = new_figure()
        axes = figure.add_subplot()
        for index, budget in enumerate(budgets):
            color = mappable.to_rgba(budget)
            axes.plot(grid, law_loss(fit, grid, tokens_for(line_basis, grid, budget), None), color=color, linewidth=1.8, gid="slice")
            if band is not None:
                low, high = band[0][0][index], band[0][1][index]
                axes.errorbar([(low + high) / 2], [optimal_loss[index]], xerr=[(high - low) / 2], fmt="none", ecolor=color,
                              capsize=4, linewidth=1.5, zorder=4, gid="optimum-interval")
            axes.scatter([n_opt[index]], [optimal_loss[index]], marker="*", s=240, color=color if measured[index] else "white",
                         edgecolor="black" if measured[index] else color, linewidth=1 if measured[index] else 2, zorder=5, gid="optimum")
        axes.plot(n_opt, optimal_loss, color="black", linestyle=":", linewidth=1.5, gid="optimum-line")
        handles = [Line2D([], [], color="gray", linewidth=1.8, label=rf"fitted $L(N, D = C/{per_token})$, one curve per budget C"),
                   Line2D([], [], color="white", marker="*", markersize=15, markeredgecolor="black", linestyle="",
                          label=r"optimum $N_{opt}(C)$" + (" (95% interval)" if band is not None else "")),
                   Line2D([], [], color="black", linestyle=":", linewidth=1.5,
                          label=rf"optima across budgets: $N_{{opt}} \propto C^a$, a = {estimate(fit, 'a', '.3f')}")]
        shown = [optimal_loss]
        if loss is not None:
            loss = np.asarray(loss, dtype=float)
            axes.scatter(params[~held_out], loss[~held_out], c=compute[~held_out], cmap=BUDGET_COLORMAP, norm=norm, s=40,
                         edgecolor="black", zorder=3, gid="points")
            handles.append(Line2D([], [], color="0.6", marker="o", markeredgecolor="black", linestyle="",
                                  label=f"fitted runs ({(~held_out).sum()}; colour = their own C)"))
            shown.append(loss[~held_out])
        if shade_beyond(axes, *ranges["N"], (grid[0], grid[-1]), "extrapolated"):
            handles.append(Patch(**EXTRAPOLATED_KEY, label="sizes outside the fitted runs': extrapolated"))
        if not measured.all():
            handles.append(Line2D([], [], color="white", marker="*", markersize=15, markeredgecolor="0.3", markeredgewidth=2,
                                  linestyle="", label=f"optimum outside the fitted sizes ({(~measured).sum()} of {len(budgets)})"))
        axes.legend(handles=handles, loc="upper center", fontsize=9.5)
        axes.set(xscale="log", xlabel=params_name, ylabel=f"{loss_name} ({unit})", xlim=(grid[0], grid[-1]),
                 title="IsoFLOP slices of the fitted surface")
        _slice_limits(axes, np.concatenate(shown))
        tidy_log_axis(axes.xaxis)
        basis = "C = 6ND" if line_basis is None else "C, the runs' FLOPs"
        colorbar = figure.colorbar(mappable, ax=axes, label=f"budget {basis}")
        tidy_log_axis(colorbar.ax.yaxis)
    return figure
