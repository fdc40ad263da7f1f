"""Scaling plots of a Chinchilla fit over an (N, D) grid (`plot_surface.py`: loss vs D, the
compute-optimal frontier, isoFLOP slices of the law) and of isoFLOP data (one parabola per
budget), each checked against the law it draws. The sweep-level plots: tests/test_plot.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import LineCollection
from test_plot import (  # the synthetic inputs both files draw
    CHINCHILLA_LAW,
    assert_real_png,
    gids,
    make_isoflop_csv,
)

from bigmodel.scaling import fit as fitting
from bigmodel.scaling import holdout, laws, plot, plot_figures, plot_surface, registry
from bigmodel.scaling.plot_data import load_input


@pytest.fixture
def isoflop_csv(tmp_path) -> Path:
    return make_isoflop_csv(tmp_path / "isoflop.csv")


# ----------------------------------------------------------------------------- the Chinchilla surface


def grid_points() -> registry.Points:
    """4 sizes × 4 token counts from CHINCHILLA_LAW with 0.3% noise (C = 6ND: no flops column)."""
    params = np.repeat([1e7, 4e7, 1.6e8, 6.4e8], 4)
    tokens = np.tile([2e9, 8e9, 3.2e10, 1.28e11], 4)
    truth = {key: CHINCHILLA_LAW[key] for key in ("E", "A", "B", "alpha", "beta")}
    loss = fitting.chinchilla_loss(params, tokens, **truth) * np.exp(np.random.default_rng(7).normal(0, 0.003, params.size))
    return registry.Points(non_embedding_params=params, tokens=tokens, flops=np.full(params.size, np.nan), loss=loss, loss_name="loss")


def grid_fit(points) -> dict:
    """CHINCHILLA_LAW as a fit.json would carry it: allocation at 1e20, 12 bootstrap laws, the
    largest-compute run held out."""
    law = {**CHINCHILLA_LAW, **fitting.compute_optimal(406.4, 410.7, 0.34, 0.28, budget=1e20), "n_points": len(points) - 1}
    law["loss_opt"] = float(fitting.law_loss(law, law["n_opt"], law["d_opt"], None))
    law["samples"] = [{**{key: law[key] for key in ("E", "A", "B")}, "alpha": 0.34 + d, "beta": 0.28 - d} for d in np.linspace(-0.01, 0.01, 12)]
    law["holdout"] = holdout.holdout_rows(points, holdout.held_out_mask(points, "chinchilla"), law)
    return law


def write_points(path: Path, points) -> Path:
    rows = zip(points.non_embedding_params, points.tokens, points.loss)
    path.write_text("params,tokens,loss\n" + "".join(f"{float(n)!r},{float(d)!r},{float(value)!r}\n" for n, d, value in rows))
    return path


def test_a_chinchilla_fit_on_a_grid_writes_the_surface_figures(tmp_path):
    """With intervals, a named budget and a held-out run (plot_all's wiring: the isoFLOP CSV test)."""
    data = load_input(write_points(tmp_path / "grid.csv", grid_points()))
    paths = plot.surface_figures(data, grid_fit(data.points), tmp_path / "plots", note=lambda text: None)
    assert [path.name for path in paths] == [f"{name}.{suffix}" for name in plot.SURFACE_FIGURES for suffix in ("png", "svg")]
    for name in plot.SURFACE_FIGURES:
        assert_real_png(tmp_path / "plots" / f"{name}.png", (1200, 825))


def test_surface_figures_need_a_chinchilla_fit_and_several_d_per_n(tmp_path):
    points = grid_points()
    data = load_input(write_points(tmp_path / "grid.csv", points))
    notes = []
    power = {"law": "power", "E": 1.7, "A": 400.0, "alpha": 0.3}
    assert plot.surface_figures(data, power, tmp_path / "plots", notes.append) == []
    assert "fit with --law chinchilla" in notes[-1]
    one_d = load_input(write_points(tmp_path / "one_d.csv", points.select(points.tokens == 2e9)))
    assert plot.surface_figures(one_d, CHINCHILLA_LAW, tmp_path / "plots", notes.append) == []
    assert "0 model size(s) with runs at several D" in notes[-1] and not (tmp_path / "plots").exists()
    # β = 0 allocates no compute to D: loss vs D still draws the law, the compute figures say why not.
    paths = plot.surface_figures(data, {**CHINCHILLA_LAW, "beta": 0.0}, tmp_path / "plots", notes.append)
    assert [path.stem for path in paths] == ["loss_vs_tokens"] * 2 and "give no compute-optimal allocation" in notes[-1]


def test_surface_figures_draw_the_fitted_law():
    points = grid_points()
    law = grid_fit(points)
    params, tokens, loss = points.non_embedding_params, points.tokens, points.loss
    # Loss vs D: one curve per N along that N's D, and the held-out run drawn apart.
    figure = plot_surface.plot_loss_vs_tokens(params, tokens, loss, law)
    curves = gids(figure, "fit")
    assert len(curves) == 4 and sum(len(artist.get_offsets()) for artist in gids(figure, "points")) == 15
    for curve, size in zip(curves, np.unique(params)):
        np.testing.assert_allclose(curve.get_ydata(), fitting.law_loss(law, size, curve.get_xdata(), None))
    (star,) = gids(figure, "holdout")
    np.testing.assert_allclose(star.get_offsets()[0], [1.28e11, loss[-1]])
    # The frontier: the fitted optimum line lies under the law at every run's C = 6ND, and the
    # named budget sits on it.
    figure = plot_surface.plot_compute_optimal_frontier(params, tokens, loss, law)
    (line,) = gids(figure, "fit")
    compute, optimum = line.get_data()
    np.testing.assert_allclose(optimum, laws.optimal_frontier(law, compute)[2])
    at_runs = np.interp(np.log(6 * params * tokens), np.log(compute), optimum)
    assert np.all(at_runs <= fitting.law_loss(law, params, tokens, None) + 1e-9)
    (front,) = gids(figure, "frontier")
    assert np.all(np.diff(front.get_ydata()) <= 0) and len(gids(figure, "band")) == 1
    (budget,) = gids(figure, "budget")
    np.testing.assert_allclose(budget.get_offsets()[0], [1e20, law["loss_opt"]])
    # IsoFLOP slices: each star is the lowest point of its slice (brute force on the drawn curve).
    figure = plot_surface.plot_isoflop_slices(params, tokens, law)
    slices, stars = gids(figure, "slice"), gids(figure, "optimum")
    intervals = [artist for artist in gids(figure, "optimum-interval") if isinstance(artist, LineCollection)]  # not the caps
    assert len(slices) == len(stars) == len(intervals) == plot_surface.SLICES
    for curve, star in zip(slices, stars):
        n, value = curve.get_data()
        lowest = np.argmin(value)
        assert star.get_offsets()[0][0] == pytest.approx(n[lowest], rel=0.05)  # the grid's step is ~4%
        assert star.get_offsets()[0][1] <= value[lowest] + 1e-12


# ----------------------------------------------------------------------------- isoFLOP


def test_isoflop_csv_one_parabola_per_budget(isoflop_csv, tmp_path):
    notes = []
    paths = plot.plot_all(isoflop_csv, tmp_path / "plots", note=notes.append)
    assert sorted({path.stem for path in paths}) == ["isoflop", "loss_vs_compute"]
    assert any("loss_vs_params skipped" in text for text in notes)
    assert_real_png(tmp_path / "plots" / "isoflop.png", (1950, 825))
    points = registry.load_points(isoflop_csv)
    isoflop = fitting.fit_isoflop(points.non_embedding_params, points.tokens, points.loss, points.flops)
    assert isoflop["a"] == pytest.approx(0.5, abs=0.01)
    figure = plot_figures.plot_isoflop(points.non_embedding_params, points.loss, points.flops, isoflop)
    assert len(gids(figure, "parabola")) == 3
    assert len(gids(figure, "vertex")) == 3
    assert [len(artist.get_offsets()) for artist in gids(figure, "points")] == [5, 5, 5]
    (law,) = gids(figure, "fit")
    compute, n_opt = law.get_data()
    np.testing.assert_allclose(n_opt, 0.1 * compute**0.5, rtol=0.05)


def test_a_given_isoflop_fit_is_drawn_as_given(isoflop_csv, tmp_path):
    points = registry.load_points(isoflop_csv)
    given = fitting.fit_isoflop(points.non_embedding_params, points.tokens, points.loss, points.flops)
    given["budgets"][0]["parabola"] = [0.5, -5.0, 15.0]  # not what these points would give
    notes = []
    plot.plot_all(isoflop_csv, tmp_path / "plots", fit=given, note=notes.append)
    assert not any("fitted here" in text for text in notes)
    figure = plot_figures.plot_isoflop(points.non_embedding_params, points.loss, points.flops, given)
    first = gids(figure, "parabola")[0]
    np.testing.assert_allclose(first.get_ydata(), np.polyval([0.5, -5.0, 15.0], np.log10(first.get_xdata())))
