"""Scaling-law fit inputs and the fit command: CSV and sweep-directory points, the held-out runs
a file's fit sets aside, options that cannot apply, and the CLI (`fit` and tools/fit_scaling.py)
with its one-line errors. The laws themselves are tests/test_fit.py's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_fit import (  # the synthetic data the law tests fit
    DATA,
    power_points,
    read_porian,
    synthetic_isoflop,
)

from bigmodel.cli import main
from bigmodel.scaling import fit, registry

REPO = Path(__file__).resolve().parent.parent


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


def test_fit_input_fits_a_sweep_directory(tmp_path):
    points = synthetic_isoflop(0.6)
    header = "name,status,params,non_embedding_params,tokens,flops,final_loss,final_eval_loss,eval_bpb,wall_time_s"
    rows = [f"run{i},done,{2 * n},{n},{d},{c},{l + 0.1},{l},,1" for i, (n, d, l, c) in
            enumerate(zip(points["params"], points["tokens"], points["loss"], points["flops"]))]
    (tmp_path / "runs.csv").write_text("\n".join([header, *rows, "extra,failed,1,1,,,,,,"]) + "\n")
    result = fit.fit_input(tmp_path, "isoflop")
    direct = fit.fit_isoflop(points["params"], points["tokens"], points["loss"], points["flops"])
    assert result["a"] == pytest.approx(direct["a"], rel=1e-6) and result["input"] == str(tmp_path)


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


