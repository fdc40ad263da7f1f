"""`recommend` (what a Chinchilla fit says to train at a budget) and the ladder (`Study(...,
ladder=[...])`: train the recommendation above the grid, score it as a held-out row). The fast
tests read the committed demo fit and registry; one slow test climbs a tiny ladder for real."""

import csv
import dataclasses
import json
import math
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bigmodel.cli import main
from bigmodel.config import ConfigError
from bigmodel.scaling.allocation import allocation_at, flops_per_token
from bigmodel.scaling.ladder import check_ladder, rung_runs, score_rungs
from bigmodel.scaling.laws import chinchilla_loss, compute_optimal
from bigmodel.scaling.recommend import basis_line, recommend
from bigmodel.scaling.registry import RUNG, STABLE
from bigmodel.scaling.runner import load_study, plan_runs

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "experiments" / "demo_results"


@pytest.fixture(scope="module")
def demo_fit() -> dict:
    return json.loads((DEMO / "fit.json").read_text())


def test_recommend_reproduces_the_fits_own_allocation_at_its_budget(demo_fit):
    """At the budget the fit itself allocated (1e15), recommend's N_opt, D_opt and their intervals
    are the fit's (its basis line is read back from the text at 3 significant digits)."""
    result = recommend(demo_fit, demo_fit["budget"])
    optimum = result["optimum"]
    for key in ("n_opt", "d_opt", "loss_opt"):
        assert optimum[key] == pytest.approx(demo_fit[key], rel=0.01)
        assert optimum["ci"][key] == pytest.approx(demo_fit["ci"][key], rel=0.02)
    assert result["compute_basis"] == demo_fit["compute_basis"]


def test_the_recommended_run_is_the_nearest_preset_spending_the_budget(demo_fit):
    budget = 3e13
    result = recommend(demo_fit, budget)
    shape, run, prediction = result["shape"], result["run"], result["prediction"]
    line = basis_line(demo_fit)
    assert run["tokens"] * flops_per_token(line, shape["non_embedding_params"]) == pytest.approx(budget)
    n_opt = result["optimum"]["n_opt"]
    neighbours = [shape["n_layers"] + step for step in (-1, 1)]
    from bigmodel.presets import preset_non_embedding_params
    distance = lambda n: abs(math.log(preset_non_embedding_params(n) / n_opt))  # noqa: E731
    assert all(distance(shape["n_layers"]) <= distance(n) for n in neighbours if n >= 1)
    assert (shape["d_model"], shape["n_heads"]) == (32 * shape["n_layers"], shape["n_layers"])
    law = [demo_fit[key] for key in ("E", "A", "B", "alpha", "beta")]
    assert prediction["predicted_loss"] == pytest.approx(float(chinchilla_loss(shape["non_embedding_params"], run["tokens"], *law)))
    low, high = prediction["prediction_interval"]
    assert low < prediction["predicted_loss"] < high and prediction["mean_interval"][0] >= low


def test_the_basis_is_the_fits_flops_line_else_6nd(demo_fit):
    line = {"slope": 8.0, "intercept": 1000.0}
    assert basis_line({**demo_fit, "flops_per_token_line": line}) == line
    assert basis_line({"law": "chinchilla"}) is None
    law = {key: demo_fit[key] for key in ("E", "A", "B", "alpha", "beta")}
    closed = compute_optimal(law["A"], law["B"], law["alpha"], law["beta"], 1e14)
    on_6nd = allocation_at(law, 1e14, None)
    assert on_6nd["n_opt"] == pytest.approx(closed["n_opt"]) and on_6nd["d_opt"] == pytest.approx(closed["d_opt"])
    assert recommend({**law, "law": "chinchilla"}, 1e14)["compute_basis"].startswith("6ND")


def test_recommend_prints_json_with_the_studys_hyperparameters(capsys):
    code = main(["recommend", str(DEMO / "fit.json"), "--budget", "3e13", "--study", "experiments/demo.py", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    hyper, run = result["hyperparameters"], result["run"]
    n = result["shape"]["non_embedding_params"]
    assert hyper["learning_rate"] == float(f"{6e-3 * (n / 393_600) ** (-1 / 4):.2g}")  # experiments/demo.py's rule
    assert hyper["batch"] == {"sequences": 16, "seq_len": 128} and "the study's rules" in hyper["source"]
    assert run["flops"] == pytest.approx(3e13, rel=0.01)  # whole steps of the study's FLOPs per token


def test_a_rung_of_a_branch_study_is_a_stable_run_and_its_cooldown():
    study = load_study("experiments/demo.py")
    runs = rung_runs(study, 2, 5e13, {"n_layers": 3, "d_model": 96, "n_heads": 3, "d_ff": 384})
    stable, measured = runs
    assert (stable.role, measured.role) == (STABLE, RUNG) and measured.parent == stable.name
    assert stable.name.startswith("rung2-stable-L3-d96-") and measured.name.startswith("rung2-L3-d96-")
    assert measured.flops == pytest.approx(5e13, rel=0.01) and measured.overrides["optim.schedule"] == "wsd"
    assert measured.overrides["optim.decay_fraction"] == "0.2" and measured.seed == 0


def test_a_ladder_must_climb_above_the_grid_and_be_scored():
    study, runs = plan_runs("experiments/demo.py")
    largest = max(run.flops for run in runs if run.role != STABLE)
    check_ladder(dataclasses.replace(study, ladder=[2 * largest]), runs)
    with pytest.raises(ConfigError, match="is below the fitted compute"):
        check_ladder(dataclasses.replace(study, ladder=[2 * largest, largest]), runs)
    with pytest.raises(ConfigError, match="'bootstrap': 200"):
        check_ladder(dataclasses.replace(study, ladder=[2 * largest], analysis={"law": "chinchilla"}), runs)
    with pytest.raises(ConfigError, match="repeats a rung"):
        check_ladder(dataclasses.replace(study, ladder=[2 * largest, 2 * largest]), runs)


def test_a_rung_is_scored_as_the_holdout_row_of_the_same_run(tmp_path, demo_fit):
    """The demo's held-out run recorded as a rung: its ladder row is the fit's own holdout row
    (prediction, intervals, verdict, baselines fitted to the same 12 points)."""
    with open(DEMO / "runs.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    held = next(row for row in rows if row["name"].startswith("L2-d192"))
    held["role"] = RUNG
    with open(tmp_path / "runs.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=rows[0].keys())
        writer.writeheader()
        writer.writerows(rows)
    recommendation = {"name": held["name"], "budget": 1.2e13, **recommend(demo_fit, 1.2e13)}
    ladder = score_rungs(tmp_path, demo_fit, [recommendation], {})
    (row,) = ladder["rungs"]
    expected = demo_fit["holdout"]
    for key in ("predicted_loss", "measured_loss", "relative_error", "compute_ratio", "inside_prediction_interval"):
        assert row[key] == pytest.approx(expected[key]), key
    assert row["prediction_interval"] == pytest.approx(expected["prediction_interval"])
    for name, baseline in expected["baselines"].items():
        assert row["baselines"][name] == pytest.approx(baseline), name
    assert row["verdict"] == pytest.approx(expected["verdict"])
    assert (ladder["covered"], ladder["scored"], ladder["not_measured"]) == (1, 1, [])
    assert row["recommendation"]["shape"]["preset"] == recommendation["shape"]["preset"]


def test_the_dry_run_lists_each_rung_with_its_shape_once_the_grid_is_fitted(tmp_path, capsys):
    arguments = ["sweep", "experiments/demo.py", "--workdir", str(tmp_path), "--dry-run", "--ladder", "5e13,1e14"]
    assert main(arguments) == 0
    before = capsys.readouterr().out
    assert "rung1 C=5e+13 (4.03× the largest fitted compute 1.24e+13): est" in before and "fit.json does not exist yet" in before
    shutil.copy(DEMO / "fit.json", tmp_path / "fit.json")
    assert main(arguments) == 0
    after = capsys.readouterr().out
    line = next(line for line in after.splitlines() if line.startswith("rung2 C=1e+14"))
    assert "layers, d_model" in line and ", 2 runs, est " in line and "predicted " in line
    assert "(the ladder's rungs included)" in after
    assert main([*arguments, "--json"]) == 0
    rung = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert rung["rung"] == "rung2" and rung["budget"] == 1e14 and len(rung["runs"]) == 2 and rung["runs"][1].startswith("rung2-L")
    assert rung["prediction_interval"][0] < rung["predicted_loss"] < rung["prediction_interval"][1]


# A grid of 2 sizes × 3 token counts (Approach 3 needs 6 points) and one rung above it, ~3× the
# grid's largest run; each run 16 to 64 steps of 4 × 32 tokens.
TINY_LADDER = """
    from bigmodel.scaling.sweep import SizeGrid, Study, shape_of

    def get_study():
        return Study(
            "configs/lm.py:L1",
            SizeGrid([shape_of(1, 32), shape_of(1, 64)], tokens=[16 * 4 * 32, 32 * 4 * 32, 64 * 4 * 32]),
            overrides={{"data.seq_len": 32, "train.batch_size": 4, "train.log_every": 100, "eval.batches": 4,
                        "checkpoint.every_steps": 100_000, "eval.every_steps": 100_000, "optim.warmup_steps": 2,
                        "data.data_dir": {data_dir!r}}},
            analysis={{"law": "chinchilla", "bootstrap": 20}},
            ladder=[1e10],
        )
"""


@pytest.mark.slow  # a real sweep: seven trainers and a Chinchilla fit (6 to 12 min on 2 cores shared with other jobs, 2026-12-07)
def test_a_tiny_ladder_trains_its_rung_and_scores_the_forecast(tmp_path, kjv_data_dir):
    experiment = tmp_path / "tiny_ladder.py"
    experiment.write_text(textwrap.dedent(TINY_LADDER.format(data_dir=kjv_data_dir)))
    workdir = tmp_path / "sweep"
    result = subprocess.run([sys.executable, "-m", "bigmodel", "sweep", str(experiment), "--workdir", str(workdir)],
                            capture_output=True, text=True, cwd=REPO, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    fit = json.loads((workdir / "fit.json").read_text())
    assert fit["n_points"] == 6  # the rung is not a point of the fit
    (row,) = fit["ladder"]["rungs"]
    with open(workdir / "runs.csv", newline="") as file:
        rungs = [r for r in csv.DictReader(file) if r["role"] == RUNG]
    assert [r["name"] for r in rungs] == [row["name"]] and rungs[0]["status"] == "done"
    assert row["measured_loss"] == pytest.approx(float(rungs[0]["final_eval_loss"]))
    assert row["compute_ratio"] > 1 and row["flops"] == pytest.approx(1e10, rel=0.05)
    low, high = row["prediction_interval"]
    assert row["inside_prediction_interval"] == (low <= row["measured_loss"] <= high)
    assert set(row["baselines"]) >= {"log_linear", "largest_run"} and "ladder: rung C=1e+10" in fit["summary"]
    assert np.isfinite(row["predicted_loss"]) and row["recommendation"]["hyperparameters"]["learning_rate"] > 0
