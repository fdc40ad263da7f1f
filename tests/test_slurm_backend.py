"""The Slurm backend: the submission rendered for every resource field, the checked
--slurm-option values, the missing-submitit line, Slurm's stops told from a user's scancel, and
whole sweeps end to end against a stand-in scheduler (sbatch, srun and sacct scripts on PATH), and
against a real Slurm cluster when one answers here (skipped otherwise)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_backends import REPO_ROOT, registry_rows, write_experiment  # the sweep helpers both backends' tests use

from bigmodel.cli import main
from bigmodel.config import ConfigError
from bigmodel.scaling.resources import Resources


# ----------------------------------------------------------------------------- the Slurm submission


def test_every_resource_field_reaches_the_sbatch_script(tmp_path):
    from submitit import SlurmExecutor

    from bigmodel.scaling.backends.slurm import sbatch_script, slurm_parameters

    resources = Resources(cpus=8, gpus=4, hosts=2, memory_gb=64, time_limit_min=90.5)
    parameters = slurm_parameters("L4-d128-s0", resources, partition="gpu", account="lm-team", options={"qos": "high", "exclusive": True})
    assert set(parameters) <= SlurmExecutor._valid_parameters()  # names submitit's update_parameters accepts
    lines = set(sbatch_script(parameters, tmp_path / "run" / "slurm").splitlines())
    assert {
        "#SBATCH --job-name=L4-d128-s0", "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --cpus-per-task=8",
        "#SBATCH --gpus-per-node=4", "#SBATCH --mem=64G", "#SBATCH --time=91", "#SBATCH --partition=gpu",
        "#SBATCH --account=lm-team", "#SBATCH --qos=high", "#SBATCH --exclusive", "#SBATCH --signal=TERM@120",
        f"#SBATCH --output={tmp_path}/run/slurm/%j_0_log.out",
    } <= lines
    assert not any("USR2" in line for line in lines)  # submitit's default warning signal would kill the trainer
    defaults = set(sbatch_script(slurm_parameters("r", Resources(memory_gb=1.5)), tmp_path).splitlines())
    assert {"#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1", "#SBATCH --mem=1536M"} <= defaults
    for absent in ("--time", "--partition", "--account", "--gpus-per-node", "--cpus-per-task"):  # the cluster's defaults
        assert not any(line.startswith(f"#SBATCH {absent}=") for line in defaults), absent


def test_slurm_options_are_checked():
    from bigmodel.scaling.backends.slurm import parse_slurm_options

    assert parse_slurm_options(["qos=high", "--constraint=h100|a100", "exclusive", "mail_type=END"]) == {
        "qos": "high", "constraint": "h100|a100", "exclusive": True, "mail-type": "END"}
    with pytest.raises(ConfigError, match="--slurm-option 'nodes=2': use --hosts instead"):
        parse_slurm_options(["nodes=2"])
    with pytest.raises(ConfigError, match="is not KEY=VALUE"):
        parse_slurm_options(["qos="])


def test_missing_submitit_is_one_error_line_and_nothing_written(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setitem(sys.modules, "submitit", None)  # `import submitit` now raises ImportError
    workdir = tmp_path / "sweep"
    assert main(["sweep", "experiments/demo.py", "--workdir", str(workdir), "--backend", "slurm"]) == 2
    assert capsys.readouterr().err == "error: --backend slurm needs submitit: pip install -e '.[slurm]'\n"
    assert main(["sweep", "experiments/demo.py", "--workdir", str(workdir), "--partition", "gpu"]) == 2
    assert capsys.readouterr().err == "error: --partition applies to --backend slurm only: add --backend slurm or drop it\n"
    assert not workdir.exists()


# ----------------------------------------------------------------------------- stops


def test_slurm_stops_are_told_from_a_users_scancel_by_the_jobs_state():
    from bigmodel.scaling.backends.slurm import stopped_by_slurm

    assert all(stopped_by_slurm(state) for state in ("FAILED", "COMPLETED", "TIMEOUT", "PREEMPTED"))
    assert not stopped_by_slurm("CANCELLED by 1000") and not stopped_by_slurm("CANCELLED")


# ----------------------------------------------------------------------------- real runs


FAKE_SBATCH = """#!/bin/bash
# Stand-in for sbatch: records the script and runs it in the background as the next job id.
here=$(dirname "$0")
id=$(( $(cat "$here/last_id" 2>/dev/null || echo 4241) + 1 )); echo $id > "$here/last_id"
SLURM_JOB_ID=$id SLURM_PROCID=0 SLURM_NTASKS=1 SLURM_NODEID=0 nohup bash "$1" > "$here/job_$id.out" 2>&1 &
echo "Submitted batch job $id"
"""
FAKE_SRUN = """#!/bin/bash
# Stand-in for srun on one node: drop its options, run the command.
while [[ "$1" == -* ]]; do case "$1" in --output|--error) shift 2;; *) shift;; esac; done
exec "$@"
"""
FAKE_SACCT = """#!/bin/bash
# Stand-in for sacct: the state of each -j id is in state_<id> (RUNNING when absent).
here=$(dirname "$0")
echo "JobID|State|NodeList"
while [ $# -gt 0 ]; do
  if [ "$1" = "-j" ]; then echo "$2|$(cat "$here/state_$2" 2>/dev/null || echo RUNNING)|fakenode1"; shift; fi
  shift
done
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch) -> Path:
    """sbatch, srun and sacct stand-ins first on PATH; returns their directory."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("srun", FAKE_SRUN), ("sacct", FAKE_SACCT)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


@pytest.mark.slow  # a real sweep through stand-in sbatch/srun/sacct
def test_a_sweep_on_slurm_submits_one_job_per_run_and_records_it(tmp_path, kjv_data_dir, fake_slurm, monkeypatch, capsys):
    from bigmodel.scaling.backends.slurm import SlurmBackend

    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setattr(SlurmBackend, "poll_interval_s", 0.2)
    experiment = write_experiment(tmp_path / "tiny.py", f"""
        from bigmodel.scaling.sweep import SizeGrid, Study

        def get_study():
            return Study("configs/lm.py:L1", SizeGrid(["L1"], tokens=12 * 8 * 64),
                         overrides={{"data.seq_len": 64, "train.batch_size": 8, "train.log_every": 4, "eval.batches": 2,
                                    "optim.warmup_steps": 0, "data.data_dir": {kjv_data_dir!r}}},
                         resources=lambda plan: {{"partition": "gpu", "account": "lm-team",
                                                 "slurm_options": {{"qos": "high", "constraint": "h100", "exclusive": True}}}})
    """)
    workdir = tmp_path / "runs"
    # The study's partition and sbatch options, with the command line's partition and qos over them.
    assert main(["sweep", str(experiment), "--workdir", str(workdir), "--backend", "slurm", "--partition", "debug",
                 "--time-limit", "10", "--slurm-option", "qos=low"]) == 0, capsys.readouterr()
    [row] = registry_rows(workdir).values()
    assert (row["status"], row["backend"], row["job_id"], row["attempts"]) == ("done", "slurm", "4242", "1")
    run_dir = workdir / row["name"]
    script = (run_dir / "slurm" / "4242_submission.sh").read_text()
    assert "#SBATCH --partition=debug" in script and "#SBATCH --time=10" in script and "#SBATCH --qos=low" in script
    assert "#SBATCH --account=lm-team" in script and "#SBATCH --constraint=h100" in script and "#SBATCH --exclusive" in script
    assert "gpu" not in script and "qos=high" not in script
    assert (run_dir / "slurm" / "4242_0_result.pkl").exists() and (run_dir / "summary.json").exists()
    log = (run_dir / "train.log").read_text()
    assert "slurm: " in log and "step" in log  # the driver's header, then the trainer's own output
    assert "started  L1-" in capsys.readouterr().out

    # A new driver re-attaches to a job sacct reports running, and lets a finished one go.
    backend = SlurmBackend()
    assert backend.reattach("4242", run_dir, Resources()) is False  # its result is there: it is over
    (fake_slurm / "state_5000").write_text("PENDING")
    assert backend.reattach("5000", run_dir, Resources()) is True and backend.poll("5000") is None
    (fake_slurm / "state_5001").write_text("FAILED")
    assert backend.reattach("5001", run_dir, Resources()) is False


def default_slurm_partition() -> str | None:
    """The default partition of the Slurm cluster whose controller answers here (sinfo marks it
    with a *; else the first listed), or None: no sbatch, no controller, no partition. `scontrol
    ping` first: it says DOWN at once, where sinfo retries for about 10 s."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return None
    try:
        if shutil.which("scontrol") and subprocess.run(["scontrol", "ping"], capture_output=True, timeout=15).returncode != 0:
            return None
        listing = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return None
    partitions = listing.stdout.split() if listing.returncode == 0 else []
    default = [name for name in partitions if name.endswith("*")] or partitions
    return default[0].rstrip("*") if default else None


def test_a_sweep_on_a_real_slurm_cluster_runs_each_run_as_a_job(tmp_path, request, monkeypatch, capsys):
    """Two tiny runs, each a real sbatch job on the cluster's default partition (about 20 s on a
    one-node Slurm of 2 CPUs with a warm compile cache, under 50 s cold); tmp_path must be a
    directory the node sees (one node: it is)."""
    partition = default_slurm_partition()
    if partition is None:
        pytest.skip("no Slurm cluster answers (sinfo): the fake-sbatch test above covers the submission path")
    kjv_data_dir = request.getfixturevalue("kjv_data_dir")  # built only when the test runs
    from bigmodel.scaling.backends.slurm import SlurmBackend

    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setattr(SlurmBackend, "poll_interval_s", 1.0)
    experiment = write_experiment(tmp_path / "tiny.py", f"""
        from bigmodel.scaling.sweep import SizeGrid, Study

        def get_study():
            return Study("configs/lm.py:L1", SizeGrid(["L1"], tokens=12 * 8 * 64), seeds=(0, 1),
                         overrides={{"data.seq_len": 64, "train.batch_size": 8, "train.log_every": 4, "eval.batches": 2,
                                    "optim.warmup_steps": 0, "data.data_dir": {kjv_data_dir!r}}})
    """)
    workdir = tmp_path / "runs"
    assert main(["sweep", str(experiment), "--workdir", str(workdir), "--backend", "slurm", "--partition", partition,
                 "--cpus", "1", "--memory-gb", "1", "--time-limit", "10"]) == 0, capsys.readouterr()
    rows = registry_rows(workdir)
    assert len(rows) == 2 and len({row["job_id"] for row in rows.values()}) == 2
    for name, row in rows.items():
        assert (row["status"], row["backend"], row["attempts"]) == ("done", "slurm", "1"), row
        assert row["job_id"].isdigit(), row
        script = (workdir / name / "slurm" / f"{row['job_id']}_submission.sh").read_text()
        assert f"#SBATCH --partition={partition}" in script and "#SBATCH --mem=1G" in script
        log = (workdir / name / "train.log").read_text()
        assert "slurm: " in log and "step 12" in log, log[-2000:]  # the driver's header, then the trainer's own output


class SacctlessJob:
    """A submitit job on a cluster without accounting: sacct answers nothing, so state is UNKNOWN."""

    def __init__(self, job_id: str, state: str = "UNKNOWN", done: bool = False):
        self.job_id, self.state, self._done = job_id, state, done

    def done(self, force_check: bool = False) -> bool:
        return self._done


def test_without_sacct_squeue_decides_whether_a_job_is_over():
    from bigmodel.scaling.backends.slurm import FORGOTTEN, job_ended, job_state

    squeue = {"7": "PENDING", "8": "RUNNING", "9": "CANCELLED", "10": "", "11": "UNKNOWN"}.get
    assert not job_ended(SacctlessJob("7"), squeue=squeue) and not job_ended(SacctlessJob("8"), squeue=squeue)
    assert job_ended(SacctlessJob("9"), squeue=squeue) and job_state(SacctlessJob("9"), squeue=squeue) == "CANCELLED"
    assert job_ended(SacctlessJob("10"), squeue=squeue) and job_state(SacctlessJob("10"), squeue=squeue) == FORGOTTEN
    assert not job_ended(SacctlessJob("11"), squeue=squeue)  # nobody can tell: keep watching, never resubmit
    assert job_ended(SacctlessJob("12", state="COMPLETED", done=True), squeue=squeue)
    assert job_state(SacctlessJob("13", state="RUNNING"), squeue=squeue) == "RUNNING"  # sacct's word wins when it has one


def test_squeue_state_reads_the_first_word_or_nothing_once_the_job_is_gone():
    from types import SimpleNamespace

    from bigmodel.scaling.backends.slurm import squeue_state

    def answering(returncode: int, stdout: str, stderr: str = ""):
        return lambda command, **_: SimpleNamespace(returncode=returncode, stdout=stdout, stderr=stderr)

    assert squeue_state("5", run=answering(0, "RUNNING\n")) == "RUNNING"
    assert squeue_state("5", run=answering(1, "", "slurm_load_jobs error: Invalid job id specified")) == ""
    assert squeue_state("5", run=answering(1, "", "slurm_load_jobs error: Unable to contact slurm controller")) == "UNKNOWN"
    assert squeue_state("5", run=answering(0, "")) == ""

    def missing(command, **_):
        raise FileNotFoundError("squeue")

    assert squeue_state("5", run=missing) == "UNKNOWN"
