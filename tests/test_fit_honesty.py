"""What a newcomer reads off the main job's output says where data ends (issue: honest uncertainty).

The figures name the compute basis the fit allocated on and mark extrapolation; a parameter at
its bound is said to be one; the loss unit follows the data; a held-out run's compute ratio is
the same from a sweep and from a CSV of its runs, with its basis named; `fit --count` refits
under another parameter count; a D_opt beyond the corpus is flagged.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from bigmodel.scaling import counts, holdout, plot_figures, plot_surface, registry
from bigmodel.scaling.allocation import frontier_on_basis
from bigmodel.scaling.fit import fit_input
from bigmodel.scaling.plot_eval import plot_eval_curve
from bigmodel.scaling.points import BYTE_UNIT, TOKEN_UNIT, loss_unit, points_from_csv
from bigmodel.scaling.unique_data import describe_unique_data, runs_unique_tokens, unique_data

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "experiments" / "demo_results"
KJV_TRAIN_BYTES = 3_936_559  # the kjv training split under the bytes tokenizer
# A law like the main job's (E at its bound), allocated on the runs' FLOPs per token.
DEMO_LAW = {"law": "chinchilla", "E": 0.0, "A": 5.41, "B": 27.0, "alpha": 0.244, "beta": 0.223,
            "at_bound": {"E": {"bound": 0.0, "why": "its term is under 1e-04 of every fitted loss"}},
            "flops_per_token_line": {"slope": 7.47, "intercept": 1.26e5}}
HOFFMANN = {"law": "chinchilla", "E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


def gids(figure, gid: str) -> list:
    return [artist for axes in figure.axes for artist in axes.get_children() if artist.get_gid() == gid]


@pytest.fixture(scope="module")
def demo_points():
    return registry.load_points(DEMO)


def write_csv(path: Path, points, *, flops: bool) -> Path:
    header = "params,tokens,loss" + (",flops" if flops else "")
    rows = [f"{n!r},{d!r},{loss!r}" + (f",{c!r}" if flops else "")
            for n, d, loss, c in zip(*(getattr(points, f).tolist() for f in ("non_embedding_params", "tokens", "loss", "flops")))]
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


# ----------------------------------------------------------------------------- figures


def test_frontier_axis_is_the_fits_compute_basis(demo_points):
    n, d, loss, flops = demo_points.non_embedding_params, demo_points.tokens, demo_points.loss, demo_points.flops
    figure = plot_surface.plot_compute_optimal_frontier(n, d, loss, DEMO_LAW, flops=flops, unit=demo_points.loss_unit)
    axes = figure.axes[0]
    assert axes.get_xlabel() == "training compute C (the runs' FLOPs: 7.47·N + 1.26e+05 per token)"
    assert axes.get_ylabel() == "validation loss (nats/byte)"
    (points,) = gids(figure, "points")
    np.testing.assert_allclose(points.get_offsets()[:, 0], flops)  # the runs at their own FLOPs
    six_nd = {key: value for key, value in DEMO_LAW.items() if key != "flops_per_token_line"}
    figure = plot_surface.plot_compute_optimal_frontier(n, d, loss, six_nd, flops=flops)
    assert figure.axes[0].get_xlabel() == "training compute C = 6ND (FLOPs)"
    (points,) = gids(figure, "points")
    np.testing.assert_allclose(points.get_offsets()[:, 0], 6 * n * d)


def test_frontier_is_solid_only_where_its_n_and_d_were_trained():
    n, d = (grid.ravel() for grid in np.meshgrid([1e8, 3e8, 1e9], [2e9, 6e9, 2e10]))
    loss = HOFFMANN["E"] + HOFFMANN["A"] / n ** HOFFMANN["alpha"] + HOFFMANN["B"] / d ** HOFFMANN["beta"]
    figure = plot_surface.plot_compute_optimal_frontier(n, d, loss, HOFFMANN)
    (dashed,) = gids(figure, "fit")
    (solid,) = gids(figure, "fit-supported")
    compute, values = solid.get_data()
    supported = np.isfinite(values)
    n_opt, d_opt, _ = frontier_on_basis(HOFFMANN, compute, None)
    expected = (n_opt >= n.min()) & (n_opt <= n.max()) & (d_opt >= d.min()) & (d_opt <= d.max())
    expected &= (compute >= (6 * n * d).min()) & (compute <= (6 * n * d).max())
    np.testing.assert_array_equal(supported, expected)
    assert 0 < supported.sum() < len(supported)  # this design measures part of the frontier only
    assert np.isfinite(dashed.get_ydata()).all() and dashed.get_linestyle() == "--"
    assert len(gids(figure, "extrapolated")) == 2  # compute below and beyond the fitted runs' shaded


def test_isoflop_slices_draw_the_runs_and_hollow_optima_outside_them(demo_points):
    n, d, loss, flops = demo_points.non_embedding_params, demo_points.tokens, demo_points.loss, demo_points.flops
    figure = plot_surface.plot_isoflop_slices(n, d, DEMO_LAW, loss=loss, flops=flops)
    (points,) = gids(figure, "points")
    np.testing.assert_allclose(points.get_offsets(), np.column_stack([n, loss]))
    n_opt, _, _ = frontier_on_basis(DEMO_LAW, plot_surface.slice_budgets(flops), DEMO_LAW["flops_per_token_line"])
    outside = (n_opt < n.min()) | (n_opt > n.max())
    hollow = [tuple(star.get_facecolor()[0]) == (1.0, 1.0, 1.0, 1.0) for star in gids(figure, "optimum")]
    assert hollow == outside.tolist() and any(hollow)  # the main job's optima fall below its smallest model
    assert len(gids(figure, "extrapolated")) == 2


def test_a_parameter_at_its_bound_is_said_to_be_one():
    samples = [{"alpha": 0.2 + 0.001 * i, "beta": 0.22, "A": 5.0, "B": 27.0, "E": 1e-16} for i in range(20)]
    text = plot_figures.interval_text({**DEMO_LAW, "samples": samples, "ci": {"alpha": [0.08, 0.4]}})
    assert "E at bound (not identified)" in text.splitlines()
    assert "E = " not in text and "α = 0.244  [0.080, 0.400]" in text


def test_the_loss_unit_follows_the_tokens(demo_points, tmp_path):
    assert demo_points.loss_unit == BYTE_UNIT == "nats/byte"  # the main job's tokens are bytes (eval_bpb = loss / ln 2)
    assert points_from_csv(write_csv(tmp_path / "p.csv", demo_points, flops=False)).loss_unit == TOKEN_UNIT
    assert loss_unit([1.0, 1.0]) == BYTE_UNIT and loss_unit([1.0, 3.7]) == TOKEN_UNIT and loss_unit([]) == TOKEN_UNIT
    for bytes_per_token, unit in ((1.0, "nats/byte"), (3.7, "nats/token")):  # a run's eval curve: bytes, or spm tokens
        curve = [{"step": step, "tokens_seen": 1000 * step, "eval_loss": loss, "eval_bpb": loss / math.log(2) / bytes_per_token}
                 for step, loss in ((1, 3.0), (2, 2.5))]
        assert plot_eval_curve(curve, [], title="run").axes[0].get_ylabel() == f"loss ({unit})"


# ----------------------------------------------------------------------------- one compute basis


def test_the_holdout_compute_ratio_is_the_same_from_a_sweep_and_its_csv(demo_points, tmp_path):
    def row(points):
        return holdout.holdout_rows(points, holdout.held_out_mask(points, "chinchilla"), DEMO_LAW)

    from_dir = row(demo_points)
    from_csv = row(points_from_csv(write_csv(tmp_path / "with.csv", demo_points, flops=True)))
    assert from_dir["compute_basis"] == from_csv["compute_basis"] == "flops"
    assert from_csv["compute_ratio"] == pytest.approx(from_dir["compute_ratio"], rel=1e-12)
    fitted = ~holdout.held_out_mask(demo_points, "chinchilla")
    assert from_dir["compute_ratio"] == pytest.approx(demo_points.flops.max() / demo_points.flops[fitted].max())
    without = row(points_from_csv(write_csv(tmp_path / "without.csv", demo_points, flops=False)))
    six_nd = demo_points.non_embedding_params * demo_points.tokens
    assert without["compute_basis"] == "6ND" and without["compute_ratio"] == pytest.approx(six_nd.max() / six_nd[fitted].max())
    assert f"{from_dir['compute_ratio']:.2g}× the largest fitted compute, runs' FLOPs)" in holdout.describe_holdout(from_dir)
    assert f"{without['compute_ratio']:.2g}× the largest fitted compute, 6ND)" in holdout.describe_holdout(without)


# ----------------------------------------------------------------------------- fit --count, repeated data


def test_count_conventions_give_the_runs_own_numbers(demo_points, tmp_path):
    with open(DEMO / "runs.csv") as file:
        rows = [row for row in csv.DictReader(file) if row["status"] == "done" and row["role"] != "stable"]
    total = counts.counted(demo_points, "total", DEMO)
    np.testing.assert_array_equal(total.non_embedding_params, [float(row["params"]) for row in rows])
    assert np.all(total.non_embedding_params > demo_points.non_embedding_params)
    by_flops = counts.counted(demo_points, "flops", DEMO)
    np.testing.assert_allclose(by_flops.non_embedding_params, demo_points.flops / (6 * demo_points.tokens))
    assert counts.counted(demo_points, "non_embedding", DEMO) is demo_points
    csv_path = write_csv(tmp_path / "p.csv", demo_points, flops=False)
    with pytest.raises(ValueError, match="--count total needs each run's total parameter count"):
        counts.counted(points_from_csv(csv_path), "total", csv_path)


def test_fit_count_total_and_the_repeated_data_flag():
    result = fit_input(DEMO, "chinchilla", budget=1e15, count="total", unique_tokens=KJV_TRAIN_BYTES)
    assert result["n_definition"] == "total_params" and "N = total params" in result["summary"]
    assert result["compute_basis"].endswith("N total)")
    unique = result["unique_data"]
    assert unique["d_opt_over_unique"] == pytest.approx(result["d_opt"] / KJV_TRAIN_BYTES) and unique["d_opt_over_unique"] > 10
    assert unique["repeated"] is True and unique["source"] == "--unique_tokens"
    assert f"D_opt is {unique['d_opt_over_unique']:.3g}× the unique data" in result["summary"]
    assert "repeated epochs, outside what the fit measured" in result["summary"]


def test_approach_2_under_another_count():
    isoflop = REPO / "experiments" / "isoflop_results"
    kaplan, total = (fit_input(isoflop, "isoflop", count=count) for count in ("non_embedding", "total"))
    assert kaplan["n_definition"] == "non_embedding_params" and total["n_definition"] == "total_params"
    # Adding the embeddings and head (2·256·d, a fixed share of a small model) to every N flattens the
    # parabola vertices' N_opt(C); most of that was their design bias, which differs between the counts
    before, after = total["uncorrected"], kaplan["uncorrected"]
    assert before["a"] < after["a"] - 0.05 and before["b"] == pytest.approx(after["b"], abs=0.01)
    assert kaplan["a"] - 0.05 < total["a"] < kaplan["a"]


def test_repeated_data_is_flagged_only_beyond_the_corpus(tmp_path):
    within = unique_data({"d_opt": 2e6}, 4e6, "the runs' summaries", fitted_tokens=1.6e6)
    assert within == {"unique_tokens": 4e6, "source": "the runs' summaries", "fitted_max_epochs": 0.4,
                      "d_opt_over_unique": 0.5, "repeated": False}
    assert describe_unique_data(within) == ""
    for name, count in (("a", 5e6), ("b", 4e6)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps({"train_split_tokens": count}))
    assert runs_unique_tokens(tmp_path, ("a", "b", "missing")) == 4e6
    assert runs_unique_tokens(tmp_path / "points.csv", ("a",)) is None


def test_a_run_records_its_training_split_size(tiny_run):
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert summary["train_split_tokens"] == KJV_TRAIN_BYTES
