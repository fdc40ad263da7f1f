"""Scaling-law fits: known laws recovered from noisy synthetic data, published exponents
reproduced on Porian et al. 2024's isoFLOP data, file inputs, errors and the CLI.

The two 4,500-start Chinchilla fits run once per module (~10 s each on 2 loaded cores).
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bigmodel.cli import main
from bigmodel.scaling import fit, holdout, registry
from bigmodel.scaling.points import Points

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
CHINCHILLA_TRUTH = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}  # Hoffmann et al.'s own fit
POWER_TRUTH = {"E": 1.8, "A": 60.0, "alpha": 0.3}
FIG1_ORDER = ("reproducing_kaplan", "count_last_layer_flops", "correct_warmup", "cosine_decay", "optimizer_tuning_no_decay")


def noisy(loss: np.ndarray, relative_noise: float, seed: int) -> np.ndarray:
    return loss * np.exp(np.random.default_rng(seed).normal(0.0, relative_noise, loss.shape))


def chinchilla_points() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """12 sizes × 8 token counts (1e7–1e10 params, 1e9–1e12 tokens), 0.5% log-normal noise."""
    params = np.repeat(np.logspace(7, 10, 12), 8)
    tokens = np.tile(np.logspace(9, 12, 8), 12)
    return params, tokens, noisy(fit.chinchilla_loss(params, tokens, **CHINCHILLA_TRUTH), 0.005, seed=1)


def power_points() -> tuple[np.ndarray, np.ndarray]:
    """15 sizes over 4 decades, 0.3% log-normal noise."""
    x = np.logspace(6, 10, 15)
    return x, noisy(fit.power_law(x, **POWER_TRUTH), 0.003, seed=2)


HELD_OUT_RUN = (2e10, 2e12)  # 2N and 2D of the grid's largest run: 4× its compute


def held_out_loss() -> float:
    return float(noisy(fit.chinchilla_loss(*HELD_OUT_RUN, **CHINCHILLA_TRUTH), 0.005, seed=4))


@pytest.fixture(scope="module")
def chinchilla_fit(tmp_path_factory) -> dict:
    """`fit_input` on a CSV of `chinchilla_points` plus one run 4× out, held out: the fit sees
    exactly the 96 grid points, and the held-out check comes for free (one fit per module)."""
    params, tokens, loss = chinchilla_points()
    params, tokens, loss = np.append(params, HELD_OUT_RUN[0]), np.append(tokens, HELD_OUT_RUN[1]), np.append(loss, held_out_loss())
    source = tmp_path_factory.mktemp("chinchilla") / "grid.csv"
    rows = (f"{float(n)!r},{float(d)!r},{float(value)!r}\n" for n, d, value in zip(params, tokens, loss))  # repr: exact floats
    source.write_text("params,tokens,loss\n" + "".join(rows))
    return fit.fit_input(source, "chinchilla", bootstrap=100, seed=0, budget=1e21, holdout="largest")


@pytest.fixture(scope="module")
def power_fit() -> dict:
    x, loss = power_points()
    return fit.fit_power(x, loss, bootstrap=100, seed=0)


def read_porian(path: Path) -> list[dict]:
    with open(path) as handle:
        return list(csv.DictReader(line for line in handle if not line.startswith("#")))


# ----------------------------------------------------------------------------- formulas


def test_law_formulas_evaluate_as_written():
    assert fit.power_law(np.array([1.0, 100.0]), 2.0, 3.0, 0.5).tolist() == [5.0, 2.3]
    assert fit.chinchilla_loss(100.0, 10_000.0, 1.0, 10.0, 100.0, 0.5, 0.5) == pytest.approx(1.0 + 1.0 + 1.0)


def test_compute_optimal_allocation_minimises_the_law_on_the_budget():
    law = CHINCHILLA_TRUTH
    optimum = fit.compute_optimal(law["A"], law["B"], law["alpha"], law["beta"], budget=1e21)
    assert optimum["a"] == pytest.approx(0.28 / 0.62) and optimum["b"] == pytest.approx(0.34 / 0.62)
    assert 6 * optimum["n_opt"] * optimum["d_opt"] == pytest.approx(1e21)
    # Brute force along C = 6ND: the minimum must sit where the closed form says (1% grid step).
    n_grid = np.logspace(8, 12, 40_001)
    brute = n_grid[np.argmin(fit.chinchilla_loss(n_grid, 1e21 / (6 * n_grid), **law))]
    assert optimum["n_opt"] == pytest.approx(brute, rel=1e-3)
    assert optimum["tokens_per_param"] == pytest.approx(optimum["d_opt"] / optimum["n_opt"])


# ----------------------------------------------------------------------------- power


def test_power_fit_recovers_the_generating_law(power_fit):
    # 0.3% noise over 4 decades: exponent to ±0.03, E to ±3%, A to a factor 1.5 (A and α trade off).
    assert power_fit["law"] == "power" and power_fit["n_points"] == 15
    assert power_fit["alpha"] == pytest.approx(POWER_TRUTH["alpha"], abs=0.03)
    assert power_fit["E"] == pytest.approx(POWER_TRUTH["E"], rel=0.03)
    assert 1 / 1.5 < power_fit["A"] / POWER_TRUTH["A"] < 1.5
    x, loss = power_points()
    assert np.max(np.abs(fit.power_law(x, power_fit["E"], power_fit["A"], power_fit["alpha"]) / loss - 1)) < 0.01


def test_power_bootstrap_intervals_contain_the_truth(power_fit):
    assert len(power_fit["samples"]) == 100 and set(power_fit["samples"][0]) == {"E", "A", "alpha"}
    for name, truth in POWER_TRUTH.items():
        low, high = power_fit["ci"][name]
        assert low < truth < high, (name, low, truth, high)
        assert low <= power_fit[name] <= high
        assert power_fit["se"][name] > 0


# ----------------------------------------------------------------------------- chinchilla


def test_chinchilla_fit_recovers_the_generating_law(chinchilla_fit):
    # 0.5% noise on 96 points: exponents to ±0.03, E to ±3%, the allocation exponent a to ±0.03;
    # A and B trade off against the exponents, so only within a factor 2.
    result = chinchilla_fit
    assert result["law"] == "chinchilla" and result["n_points"] == 96
    assert result["alpha"] == pytest.approx(0.34, abs=0.03) and result["beta"] == pytest.approx(0.28, abs=0.03)
    assert result["E"] == pytest.approx(1.69, rel=0.03)
    assert 0.5 < result["A"] / 406.4 < 2 and 0.5 < result["B"] / 410.7 < 2
    assert result["a"] == pytest.approx(0.28 / 0.62, abs=0.03) and result["a"] + result["b"] == pytest.approx(1.0)
    expected = fit.compute_optimal(result["A"], result["B"], result["alpha"], result["beta"], budget=1e21)
    for key in ("G", "n_opt", "d_opt", "tokens_per_param"):
        assert result[key] == pytest.approx(expected[key])
    assert result["budget"] == 1e21 and result["objective"] > 0


def test_averaging_the_huber_terms_finds_the_same_optimum(chinchilla_fit):
    """Besiroglu et al. 2024: the original fit averaged the terms and its optimiser stopped early.

    Averaging divides the objective (and gradient) by 96; a tolerance-free, scale-invariant
    L-BFGS must land on the same parameters."""
    params, tokens, loss = chinchilla_points()
    averaged = fit.fit_chinchilla(params, tokens, loss, reduction="mean")
    for name in ("E", "A", "B", "alpha", "beta"):
        assert averaged[name] == pytest.approx(chinchilla_fit[name], rel=1e-5), name
    # "objective" is always reported summed, so the two runs must agree on it too.
    assert averaged["objective"] == pytest.approx(chinchilla_fit["objective"], rel=1e-8)


def test_chinchilla_bootstrap_intervals_contain_the_truth(chinchilla_fit):
    samples = chinchilla_fit["samples"]
    assert len(samples) == 100 and {"E", "A", "B", "alpha", "beta", "a", "b", "n_opt"} <= set(samples[0])
    for name, truth in {**CHINCHILLA_TRUTH, "a": 0.28 / 0.62}.items():
        low, high = chinchilla_fit["ci"][name]
        assert low < truth < high, (name, low, truth, high)
        assert chinchilla_fit["se"][name] > 0


def test_chinchilla_fit_recovers_the_allocation_at_the_budget(chinchilla_fit):
    """a, b, N_opt, D_opt, D/N and the optimal loss at C = 1e21, each with an interval that
    covers the generating law's value; N is the non-embedding count and fit.json says so."""
    truth = fit.compute_optimal(CHINCHILLA_TRUTH["A"], CHINCHILLA_TRUTH["B"], CHINCHILLA_TRUTH["alpha"], CHINCHILLA_TRUTH["beta"], budget=1e21)
    truth["loss_opt"] = float(fit.chinchilla_loss(truth["n_opt"], truth["d_opt"], **CHINCHILLA_TRUTH))
    result = chinchilla_fit
    assert result["n_definition"] == "non_embedding_params"
    assert result["n_opt"] == pytest.approx(truth["n_opt"], rel=0.1) and result["b"] == pytest.approx(truth["b"], abs=0.03)
    assert result["tokens_per_param"] == pytest.approx(truth["tokens_per_param"], rel=0.2)
    fitted_law = {name: result[name] for name in CHINCHILLA_TRUTH}
    assert result["loss_opt"] == pytest.approx(float(fit.chinchilla_loss(result["n_opt"], result["d_opt"], **fitted_law)))
    for name in ("alpha", "beta", "a", "b", "n_opt", "d_opt", "tokens_per_param", "loss_opt"):
        low, high = result["ci"][name]
        assert low < truth.get(name, CHINCHILLA_TRUTH.get(name)) < high, (name, low, high)
        assert low <= result[name] <= high, name
    assert "N = non-embedding params" in fit.summarize(result) and "tokens/param" in fit.summarize(result)


# ----------------------------------------------------------------------------- isoflop


def synthetic_isoflop(exponent: float) -> dict[str, np.ndarray]:
    """Parabolas in log10 N around N_opt = 0.1·C^exponent, sampled asymmetrically, 0.2% noise."""
    rows = []
    for flops in 10.0 ** np.arange(17, 21.5, 0.5):
        log_n_opt = np.log10(0.1 * flops**exponent)
        for offset in np.arange(-0.7, 0.61, 0.2):  # 7 sizes, not centred on the optimum
            params = 10 ** (log_n_opt + offset)
            loss = 2.0 + 30 * flops**-0.1 + 0.3 * offset**2
            rows.append((params, flops / (6 * params), loss, flops))
    params, tokens, loss, flops = np.array(rows).T
    return {"params": params, "tokens": tokens, "loss": noisy(loss, 0.002, seed=3), "flops": flops}


def test_isoflop_recovers_a_known_exponent():
    points = synthetic_isoflop(0.6)
    result = fit.fit_isoflop(points["params"], points["tokens"], points["loss"], points["flops"])
    assert result["law"] == "isoflop" and len(result["budgets"]) == 9 and result["skipped"] == []
    assert result["a"] == pytest.approx(0.6, abs=0.01) and result["b"] == pytest.approx(0.4, abs=0.01)
    for budget in result["budgets"]:
        assert 6 * budget["n_opt"] * budget["d_opt"] == pytest.approx(budget["flops"], rel=1e-9)
        # 0.2% loss noise against a 0.012 rise 0.2 decades out: each vertex to ±0.06 decades.
        assert np.log10(budget["n_opt"]) == pytest.approx(np.log10(0.1 * budget["flops"] ** 0.6), abs=0.06)
        assert np.polyval(budget["parabola"], np.log10(budget["n_opt"])) == pytest.approx(budget["loss_opt"])
        assert budget["n_points"] == fit.ISOFLOP_POINTS_PER_PARABOLA


def test_isoflop_skips_a_budget_whose_minimum_is_not_bracketed():
    points = synthetic_isoflop(0.6)
    # Keep only the sizes above each optimum at the smallest budget: its lowest loss is its smallest model.
    smallest = points["flops"] == points["flops"].min()
    above = points["params"] > 0.1 * points["flops"] ** 0.6 * 1.01
    keep = ~smallest | above
    result = fit.fit_isoflop(*(points[name][keep] for name in ("params", "tokens", "loss", "flops")))
    assert len(result["budgets"]) == 8
    assert result["skipped"] == [{"flops": 1e17, "reason": "lowest loss at the smallest model: the optimum is not bracketed"}]


@pytest.mark.parametrize("config", FIG1_ORDER)
def test_isoflop_reproduces_porian_2024_published_exponents(config):
    """Each Fig. 1 configuration (RefinedWeb) within ±0.04 of the authors' a (tests/data/README.md)."""
    published = {row["config"]: float(row["a_nstar_vs_C"]) for row in read_porian(DATA / "porian2024_fig1_rw_published.csv")}
    rows = [row for row in read_porian(DATA / "porian2024_fig1_rw.csv") if row["config"] == config]
    params, tokens, loss, flops = (np.array([float(row[name]) for row in rows]) for name in ("params", "tokens", "loss", "flops"))
    result = fit.fit_isoflop(params, tokens, loss, flops)
    assert result["a"] == pytest.approx(published[config], abs=0.04)


def test_porian_fig1_exponents_come_out_in_the_papers_order():
    rows = read_porian(DATA / "porian2024_fig1_rw.csv")
    exponents = []
    for config in FIG1_ORDER:
        chosen = [row for row in rows if row["config"] == config]
        columns = (np.array([float(row[name]) for row in chosen]) for name in ("params", "tokens", "loss", "flops"))
        exponents.append(fit.fit_isoflop(*columns)["a"])
    assert exponents == sorted(exponents, reverse=True), exponents  # 0.83 → 0.70 → 0.60 → 0.57 → 0.50
    assert exponents[0] == pytest.approx(0.83, abs=0.04) and exponents[-1] == pytest.approx(0.50, abs=0.04)


def test_isoflop_bootstrap_gives_an_interval_around_the_estimate():
    points = synthetic_isoflop(0.6)
    result = fit.fit_isoflop(points["params"], points["tokens"], points["loss"], points["flops"], bootstrap=30, seed=0)
    low, high = result["ci"]["a"]
    assert low <= result["a"] <= high and low < 0.6 < high and high - low < 0.1
    assert set(result["se"]) == {"a", "b"}


# ----------------------------------------------------------------------------- inputs and errors


def write_points_csv(path: Path, x: np.ndarray, loss: np.ndarray) -> Path:
    lines = ["# a comment line, as in an attributed data file", "params,tokens,loss,flops"]
    lines += [f"{n:.6g},{20 * n:.6g},{value:.8g},{120 * n * n:.6g}" for n, value in zip(x, loss)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_load_points_reads_a_csv(tmp_path):
    x, loss = power_points()
    points = registry.load_points(write_points_csv(tmp_path / "points.csv", x, loss))
    np.testing.assert_allclose(points.non_embedding_params, x, rtol=1e-5)
    np.testing.assert_allclose(points.tokens, 20 * x, rtol=1e-5)
    np.testing.assert_allclose(points.loss, loss, rtol=1e-7)
    np.testing.assert_allclose(points.flops, 120 * x * x, rtol=1e-5)
    (tmp_path / "no_flops.csv").write_text("params,tokens,loss\n1e6,2e7,3.5\n")
    assert np.isnan(registry.load_points(tmp_path / "no_flops.csv").flops).all()


def test_load_points_reads_a_sweep_directory(tmp_path):
    header = "name,status,params,non_embedding_params,tokens,flops,final_loss,final_eval_loss,eval_bpb,wall_time_s"
    rows = [
        "L2,done,200000,100000,1000000,9e11,3.1,3.0,1.2,10",
        "L4,done,500000,400000,2000000,6e12,2.9,,1.1,20",  # never evaluated: final_loss stands in
        "L6,failed,900000,800000,,,,,,",
        "L8,pending,1500000,1400000,,,,,,",
    ]
    (tmp_path / "runs.csv").write_text("\n".join([header, *rows]) + "\n")
    points = registry.load_points(tmp_path)
    assert points.non_embedding_params.tolist() == [100000, 400000]  # non-embedding (Kaplan) params
    assert points.loss.tolist() == [3.0, 2.9]
    assert points.tokens.tolist() == [1e6, 2e6] and points.flops.tolist() == [9e11, 6e12]


@pytest.mark.parametrize(
    "text, message",
    [
        ("params,loss\n1e6,3.0\n", "no 'tokens' column (it has params, loss)"),
        ("params,tokens,loss\n1e6,2e7,3.0\n2e6,4e7,abc\n", "line 3: column 'loss' is 'abc', not a positive number"),
        ("params,tokens,loss\n-5,2e7,3.0\n", "line 2: column 'params' is '-5'"),
        ("params,tokens,loss\n1e6,nan,3.0\n", "line 2: column 'tokens' is 'nan'"),
        ("params,tokens,loss,flops\n1e6,2e7,3.0,inf\n", "line 2: column 'flops' is 'inf'"),
        ("", "is empty"),
        ("params,tokens,loss\n", "has a header but no rows"),
    ],
)
def test_bad_csv_gives_one_clear_error_line(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        registry.load_points(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_missing_input_and_sweep_without_registry_are_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        registry.load_points(tmp_path / "nope.csv")
    with pytest.raises(ValueError, match="has no runs.csv"):
        registry.load_points(tmp_path)


def test_fit_input_holds_out_the_largest_model(tmp_path):
    x, loss = power_points()
    result = fit.fit_input(write_points_csv(tmp_path / "points.csv", x, loss), "power", holdout="largest")
    assert result["n_points"] == 14 and result["x"] == "non_embedding_params"
    held = result["holdout"]
    assert held["non_embedding_params"] == pytest.approx(x.max(), rel=1e-5) and held["measured_loss"] == pytest.approx(loss[-1])
    assert held["predicted_loss"] == pytest.approx(fit.power_law(held["non_embedding_params"], result["E"], result["A"], result["alpha"]))
    assert held["relative_error"] == pytest.approx((held["predicted_loss"] - held["measured_loss"]) / held["measured_loss"])
    assert abs(held["relative_error"]) < 0.01  # 0.3% noise: a 1-decade-short fit still predicts within 1%
    assert "held out" in result["summary"]


def test_holdout_lists_every_run_that_shares_the_largest_size(tmp_path):
    x, loss = power_points()
    x, loss = np.append(x, x[-1]), np.append(loss, loss[-1] * 1.01)  # a second seed of the largest model
    result = fit.fit_input(write_points_csv(tmp_path / "points.csv", x, loss), "power", holdout="largest")
    assert result["n_points"] == 14 and isinstance(result["holdout"], list) and len(result["holdout"]) == 2
    assert [row["measured_loss"] for row in result["holdout"]] == pytest.approx([loss[-2], loss[-1]])
    assert "(2 runs)" in result["summary"]


def points_of(params, tokens, loss, flops=None) -> Points:
    params, tokens, loss = (np.asarray(values, dtype=float) for values in (params, tokens, loss))
    flops = np.full(len(loss), np.nan) if flops is None else np.asarray(flops, dtype=float)
    return Points(non_embedding_params=params, tokens=tokens, flops=flops, loss=loss, loss_name="loss")


def test_holdout_rows_report_compute_ratio_interval_and_the_naive_error():
    """A hand-made case: four sizes at one D (no flops column: C = 6ND), the largest held out."""
    points = points_of([1e6, 2e6, 4e6, 8e6], [1e8] * 4, [4.0, 3.5, 3.2, 3.0])
    held_out = holdout.held_out_mask(points, "power")
    assert held_out.tolist() == [False, False, False, True]
    law = {"law": "power", "x": "non_embedding_params", "E": 2.0, "A": 1e3, "alpha": 0.5,
           "samples": [{"E": E, "A": 1e3, "alpha": 0.5} for E in np.linspace(1.9, 2.1, 41)]}
    row = holdout.holdout_rows(points, held_out, law)
    predicted = 2.0 + 1e3 / np.sqrt(8e6)
    assert row["predicted_loss"] == pytest.approx(predicted) and row["relative_error"] == pytest.approx(predicted / 3.0 - 1)
    assert row["flops"] == 6 * 8e6 * 1e8 and row["compute_ratio"] == 2.0  # 8e6 vs the largest fitted 4e6, same D
    assert row["naive_loss"] == 3.2 and row["naive_relative_error"] == pytest.approx(0.2 / 3.0, abs=1e-15)
    # Predictions move one-for-one with E: the interval is E's 2.5/97.5 percentiles plus A·N^-α.
    assert row["interval"] == pytest.approx([1.905 + (predicted - 2.0), 2.095 + (predicted - 2.0)])
    # With the measured flops column, compute comes from it; without samples, no interval.
    with_flops = points_of([1e6, 2e6, 4e6, 8e6], [1e8] * 4, [4.0, 3.5, 3.2, 3.0], flops=[1e15, 2e15, 5e15, 2e16])
    row = holdout.holdout_rows(with_flops, held_out, {key: law[key] for key in ("law", "x", "E", "A", "alpha")})
    assert row["compute_ratio"] == 4.0 and "interval" not in row


def test_chinchilla_holds_out_the_largest_compute_not_the_largest_size():
    """On an (N, D) grid the largest N's short runs are cheaper than fitted ones: only the
    largest-compute (N, D) is held out, with its repeat; the power law keeps holding out N."""
    params = np.array([1e6, 1e6, 4e6, 4e6, 4e6])
    tokens = np.array([1e8, 4e8, 1e7, 4e8, 4e8])  # the last two: two seeds of the largest run
    points = points_of(params, tokens, [3.0, 2.8, 3.1, 2.5, 2.52])
    assert holdout.held_out_mask(points, "chinchilla").tolist() == [False, False, False, True, True]
    assert holdout.held_out_mask(points, "power").tolist() == [False, False, True, True, True]
    rows = holdout.holdout_rows(points, holdout.held_out_mask(points, "chinchilla"), {**CHINCHILLA_TRUTH, "law": "chinchilla"})
    assert [row["compute_ratio"] for row in rows] == [4.0, 4.0] and rows[0]["naive_loss"] == 2.8
    # An isoFLOP budget held out whole: every configuration that ties at the largest compute.
    budget = points_of([1e6, 2e6, 4e6, 1e6], [4e8, 2e8, 1e8, 1e8], [2.9, 2.8, 2.85, 3.0])
    assert holdout.held_out_mask(budget, "chinchilla").tolist() == [True, True, True, False]


def test_chinchilla_holdout_predicts_a_run_4x_out_better_than_the_naive_guess(chinchilla_fit):
    """The fixture's run at (2N, 2D) of the grid's largest: 4× its compute, within 1% and its
    bootstrap interval, while "as good as the largest fitted run" misses by ~3%."""
    held = chinchilla_fit["holdout"]
    _, _, loss = chinchilla_points()
    assert (held["non_embedding_params"], held["tokens"]) == HELD_OUT_RUN and held["measured_loss"] == held_out_loss()
    assert held["compute_ratio"] == pytest.approx(4.0, rel=1e-12)
    assert held["naive_loss"] == loss[-1]  # the fitted run at (1e10, 1e12)
    assert held["naive_relative_error"] == pytest.approx(loss[-1] / held["measured_loss"] - 1, rel=1e-12)
    assert abs(held["relative_error"]) < 0.01 < abs(held["naive_relative_error"])
    low, high = held["interval"]
    assert low <= held["predicted_loss"] <= high and low <= held["measured_loss"] <= high
    assert "naive" in chinchilla_fit["summary"] and "4× the largest fitted compute" in chinchilla_fit["summary"]


def test_fit_input_fits_a_sweep_directory(tmp_path):
    points = synthetic_isoflop(0.6)
    header = "name,status,params,non_embedding_params,tokens,flops,final_loss,final_eval_loss,eval_bpb,wall_time_s"
    rows = [f"run{i},done,{2 * n},{n},{d},{c},{l + 0.1},{l},,1" for i, (n, d, l, c) in
            enumerate(zip(points["params"], points["tokens"], points["loss"], points["flops"]))]
    (tmp_path / "runs.csv").write_text("\n".join([header, *rows, "extra,failed,1,1,,,,,,"]) + "\n")
    result = fit.fit_input(tmp_path, "isoflop")
    direct = fit.fit_isoflop(points["params"], points["tokens"], points["loss"], points["flops"])
    assert result["a"] == pytest.approx(direct["a"], rel=1e-6) and result["input"] == str(tmp_path)


def test_the_residual_bootstrap_keeps_every_design_point_and_its_intervals_cover_the_truth():
    params, tokens = (values.ravel() for values in np.meshgrid([1e7, 4e7, 1.6e8], [1e9, 2e9, 4e9, 8e9]))  # 3 sizes × 4 D
    loss = noisy(fit.chinchilla_loss(params, tokens, **CHINCHILLA_TRUTH), 0.003, seed=5)
    features, log_loss = np.log(np.stack([params, tokens])), np.log(loss)
    theta = fit.fit_chinchilla(params, tokens, loss)
    theta = np.array([math.log(theta["E"]), math.log(theta["A"]), math.log(theta["B"]), theta["alpha"], theta["beta"]])
    targets = fit.residual_targets(theta, features, log_loss, 50, np.random.default_rng(0))
    parts = np.vstack([np.full(12, theta[0]), theta[1:3, None] - theta[3:, None] * features])
    fitted = np.logaddexp.reduce(parts, axis=0)
    assert targets.shape == (50, 12)  # every replicate has all 12 design points: a fitted value plus one of the residuals
    assert np.all(np.isin(np.round(targets - fitted, 12), np.round(log_loss - fitted, 12)))
    result = fit.fit_chinchilla(params, tokens, loss, bootstrap=40, seed=0, bootstrap_method="residuals")
    assert result["bootstrap_method"] == "residuals"
    for name in ("alpha", "beta"):
        low, high = result["ci"][name]
        assert low <= CHINCHILLA_TRUTH[name] <= high, (name, low, high)
    with pytest.raises(ValueError, match="--bootstrap_method residuals applies to --law chinchilla or power only"):
        fit.fit_input("unused.csv", "isoflop", bootstrap=10, bootstrap_method="residuals")


def test_fit_input_rejects_options_that_cannot_apply(tmp_path):
    (tmp_path / "no_flops.csv").write_text("params,tokens,loss\n1e6,2e7,3.5\n2e6,4e7,3.3\n4e6,8e7,3.1\n")
    with pytest.raises(ValueError, match="needs a flops value"):
        fit.fit_input(tmp_path / "no_flops.csv", "power", x="flops")
    with pytest.raises(ValueError, match="unknown law 'kaplan'"):
        fit.fit_input(tmp_path / "no_flops.csv", "kaplan")
    with pytest.raises(ValueError, match="holdout needs a law that predicts"):
        fit.fit_input(tmp_path / "no_flops.csv", "isoflop", holdout="largest")


# ----------------------------------------------------------------------------- CLI


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "tools/fit_scaling.py", *args], check=False, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_cli_round_trip_writes_the_fit_and_prints_the_law(tmp_path):
    rows = [row for row in read_porian(DATA / "porian2024_fig1_rw.csv") if row["config"] == "optimizer_tuning_no_decay"]
    source = tmp_path / "tuned.csv"
    source.write_text("params,tokens,loss,flops\n" + "".join(f"{r['params']},{r['tokens']},{r['loss']},{r['flops']}\n" for r in rows))
    out = tmp_path / "out" / "fit.json"
    completed = run_cli(str(source), "--law", "isoflop", "--out", str(out))
    assert completed.returncode == 0, completed.stderr
    written = json.loads(out.read_text())
    direct = fit.fit_input(source, "isoflop")
    assert written["a"] == pytest.approx(direct["a"]) and written["a"] == pytest.approx(0.497, abs=0.04)
    assert len(written["budgets"]) == 12 and set(written["budgets"][0]) == {"flops", "n_opt", "d_opt", "loss_opt", "parabola", "n_points",
                                                                          "n_opt_corrected", "d_opt_corrected", "n_bias", "d_bias"}
    assert completed.stdout.strip() == written["summary"] and completed.stdout.startswith("isoflop (12 budgets")


def test_the_fit_command_and_the_tool_write_the_same_fit(tmp_path, capsys):
    x, loss = power_points()
    source = write_points_csv(tmp_path / "points.csv", x, loss)
    assert main(["fit", str(source), "--law", "power", "--x", "params", "--holdout", "largest", "--out", str(tmp_path / "a.json")]) == 0
    printed = capsys.readouterr().out.strip()
    completed = run_cli(str(source), "--law", "power", "--holdout", "largest", "--out", str(tmp_path / "b.json"))
    assert completed.returncode == 0, completed.stderr
    command, tool = (json.loads((tmp_path / name).read_text()) for name in ("a.json", "b.json"))
    assert command["x"] == tool["x"] == "non_embedding_params"  # "params" is N too
    assert command["alpha"] == pytest.approx(tool["alpha"]) and printed == command["summary"] == completed.stdout.strip()


def exit_code(argv: list[str]) -> int:
    """`python -m bigmodel ARGV`'s exit code, in-process (argparse exits on a usage error)."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


ONE_POINT = "params,tokens,loss\n1e6,2e7,3.5\n"
GOOD = "params,tokens,loss\n1e6,2e7,3.5\n2e6,4e7,3.3\n4e6,8e7,3.1\n8e6,1.6e8,3.0\n"


@pytest.mark.parametrize(
    "csv_text, extra, message",
    [
        ("", [], "is empty"),
        ("params,loss\n1,2\n", [], "no 'tokens' column"),
        ("params,tokens,loss\n1e6,2e7,nan\n2e6,4e7,3.3\n", [], "column 'loss' is 'nan'"),
        ("params,tokens,loss\n1e6,-2e7,3.5\n2e6,4e7,3.3\n", [], "column 'tokens' is '-2e7'"),
        (ONE_POINT, [], "need at least 3 points"),
        (GOOD, ["--law", "kaplan"], "unknown law 'kaplan'"),
        (GOOD, ["--x", "depth"], "unknown x 'depth'"),
        (GOOD, ["--bootstrap", "many"], "argument --bootstrap: expected an integer from 0 to 1,000,000"),
        (GOOD, ["--law", "isoflop"], "needs a flops value"),
        (GOOD, ["--law", "power", "--budget", "1e21"], "--budget gives the Chinchilla"),
    ],
)
def test_fit_command_bad_input_is_one_error_line_exit_2_and_nothing_written(tmp_path, capsys, csv_text, extra, message):
    source = tmp_path / "points.csv"
    source.write_text(csv_text)
    options = extra if "--law" in extra else ["--law", "power", *extra]
    out = tmp_path / "out" / "fit.json"
    assert exit_code(["fit", str(source), *options, "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1 and message in error
    assert sorted(path.name for path in tmp_path.iterdir()) == ["points.csv"]


def test_fit_command_refuses_an_out_that_is_a_directory_before_fitting(tmp_path, capsys):
    source = tmp_path / "points.csv"
    source.write_text(GOOD)
    (tmp_path / "taken").mkdir()
    assert main(["fit", str(source), "--law", "power", "--out", str(tmp_path / "taken")]) == 2
    error = capsys.readouterr().err
    assert error == f"error: --out {tmp_path / 'taken'} is a directory: pass the path of the JSON file to write\n"
    assert list((tmp_path / "taken").iterdir()) == []


def test_cli_bad_input_prints_one_error_line_and_exits_2(tmp_path):
    (tmp_path / "bad.csv").write_text("params,loss\n1,2\n")
    completed = run_cli(str(tmp_path / "bad.csv"), "--law", "power", "--out", str(tmp_path / "fit.json"))
    assert completed.returncode == 2
    assert completed.stderr.startswith("error: ") and completed.stderr.count("\n") == 1
    assert not (tmp_path / "fit.json").exists()
    completed = run_cli(str(tmp_path / "bad.csv"), "--out", str(tmp_path / "fit.json"))  # no --law: a usage error, same shape
    assert completed.returncode == 2 and completed.stderr.count("\n") == 1 and "--law" in completed.stderr


def test_a_degenerate_bootstrap_fit_leaves_an_unbounded_interval_not_an_overflow():
    # log A = 800 is past float range (a replicate that ran off along the E–A ridge): A is inf.
    sample = fit._chinchilla_parameters([0.0, 800.0, 1.0, 0.3, 0.3], budget=1e15)
    assert sample["A"] == math.inf and sample["E"] == 1.0 and sample["B"] == pytest.approx(math.e)
    intervals = fit._intervals([sample, fit._chinchilla_parameters([0.0, 1.0, 1.0, 0.3, 0.3], budget=1e15)])
    assert intervals["ci"]["A"][1] == math.inf and intervals["ci"]["E"] == [1.0, 1.0]
