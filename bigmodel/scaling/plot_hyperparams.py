"""The figures of a hyperparameter fit (`hyperparams.py`), drawn from its fit.json alone.

- hyperparams_profiles: per budget, loss vs learning rate, one line per batch size, the fitted
  quadratic's slice at each batch size (dashed), the optimum (star) and DeepSeek's near-optimal
  runs (ringed). Runs of a budget the fit skipped are drawn hollow, without a surface.
- hyperparams_laws: η_opt(C) and B_opt(C): each budget's optimum with its bootstrap interval (a
  budget the fit skipped is a dotted vertical line),
  the fitted power law with its 95% band, the near-optimal runs and the line through them
  (DeepSeek's procedure), and DeepSeek's published law for reference (other FLOP and model
  conventions, fitted at 1e17–2e19 FLOPs: its level is not expected to match here).

The fit.json carries every run's (C, η, B, loss), so a results folder without run directories
(experiments/hparams_results) still draws. `plot_all` hands a hyperparams fit to `plot_hyperparams`.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm

from bigmodel import files
from bigmodel.scaling import registry
from bigmodel.scaling.expand import format_number
from bigmodel.scaling.hyperparams import LAW, surface_value
from bigmodel.scaling.plot_style import (BUDGET_COLORMAP, SIZE_COLORMAP, STYLE, UNITS, WIDE_FIGURE_SIZE_INCHES, log_grid, new_figure,
                                         save_figure, tidy_log_axis)

REQUIRED_KEYS = ("k_eta", "a_eta", "budgets", "points", "with_batch")
MIN_SAMPLES_FOR_BAND = 10
LOSS_WINDOW = 0.6  # show losses up to min + this share above the highest fitted one (diverged lrs leave the frame)


def hyperparams_fit(input_path, fit) -> dict | None:
    """The hyperparams fit to draw (a dict, a fit.json path, or the sweep's fit.json), else None."""
    if isinstance(fit, (str, Path)) and Path(fit).is_file():
        fit = files.read_json(fit)
    elif fit is None and Path(input_path).is_dir():
        fit = registry.read_sweep_fit(input_path)
    if not isinstance(fit, dict) or fit.get("law") != LAW:
        return None
    missing = [key for key in REQUIRED_KEYS if key not in fit]
    if missing:
        raise ValueError(f"the hyperparams fit has no {', '.join(missing)}: refit with python -m bigmodel fit DIR --law hyperparams")
    return fit


def point_arrays(fit: dict) -> dict[str, np.ndarray]:
    table = {key: np.array([p[key] for p in fit["points"]], dtype=float) for key in ("flops", "learning_rate", "batch_size", "seq_len", "loss")}
    table["batch_tokens"] = table["batch_size"] * table["seq_len"]
    return table


def budget_panels(fit: dict, flops: np.ndarray) -> list[tuple[dict | None, np.ndarray]]:
    """(fitted budget or None for a skipped one, its run indices), smallest C first."""
    labels = registry.group_budgets(flops)
    fitted = {int(labels[b["members"][0]]): b for b in fit["budgets"]}
    return [(fitted.get(label), np.flatnonzero(labels == label)) for label in range(labels.max() + 1)]


def draw_profile(axes, fit: dict, budget: dict | None, members: np.ndarray, table: dict, colors) -> None:
    lr, loss, batch = table["learning_rate"][members], table["loss"][members], table["batch_tokens"][members]
    for value in np.unique(batch):
        mine = np.flatnonzero(batch == value)
        mine = mine[np.argsort(lr[mine])]
        color = colors.to_rgba(value)
        hollow = {"facecolor": "none"} if budget is None else {"color": color}
        axes.plot(lr[mine], loss[mine], color=color, linewidth=1.2, alpha=0.8)
        axes.scatter(lr[mine], loss[mine], edgecolor=color if budget is None else "black", s=36, zorder=3, gid="points",
                     label=f"B = {value:.0f} tokens ({value / table['seq_len'][members][0]:.0f} seq)", **hollow)
        if budget is not None:
            grid = np.geomspace(lr.min(), lr.max(), 80)
            columns = [np.log10(grid)] + ([np.full(grid.size, math.log10(value))] if fit["with_batch"] else [])
            axes.plot(grid, surface_value(budget["surface"], np.stack(columns, axis=1)), color=color, linestyle="--",
                      linewidth=1.2, gid="surface")
    title = f"C = {format_number(registry.budget_flops(table['flops'][members]), 3, scientific=True)} FLOPs"
    if budget is None:
        axes.set_title(f"{title}: skipped (no optimum in the grid)", fontsize=11)
        return
    near = np.array(budget["near_optimal"])
    axes.scatter(table["learning_rate"][near], table["loss"][near], s=150, facecolor="none", edgecolor="black", linewidth=1.2,
                 zorder=4, gid="near-optimal", label=f"within {fit['near_optimal_tolerance']:.2%} of the best")
    axes.scatter([budget["learning_rate"]], [budget["loss_opt"]], marker="*", s=300, color="gold", edgecolor="black", zorder=5,
                 gid="optimum", label="fitted optimum")
    batch_text = f", B_opt = {budget['batch_tokens']:.0f}" if fit["with_batch"] else ""
    axes.set_title(f"{title}: η_opt = {budget['learning_rate']:.3g}{batch_text}", fontsize=11)
    fitted_top = np.sort(loss)[min(budget["n_points"], len(loss)) - 1]
    top = fitted_top + LOSS_WINDOW * (fitted_top - loss.min())
    hidden = int(np.sum(loss > top))
    axes.set_ylim(loss.min() - 0.08 * (top - loss.min()), top)
    if hidden:
        axes.text(0.97, 0.97, f"{hidden} run(s) above {top:.2f}", transform=axes.transAxes, ha="right", va="top", fontsize=9, color="0.3")


def plot_profiles(fit: dict):
    table = point_arrays(fit)
    panels = budget_panels(fit, table["flops"])
    colors = ScalarMappable(norm=LogNorm(table["batch_tokens"].min() / 1.5, table["batch_tokens"].max() * 1.5), cmap=SIZE_COLORMAP)
    with matplotlib.rc_context(STYLE):
        figure = new_figure((4.6 * len(panels) + 0.6, 5.0))
        axes_list = np.atleast_1d(figure.subplots(1, len(panels), sharey=False))
        for axes, (budget, members) in zip(axes_list, panels):
            draw_profile(axes, fit, budget, members, table, colors)
            axes.set(xscale="log", xlabel="peak learning rate η")
            tidy_log_axis(axes.xaxis)
        axes_list[0].set_ylabel(f"{fit.get('loss_name', 'loss')} ({UNITS})")
        axes_list[0].legend(loc="upper left", fontsize=9)
        method = fit.get("optimum", "")
        figure.suptitle(f"Loss vs learning rate per batch size; dashed: the fitted {method}", fontsize=13)
    return figure


def law_band(fit: dict, k_key: str, a_key: str, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    samples = fit.get("samples") or []
    if len(samples) < MIN_SAMPLES_FOR_BAND:
        return None
    lines = np.array([s[k_key] * grid ** s[a_key] for s in samples])
    return np.percentile(lines, 2.5, axis=0), np.percentile(lines, 97.5, axis=0)


def draw_law(axes, fit: dict, which: str, table: dict) -> None:
    """One panel: "eta" (η_opt) or "batch" (B_opt in tokens) against C."""
    budgets = fit["budgets"]
    value_key, point_key = ("learning_rate", "learning_rate") if which == "eta" else ("batch_tokens", "batch_tokens")
    compute = np.array([b["flops"] for b in budgets])
    optima = np.array([b[value_key] for b in budgets])
    skipped = [entry["flops"] for entry in fit.get("skipped", [])]
    grid = log_grid(np.concatenate([compute, skipped]), margin=2.0, count=100)
    for index, flops in enumerate(skipped):  # where a budget gave no optimum: shown, not hidden
        axes.axvline(flops, color="0.55", linestyle=":", linewidth=1.4, gid="skipped",
                     label="budget without an optimum inside the grid" if index == 0 else None)
    norm = LogNorm(vmin=compute.min() / 1.5, vmax=compute.max() * 1.5)
    colors = ScalarMappable(norm=norm, cmap=BUDGET_COLORMAP)
    near = np.concatenate([np.array(b["near_optimal"], dtype=int) for b in budgets])
    jitter = np.exp(np.linspace(-0.08, 0.08, len(near))) if len(near) > 1 else np.ones(1)
    axes.scatter(table["flops"][near] * jitter, table[point_key][near], s=28, color="0.55", zorder=2, gid="near-optimal",
                 label=f"near-optimal runs (within {fit['near_optimal_tolerance']:.2%})")
    k, a = fit[f"near_k_{which}"], fit[f"near_a_{which}"]
    axes.plot(grid, k * grid**a, color="0.45", linestyle="--", linewidth=1.3, gid="near-fit", label=f"through them: ∝ C^{a:.3f}")
    band = law_band(fit, f"k_{which}", f"a_{which}", grid)
    if band is not None:
        reliable = "" if fit.get("intervals_reliable", True) else f" (unreliable: {fit['bootstrap_dropped']} replicates lost an optimum)"
        axes.fill_between(grid, *band, color="tab:blue", alpha=0.18, linewidth=0, gid="band", label="95% bootstrap band" + reliable)
    k, a = fit[f"k_{which}"], fit[f"a_{which}"]
    interval = fit.get("ci", {}).get(f"a_{which}")
    interval_text = f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else ""
    symbol = "η_opt" if which == "eta" else "B_opt"
    axes.plot(grid, k * grid**a, color="tab:blue", linewidth=2.0, gid="fit", label=f"{symbol} = {k:.3g}·C^{a:.3f}" + interval_text)
    for budget, value in zip(budgets, optima):
        ci = budget.get("ci", {}).get(value_key)
        error = None if ci is None else [[max(value - ci[0], 0)], [max(ci[1] - value, 0)]]
        axes.errorbar([budget["flops"]], [value], yerr=error, fmt="none", ecolor="black", capsize=4, linewidth=1.2, zorder=3)
        axes.scatter([budget["flops"]], [value], marker="*", s=260, color=colors.to_rgba(budget["flops"]), edgecolor="black",
                     zorder=4, gid="optimum")
    axes.scatter([], [], marker="*", s=180, color="white", edgecolor="black", label="optimum per budget (95% interval)")
    deepseek = fit["deepseek"]
    k, a = deepseek[f"k_{which}"], deepseek[f"a_{which}"]
    axes.plot(grid, k * grid**a, color="tab:red", linestyle=":", linewidth=1.6, gid="deepseek",
              label=f"DeepSeek 2024: {k}·C^{a} (their C; fitted at 1e17–2e19)")
    unit = "peak learning rate" if which == "eta" else "batch size (tokens)"
    axes.set(xscale="log", yscale="log", xlabel="training compute C (FLOPs)", ylabel=f"{symbol}, {unit}")
    axes.legend(loc="lower left" if which == "eta" else "upper left", fontsize=8.5)  # the lines fall and rise: the other corner
    for axis in (axes.xaxis, axes.yaxis):
        tidy_log_axis(axis)


def plot_laws(fit: dict):
    table = point_arrays(fit)
    which = ["eta", "batch"] if fit["with_batch"] else ["eta"]
    with matplotlib.rc_context(STYLE):
        figure = new_figure(WIDE_FIGURE_SIZE_INCHES if len(which) == 2 else (8.0, 5.5))
        for axes, name in zip(np.atleast_1d(figure.subplots(1, len(which))), which):
            draw_law(axes, fit, name, table)
            axes.set_title("Compute-optimal learning rate" if name == "eta" else "Compute-optimal batch size")
    return figure


def plot_hyperparams(fit: dict, out_dir: str | Path) -> list[Path]:
    """Both figures as PNG + SVG in `out_dir`; returns the paths written."""
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise ValueError(f"--out {out_dir} is a file: pass a directory for the PNG and SVG files")
    return save_figure(plot_profiles(fit), out_dir, "hyperparams_profiles") + save_figure(plot_laws(fit), out_dir, "hyperparams_laws")
