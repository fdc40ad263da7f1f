"""The figure of `fit A --versus B`: both recipes' compute frontiers, and the compute multiplier
against C with its 95% band, from the fit.json it wrote (`versus_input.py`)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

from bigmodel.scaling.plot_style import (
    STYLE,
    UNITS,
    WIDE_FIGURE_SIZE_INCHES,
    new_figure,
    save_figure,
    tidy_log_axis,
)
from bigmodel.scaling.versus import compute_grid, frontier

COLORS = {"A": "tab:blue", "B": "tab:orange"}
BAND_DECADES = 1.0  # the frontiers are drawn from a decade below the smallest run to a decade past the largest budget


def frontier_band(law: dict, samples: list[dict], kind: str, line: dict | None, grid: np.ndarray):
    """The frontier's loss on `grid`, and the 2.5/97.5 percentiles of the replicates' (None without)."""
    loss = frontier(law, kind, grid, line)[2]
    if len(samples) < 2:
        return loss, None
    with np.errstate(invalid="ignore"):
        band = np.nanpercentile([frontier(sample, kind, grid, line)[2] for sample in samples], [2.5, 97.5], axis=0)
    return loss, band


def _draw_frontiers(axes, result: dict, points: dict) -> None:
    versus = result["versus"]
    compute = np.concatenate([points[side]["compute"] for side in ("A", "B")])
    budgets = [row["budget"] for row in versus["budgets"]]
    grid = compute_grid(compute.min() / 10**BAND_DECADES, max(compute.max(), max(budgets)) * 10**BAND_DECADES)
    for side, name in (("A", result["versus"]["a"]), ("B", result["versus"]["b"])):
        law = versus["laws"][side]
        loss, band = frontier_band(law, law.get("samples") or [], versus["law"], (versus.get("flops_per_token") or {}).get(side), grid)
        axes.plot(grid, loss, color=COLORS[side], linewidth=2, label=f"{side}: {name}", gid=f"frontier-{side}")
        if band is not None:
            axes.fill_between(grid, *band, color=COLORS[side], alpha=0.2, linewidth=0)
        axes.scatter(points[side]["compute"], points[side]["loss"], color=COLORS[side], edgecolor="black", s=28, zorder=3, alpha=0.8)
    for budget in budgets:
        axes.axvline(budget, color="0.5", linestyle=":", linewidth=1)
    axes.set(xscale="log", yscale="log", xlabel="training compute C (FLOPs)", ylabel=f"loss ({UNITS})",
             title="Compute-optimal frontiers (runs, fit, 95% band)")
    tidy_log_axis(axes.xaxis)
    axes.legend(loc="upper right")


def _draw_multiplier(axes, versus: dict) -> None:
    curve = versus["curve"]
    flops = np.array(curve["flops"])
    values = 10.0 ** np.array([np.nan if v is None else v for v in curve["log10_multiplier"]], dtype=float)
    axes.plot(flops, values, color="black", linewidth=2, label="A's compute for B's loss ÷ C", gid="multiplier")
    if "band" in curve:
        low, high = (10.0 ** np.array([np.nan if v is None else v for v in side], dtype=float) for side in curve["band"])
        axes.fill_between(flops, low, high, color="0.5", alpha=0.3, linewidth=0, label="95% band (bootstrap)")
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
    axes.legend(loc="best")


def plot_versus(result: dict, out_dir: str | Path, name: str) -> list[Path]:
    """Both frontiers (left) and the multiplier against C (right); writes `name`.png and .svg."""
    with matplotlib.rc_context(STYLE):
        figure = new_figure(WIDE_FIGURE_SIZE_INCHES)
        left, right = figure.subplots(1, 2)
        _draw_frontiers(left, result, result["points"])
        _draw_multiplier(right, result["versus"])
    return save_figure(figure, out_dir, name)
