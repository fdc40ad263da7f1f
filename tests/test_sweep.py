"""Sweeps: study expansion (names, N, D, FLOPs from the one formula), dry runs, bad experiment
files, run outcomes (done, failed, stopped), one sweep per directory, and the real runner
against the real trainer (skip finished runs, isolate a failure)."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest

from bigmodel import files
from bigmodel.cli import main
from bigmodel.config import ConfigError, load_config
from bigmodel.flops import run_stats
from bigmodel.presets import preset_non_embedding_params, shape_for_params
from bigmodel.scaling import execution, registry, runner
from bigmodel.scaling.backends.local import LocalBackend, child_environment, cpu_slots
from bigmodel.scaling.runner import load_study, run_analysis
from bigmodel.scaling.sweep import IsoFlopGrid, Run, SizeGrid, Study, expand, format_number, shape_of, sizes_between

REPO_ROOT = Path(__file__).resolve().parents[1]
SPEC = "configs/lm.py:L4"
SMALL = {"data.seq_len": 64, "train.batch_size": 8}


def stats_of(run):
    config = load_config(run.config_spec, run.overrides)
    return config, run_stats(config)


def write_experiment(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body))
    return path


# ----------------------------------------------------------------------------- expansion


def test_size_grid_counts_come_from_the_one_formula():
    study = Study(SPEC, SizeGrid(["L1", "L2", "L3"], tokens=100_000), overrides=SMALL, seeds=(0, 1), learning_rates=(1e-3, 3e-3))
    runs = expand(study)
    assert len(runs) == 3 * 2 * 2
    assert len({run.name for run in runs}) == len(runs)
    assert [run.name for run in runs] == [run.name for run in expand(study)]  # deterministic
    assert runs[0].name == "L1-d32-tok99.8K-lr1e-3-s0"  # 195 steps · 8 · 64 tokens
    for run in runs:
        config, stats = stats_of(run)
        assert run.steps == round(100_000 / (8 * 64)) == config.train.steps
        assert run.tokens == run.steps * 8 * 64
        assert run.params == stats["params"] and run.non_embedding_params == stats["non_embedding_params"]
        assert run.flops == stats["flops_per_token"] * run.tokens
        assert config.optim.lr == run.learning_rate and config.seed == run.seed
    assert {run.non_embedding_params for run in runs} == {preset_non_embedding_params(n) for n in (1, 2, 3)}


def test_tokens_per_param_ratio_is_held_within_one_step():
    runs = expand(Study(SPEC, SizeGrid(["L1", "L3"], tokens_per_param=20), overrides=SMALL))
    for run in runs:
        assert abs(run.tokens - 20 * run.params) <= run.batch_size * run.seq_len / 2


def test_isoflop_runs_spend_their_budget_within_the_rounding_of_steps():
    budgets = (1e12, 1e13)
    grid = IsoFlopGrid(budgets, [f"L{n}" for n in range(1, 7)], tokens_per_param_range=(1, 5000))
    runs = expand(Study(SPEC, grid, overrides=SMALL))
    assert {run.budget for run in runs} == set(budgets)
    for run in runs:
        _, stats = stats_of(run)
        assert run.flops == stats["flops_per_token"] * run.tokens
        assert abs(run.flops - run.budget) <= stats["flops_per_token"] * run.batch_size * run.seq_len / 2
        assert 1 <= run.budget / stats["flops_per_token"] / run.params <= 5000
        assert run.name.startswith(f"C{format_number(run.budget, 2, scientific=True)}-L")
    small_budget_sizes = sorted(run.non_embedding_params for run in runs if run.budget == 1e12)
    assert len(small_budget_sizes) >= 3 and len({run.name for run in runs}) == len(runs)


def test_rules_see_the_run_and_cannot_touch_grid_keys():
    def rules(plan):
        return {"optim.lr": 0.01 * (plan.non_embedding_params / 1e4) ** -0.5, "optim.warmup_steps": max(1, plan.steps // 10)}

    runs = expand(Study(SPEC, SizeGrid(["L1", "L2"], tokens=50_000), overrides=SMALL, rules=rules, batch_size=lambda stats: 4))
    for run in runs:
        config, _ = stats_of(run)
        assert config.train.batch_size == 4 and config.optim.warmup_steps == max(1, run.steps // 10)
        assert math.isclose(config.optim.lr, 0.01 * (run.non_embedding_params / 1e4) ** -0.5)
    with pytest.raises(ConfigError, match="train.steps"):
        expand(Study(SPEC, SizeGrid(["L1"], tokens=50_000), rules=lambda plan: {"train.steps": 5}))


def test_numbers_in_names_are_short_and_readable():
    cases = {2_100_000: "2.1M", 6144: "6.14K", 999_960: "1M", 300: "300", 0.003: "3e-3", 0.0024: "2.4e-3", 1e30: "1e30", 12.5: "12.5"}
    assert {value: format_number(value) for value in cases} == cases
    assert format_number(3e11, 2, scientific=True) == "3e11" and format_number(1e13, 2, scientific=True) == "1e13"


def test_repeated_sizes_are_an_error_not_a_silent_overwrite():
    with pytest.raises(ConfigError, match="both named"):
        expand(Study(SPEC, SizeGrid(["L2", "L2"], tokens=50_000), overrides=SMALL))


def test_shape_for_params_snaps_to_the_nearest_family_member():
    assert shape_for_params(800_000) == {"n_layers": 4, "d_model": 128, "n_heads": 4, "d_ff": 512}
    assert shape_for_params(1)["n_layers"] == 1
    shapes = sizes_between(12_000, 3e6, 12)
    assert [shape["n_layers"] for shape in shapes] == [1, 2, 3, 4, 5, 6]
    with pytest.raises(ValueError, match="positive"):
        shape_for_params(0)


def test_shape_of_keeps_the_family_rules_at_any_depth():
    assert shape_of(2, 96) == {"n_layers": 2, "d_model": 96, "n_heads": 3, "d_ff": 384}
    assert shape_of(4, 128) == shape_for_params(800_000)


# ----------------------------------------------------------------------------- the command, dry


GOOD_EXPERIMENT = """
    from bigmodel.scaling.sweep import SizeGrid, Study

    def get_study():
        return Study("configs/lm.py:L4", SizeGrid(["L1", "L2"], tokens=40_000),
                     overrides={"data.seq_len": 64, "train.batch_size": 8, "optim.warmup_steps": 10}, seeds=(0, 1))
"""


def test_dry_run_prints_parseable_rows_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    experiment = write_experiment(tmp_path / "study.py", GOOD_EXPERIMENT)
    workdir = tmp_path / "sweep"
    assert main(["sweep", str(experiment), "--workdir", str(workdir), "--dry-run", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 4
    for row in rows:
        assert {"name", "params", "non_embedding_params", "tokens", "flops", "steps", "batch_size"} <= set(row)
        assert row["flops"] == row["flops_per_token"] * row["tokens"] and row["batch_size"] == 8
        assert row["command"].startswith("python -m bigmodel train --config configs/lm.py:L4 --workdir ")
    assert main(["sweep", str(experiment), "--workdir", str(workdir), "--dry-run"]) == 0
    table = capsys.readouterr().out
    assert all(row["name"] in table for row in rows) and "GFLOP/s" in table
    assert not workdir.exists() and sorted(path.name for path in tmp_path.iterdir()) == ["study.py"]


@pytest.mark.parametrize(
    "body, message",
    [
        (None, "not found"),
        ("x = 1\n", "defines no get_study"),
        ("from bigmodel.scaling.sweep import SizeGrid, Study\n"
         "def get_study():\n    return Study('configs/lm.py:L4', SizeGrid(['L1'], tokens=1e5), overrides={'train.stepz': 5})\n",
         "unknown config key config.train.stepz"),
        ("from bigmodel.scaling.sweep import SizeGrid, Study\n"
         "def get_study():\n    return Study('configs/lm.py:L4', SizeGrid(['L1'], tokens=1e5), rules=lambda plan: {'optim.warmup_steps': -plan.steps})\n",
         "warmup_steps"),
        ("def get_study():\n    return {'grid': []}\n", "expected bigmodel.scaling.sweep.Study"),
        ("from bigmodel.scaling.sweep import SizeGrid, Study\n"
         "def get_study():\n    return Study('configs/lm.py:L4', SizeGrid(['L1'], tokens=1e5), rules=lambda plan: {'optim.lr': plan.n_paramz})\n",
         "AttributeError"),
    ],
)
def test_bad_experiment_is_one_error_line_and_exit_2(tmp_path, capsys, body, message):
    experiment = tmp_path / "bad.py"
    if body is not None:
        write_experiment(experiment, body)
    workdir = tmp_path / "sweep"
    assert main(["sweep", str(experiment), "--workdir", str(workdir)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error and error.count("\n") == 1
    assert not workdir.exists()


def test_parallel_jobs_get_disjoint_cores_and_matching_thread_counts():
    cpus = sorted(os.sched_getaffinity(0))
    slots = cpu_slots(len(cpus))
    assert sorted(cpu for slot in slots for cpu in slot) == cpus  # one core each, none shared
    assert cpu_slots(1) == [cpus] and len(cpu_slots(3 * len(cpus))) == 3 * len(cpus)
    environment = child_environment(1, pinned=True)
    assert environment["OMP_NUM_THREADS"] == "1" and "intra_op_parallelism_threads=1" in environment["XLA_FLAGS"]


def test_analysis_fits_the_registry_and_draws_plots(tmp_path, capsys):
    sizes = [12_384, 49_344, 98_624, 221_664, 332_448, 590_720]
    rows = [
        {"name": f"run{index}", "status": "done", "params": 2 * size, "non_embedding_params": size, "tokens": 10**6,
         "flops": 6 * size * 10**6, "final_loss": "", "final_eval_loss": 1.0 + 5.0 * size**-0.25, "eval_bpb": "",
         "wall_time_s": 1.0, "error": ""}
        for index, size in enumerate(sizes)
    ]
    rows.append({**rows[0], "name": "broken", "status": "failed", "final_eval_loss": ""})
    rows.append({**rows[0], "name": "preempted", "status": "stopped", "final_eval_loss": ""})
    registry.write_registry(tmp_path, rows)
    assert run_analysis({"law": "power", "x": "non_embedding_params", "holdout": "largest", "bootstrap": 0}, tmp_path)
    fit = json.loads((tmp_path / "fit.json").read_text())
    assert fit["alpha"] == pytest.approx(0.25, abs=0.01) and fit["holdout"]["non_embedding_params"] == sizes[-1]
    assert fit["n_points"] == len(sizes) - 1  # the done runs less the held-out one: no failed or stopped run
    assert any(path.suffix == ".png" for path in (tmp_path / "plots").iterdir())
    assert "L = " in capsys.readouterr().out
    assert not run_analysis({"law": "no-such-law"}, tmp_path)  # reported, not raised


def test_shipped_experiments_expand_and_validate():
    for name in ("demo", "isoflop", "isoflop.py:branches", "branches", "branches.py:cosine", "markov", "hparams"):
        study = load_study(REPO_ROOT / "experiments" / (name if ":" in name else f"{name}.py"))
        runs = expand(study)
        assert len(runs) >= 6
    demo = expand(load_study(REPO_ROOT / "experiments" / "demo.py"))
    points = [run for run in demo if run.role == "branch"]
    held_out = max(points, key=lambda run: run.flops)
    fitted = [run for run in points if run is not held_out]
    assert len({run.non_embedding_params for run in fitted}) >= 3 and len({run.tokens for run in fitted}) >= 4
    assert held_out.flops >= 4 * max(run.flops for run in fitted)  # issue 9: the held-out run is ≥ 4× out in compute


# ----------------------------------------------------------------------------- outcomes and the lock


def fake_run(name: str) -> Run:
    return Run(name=name, config_spec="configs/lm.py:L1", overrides={}, params=2000, non_embedding_params=1000,
               flops_per_token=6000, tokens=10_000, flops=60_000_000, steps=10, batch_size=8, seq_len=64,
               learning_rate=1e-3, seed=0)


EXITS = {"preempted": 75, "crashed": 1, "trained": 0}  # exit code of each fake trainer


def fake_trainer(command: list[str], run_dir: Path, cpus, environment) -> subprocess.Popen:
    """A stand-in for `python -m bigmodel train` (LocalBackend's `start`): exits with the run's
    code; "trained" writes its summary."""
    summary = {"final_loss": 2.5, "final_eval_loss": 2.4, "wall_time_s": 1.0}
    script = (f"import json, pathlib, sys; pathlib.Path({str(run_dir)!r}, 'summary.json').write_text({json.dumps(summary)!r}) "
              f"if {run_dir.name!r} == 'trained' else None; sys.exit({EXITS[run_dir.name]})")
    return subprocess.Popen([sys.executable, "-c", script])


def fake_local_backend() -> LocalBackend:
    backend = LocalBackend(jobs=1, start=fake_trainer)
    backend.poll_interval_s = 0.05
    return backend


def test_a_stopped_run_is_resumable_not_a_failure(tmp_path, capsys):
    runs = [fake_run(name) for name in EXITS]
    assert runner.run_sweep(types.SimpleNamespace(analysis=None), runs, tmp_path, fake_local_backend(), retries=0) == 1  # one failure, not two
    rows = {row["name"]: row for _, row in registry.read_registry(tmp_path)}
    assert {name: row["status"] for name, row in rows.items()} == {"preempted": "stopped", "crashed": "failed", "trained": "done"}
    assert rows["preempted"]["error"] == "stopped (exit 75): rerun the sweep to resume"
    assert rows["crashed"]["error"].startswith("exit 1: ") and rows["trained"]["final_eval_loss"] == "2.4"
    output = capsys.readouterr().out
    assert "stopped  preempted" in output and "1 finished, 1 failed, 1 stopped (rerun to resume)" in output
    assert {rows[name]["backend"] for name in rows} == {"local"} and {rows[name]["attempts"] for name in rows} == {"1"}
    # The next sweep starts the stopped run again, like the failed one, and skips the done one.
    capsys.readouterr()
    execution.execute(runs, tmp_path, fake_local_backend())
    output = capsys.readouterr().out
    assert "skipped  trained" in output and "started  preempted" in output and "started  crashed" in output
    rows = {row["name"]: row for _, row in registry.read_registry(tmp_path)}
    assert {name: row["attempts"] for name, row in rows.items()} == {"preempted": "2", "crashed": "2", "trained": "1"}


def test_the_runner_writes_only_its_log_and_command_before_the_trainer(tmp_path):
    run = expand(Study("configs/lm.py:L1", SizeGrid(["L1"], tokens=4096), overrides=SMALL))[0]
    backend = LocalBackend(jobs=1)
    handle = backend.submit(run, tmp_path / run.name, run.resources)
    process = backend.launches[handle][0]
    process.kill()
    process.wait()
    assert sorted(path.name for path in (tmp_path / run.name).iterdir() if path.name != ".lock") == ["command.sh", "train.log"]


def test_a_second_sweep_on_the_same_directory_is_refused_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    experiment = write_experiment(tmp_path / "study.py", GOOD_EXPERIMENT)
    workdir = tmp_path / "sweep"
    workdir.mkdir()
    holder = subprocess.Popen(  # the first sweep, as far as the lock is concerned
        [sys.executable, "-c", "import sys, time; from bigmodel.files import exclusive_workdir; "
         f"lock = exclusive_workdir({str(workdir)!r}, 'sweep'); print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["sweep", str(experiment), "--workdir", str(workdir)]) == 2
    finally:
        holder.kill()
        holder.wait()
    error = capsys.readouterr().err
    assert error == (f"error: {workdir} is in use by another bigmodel sweep (pid {holder.pid}): "
                     "wait for it to finish or pick another --workdir\n")
    assert sorted(path.name for path in workdir.iterdir()) == [".lock"]  # no registry, no run folder


# ----------------------------------------------------------------------------- the command, for real

# One L1 run that trains and one whose learning rate (valid: positive) sends the loss to
# non-finite values at the first step, which the trainer reports as a failure.
REAL_EXPERIMENT = """
    from bigmodel.scaling.sweep import SizeGrid, Study

    def get_study():
        return Study(
            "configs/lm.py:L1",
            SizeGrid(["L1"], tokens=12 * 8 * 64),
            overrides={{"data.seq_len": 64, "train.batch_size": 8, "train.log_every": 4, "eval.batches": 2,
                        "optim.warmup_steps": 0, "data.data_dir": {data_dir!r}}},
            learning_rates=(3e-3, 1e30),
        )
"""


def sweep(experiment: Path, workdir: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "bigmodel", "sweep", str(experiment), "--workdir", str(workdir), *extra]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def first_sweep(tmp_path_factory, kjv_data_dir):
    root = tmp_path_factory.mktemp("sweep")
    experiment = write_experiment(root / "tiny.py", REAL_EXPERIMENT.format(data_dir=str(kjv_data_dir)))
    workdir = root / "runs"
    return experiment, workdir, sweep(experiment, workdir, "--jobs", "2")


def registry_rows(workdir: Path) -> dict[str, dict]:
    with open(workdir / "runs.csv", newline="") as file:
        reader = csv.DictReader(file)
        assert tuple(reader.fieldnames) == registry.COLUMNS
        return {row["name"]: row for row in reader}


@pytest.mark.slow  # a real sweep: several trainers, two at a time
def test_a_failing_run_is_recorded_and_the_others_finish(first_sweep):
    _, workdir, result = first_sweep
    assert result.returncode == 1, result.stdout + result.stderr
    rows = registry_rows(workdir)
    good, bad = rows["L1-d32-tok6.14K-lr3e-3-s0"], rows["L1-d32-tok6.14K-lr1e30-s0"]
    assert good["status"] == "done" and bad["status"] == "failed"
    summary = json.loads((workdir / good["name"] / "summary.json").read_text())
    assert float(good["final_loss"]) == pytest.approx(summary["final_loss"]) and 0 < summary["final_loss"] < math.log(256)
    assert int(good["flops"]) == summary["flops"] and int(good["tokens"]) == 12 * 8 * 64
    assert "non-finite" in bad["error"] and not (workdir / bad["name"] / "summary.json").exists()
    assert bad["error"].startswith("exit 1: ") and bad["error"].removeprefix("exit 1: ") in (workdir / bad["name"] / "train.log").read_text()
    assert "failed   L1-d32-tok6.14K-lr1e30-s0" in result.stdout and "finished L1-d32-tok6.14K-lr3e-3-s0" in result.stdout
    command = (workdir / good["name"] / "command.sh").read_text()
    assert f"--workdir {workdir / good['name']}" in command and "--config.optim.lr=0.003" in command


@pytest.mark.slow  # a real sweep: several trainers, two at a time
def test_rerun_skips_finished_runs_and_retries_failed_ones(first_sweep):
    experiment, workdir, _ = first_sweep
    good_summary = workdir / "L1-d32-tok6.14K-lr3e-3-s0" / "summary.json"
    modified_ns = good_summary.stat().st_mtime_ns
    result = sweep(experiment, workdir)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "skipped  L1-d32-tok6.14K-lr3e-3-s0 (done: loss " in result.stdout and "started  L1-d32-tok6.14K-lr3e-3-s0" not in result.stdout
    assert "started  L1-d32-tok6.14K-lr1e30-s0" in result.stdout
    assert good_summary.stat().st_mtime_ns == modified_ns
    assert (workdir / "L1-d32-tok6.14K-lr3e-3-s0" / "train.log").read_text().count("=== ") == 1
    rows = registry_rows(workdir)
    assert [rows[name]["status"] for name in sorted(rows)] == ["failed", "done"]


# One long L1 run: long enough that the driver is killed while it trains.
LONG_EXPERIMENT = """
    from bigmodel.scaling.sweep import SizeGrid, Study

    def get_study():
        return Study(
            "configs/lm.py:L1",
            SizeGrid(["L1"], tokens=100_000 * 4 * 32),
            overrides={{"data.seq_len": 32, "train.batch_size": 4, "train.log_every": 1, "eval.batches": 1,
                        "checkpoint.every_steps": 100_000, "eval.every_steps": 100_000,
                        "optim.warmup_steps": 0, "data.data_dir": {data_dir!r}}},
        )
"""


@pytest.mark.slow  # a real sweep whose driver is killed
def test_a_killed_driver_takes_its_runs_down_with_a_checkpoint(tmp_path, kjv_data_dir):
    experiment = write_experiment(tmp_path / "long.py", LONG_EXPERIMENT.format(data_dir=str(kjv_data_dir)))
    workdir = tmp_path / "runs"
    command = [sys.executable, "-m", "bigmodel", "sweep", str(experiment), "--workdir", str(workdir)]
    driver = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = workdir / "L1-d32-tok12.8M-lr3e-3-s0"
    deadline = time.monotonic() + 300
    while not (run_dir / "metrics.jsonl").exists() or len((run_dir / "metrics.jsonl").read_text().splitlines()) < 3:
        assert time.monotonic() < deadline and driver.poll() is None, "the run never started"
        time.sleep(0.2)
    driver.kill()  # SIGKILL: the driver gets no chance to stop its children
    driver.wait()
    files.wait_until_unlocked(run_dir, timeout_s=120)  # the orphan exits (or this raises WorkdirBusy)
    assert "stopped by signal after step" in (run_dir / "train.log").read_text()
    saved = [int(path.name) for path in (run_dir / "checkpoints").iterdir() if path.name.isdigit()]
    assert len(saved) == 1 and saved[0] >= 3
