"""The run registry (runs.csv): round trip, statuses, the points view, the user's CSV mapping,
and the one rule for runs that share a compute budget."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bigmodel.scaling import registry
from bigmodel.scaling.points import points_from_csv
from bigmodel.scaling.sweep import Run


def make_run(name: str, non_embedding_params: int = 1000, tokens: int = 10_000) -> Run:
    return Run(name=name, config_spec="configs/lm.py:L1", overrides={}, params=2 * non_embedding_params,
               non_embedding_params=non_embedding_params, flops_per_token=6 * non_embedding_params, tokens=tokens,
               flops=6 * non_embedding_params * tokens, steps=10, batch_size=8, seq_len=64, learning_rate=1e-3, seed=0)


def write_rows(directory, rows: list[tuple]) -> None:
    """Registry rows from (name, status, non_embedding_params, final_loss, final_eval_loss) tuples."""
    written = []
    for name, status, size, train_loss, eval_loss in rows:
        written.append(registry.row_for_run(make_run(name, size), status, {"final_loss": train_loss, "final_eval_loss": eval_loss}))
    registry.write_registry(directory, written)


# ----------------------------------------------------------------------------- rows and files


def test_rows_round_trip_through_runs_csv(tmp_path):
    run = make_run("L1-s0")
    summary = {"params": 2001, "non_embedding_params": 999, "tokens": 10_240, "flops": 61_378_560,
               "final_loss": 1.5, "final_eval_loss": 1.25, "eval_bpb": 1.8, "wall_time_s": 12.345}
    rows = [registry.row_for_run(run, registry.DONE, summary),
            registry.row_for_run(make_run("L2-s0", 4000), registry.STOPPED, error="stopped (exit 75): rerun the sweep to resume", wall_time_s=3.0)]
    registry.write_registry(tmp_path, rows)
    assert (tmp_path / "runs.csv").read_text().splitlines()[0] == ",".join(registry.COLUMNS)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["runs.csv"]  # no temporary left behind
    read = registry.read_registry(tmp_path)
    assert [line for line, _ in read] == [2, 3]
    done, stopped = (row for _, row in read)
    # The trainer's counts replace the planned ones; results come back as written.
    assert done == {"name": "L1-s0", "status": "done", "params": "2001", "non_embedding_params": "999", "tokens": "10240",
                    "flops": "61378560", "final_loss": "1.5", "final_eval_loss": "1.25", "eval_bpb": "1.8",
                    "wall_time_s": "12.35", "error": "", **dict.fromkeys(registry.ROLE_COLUMNS + registry.LAUNCH_COLUMNS, "")}
    assert stopped["status"] == "stopped" and stopped["non_embedding_params"] == "4000" and stopped["final_loss"] == ""
    assert stopped["flops"] == str(6 * 4000 * 10_000) and stopped["wall_time_s"] == "3.0"


def test_an_unknown_status_is_refused_with_its_line(tmp_path):
    write_rows(tmp_path, [("a", "done", 1000, 2.0, 1.9)])
    text = (tmp_path / "runs.csv").read_text()
    (tmp_path / "runs.csv").write_text(text + text.splitlines()[1].replace(",done,", ",finished,") + "\n")
    with pytest.raises(ValueError, match=r"runs.csv line 3: status 'finished' is not one of pending, running, done, failed, stopped") as error:
        registry.read_registry(tmp_path)
    assert "\n" not in str(error.value)


def test_a_directory_without_registry_or_with_a_foreign_csv_is_refused(tmp_path):
    with pytest.raises(ValueError, match="has no runs.csv"):
        registry.read_registry(tmp_path)
    (tmp_path / "runs.csv").write_text("params,tokens,loss\n1,2,3\n")
    with pytest.raises(ValueError, match="has no 'name', 'status', 'non_embedding_params'"):
        registry.read_registry(tmp_path)


# ----------------------------------------------------------------------------- the points view


def test_a_registry_whose_last_row_is_cut_short_loses_that_row_with_a_warning(tmp_path, capsys):
    write_rows(tmp_path, [("a", "done", 1000, 3.0, 2.9), ("b", "done", 2000, 2.8, 2.7)])
    path = tmp_path / registry.REGISTRY_FILE
    text = path.read_text()
    path.write_text(text + text.splitlines()[-1][:6])  # a third row, torn after "b,done"
    assert registry.sweep_points(tmp_path).names == ("a", "b")
    assert capsys.readouterr().err == f"warning: {path} line 4 has 2 of the header's {len(registry.COLUMNS)} fields (cut short while being written?): skipped\n"
    lines = text.splitlines()
    path.write_text("\n".join([lines[0], lines[1][:6], lines[2]]) + "\n")  # the same tear before the last row: not a tail
    with pytest.raises(ValueError, match=f"{path} line 2 has 2 fields where the header has {len(registry.COLUMNS)}: fix or delete that row"):
        registry.sweep_points(tmp_path)


def test_metrics_jsonl_loses_a_torn_last_line_with_a_warning_and_names_a_bad_line_elsewhere(tmp_path, capsys):
    from bigmodel.config import ConfigError
    from bigmodel.metrics import read_metrics

    path = tmp_path / "run" / "metrics.jsonl"
    path.parent.mkdir()
    path.write_text('{"step": 1, "loss": 3.0}\n{"step": 2, "loss": 2.5}\n{"step": 3, "lo')
    assert [record["step"] for record in registry.run_metrics(tmp_path, "run")] == [1, 2]
    assert capsys.readouterr().err == f"warning: {path} line 3 is not a whole record (cut short while being written?): skipped\n"
    path.write_text('{"step": 1, "loss": 3.0}\n{"loss": 2.5}\n{"step": 3, "loss": 2.0}\n')  # a record without its step
    with pytest.raises(ConfigError, match=f"{path} line 2 is not a record bigmodel writes"):
        read_metrics(path.parent)


def test_points_are_the_done_runs_with_validation_loss_when_present(tmp_path):
    write_rows(tmp_path, [
        ("small", "done", 1000, 2.5, 2.4),
        ("medium", "done", 4000, 2.1, None),  # never evaluated: its training loss stands in
        ("large", "stopped", 16000, None, None),
        ("broken", "failed", 64000, None, None),
        ("next", "pending", 128000, None, None),
        ("now", "running", 256000, None, None),
    ])
    points = registry.load_points(tmp_path)
    assert points.names == ("small", "medium")
    assert points.non_embedding_params.tolist() == [1000, 4000]  # never the total params column
    assert points.loss.tolist() == [2.4, 2.1]
    assert points.tokens.tolist() == [10_000, 10_000] and points.flops.tolist() == [6e7, 2.4e8]
    assert points.loss_name == "validation loss (1 runs without eval: training loss)"
    write_rows(tmp_path, [("small", "done", 1000, 2.5, 2.4), ("medium", "done", 4000, 2.1, 2.0)])
    assert registry.load_points(tmp_path).loss_name == "validation loss"
    write_rows(tmp_path, [("small", "done", 1000, 2.5, None)])
    assert registry.load_points(tmp_path).loss_name == "training loss"


def test_a_registry_without_done_runs_has_no_points(tmp_path):
    write_rows(tmp_path, [("a", "stopped", 1000, None, None), ("b", "failed", 2000, None, None)])
    with pytest.raises(ValueError, match="no finished runs"):
        registry.load_points(tmp_path)


def test_a_done_row_without_a_loss_points_at_its_line(tmp_path):
    write_rows(tmp_path, [("a", "done", 1000, 2.0, 1.9), ("b", "done", 2000, None, None)])
    with pytest.raises(ValueError, match="runs.csv line 3: column 'final_loss' is '', not a positive number"):
        registry.load_points(tmp_path)


def test_a_users_csv_maps_params_to_non_embedding_params(tmp_path):
    path = tmp_path / "points.csv"
    path.write_text("# attribution\nparams,tokens,loss\n1e6,2e7,3.5\n2e6,4e7,3.2\n")
    points = registry.load_points(path)
    assert points.non_embedding_params.tolist() == [1e6, 2e6] and points.tokens.tolist() == [2e7, 4e7]
    assert np.isnan(points.flops).all() and points.loss_name == "loss" and points.names == ()
    # A file that names non_embedding_params (a copied runs.csv) is read by that name, not by its total params.
    path.write_text("params,non_embedding_params,tokens,loss,flops\n3e6,1e6,2e7,3.5,1.2e14\n")
    points = points_from_csv(path)
    assert points.non_embedding_params.tolist() == [1e6] and points.flops.tolist() == [1.2e14]


def test_points_select_keeps_names_in_step(tmp_path):
    write_rows(tmp_path, [("a", "done", 1000, 2.0, 1.9), ("b", "done", 2000, 1.8, 1.7), ("c", "done", 4000, 1.6, 1.5)])
    chosen = registry.load_points(tmp_path).select(np.array([True, False, True]))
    assert chosen.names == ("a", "c") and chosen.loss.tolist() == [1.9, 1.5] and len(chosen) == 2


# ----------------------------------------------------------------------------- compute budgets


def test_budgets_group_rounded_step_counts_and_skip_missing_flops():
    labels = registry.group_budgets([1e15, 1.02e15, 0.99e15, 4e15, 4.1e15, math.nan, 0.0, -1e15])
    assert labels.tolist() == [0, 0, 0, 1, 1, -1, -1, -1]


def test_budget_tolerance_is_measured_from_the_budgets_smallest_run():
    tolerance = registry.BUDGET_RELATIVE_TOLERANCE
    # On the boundary: same budget; just past it: the next one.
    assert registry.group_budgets([1.0, 1.0 + tolerance]).tolist() == [0, 0]
    assert registry.group_budgets([1.0, (1.0 + tolerance) * 1.001]).tolist() == [0, 1]
    # A chain of near neighbours, each within tolerance of the previous, does not merge into one budget.
    steps = [(1 + 0.8 * tolerance) ** k for k in range(4)]
    assert registry.group_budgets(steps).tolist() == [0, 0, 1, 1]


def test_small_budgets_are_dropped_and_the_rest_renumbered():
    flops = [1e15, 1.02e15, 0.99e15, 4e15, 4.1e15, 9e15, 9e15, 9e15]
    assert registry.group_budgets(flops, min_points=3).tolist() == [0, 0, 0, -1, -1, 1, 1, 1]
    assert registry.group_budgets(flops, min_points=4).tolist() == [-1] * 8
    assert registry.group_budgets([]).tolist() == [] and registry.group_budgets([math.nan]).tolist() == [-1]


def test_budget_labels_do_not_depend_on_the_order_of_the_runs():
    flops = np.array([1e15, 1.02e15, 0.99e15, 4e15, 4.1e15, 9e15])
    order = np.random.default_rng(0).permutation(len(flops))
    assert registry.group_budgets(flops[order]).tolist() == registry.group_budgets(flops)[order].tolist()


def test_a_budgets_compute_is_exact_when_its_runs_agree():
    assert registry.budget_flops([3e15, 3e15]) == 3e15
    assert registry.budget_flops([1e15, 4e15]) == pytest.approx(2e15)
