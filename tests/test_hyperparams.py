"""Hyperparameter scaling laws: η_opt(C), B_opt(C) recovered from synthetic sweeps with known
laws (intervals covering the truth), the batch-size sweep in the Study grammar (names, steps),
the fitted rule a Study plugs in, and bad inputs as one error line through the real CLI.

The sweep-directory test writes a real registry and each run's resolved config.json from the
real expansion; only the losses are synthetic (training 45 runs would take a quarter hour).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from bigmodel import files
from bigmodel.cli import main
from bigmodel.config import ConfigError, load_config
from bigmodel.scaling import registry
from bigmodel.scaling.hyperparams import HyperparamPoints, fit_hyperparams, fitted_rule
from bigmodel.scaling.sweep import BranchGrid, IsoFlopGrid, RunPlan, SizeGrid, Study, expand, shape_of

REPO_ROOT = Path(__file__).resolve().parents[1]
TRUTH = {"k_eta": 0.3118, "a_eta": -0.125, "k_batch": 0.2920, "a_batch": 0.3271}  # DeepSeek's laws as the ground truth
BUDGETS = (1e17, 1e18, 1e19, 1e20)
SEQ_LEN = 128
SPEC = "configs/lm.py:L2"
SMALL = {"data.seq_len": 64}


def true_optimum(flops: float) -> tuple[float, float]:
    return TRUTH["k_eta"] * flops ** TRUTH["a_eta"], TRUTH["k_batch"] * flops ** TRUTH["a_batch"]


def synthetic_loss(flops, lr, batch_tokens, rng, noise):
    """A valley in (log10 η, log10 B), tilted, steeper towards large lr, around the true optimum."""
    eta, batch = true_optimum(flops)
    x, y = np.log10(lr / eta), np.log10(batch_tokens / batch)
    return 4.0 * flops**-0.05 + 0.5 * x**2 + 0.25 * y**2 + 0.1 * x * y + 0.2 * np.maximum(x, 0) ** 3 + rng.normal(0, noise)


def synthetic_points(seed: int = 0, noise: float = 0.004, budgets=BUDGETS, sweep_batch: bool = True) -> HyperparamPoints:
    """Per budget 7 lrs (2× apart) × 5 batch sizes (2× apart), each grid offset at random from
    the optimum so no vertex sits on a grid point; FLOPs jittered ±1% as rounded steps do."""
    rng, rows = np.random.default_rng(seed), []
    for flops in budgets:
        eta, batch = true_optimum(flops)
        lrs = eta * 2.0 ** np.arange(-3, 4) * rng.uniform(0.8, 1.25)
        batches = np.round(batch / SEQ_LEN * 2.0 ** np.arange(-2, 3) * rng.uniform(0.8, 1.25)) if sweep_batch else [round(batch / SEQ_LEN)]
        for lr in lrs:
            for size in batches:
                c = flops * rng.uniform(0.99, 1.01)
                rows.append((c, lr, size, SEQ_LEN, synthetic_loss(flops, lr, size * SEQ_LEN, rng, noise)))
    table = np.array(rows)
    return HyperparamPoints(flops=table[:, 0], learning_rate=table[:, 1], batch_size=table[:, 2], seq_len=table[:, 3],
                            loss=table[:, 4], names=(), loss_name="loss")


def write_points_csv(path, points: HyperparamPoints) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["flops", "learning_rate", "batch_size", "seq_len", "loss"])
        writer.writerows(zip(points.flops, points.learning_rate, points.batch_size.astype(int), points.seq_len.astype(int), points.loss))


@pytest.fixture(scope="module")
def synthetic_fit():
    return fit_hyperparams(synthetic_points(), bootstrap=100, seed=0)


# ----------------------------------------------------------------------------- the fit


def test_noiseless_sweep_gives_the_laws_exactly():
    result = fit_hyperparams(synthetic_points(noise=0.0, seed=3))
    # the cubic term (a steeper wall at large lr) bends the surface away from a quadratic a little
    assert result["a_eta"] == pytest.approx(TRUTH["a_eta"], abs=0.005)
    assert result["a_batch"] == pytest.approx(TRUTH["a_batch"], abs=0.005)
    assert result["k_eta"] == pytest.approx(TRUTH["k_eta"], rel=0.15) and result["k_batch"] == pytest.approx(TRUTH["k_batch"], rel=0.15)


def test_fit_recovers_known_exponents_with_intervals_covering_them(synthetic_fit):
    result = synthetic_fit
    assert result["with_batch"] and len(result["budgets"]) == 4 and not result["skipped"]
    for key in ("a_eta", "a_batch"):
        low, high = result["ci"][key]
        assert low <= TRUTH[key] <= high, (key, result["ci"][key])
        assert result[key] == pytest.approx(TRUTH[key], abs=0.02)
        assert high - low < 0.05  # an interval, not the whole line
    for budget in result["budgets"]:  # each budget's own optimum, and its interval
        eta, batch = true_optimum(budget["flops"])
        assert budget["learning_rate"] == pytest.approx(eta, rel=0.1) and budget["batch_tokens"] == pytest.approx(batch, rel=0.15)
        assert budget["ci"]["learning_rate"][0] < budget["learning_rate"] < budget["ci"]["learning_rate"][1]
    assert len(result["samples"]) + result["bootstrap_dropped"] == 100 and result["bootstrap_dropped"] < 5
    assert result["intervals_reliable"]


def test_summary_line_names_both_laws_and_deepseeks_exponents(synthetic_fit):
    from bigmodel.scaling.hyperparams import summarize

    line = summarize(synthetic_fit)
    assert "\n" not in line and "η_opt = " in line and "B_opt = " in line and "DeepSeek 2024: a_η -0.125, a_B 0.3271" in line
    assert f"a_η {synthetic_fit['a_eta']:.3f} [{synthetic_fit['ci']['a_eta'][0]:.3f}," in line


def test_near_optimal_set_is_the_runs_within_the_tolerance(synthetic_fit):
    points = synthetic_points()
    for budget in synthetic_fit["budgets"]:
        members = np.array(budget["members"])
        best = points.loss[members].min()
        expected = members[points.loss[members] <= best * 1.0025]
        assert sorted(budget["near_optimal"]) == sorted(expected.tolist()) and best == budget["min_loss"]


def test_a_sweep_of_lr_alone_fits_eta_and_no_batch_law():
    result = fit_hyperparams(synthetic_points(sweep_batch=False, seed=1))
    assert not result["with_batch"] and "a_batch" not in result and result["budgets"][0]["batch_tokens"] is None
    assert result["a_eta"] == pytest.approx(TRUTH["a_eta"], abs=0.02)


def test_a_budget_whose_optimum_is_off_the_grid_is_skipped_with_its_reason():
    points = synthetic_points(seed=2)
    budget = points.flops > 5e19  # keep only lrs at most the optimum's / 2 for the largest budget
    eta, _ = true_optimum(1e20)
    keep = ~budget | (points.learning_rate < eta / 1.9)
    kept = HyperparamPoints(**{key: getattr(points, key)[keep] for key in ("flops", "learning_rate", "batch_size", "seq_len", "loss")},
                            names=(), loss_name="loss")
    result = fit_hyperparams(kept)
    assert len(result["budgets"]) == 3 and len(result["skipped"]) == 1
    assert "beyond the largest learning rate swept" in result["skipped"][0]["reason"]


# ----------------------------------------------------------------------------- the batch-size sweep


def test_batch_size_sweep_expands_names_and_steps_from_the_budget():
    study = Study(SPEC, IsoFlopGrid([1e11, 3e11], [shape_of(2, 32)]), overrides=SMALL, batch_sizes=[8, 16, 32],
                  learning_rates=[5e-3, 1e-2], rules=lambda plan: {"optim.warmup_steps": max(1, plan.steps // 10)})
    runs = expand(study)
    assert len(runs) == 2 * 3 * 2
    assert runs[0].name == "C1e11-L2-d32-tok406K-lr5e-3-b8-s0"
    for run in runs:
        wanted = run.budget / run.flops_per_token
        assert run.steps == round(wanted / (run.batch_size * 64)) and run.tokens == run.steps * run.batch_size * 64
        assert f"-b{run.batch_size}-s0" in run.name
        config = load_config(run.config_spec, run.overrides)
        assert config.train.batch_size == run.batch_size and config.train.steps == run.steps
        assert config.optim.warmup_steps == max(1, run.steps // 10)  # rules saw the plan's batch and steps
    steps = {run.batch_size: run.steps for run in runs if run.budget == 1e11}
    assert steps[8] == pytest.approx(2 * steps[16], abs=1) and steps[16] == pytest.approx(2 * steps[32], abs=1)


def test_size_grid_sweeps_batch_sizes_and_names_stay_as_they_were_without_them():
    swept = expand(Study(SPEC, SizeGrid(["L1"], tokens=100_000), overrides=SMALL, batch_sizes=[4, 8]))
    assert [(run.batch_size, run.steps) for run in swept] == [(4, 391), (8, 195)]
    assert [run.name for run in swept] == ["L1-d32-tok100K-lr3e-3-b4-s0", "L1-d32-tok99.8K-lr3e-3-b8-s0"]
    plain = expand(Study(SPEC, SizeGrid(["L1"], tokens=100_000), overrides={**SMALL, "train.batch_size": 8}))
    assert [run.name for run in plain] == ["L1-d32-tok99.8K-lr3e-3-s0"]  # no -b part: committed registries keep their names


@pytest.mark.parametrize("study, message", [
    (Study(SPEC, BranchGrid([shape_of(2, 32)], tokens=[100_000]), overrides=SMALL, batch_sizes=[8, 16]), "not a BranchGrid"),
    (Study(SPEC, SizeGrid(["L1"], tokens=100_000), overrides=SMALL, batch_sizes=[8, 16], batch_size=8), "both batch_size and batch_sizes"),
    (Study(SPEC, SizeGrid(["L1"], tokens=100_000), overrides=SMALL, batch_sizes=[8, 8]), "repeat a value"),
    (Study(SPEC, SizeGrid(["L1"], tokens=100_000), overrides=SMALL, batch_sizes=[8, 0]), "positive ints"),
])
def test_bad_batch_size_sweeps_are_one_error(study, message):
    with pytest.raises(ConfigError, match=message) as error:
        expand(study)
    assert "\n" not in str(error.value)


# ----------------------------------------------------------------------------- the fitted rule


def test_fitted_rule_gives_the_laws_values_and_plugs_into_a_study(tmp_path, synthetic_fit):
    path = tmp_path / "fit.json"
    files.write_json_atomic(path, synthetic_fit)
    rule = fitted_rule(path)
    plan = RunPlan(n_layers=2, d_model=32, params=41_120, non_embedding_params=24_736, flops_per_token=295_872,
                   tokens=1_000_000, steps=100, batch_size=8, seq_len=128, budget=None, seed=0)
    flops = plan.tokens * plan.flops_per_token
    assert rule(plan) == {"optim.lr": float(f"{synthetic_fit['k_eta'] * flops ** synthetic_fit['a_eta']:.3g}")}
    wanted = synthetic_fit["k_batch"] * 3e11 ** synthetic_fit["a_batch"] / 128  # sequences
    chosen = rule.batch_size({"flops": 3e11, "seq_len": 128})
    assert chosen & (chosen - 1) == 0 and abs(math.log2(chosen / wanted)) <= 0.5  # nearest power of two in log space
    assert fitted_rule(path, batch_choices=[6, 12, 24]).batch_size({"flops": 3e11, "seq_len": 128}) == min(
        (6, 12, 24), key=lambda c: abs(math.log(c / wanted)))
    study = Study(SPEC, IsoFlopGrid([1e11, 1e12], [shape_of(2, 32)]), overrides=SMALL, batch_size=rule.batch_size,
                  rules=lambda plan: {**rule(plan), "optim.warmup_steps": max(1, plan.steps // 10)})
    for run in expand(study):
        assert run.batch_size == rule.batch_size({"flops": run.budget, "seq_len": 64})
        assert run.learning_rate == rule(RunPlan(**{**plan.__dict__, "tokens": run.tokens, "flops_per_token": run.flops_per_token}))["optim.lr"]


def test_fitted_rule_refuses_a_file_that_is_not_a_hyperparams_fit(tmp_path):
    files.write_json_atomic(tmp_path / "fit.json", {"law": "chinchilla"})
    for path in (tmp_path / "fit.json", tmp_path / "missing.json"):
        with pytest.raises(ConfigError, match="not a hyperparams fit.json"):
            fitted_rule(path)
    files.write_json_atomic(tmp_path / "lr.json", fit_hyperparams(synthetic_points(sweep_batch=False)))
    with pytest.raises(ConfigError, match="no batch-size law"):
        fitted_rule(tmp_path / "lr.json").batch_size({"flops": 1e18, "seq_len": 128})


# ----------------------------------------------------------------------------- files, CLI, plots


def write_sweep(directory) -> list:
    """A real registry and each run's resolved config.json for a 3-budget lr × batch sweep; the
    losses come from the synthetic valley around DeepSeek's laws, which at 1e11–1e12 FLOPs put
    η_opt at 0.013–0.0099 and B_opt at 1,160–2,460 tokens, inside this grid."""
    study = Study(SPEC, IsoFlopGrid([1e11, 3e11, 1e12], [shape_of(2, 32)], tokens_per_param_range=(1, 1000)),
                  overrides={"data.seq_len": 128}, batch_sizes=[4, 8, 16, 32], learning_rates=[2.5e-3, 5e-3, 1e-2, 2e-2, 4e-2])
    runs, rng, rows = expand(study), np.random.default_rng(0), []
    for run in runs:
        loss = float(synthetic_loss(run.budget, run.learning_rate, run.batch_size * run.seq_len, rng, 0.002))
        rows.append(registry.row_for_run(run, registry.DONE, summary={"final_loss": loss, "final_eval_loss": loss}))
        config = load_config(run.config_spec, run.overrides)
        files.write_json_atomic(directory / run.name / "config.json", config.to_dict())
    registry.write_registry(directory, rows)
    return runs


def test_fit_and_plot_a_sweep_directory_through_the_cli(tmp_path, capsys):
    runs = write_sweep(tmp_path)
    assert main(["fit", str(tmp_path), "--law", "hyperparams", "--bootstrap", "50", "--out", str(tmp_path / "fit.json")]) == 0
    line = capsys.readouterr().out.strip()
    result = json.loads((tmp_path / "fit.json").read_text())
    assert line == result["summary"] and line.startswith("hyperparams (3 of 3 budgets, 60 runs")
    assert result["a_eta"] == pytest.approx(TRUTH["a_eta"], abs=0.05) and result["a_batch"] == pytest.approx(TRUTH["a_batch"], abs=0.05)
    assert {p["name"] for p in result["points"]} == {run.name for run in runs}
    assert {(p["learning_rate"], p["batch_size"]) for p in result["points"]} == {(run.learning_rate, run.batch_size) for run in runs}
    refit = tmp_path / "results" / "fit.json"  # a results folder keeps fit.json, not the run folders: it refits from its points
    assert main(["fit", str(tmp_path / "fit.json"), "--law", "hyperparams", "--out", str(refit)]) == 0
    again = json.loads(refit.read_text())
    assert (again["a_eta"], again["a_batch"], again["points"]) == (result["a_eta"], result["a_batch"], result["points"])
    capsys.readouterr()
    assert main(["plot", str(tmp_path), "--out", str(tmp_path / "plots")]) == 0  # the sweep's fit.json decides the figures
    assert sorted(path.name for path in (tmp_path / "plots").iterdir()) == [
        "hyperparams_laws.png", "hyperparams_laws.svg", "hyperparams_profiles.png", "hyperparams_profiles.svg"]


def test_plot_figures_mark_one_optimum_per_fitted_budget(synthetic_fit):
    from bigmodel.scaling.plot_hyperparams import plot_laws, plot_profiles

    def count(figure, gid):
        return sum(1 for axes in figure.axes for artist in axes.get_children() if artist.get_gid() == gid)

    assert count(plot_profiles(synthetic_fit), "optimum") == 4
    laws = plot_laws(synthetic_fit)
    assert count(laws, "optimum") == 2 * 4 and count(laws, "band") == 2 and count(laws, "deepseek") == 2


@pytest.mark.parametrize("budgets, lrs, message", [
    ((1e17,), None, "needs runs at 2 or more compute budgets, found 1 (C=1e+17)"),
    (BUDGETS, [0.01], "has 1 distinct learning rate(s) (0.01): sweep learning_rates=[...] with 3 or more values"),
])
def test_bad_sweeps_are_one_error_line_and_nothing_written(tmp_path, capsys, budgets, lrs, message):
    points = synthetic_points(budgets=budgets)
    if lrs is not None:
        points = HyperparamPoints(**{**{k: getattr(points, k) for k in ("flops", "batch_size", "seq_len", "loss")},
                                     "learning_rate": np.full(len(points.loss), lrs[0])}, names=(), loss_name="loss")
    write_points_csv(tmp_path / "points.csv", points)
    out = tmp_path / "fit.json"
    assert main(["fit", str(tmp_path / "points.csv"), "--law", "hyperparams", "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error and message in error
    assert not out.exists()


def test_a_csv_without_the_hyperparameter_columns_and_a_holdout_are_refused(tmp_path, capsys):
    (tmp_path / "points.csv").write_text("params,tokens,loss\n1,2,3\n")
    assert main(["fit", str(tmp_path / "points.csv"), "--law", "hyperparams", "--out", str(tmp_path / "f.json")]) == 2
    assert "has no 'flops', 'learning_rate', 'batch_size', 'seq_len' column" in capsys.readouterr().err
    assert main(["fit", str(tmp_path / "points.csv"), "--law", "hyperparams", "--holdout", "largest", "--out", str(tmp_path / "f.json")]) == 2
    assert "holdout needs a law that predicts a loss" in capsys.readouterr().err


def test_the_shipped_experiment_is_a_full_grid_at_three_budgets_within_its_time():
    from bigmodel.scaling.execution import estimated_seconds
    from bigmodel.scaling.runner import load_study
    from bigmodel.scaling.sweep import validate_runs

    study = load_study(REPO_ROOT / "experiments" / "hparams.py")
    runs = expand(study)
    validate_runs(runs)
    budgets = sorted({run.budget for run in runs})
    assert len(budgets) == 3 and budgets[-1] / budgets[0] == pytest.approx(10)
    for budget in budgets:
        grid = {(run.learning_rate, run.batch_size) for run in runs if run.budget == budget}
        assert grid == {(lr, batch) for lr in study.learning_rates for batch in study.batch_sizes}
    assert len(study.learning_rates) >= 5 and len(study.batch_sizes) >= 3
    assert sum(estimated_seconds(run) for run in runs) <= 15 * 60  # the dry run's estimate on this 2-core CPU
