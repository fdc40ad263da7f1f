"""Sweep backends: resources per run, GPUs handed out locally (never two runs on one), retries
that resume from a checkpoint, and re-attaching to jobs an earlier driver left in flight (never a
second submission). The Slurm backend has its own file (tests/test_slurm_backend.py), as has Ray's
(tests/test_ray_backend.py)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from bigmodel.cli import main
from bigmodel.config import ConfigError
from bigmodel.scaling import execution, registry
from bigmodel.scaling.backends.local import (LocalBackend, assign_gpus, gpus_from_environment, gpus_from_nvidia_smi,
                                             visible_gpus)
from bigmodel.scaling.resources import Resources, resources_from, with_overrides
from bigmodel.scaling.sweep import Run, SizeGrid, Study, expand

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL = {"data.seq_len": 64, "train.batch_size": 8}


def fake_run(name: str, **resources) -> Run:
    return Run(name=name, config_spec="configs/lm.py:L1", overrides={}, params=2000, non_embedding_params=1000,
               flops_per_token=6000, tokens=10_000, flops=60_000_000, steps=10, batch_size=8, seq_len=64,
               learning_rate=1e-3, seed=0, resources=Resources(**resources))


def write_experiment(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body))
    return path


def registry_rows(workdir: Path) -> dict[str, dict]:
    return {row["name"]: row for _, row in registry.read_registry(workdir)}


# ----------------------------------------------------------------------------- resources


def test_a_study_declares_resources_per_run_and_the_command_line_overrides_them(tmp_path, capsys, monkeypatch):
    runs = expand(Study("configs/lm.py:L4", SizeGrid(["L1", "L2"], tokens=50_000), overrides=SMALL,
                        resources=lambda plan: {"gpus": plan.n_layers, "memory_gb": 2.5, "time_limit_min": 30}))
    assert [run.resources for run in runs] == [Resources(gpus=1, memory_gb=2.5, time_limit_min=30), Resources(gpus=2, memory_gb=2.5, time_limit_min=30)]
    assert expand(Study("configs/lm.py:L4", SizeGrid(["L1"], tokens=50_000), overrides=SMALL))[0].resources == Resources(cpus=None, gpus=0, hosts=1)
    assert with_overrides(Resources(gpus=2, hosts=2), {"gpus": 1, "hosts": None}) == Resources(gpus=1, hosts=2)
    assert resources_from({"partition": "gpu", "slurm_options": {"qos": "high", "exclusive": True}}, "here") == Resources(
        partition="gpu", slurm_options=(("exclusive", True), ("qos", "high")))
    for mapping, message in [({"gpu": 1}, "unknown resources key 'gpu': use cpus, gpus, hosts, memory_gb, time_limit_min, partition"),
                             ({"partition": ""}, "partition='' must be a non-empty string"),
                             ({"slurm_options": {"nodes": 2}}, "slurm_options: --slurm-option 'nodes=2': use --hosts instead"),
                             ({"slurm_options": ["qos=high"]}, "slurm_options=\\['qos=high'\\] must be a dict"),
                             ({"gpus": 1.5}, "gpus=1.5 must be a whole number >= 0"), ({"hosts": 0}, "hosts=0 must be a whole number >= 1"),
                             ({"memory_gb": 0}, "memory_gb=0 must be a number > 0"), ({"cpus": True}, "cpus=True must be a whole number >= 1")]:
        with pytest.raises(ConfigError, match=message):
            resources_from(mapping, "here")
    monkeypatch.chdir(REPO_ROOT)
    experiment = write_experiment(tmp_path / "study.py", """
        from bigmodel.scaling.sweep import SizeGrid, Study

        def get_study():
            return Study("configs/lm.py:L4", SizeGrid(["L1"], tokens=40_000), overrides={"data.seq_len": 64, "train.batch_size": 8},
                         resources=lambda plan: {"gpus": 4, "cpus": 16})
    """)
    assert main(["sweep", str(experiment), "--workdir", str(tmp_path / "s"), "--dry-run", "--json", "--gpus", "2", "--time-limit", "45"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["resources"] == {"cpus": 16, "gpus": 2, "hosts": 1, "memory_gb": None, "time_limit_min": 45.0, "partition": None,
                                "account": None, "slurm_options": {}}
    assert main(["sweep", str(experiment), "--workdir", str(tmp_path / "s"), "--dry-run", "--hosts", "0"]) == 2
    assert capsys.readouterr().err == "error: --hosts 0: resources hosts=0 must be a whole number >= 1\n"


# ----------------------------------------------------------------------------- GPUs on one machine


def test_gpus_come_from_cuda_visible_devices_or_nvidia_smi():
    assert gpus_from_environment({"CUDA_VISIBLE_DEVICES": "2, 3,5"}) == ["2", "3", "5"]
    assert gpus_from_environment({"CUDA_VISIBLE_DEVICES": ""}) == [] and gpus_from_environment({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    assert gpus_from_environment({}) is None
    listing = "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)\nGPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-2)\n  MIG 1g.10gb Device 0: (UUID: MIG-3)\n"
    assert gpus_from_nvidia_smi(listing) == ["0", "1"] and gpus_from_nvidia_smi("") == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "1"}) == ["1"]  # set: nvidia-smi is not asked


def test_gpu_assignment_takes_free_devices_in_order_or_waits():
    assert assign_gpus(["0", "1", "2", "3"], 2) == ["0", "1"]
    assert assign_gpus(["3", "1"], 2) == ["3", "1"]
    assert assign_gpus(["0"], 2) is None  # too few free now: the run waits
    assert assign_gpus([], 0) == [] and assign_gpus(["0"], 0) == []


class FakeProcess:
    """What LocalBackend needs of a Popen: a pid, poll(), terminate(), wait()."""

    def __init__(self, pid: int):
        self.pid, self.returncode = pid, None

    def poll(self):
        return self.returncode

    def terminate(self):
        self.returncode = 75

    def wait(self):
        return self.returncode


def test_concurrent_local_runs_never_share_a_gpu(tmp_path):
    started = []

    def start(command, run_dir, cpus, environment):
        started.append((run_dir.name, environment.get("CUDA_VISIBLE_DEVICES")))
        return FakeProcess(1000 + len(started))

    backend = LocalBackend(jobs=3, gpus=["0", "1", "2"], start=start)
    big, small, other = fake_run("big", gpus=2), fake_run("small", gpus=1), fake_run("other", gpus=1)
    handles = {}
    for run in (big, small):
        assert backend.can_start(run.resources)
        handles[run.name] = backend.submit(run, tmp_path / run.name, run.resources)
    assert started == [("big", "0,1"), ("small", "2")]
    assert not backend.can_start(other.resources)  # a free job slot, but no free GPU
    assert backend.poll(handles["big"]) is None
    backend.launches[handles["big"]][0].returncode = 0
    assert backend.poll(handles["big"]) == 0  # finished: its GPUs are free again
    handles["other"] = backend.submit(other, tmp_path / other.name, other.resources)
    assert started[-1] == ("other", "0") and sorted(backend.free_gpus) == ["1"]
    assert backend.host(handles["other"]) and not backend.reattach("1234", tmp_path, other.resources)
    cpu_only = fake_run("cpu")
    backend.submit(cpu_only, tmp_path / cpu_only.name, cpu_only.resources)
    assert started[-1] == ("cpu", None)  # asks for no GPU: the environment is left as it is


def test_runs_the_machine_cannot_hold_are_refused_before_anything_starts(tmp_path, capsys, monkeypatch):
    with pytest.raises(ConfigError, match="runs ask for up to 2 GPUs each and this machine has only 1 \\(7\\)"):
        LocalBackend(gpus=["7"]).check([fake_run("a", gpus=1), fake_run("b", gpus=2)])
    with pytest.raises(ConfigError, match="run a asks for 2 hosts; the local backend runs on this one"):
        LocalBackend(gpus=[]).check([fake_run("a", hosts=2)])
    LocalBackend(gpus=[]).check([fake_run("a")])  # CPU runs need no GPU
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    workdir = tmp_path / "sweep"
    assert main(["sweep", "experiments/demo.py", "--workdir", str(workdir), "--gpus", "1"]) == 2
    assert capsys.readouterr().err == ("error: runs ask for up to 1 GPUs each and this machine has none (no CUDA_VISIBLE_DEVICES, "
                                       "no nvidia-smi): run on a GPU machine, use --backend slurm, or pass --gpus 0\n")
    assert not workdir.exists()


# ----------------------------------------------------------------------------- retries and re-attach


class FakeBackend:
    """A scripted backend: `outcomes[name]` lists the exit code of each launch (a done launch
    writes the run's summary.json); `alive` holds job ids an earlier driver left running."""

    name = "fake"
    outlives_driver = True
    poll_interval_s = 0.0

    def __init__(self, workdir: Path, outcomes: dict[str, list[int]], alive: dict[str, str] | None = None):
        self.workdir, self.outcomes, self.alive = workdir, outcomes, dict(alive or {})  # alive: job id → run name
        self.submitted, self.polls, self.running = [], {}, {}
        self.scheduler_stops: set[str] = set()  # handles a "time limit" stopped (exit 75 by the scheduler)
        self.checkpoints: dict[str, list[int]] = {}  # per name, the checkpoint step each launch leaves behind

    def check(self, runs):
        pass

    def can_start(self, resources):
        return True

    def submit(self, run, run_dir, resources):
        self.submitted.append(run.name)
        handle = f"job{len(self.submitted)}"
        self.running[handle] = run.name
        return handle

    def reattach(self, handle, run_dir, resources):
        if handle in self.alive:
            self.running[handle] = self.alive.pop(handle)
            return True
        return False

    def poll(self, handle):
        name = self.running[handle]
        self.polls[handle] = self.polls.get(handle, 0) + 1
        if self.polls[handle] < 2:  # running for one poll
            return None
        code = self.outcomes[name].pop(0)
        if self.checkpoints.get(name):
            (self.workdir / name / "checkpoints" / str(self.checkpoints[name].pop(0))).mkdir(parents=True, exist_ok=True)
        if code == 75 and name.startswith("timed-out"):
            self.scheduler_stops.add(handle)
        if code == 0:
            (self.workdir / name).mkdir(exist_ok=True)
            (self.workdir / name / "summary.json").write_text(json.dumps({"final_loss": 2.0, "wall_time_s": 3.0}))
        del self.running[handle]
        return code

    def is_alive(self, handle):
        return handle in self.running

    def cancel(self, handle):
        return None

    def host(self, handle):
        return "node1" if handle in self.running else ""

    def stopped_by_scheduler(self, handle):
        return handle in self.scheduler_stops


def test_a_failed_run_is_relaunched_up_to_retries_times(tmp_path, capsys):
    outcomes = {"flaky": [1, 0], "broken": [1, 1, 1, 1], "bad-input": [2], "preempted": [75]}
    backend = FakeBackend(tmp_path, {name: list(codes) for name, codes in outcomes.items()})
    rows = {row["name"]: row for row in execution.execute([fake_run(name) for name in outcomes], tmp_path, backend, retries=2)}
    assert {name: row["status"] for name, row in rows.items()} == {"flaky": "done", "broken": "failed", "bad-input": "failed", "preempted": "stopped"}
    assert {name: row["attempts"] for name, row in rows.items()} == {"flaky": "2", "broken": "3", "bad-input": "1", "preempted": "1"}
    assert backend.submitted.count("broken") == 3 and outcomes["broken"] and backend.outcomes["broken"] == [1]  # 1 + 2 retries, no more
    assert rows["flaky"]["job_id"] == f"job{len(backend.submitted) - backend.submitted[::-1].index('flaky')}"  # the last launch's handle
    assert all(rows[name]["backend"] == "fake" and rows[name]["host"] == "node1" for name in rows)
    assert all(rows[name]["started_at"] <= rows[name]["finished_at"] for name in rows)
    output = capsys.readouterr().out
    assert "retrying flaky (launch 2 of 3) after exit 1: " in output and "retrying bad-input" not in output and "retrying preempted" not in output
    assert registry_rows(tmp_path)["broken"]["attempts"] == "3"


def test_a_run_the_scheduler_stopped_is_requeued_while_it_makes_progress_and_a_users_stop_is_not(tmp_path, capsys):
    outcomes = {"timed-out": [75, 75, 0], "timed-out-stuck": [75, 75, 75, 75], "cancelled": [75]}
    backend = FakeBackend(tmp_path, {name: list(codes) for name, codes in outcomes.items()})
    backend.checkpoints = {"timed-out": [10, 20, 30], "timed-out-stuck": [10, 10, 10, 10], "cancelled": [10]}
    rows = {row["name"]: row for row in execution.execute([fake_run(name) for name in outcomes], tmp_path, backend)}
    assert {name: (row["status"], row["attempts"]) for name, row in rows.items()} == {
        "timed-out": ("done", "3"), "timed-out-stuck": ("stopped", "4"), "cancelled": ("stopped", "1")}
    output = capsys.readouterr().out
    assert "requeued timed-out: stopped by the scheduler at step 10; resuming" in output and "requeued cancelled" not in output
    assert "requeued timed-out: stopped by the scheduler at step 20; resuming" in output
    assert output.count("requeued timed-out-stuck") == 3  # then 2 launches in a row checkpointed nothing new, and a 3rd: left stopped


def test_a_restarted_driver_reattaches_to_jobs_in_flight_and_never_submits_them_twice(tmp_path, capsys):
    runs = [fake_run("in-flight"), fake_run("lost"), fake_run("finished")]
    launch = {"backend": "fake", "host": "node1", "started_at": "2026-11-22T10:00:00+00:00", "finished_at": ""}
    registry.write_registry(tmp_path, [
        {**registry.row_for_run(runs[0], "running"), **launch, "job_id": "77", "attempts": "1"},
        {**registry.row_for_run(runs[1], "running"), **launch, "job_id": "78", "attempts": "2"},  # its job died with no summary
        {**registry.row_for_run(runs[2], "running"), **launch, "job_id": "79", "attempts": "1"},
    ])
    (tmp_path / "finished").mkdir()
    (tmp_path / "finished" / "summary.json").write_text(json.dumps({"final_loss": 2.0}))  # ended while no driver watched
    backend = FakeBackend(tmp_path, {"in-flight": [0], "lost": [0], "finished": []}, alive={"77": "in-flight"})
    rows = {row["name"]: row for row in execution.execute(runs, tmp_path, backend)}
    assert backend.submitted == ["lost"]  # in-flight was watched, finished collected, lost relaunched
    assert {name: row["status"] for name, row in rows.items()} == {"in-flight": "done", "lost": "done", "finished": "done"}
    assert (rows["in-flight"]["job_id"], rows["in-flight"]["attempts"], rows["in-flight"]["started_at"]) == ("77", "1", launch["started_at"])
    assert (rows["lost"]["job_id"], rows["lost"]["attempts"]) == ("job1", "3")
    output = capsys.readouterr().out
    assert "attached in-flight (fake job 77, launched 2026-11-22T10:00:00+00:00)" in output and "skipped  finished" in output
    # A local sweep must not start a second copy of runs a Slurm driver left in flight.
    registry.write_registry(tmp_path, [{**registry.row_for_run(runs[0], "running"), **launch, "backend": "slurm", "job_id": "77", "attempts": "1"}])
    with pytest.raises(ConfigError, match="1 runs of .* may still be in flight as slurm jobs \\(e.g. in-flight, job 77\\): rerun with --backend slurm"):
        execution.execute(runs[:1], tmp_path, LocalBackend(jobs=1))


# ----------------------------------------------------------------------------- real runs

# An L1 run long enough to be killed after its first checkpoint (200 steps, about 8 s here).
LONG_RUN = {"data.seq_len": 32, "train.batch_size": 4, "train.log_every": 20, "eval.batches": 1, "checkpoint.every_steps": 20,
            "eval.every_steps": 100_000, "optim.warmup_steps": 0}


class KillFirstLaunch(LocalBackend):
    """The local backend, but the first launch is killed (SIGKILL, as the OOM killer would)
    once it has written a checkpoint."""

    poll_interval_s = 0.05

    def __init__(self, run_dir: Path):
        super().__init__(jobs=1)
        self.run_dir, self.killed = run_dir, None

    def poll(self, handle):
        checkpoints = self.run_dir / "checkpoints"
        if self.killed is None and checkpoints.is_dir() and any(path.name.isdigit() for path in checkpoints.iterdir()):
            self.killed = max(int(path.name) for path in checkpoints.iterdir() if path.name.isdigit())
            self.launches[handle][0].kill()
        return super().poll(handle)


@pytest.mark.slow  # a real training killed with SIGKILL and retried
def test_a_killed_local_run_is_retried_and_resumes_from_its_checkpoint(tmp_path, kjv_data_dir, monkeypatch, capsys):
    monkeypatch.chdir(REPO_ROOT)
    run = expand(Study("configs/lm.py:L1", SizeGrid(["L1"], tokens=200 * 4 * 32),
                       overrides={**LONG_RUN, "data.data_dir": kjv_data_dir}))[0]
    backend = KillFirstLaunch(tmp_path / run.name)
    [row] = execution.execute([run], tmp_path, backend, retries=1)
    assert backend.killed is not None and row["status"] == "done" and row["attempts"] == "2", row
    log = (tmp_path / run.name / "train.log").read_text()
    assert log.count("=== ") == 2 and "resumed from checkpoint at step" in log
    resumed_at = int(log.split("resumed from checkpoint at step")[1].split()[0])
    assert resumed_at >= backend.killed and json.loads((tmp_path / run.name / "summary.json").read_text())["steps"] == 200
    assert "retrying L1-" in capsys.readouterr().out
