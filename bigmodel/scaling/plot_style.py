"""The look of the scaling figures: size, fonts, colours, axis labelling, limits, saving.

Kept apart from `plot.py` (what each figure shows) so a change of style touches one file.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, FuncFormatter, LogFormatter, MaxNLocator, NullFormatter

from bigmodel.scaling.plot_data import RunCurve
from bigmodel.scaling.points import TOKEN_UNIT

DPI = 150
FIGURE_SIZE_INCHES = (8.0, 5.5)  # 1200 × 825 px at 150 dpi
WIDE_FIGURE_SIZE_INCHES = (13.0, 5.5)  # two panels: 1950 × 825 px
STYLE = {
    "font.size": 12,
    "axes.titlesize": 14,
    "axes.labelsize": 13,
    "legend.fontsize": 10.5,
    "legend.framealpha": 0.9,
    "axes.grid": True,
    "axes.grid.which": "both",
    "grid.alpha": 0.25,
    "grid.linewidth": 0.6,
    "svg.fonttype": "none",  # SVG text stays text: smaller files, editable labels
}
# The colormaps' last, yellow tenth nearly vanishes on white: stop short of it.
SIZE_COLORMAP = ListedColormap(matplotlib.colormaps["viridis"](np.linspace(0, 0.88, 256)), name="viridis_dark")
BUDGET_COLORMAP = ListedColormap(matplotlib.colormaps["plasma"](np.linspace(0, 0.85, 256)), name="plasma_dark")
UNITS = TOKEN_UNIT  # a figure's default loss unit; the data's own is `Points.loss_unit` (points.py decides)
EXTRAPOLATED = {"color": "0.55", "alpha": 0.12, "linewidth": 0, "zorder": 0}  # the shading beyond the fitted runs
EXTRAPOLATED_KEY = {"color": "0.55", "alpha": 0.25, "linewidth": 0}  # its legend patch, darker to be seen at legend size


def new_figure(size=FIGURE_SIZE_INCHES) -> Figure:
    return Figure(figsize=size, dpi=DPI, layout="constrained")


def format_coefficient(value: float) -> str:
    """Three significant figures in mathtext, as a×10^k once plain digits get long."""
    if value == 0 or 1e-2 <= abs(value) < 1e4:
        return f"{value:.3g}"
    exponent = math.floor(math.log10(abs(value)))
    return rf"{value / 10**exponent:.2f}\times 10^{{{exponent}}}"


def law_label(fit: dict, variable: str = "N") -> str:
    """The fitted law written out, e.g. `$L = 1.20 + 35\\,N^{-0.310}$` (a power law in
    `variable`) or `$L = 1.69 + 406\\,N^{-0.340} + 411\\,D^{-0.280}$` (Chinchilla)."""
    text = rf"L = {fit['E']:.2f} + {format_coefficient(fit['A'])}\,{variable}^{{-{fit['alpha']:.3f}}}"
    if fit.get("law") == "chinchilla":
        text += rf" + {format_coefficient(fit['B'])}\,D^{{-{fit['beta']:.3f}}}"
    return f"${text}$"


def size_colors(params: np.ndarray) -> tuple[LogNorm, ScalarMappable]:
    """A log colour scale over model sizes (widened when every run has the same size)."""
    low, high = float(np.nanmin(params)), float(np.nanmax(params))
    if not high > low:
        low, high = low / 1.5, high * 1.5
    norm = LogNorm(vmin=low, vmax=high)
    return norm, ScalarMappable(norm=norm, cmap=SIZE_COLORMAP)


def label_loss_axis(axes) -> None:
    """Plain-number ticks on a log loss axis (call after its limits are set).

    The default labels only powers of ten, which leaves a loss axis from 2 to 3.5 with one or
    two labels; under a factor of 4 the axis is near-linear, so linear tick values read best.
    """
    low, high = axes.get_ylim()
    if high / low < 4:
        axes.yaxis.set_major_locator(MaxNLocator(nbins=7, steps=[1, 2, 2.5, 5, 10]))
        axes.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        axes.yaxis.set_minor_formatter(NullFormatter())
    else:
        axes.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
        axes.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1.5, 0.6)))


def tidy_log_axis(axis) -> None:
    """On a log axis of a few decades, label only the 2× and 5× minor ticks.

    Matplotlib labels every minor tick (2, 3, 4, 6 ×10^k) once an axis spans under two
    decades or so, and on a horizontal axis "3×10^4" and "4×10^4" then overprint each other.
    """
    def label(value, _position):
        low, high = sorted(axis.get_view_interval())
        exponent = math.floor(math.log10(value) + 1e-9)
        mantissa = round(value / 10**exponent)
        if high / low > 100 or mantissa not in (2, 5):
            return ""
        return rf"$\mathdefault{{{mantissa}\times10^{{{exponent}}}}}$"

    axis.set_minor_formatter(FuncFormatter(label))


def shade_beyond(axes, low: float, high: float, limits: tuple[float, float], gid: str) -> bool:
    """Shade the stretches of an x axis outside [low, high] that the figure shows; whether any."""
    shaded = False
    for start, stop in ((limits[0], low), (high, limits[1])):
        if stop > start:
            axes.axvspan(start, stop, gid=gid, **EXTRAPOLATED)
            shaded = True
    return shaded


def log_grid(values: np.ndarray, margin: float = 1.3, count: int = 200) -> np.ndarray:
    low, high = np.nanmin(values), np.nanmax(values)
    return np.geomspace(low / margin, high * margin, count)


def fit_loss_limits(axes, losses: np.ndarray) -> None:
    """Y limits from the points (not the band, which can flare at the ends)."""
    finite = losses[np.isfinite(losses) & (losses > 0)]
    if len(finite):
        low, high = finite.min(), finite.max()
        pad = (high / low) ** 0.12 if high > low else 1.05
        axes.set_ylim(low / pad, high * pad**1.6)  # extra room on top for the legend


def window_on_minima(axes, loss: np.ndarray, fitted_loss: np.ndarray) -> None:
    """Clip the loss axis to the region the parabolas were fitted in, and say what is cut.

    Runs far from a budget's optimum can sit several nats higher and squash every vertex into
    the bottom strip; they carry no weight in the fit, so they may leave the frame.
    """
    if not len(fitted_loss):
        return
    low, high = float(np.nanmin(loss)), float(np.nanmax(fitted_loss))
    top = high + 0.6 * (high - low) if high > low else high + 0.1
    hidden = int(np.sum(loss > top))
    if hidden:
        axes.set_ylim(low - 0.05 * (top - low), top)
        axes.text(0.98, 0.97, f"{hidden} run(s) above {top:.2f} not shown", transform=axes.transAxes,
                  ha="right", va="top", fontsize=10, color="0.3", zorder=5,
                  bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "none", "alpha": 0.85})


def window_on_late_training(axes, curves: list[RunCurve]) -> None:
    """Y limits that keep every final loss and eval point and cut the first steps' plunge.

    The first logged losses (near ln vocab) would squash the part worth reading: where runs
    end and how far apart sizes are.
    """
    finals = [c.loss[-1] for c in curves if len(c.loss)] + [c.eval_loss[-1] for c in curves if len(c.eval_loss)]
    everything = np.concatenate([c.loss for c in curves] + [c.eval_loss for c in curves])
    everything = everything[np.isfinite(everything)]
    if not finals or not len(everything):
        return
    low, high_final = everything.min(), max(finals)
    top = min(everything.max() * 1.02, high_final + max(1.5 * (high_final - low), 0.5 * low))
    axes.set_ylim(low - 0.03 * (top - low), top)


def save_figure(figure: Figure, out_dir: str | Path, name: str) -> list[Path]:
    """Write `<out_dir>/<name>.png` (150 dpi) and `.svg`; return both paths.

    The layout is computed for the PNG and then frozen (layout engine "none"), so the SVG has
    the same geometry and skips a second constrained-layout pass (half its time).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.svg"]
    with matplotlib.rc_context(STYLE):
        figure.savefig(paths[0], dpi=DPI, facecolor="white")
        figure.set_layout_engine("none")
        figure.savefig(paths[1], dpi=DPI, facecolor="white")
    return paths
