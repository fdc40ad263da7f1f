"""Cooldown branches in a sweep (`BranchGrid`, bigmodel/scaling/branches.py): the runs a grid
expands to, the order the runner keeps (a branch waits for its start, one stranded by its
parent is recorded), and a real sweep of one stable run and two branches."""

from __future__ import annotations

import csv
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bigmodel.config import ConfigError, load_config
from bigmodel.scaling import execution, registry
from bigmodel.scaling.sweep import BranchGrid, Study, expand, validate_runs
from test_backends import FakeBackend

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL = {"data.seq_len": 64, "train.batch_size": 8, "optim.warmup_steps": 4}
STEP_TOKENS = 8 * 64


def test_a_branch_grid_is_a_stable_run_per_size_and_a_cooldown_from_each_of_its_kept_steps():
    study = Study("configs/lm.py:L1", BranchGrid(["L1", "L2"], tokens=[40 * STEP_TOKENS, 80 * STEP_TOKENS, 20 * STEP_TOKENS],
                                                 cooldown=0.25, shape="1-sqrt"), overrides=SMALL, seeds=(0, 1))
    runs = expand(study)
    assert len(runs) == 2 * 2 * 4  # sizes × seeds × (stable + 3 branches)
    stable, *branches = runs[:4]
    assert stable.name == "stable-L1-d32-tok30.7K-lr3e-3-s0" and stable.role == "stable" and stable.steps == 60
    assert stable.overrides["optim.schedule"] == "constant" and stable.overrides["checkpoint.keep_steps"] == "(15, 30, 60)"
    assert [(run.steps, run.init_step, run.parent, run.role) for run in branches] == [
        (20, 15, stable.name, "branch"), (40, 30, stable.name, "branch"), (80, 60, stable.name, "branch")]
    assert branches[0].name == "L1-d32-tok10.2K-lr3e-3-s0-cd25"
    assert branches[2].overrides["optim.decay_shape"] == "1-sqrt" and branches[2].overrides["optim.decay_fraction"] == "0.25"
    assert branches[2].flops == branches[2].flops_per_token * 80 * STEP_TOKENS  # the point's compute: all its tokens
    assert branches[2].trained_flops == branches[2].flops / 4  # what the branch itself trains: its cooldown
    command = branches[0].command(Path("/sweep") / branches[0].name)
    assert command[-1] == f"--config.train.init_from=/sweep/{stable.name}"
    validate_runs(runs)


def test_an_isoflop_branch_grid_puts_each_sizes_branches_on_the_budgets_it_suits():
    from bigmodel.scaling.sweep import IsoFlopGrid

    budgets, ratios = (2e10, 6e10), (0.3, 10)  # L1 sees 4.7 and 14 tokens per parameter, L2 0.19 and 0.58
    kwargs = dict(overrides=SMALL, rules=lambda plan: {"optim.warmup_steps": 2})
    runs = expand(Study("configs/lm.py:L1", BranchGrid(["L1", "L2"], budgets=budgets, tokens_per_param_range=ratios), **kwargs))
    independent = expand(Study("configs/lm.py:L1", IsoFlopGrid(budgets, ["L1", "L2"], tokens_per_param_range=ratios), **kwargs))
    assert [(run.name, run.role, run.budget) for run in runs] == [
        ("stable-L1-d32-tok108K-lr3e-3-s0", "stable", None), ("C2e10-L1-d32-tok135K-lr3e-3-s0-cd20", "branch", 2e10),
        ("stable-L2-d64-tok60.9K-lr3e-3-s0", "stable", None), ("C6e10-L2-d64-tok76.3K-lr3e-3-s0-cd20", "branch", 6e10)]
    # The same (size, budget, steps) points as an IsoFlopGrid's, each branch's FLOPs its budget's.
    points = [run for run in runs if run.role == "branch"]
    assert [(run.params, run.budget, run.steps) for run in points] == [(run.params, run.budget, run.steps) for run in independent]
    assert all(abs(run.flops / run.budget - 1) < 0.01 for run in points)


@pytest.mark.parametrize("grid, rules, message", [
    (BranchGrid(["L1"], tokens=[4 * STEP_TOKENS]), None,
     "L1-d32: a branch of 4 steps would start its cooldown at step 3, before warmup ends \\(4 steps\\): ask for more tokens"),
    (BranchGrid(["L1"], tokens=[40 * STEP_TOKENS], cooldown=1.0), None, "BranchGrid cooldown=1.0 must be a share"),
    (BranchGrid(["L1"]), None, "BranchGrid needs exactly one of tokens"),
    (BranchGrid(["L1"], tokens=[40 * STEP_TOKENS], shape="cosine"), None, "BranchGrid shape='cosine' must be one of linear, 1-sqrt"),
    (BranchGrid(["L1"], tokens=[40 * STEP_TOKENS]), lambda plan: {"optim.schedule": "cosine"}, "rules set optim.schedule"),
])
def test_branch_grids_that_cannot_work_are_one_error(grid, rules, message):
    with pytest.raises(ConfigError, match=message):
        expand(Study("configs/lm.py:L1", grid, overrides=SMALL, rules=rules))


@pytest.mark.parametrize("parent_exit, branch_status", [(1, "failed"), (75, "stopped")])
def test_branches_wait_for_their_start_and_share_a_stranding_parents_fate(tmp_path, parent_exit, branch_status, capsys):
    runs = expand(Study("configs/lm.py:L1", BranchGrid(["L1"], tokens=[20 * STEP_TOKENS, 40 * STEP_TOKENS]), overrides=SMALL))
    stable, first, second = runs
    backend = FakeBackend(tmp_path, {stable.name: [parent_exit], first.name: [0], second.name: [0]})
    rows = {row["name"]: row for row in execution.execute(runs, tmp_path, backend)}
    assert backend.submitted == [stable.name]  # no branch started: the stable run never wrote their starts
    assert [rows[run.name]["status"] for run in runs] == [{1: "failed", 75: "stopped"}[parent_exit], branch_status, branch_status]
    assert rows[first.name]["error"].startswith(f"its stable run {stable.name} ended {rows[stable.name]['status']} before its checkpoint at step 16")
    assert (rows[first.name]["role"], rows[first.name]["parent"]) == ("branch", stable.name)
    # Once the start is on disk, the branch goes (the fake runs write only a summary).
    (tmp_path / stable.name / "checkpoints" / "16").mkdir(parents=True)
    backend = FakeBackend(tmp_path, {stable.name: [0], first.name: [0], second.name: [0]})
    rows = {row["name"]: row for row in execution.execute(runs, tmp_path, backend)}
    assert backend.submitted[:2] == [stable.name, first.name] and all(row["status"] == "done" for row in rows.values())


EXPERIMENT = """
    from bigmodel.scaling.sweep import BranchGrid, Study

    def get_study():
        return Study("configs/lm.py:L1", BranchGrid(["L1"], tokens=[16 * 8 * 64, 32 * 8 * 64], cooldown=0.25),
                     overrides={{"data.seq_len": 64, "train.batch_size": 8, "train.log_every": 8, "eval.batches": 2,
                                 "optim.warmup_steps": 2, "data.data_dir": {data_dir!r}}})
"""


@pytest.mark.slow  # a real sweep: a stable run and two branches
def test_a_branch_sweep_trains_the_stable_run_once_and_each_branch_from_it(tmp_path, kjv_data_dir):
    experiment = tmp_path / "branches.py"
    experiment.write_text(textwrap.dedent(EXPERIMENT.format(data_dir=kjv_data_dir)))
    workdir = tmp_path / "runs"
    command = [sys.executable, "-m", "bigmodel", "sweep", str(experiment), "--workdir", str(workdir)]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    with open(workdir / "runs.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(row["role"], row["status"]) for row in rows] == [("stable", "done"), ("branch", "done"), ("branch", "done")]
    stable, short, long = (row["name"] for row in rows)
    assert rows[1]["parent"] == rows[2]["parent"] == stable and [int(row["tokens"]) for row in rows[1:]] == [16 * 8 * 64, 32 * 8 * 64]
    assert {path.name for path in (workdir / stable / "checkpoints").iterdir()} >= {"12", "24"}
    assert f"branched from {workdir / stable} at step 24" in (workdir / long / "train.log").read_text()
    assert registry.load_points(workdir).names == (short, long)  # the stable run is no point of the fit
    again = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("skipped ") == 3 and "started" not in again.stdout


def test_an_experiment_argument_picks_the_study_and_a_size_grid_takes_a_list_of_token_counts(tmp_path):
    from bigmodel.scaling.runner import experiment_and_argument, load_study

    assert experiment_and_argument("experiments/branches.py:cosine") == (Path("experiments/branches.py"), "cosine")
    assert experiment_and_argument("experiments/branches.py") == (Path("experiments/branches.py"), None)
    cosine = expand(load_study(REPO_ROOT / "experiments" / "branches.py:cosine"))
    branches = [run for run in expand(load_study(REPO_ROOT / "experiments" / "branches.py")) if run.role == "branch"]
    # The same (N, D, seed) points both ways: the branches' claim is to reach the same losses.
    assert sorted((run.non_embedding_params, run.tokens, run.seed) for run in cosine) == sorted(
        (run.non_embedding_params, run.tokens, run.seed) for run in branches)
    assert all(load_config(run.config_spec, run.overrides).optim.schedule == "cosine" for run in cosine)
    with pytest.raises(ConfigError, match="get_study\\(\\) failed: ValueError: unknown study 'nope'"):
        load_study(REPO_ROOT / "experiments" / "branches.py:nope")


def test_a_study_of_several_grids_runs_them_all_and_names_stay_unique():
    fitted, held_out = BranchGrid(["L1"], tokens=[20 * STEP_TOKENS, 40 * STEP_TOKENS]), BranchGrid(["L2"], tokens=[80 * STEP_TOKENS])
    runs = expand(Study("configs/lm.py:L1", [fitted, held_out], overrides=SMALL))
    assert [(run.role, run.steps) for run in runs] == [("stable", 32), ("branch", 20), ("branch", 40), ("stable", 64), ("branch", 80)]
    with pytest.raises(ConfigError, match="two runs are both named"):
        expand(Study("configs/lm.py:L1", [fitted, fitted], overrides=SMALL))
