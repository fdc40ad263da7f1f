"""The figure of `fit A --versus B`: both recipes' compute frontiers, and the compute multiplier
against C with its 95% band, from the fit.json it wrote (`versus_input.py`). The loss axis is in
fit.json's `loss_unit` (nats/byte where the runs' tokens are bytes); both panels shade the compute
outside the fitted runs', where the laws are extrapolated."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from bigmodel.scaling.plot_style import (
    EXTRAPOLATED_KEY,
    STYLE,
    UNITS,
    WIDE_FIGURE_SIZE_INCHES,
    label_loss_axis,
    new_figure,
    save_figure,
    shade_beyond,
    tidy_log_axis,
)
from bigmodel.scaling.versus import compute_grid, frontier

COLORS = {"A": "tab:blue", "B": "tab:orange"}
BAND_COLOR = "tab:purple"  # not grey: grey is the extrapolated stretch's shading
EXTRAPOLATED_LABEL = "shaded: C outside the fitted runs' (extrapolated)"
BAND_DECADES = 1.0  # the frontiers are drawn from a decade below the smallest run to a decade past the largest budget


def frontier_band(law: dict, samples: list[dict], kind: str, line: dict | None, grid: np.ndarray):
    """The frontier's loss on `grid`, and the 2.5/97.5 percentiles of the replicates' (None without)."""
    loss = frontier(law, kind, grid, line)[2]
    if len(samples) < 2:
        return loss, None
    with np.errstate(invalid="ignore"):
        band = np.nanpercentile([frontier(sample, kind, grid, line)[2] for sample in samples], [2.5, 97.5], axis=0)
    return loss, band


def fitted_compute(points: dict) -> tuple[float, float]:
    """The smallest and largest compute of either recipe's fitted runs: outside it the laws extrapolate."""
    compute = np.concatenate([points[side]["compute"] for side in ("A", "B")])
    return float(compute.min()), float(compute.max())


def _shade_extrapolation(axes, fitted: tuple[float, float], limits: tuple[float, float]) -> list:
    """Shade the x axis outside the fitted runs' compute; the legend entry to add where it did."""
    axes.set_xlim(*limits)
    return [Patch(**EXTRAPOLATED_KEY, label=EXTRAPOLATED_LABEL)] if shade_beyond(axes, *fitted, limits, "extrapolated") else []


def _draw_frontiers(axes, result: dict, points: dict) -> None:
    versus = result["versus"]
    low, high = fitted_compute(points)
    budgets = [row["budget"] for row in versus["budgets"]]
    grid = compute_grid(low / 10**BAND_DECADES, max(high, max(budgets)) * 10**BAND_DECADES)
    for side, name in (("A", result["versus"]["a"]), ("B", result["versus"]["b"])):
        law = versus["laws"][side]
        loss, band = frontier_band(law, law.get("samples") or [], versus["law"], (versus.get("flops_per_token") or {}).get(side), grid)
        axes.plot(grid, loss, color=COLORS[side], linewidth=2, label=f"{side}: {name}", gid=f"frontier-{side}")
        if band is not None:
            axes.fill_between(grid, *band, color=COLORS[side], alpha=0.2, linewidth=0)
        axes.scatter(points[side]["compute"], points[side]["loss"], color=COLORS[side], edgecolor="black", s=28, zorder=3, alpha=0.8)
    for budget in budgets:
        axes.axvline(budget, color="0.5", linestyle=":", linewidth=1)
    shaded = _shade_extrapolation(axes, (low, high), (grid[0], grid[-1]))
    axes.set(xscale="log", yscale="log", xlabel="training compute C (FLOPs)", ylabel=f"loss ({result.get('loss_unit', UNITS)})",
             title="Compute-optimal frontiers (runs, fit, 95% band)")
    label_loss_axis(axes)
    tidy_log_axis(axes.xaxis)
    axes.legend(handles=axes.get_legend_handles_labels()[0] + shaded, loc="upper right")


def _draw_multiplier(axes, versus: dict, fitted: tuple[float, float]) -> None:
    curve = versus["curve"]
    flops = np.array(curve["flops"])
    shaded = _shade_extrapolation(axes, fitted, (flops.min(), flops.max()))
    values = 10.0 ** np.array([np.nan if v is None else v for v in curve["log10_multiplier"]], dtype=float)
    axes.plot(flops, values, color="black", linewidth=2, label="A's compute for B's loss ÷ C", gid="multiplier")
    if "band" in curve:
        low, high = (10.0 ** np.array([np.nan if v is None else v for v in side], dtype=float) for side in curve["band"])
        axes.fill_between(flops, low, high, color=BAND_COLOR, alpha=0.25, linewidth=0, label="95% band (bootstrap)")
    axes.axhline(1.0, color="0.3", linewidth=1, linestyle="--")
    margin = versus.get("margin")
    if margin and margin["kind"] == "compute_multiplier":
        axes.axhline(margin["value"], color="tab:red", linewidth=1.2, linestyle=":", label=f"margin {margin['margin']}")
    for row in versus["budgets"]:
        entry = row["compute_multiplier"]
        if entry["value"] is None:
            continue
        low, high = entry.get("interval") or (entry["value"], entry["value"])
        axes.errorbar([row["budget"]], [entry["value"]], yerr=[[entry["value"] - low], [high - entry["value"]]] if None not in (low, high) else None,
                      fmt="o", color="tab:red", capsize=4, zorder=4)
    crossover = versus["crossover_flops"]["value"]
    if crossover:
        axes.axvline(crossover, color="tab:green", linewidth=1.2, label=f"crossover {crossover:.2g} FLOPs")
    axes.set(xscale="log", yscale="log", xlabel="compute C of recipe B (FLOPs)", ylabel="compute multiplier (> 1: B better)",
             title="Compute multiplier vs C (budgets: points)")
    tidy_log_axis(axes.xaxis)
    axes.legend(handles=axes.get_legend_handles_labels()[0] + shaded, loc="best")


def versus_figure(result: dict) -> Figure:
    """Both frontiers (left) and the multiplier against C (right) of a `fit --versus` fit.json."""
    with matplotlib.rc_context(STYLE):
        figure = new_figure(WIDE_FIGURE_SIZE_INCHES)
        left, right = figure.subplots(1, 2)
        _draw_frontiers(left, result, result["points"])
        _draw_multiplier(right, result["versus"], fitted_compute(result["points"]))
    return figure


def plot_versus(result: dict, out_dir: str | Path, name: str) -> list[Path]:
    """The figure, written as `name`.png and .svg in `out_dir`."""
    return save_figure(versus_figure(result), out_dir, name)
