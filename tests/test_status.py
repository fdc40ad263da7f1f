"""`bigmodel status DIR`: the table of a sweep's runs, while the sweep runs and after it."""

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bigmodel.cli import main
from bigmodel.scaling import registry
from bigmodel.scaling.status import eta_seconds, format_duration, summary_line, sweep_status

REPO_ROOT = Path(__file__).resolve().parents[1]

# One L1 run long enough (240 steps) to be seen mid-way, logging every 4 steps.
EXPERIMENT = """
    from bigmodel.scaling.sweep import SizeGrid, Study

    def get_study():
        return Study(
            "configs/lm.py:L1",
            SizeGrid(["L1"], tokens=240 * 8 * 64),
            overrides={{"data.seq_len": 64, "train.batch_size": 8, "train.log_every": 4, "eval.batches": 2,
                        "eval.every_steps": 120, "checkpoint.every_steps": 120, "data.data_dir": {data_dir!r}}},
        )
"""


def status_json(workdir: Path) -> list[dict]:
    command = [sys.executable, "-m", "bigmodel", "status", str(workdir), "--json"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.slow  # a real sweep, watched while it runs
def test_status_follows_a_real_sweep_while_it_runs_and_after(tmp_path, kjv_data_dir):
    experiment = tmp_path / "one.py"
    experiment.write_text(textwrap.dedent(EXPERIMENT.format(data_dir=str(kjv_data_dir))))
    workdir = tmp_path / "runs"
    command = [sys.executable, "-m", "bigmodel", "sweep", str(experiment), "--workdir", str(workdir)]
    sweep = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen_running = None
        deadline = time.monotonic() + 300
        while sweep.poll() is None and time.monotonic() < deadline:
            if (workdir / registry.REGISTRY_FILE).exists():
                [record] = status_json(workdir)
                if record["status"] == "running" and record["step"]:
                    seen_running = record
                    break
            time.sleep(0.5)
        output = sweep.communicate(timeout=300)[0]
    finally:
        sweep.kill()
    assert sweep.returncode == 0, output
    assert seen_running is not None, "the run finished before status saw it mid-way"
    assert seen_running["steps"] == 240 and 0 < seen_running["step"] < 240 and seen_running["step"] % 4 == 0
    assert seen_running["tokens_per_s"] > 0 and seen_running["eta_s"] > 0

    [done] = status_json(workdir)
    summary = json.loads((workdir / done["run"] / "summary.json").read_text())
    assert (done["status"], done["step"], done["steps"], done["eta_s"]) == ("done", 240, 240, 0.0)
    assert done["eval_loss"] == pytest.approx(summary["final_eval_loss"])
    assert done["loss"] == pytest.approx(summary["final_loss"])


def test_a_registry_without_run_folders_still_reports_its_results(tmp_path, capsys):
    (tmp_path / registry.REGISTRY_FILE).write_text(
        "name,status,params,non_embedding_params,tokens,flops,final_loss,final_eval_loss,eval_bpb,wall_time_s,error\n"
        "a,done,10,5,100,6000,2.5,2.25,3.0,12.0,\n"
        "b,failed,10,5,100,6000,,,,1.0,exit 1: loss became non-finite\n"
        "c,pending,10,5,100,6000,,,,,\n")  # written before the launch columns existed
    records = sweep_status(tmp_path)
    assert [(r["run"], r["status"], r["loss"], r["eval_loss"]) for r in records] == [
        ("a", "done", 2.5, 2.25), ("b", "failed", None, None), ("c", "pending", None, None)]
    assert main(["status", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "3 runs: 1 done, 1 pending, 1 failed" in table and "b: exit 1: loss became non-finite" in table


def test_status_of_a_directory_that_is_not_a_sweep_is_one_error_line(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path} has no runs.csv: pass the --workdir of a sweep (python -m bigmodel sweep ...)\n"
    assert main(["status", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_eta_and_durations():
    assert eta_seconds("running", 100, 250, 0.2) == pytest.approx(30.0)
    assert eta_seconds("done", None, None, None) == 0.0
    assert eta_seconds("pending", None, 250, None) is None and eta_seconds("running", 10, None, 0.1) is None
    assert [format_duration(s) for s in (None, 42, 130, 7260)] == ["-", "42s", "2m10s", "2h01m"]
    records = [{"status": "running", "eta_s": 30.0}, {"status": "running", "eta_s": 90.0}, {"status": "done", "eta_s": 0.0}]
    assert summary_line(records) == "3 runs: 1 done, 2 running; running runs finish in 1m30s"


def test_the_sweeps_live_line_counts_runs_and_adds_up_its_eta():
    import io

    from bigmodel.scaling.live import CLEAR_LINE, LiveLine, summary_text, sweep_eta

    statuses = ["done", "done", "running", "pending", "pending", "failed"]
    assert summary_text(statuses, 65, 250) == "sweep: 2 done, 1 running, 2 pending, 1 failed · 1m05s · ETA ~4m10s"
    assert summary_text(["pending"], 3, None) == "sweep: 1 pending · 3s"
    assert sweep_eta([30.0, 90.0], [40.0, 20.0], concurrency=2) == 90.0 + 30.0
    assert sweep_eta([None, 90.0], [40.0], concurrency=1) is None  # a run that has not logged yet: no honest ETA
    assert sweep_eta([], [40.0, 20.0], concurrency=0) == 60.0

    terminal = io.StringIO()
    line = LiveLine(terminal, enabled=True, every_s=0.0)
    line.show("sweep: 1 running")
    line.clear()
    line.clear()  # nothing left to clear
    assert terminal.getvalue() == CLEAR_LINE + "sweep: 1 running" + CLEAR_LINE
    piped = io.StringIO()  # not a terminal: the line never appears in logs
    quiet = LiveLine(piped)
    quiet.show("sweep: 1 running")
    assert piped.getvalue() == "" and not quiet.due()
