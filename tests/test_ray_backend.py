"""The Ray backend: the job it submits (entrypoint, id, resources), Ray's job states read as
exit codes, re-attach by submission id, a cluster that stops answering, and the one-line errors,
all without Ray; then real sweeps on a local Ray cluster (a head and a worker node, 1 CPU each,
started and stopped here): 3 runs (one more than the cluster's 2 CPUs, so one waits in Ray's
queue), a node killed mid-run, a driver killed mid-sweep. Ray is in
the `test` extra, so CI runs them; they skip only where Ray is not installed."""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from bigmodel import exit_codes
from bigmodel.checkpoint import newest_step
from bigmodel.cli import main
from bigmodel.config import ConfigError
from bigmodel.scaling import backends
from bigmodel.scaling.backends import ClusterLost
from bigmodel.scaling.backends.ray import (MISSING_RAY, RayBackend, connect, entrypoint, exit_code_of, host_of,
                                           job_options, submission_id)
from bigmodel.scaling.resources import Resources
from bigmodel.scaling.runner import run_sweep
from bigmodel.scaling.sweep import Run, SizeGrid, Study

REPO_ROOT = Path(__file__).resolve().parents[1]


def fake_run(name: str, **resources) -> Run:
    return Run(name=name, config_spec="configs/lm.py:L1", overrides={}, params=2000, non_embedding_params=1000,
               flops_per_token=6000, tokens=10_000, flops=60_000_000, steps=10, batch_size=8, seq_len=64,
               learning_rate=1e-3, seed=0, resources=Resources(**resources))


# ----------------------------------------------------------------------------- without Ray


def test_the_job_runs_the_runs_own_command_from_the_drivers_directory_into_its_log(tmp_path):
    command = ["/usr/bin/python3", "-m", "bigmodel", "train", "--config", "configs/lm.py:L1", "--workdir", "runs/a b",
               "--config.data.data_dir=/data/it's"]
    assert entrypoint(command, Path("runs/a b"), "/repo root") == (
        "cd '/repo root' && exec /usr/bin/python3 -m bigmodel train --config configs/lm.py:L1 --workdir 'runs/a b' "
        "'--config.data.data_dir=/data/it'\"'\"'s' >> 'runs/a b/train.log' 2>&1")
    first = submission_id(tmp_path / "sweep" / "L1-s0", 1)
    assert first == submission_id(tmp_path / "sweep" / "L1-s0", 1) and first.startswith("bigmodel-L1-s0-") and first.endswith("-1")
    assert submission_id(tmp_path / "other" / "L1-s0", 1) != first  # the same run name in another sweep
    assert job_options(Resources()) == {"entrypoint_num_cpus": 1}
    assert job_options(Resources(cpus=4, gpus=2, memory_gb=1.5)) == {
        "entrypoint_num_cpus": 4, "entrypoint_num_gpus": 2, "entrypoint_memory": 1536 * 1024**2}


def test_ray_job_states_read_as_the_trainers_exit_codes():
    assert exit_code_of("PENDING", None) is None and exit_code_of("RUNNING", None) is None
    assert exit_code_of("SUCCEEDED", 0) == exit_codes.OK
    assert exit_code_of("STOPPED", None) == exit_codes.STOPPED  # ray job stop: the trainer checkpointed, resume it
    assert exit_code_of("FAILED", 75) == exit_codes.STOPPED and exit_code_of("FAILED", 2) == exit_codes.BAD_INPUT
    assert exit_code_of("FAILED", None) == exit_codes.FAILED  # the entrypoint never ran (node lost, runtime env)
    assert host_of(SimpleNamespace(driver_agent_http_address="http://10.1.2.3:52365")) == "10.1.2.3"
    assert host_of(SimpleNamespace(driver_agent_http_address=None)) == "" and host_of(SimpleNamespace()) == ""
    assert backends.outlives_driver("ray") and not backends.outlives_driver("local")


class FakeJobClient:
    """JobSubmissionClient's calls the backend makes; `jobs` maps submission id → status."""

    def __init__(self, jobs: dict[str, str] | None = None):
        self.jobs, self.submitted, self.stopped = dict(jobs or {}), [], []

    def get_job_status(self, handle):
        if handle not in self.jobs:
            raise RuntimeError(f"Job {handle} does not exist")
        return self.jobs[handle]

    def get_job_info(self, handle):
        status = self.get_job_status(handle)
        return SimpleNamespace(status=status, driver_exit_code=None, message="runtime env setup failed",
                               driver_agent_http_address="http://10.0.0.7:52365")

    def submit_job(self, **arguments):
        self.submitted.append(arguments)
        self.jobs[arguments["submission_id"]] = "PENDING"
        return arguments["submission_id"]

    def stop_job(self, handle):
        self.stopped.append(handle)


def test_a_run_is_never_submitted_twice_even_by_a_driver_that_died_before_recording_it(tmp_path):
    run_dir = tmp_path / "L1"
    ids = [submission_id(run_dir, launch) for launch in (1, 2, 3)]
    client = FakeJobClient({ids[0]: "FAILED"})  # an earlier launch failed: the next id
    backend = RayBackend(client=client)
    assert backend.submit(fake_run("L1"), run_dir, Resources()) == ids[1]
    [arguments] = client.submitted
    assert arguments["submission_id"] == ids[1] and arguments["entrypoint_num_cpus"] == 1
    assert arguments["runtime_env"] == {"env_vars": {"PYTHONUNBUFFERED": "1", "RAY_JOB_STOP_WAIT_TIME_S": "120"}}
    assert arguments["entrypoint"].startswith(f"cd {os.getcwd()} && exec {sys.executable} -m bigmodel train")
    assert "ray: " in (run_dir / "train.log").read_text() and (run_dir / "command.sh").exists()
    assert backend.host(ids[1]) == "10.0.0.7" and backend.poll(ids[1]) is None
    # A new driver (the registry lost that launch) finds the id taken by a live job and watches it.
    again = RayBackend(client=client)
    assert again.submit(fake_run("L1"), run_dir, Resources()) == ids[1] and len(client.submitted) == 1
    assert again.reattach(ids[1], run_dir, Resources()) is True
    assert again.reattach(ids[0], run_dir, Resources()) is False and again.reattach("forgotten", run_dir, Resources()) is False
    client.jobs[ids[1]] = "FAILED"  # without an exit code: Ray's message goes to the log, the registry's error
    assert again.poll(ids[1]) == exit_codes.FAILED
    assert "ended without the trainer's exit code: runtime env setup failed" in (run_dir / "train.log").read_text().splitlines()[-1]
    again.cancel(ids[1])
    assert client.stopped == [ids[1]]


def test_a_cluster_that_stops_answering_is_watched_for_a_while_then_given_up_with_its_jobs_left_in_flight(tmp_path, capsys):
    client = FakeJobClient()
    backend = RayBackend(client=client)
    handle = backend.submit(fake_run("L1"), tmp_path / "L1", Resources())
    client.get_job_info = lambda handle: (_ for _ in ()).throw(ConnectionError("Failed to connect to Ray"))
    backend.unreachable_limit_s = 0.2
    assert backend.poll(handle) is None and backend.poll(handle) is None  # a blip: keep watching
    time.sleep(0.3)
    with pytest.raises(ClusterLost, match="^the Ray cluster has not answered for [0-9]+s \\(Failed to connect to Ray\\): rerun the same command"):
        backend.poll(handle)
    # The sweep stops with one line; the registry keeps the run in flight for the next driver to re-attach.
    run = fake_run("L1")
    assert run_sweep(Study("configs/lm.py:L1", SizeGrid(["L1"], tokens=1)), [run], tmp_path, backend) == exit_codes.STOPPED
    captured = capsys.readouterr()
    assert captured.err.splitlines()[-1].startswith("error: the Ray cluster has not answered for ")
    [row] = registry_rows(tmp_path)
    assert (row["status"], row["backend"], row["job_id"]) == ("running", "ray", handle)


def test_runs_of_several_hosts_and_unreachable_clusters_are_one_error_line(tmp_path):
    with pytest.raises(ConfigError, match="run a asks for 2 hosts; the ray backend runs each run as one process on one node"):
        RayBackend(client=FakeJobClient()).check([fake_run("a", hosts=2)])

    def refusing(address):
        raise ConnectionError(f"Failed to connect to Ray at address: {address}.")

    with pytest.raises(ConfigError, match="^--backend ray: no Ray cluster at --ray-address http://h:8265 \\(Failed to connect"):
        connect("http://h:8265", job_submission=SimpleNamespace(JobSubmissionClient=refusing))


def test_missing_ray_is_one_error_line_and_nothing_written(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    workdir = tmp_path / "sweep"
    assert main(["sweep", "experiments/demo.py", "--workdir", str(workdir), "--backend", "ray"]) == 2
    assert capsys.readouterr().err == f"error: {MISSING_RAY}\n" == "error: --backend ray needs Ray's job API: pip install -e '.[ray]'\n"
    assert main(["sweep", "experiments/demo.py", "--workdir", str(workdir), "--ray-address", "auto"]) == 2
    assert capsys.readouterr().err == "error: --ray-address applies to --backend ray only: add --backend ray or drop it\n"
    assert main(["sweep", "experiments/demo.py", "--workdir", str(workdir), "--backend", "ray", "--partition", "gpu"]) == 2
    assert capsys.readouterr().err == "error: --partition applies to --backend slurm only: add --backend slurm or drop it\n"
    assert not workdir.exists()


# ----------------------------------------------------------------------------- a real Ray cluster

# Node deaths are noticed in ~2 s instead of Ray's default ~30 s (read by the head's GCS at start).
FAST_HEALTH_CHECKS = {"RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "500",
                      "RAY_health_check_timeout_ms": "500", "RAY_health_check_failure_threshold": "4"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ray_cli(*arguments: str, timeout: float = 120) -> None:
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", *arguments], check=True, capture_output=True, timeout=timeout,
                   env={**os.environ, **FAST_HEALTH_CHECKS})


class LocalRayCluster:
    """A head and a second worker node on this machine, 1 CPU each. The worker's raylet listens
    on a port of our choosing, which is how `kill_worker` finds that node's processes."""

    def __init__(self):
        self.port, self.dashboard_port = free_port(), free_port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        self.worker_port = None

    def start(self) -> None:
        ray_cli("start", "--head", "--num-cpus=1", f"--port={self.port}", f"--dashboard-port={self.dashboard_port}",
                "--include-dashboard=true", "--disable-usage-stats")
        self.start_worker()

    def start_worker(self) -> None:
        self.worker_port = free_port()
        ray_cli("start", f"--address=127.0.0.1:{self.port}", "--num-cpus=1", f"--node-manager-port={self.worker_port}",
                "--disable-usage-stats")

    def worker_processes(self) -> list:
        """The worker node's raylet and everything it started (Ray's workers, the jobs' entrypoints)."""
        import psutil

        for process in psutil.process_iter(["cmdline"]):
            command = " ".join(process.info["cmdline"] or [])
            if "raylet" in command and f"--node_manager_port={self.worker_port}" in command:
                return [process, *process.children(recursive=True)]
        raise AssertionError(f"no raylet on port {self.worker_port}")

    def kill_worker(self) -> None:
        """The node dies as a machine does: every process of it at once, SIGKILL, nothing cleaned up."""
        for process in self.worker_processes():
            process.send_signal(signal.SIGKILL)

    def stop(self) -> None:
        subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def ray_cluster():
    pytest.importorskip("ray.job_submission", reason="Ray is not installed: pip install -e '.[ray]' to run the Ray cluster tests")
    cluster = LocalRayCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def tiny_study(path: Path, data_dir: str, steps: int, seeds: tuple[int, ...] = (0, 1)) -> Path:
    """L1 runs of `steps` steps that checkpoint every 50 steps (a killed run has something to resume)."""
    path.write_text(textwrap.dedent(f"""
        from bigmodel.scaling.sweep import SizeGrid, Study

        def get_study():
            return Study("configs/lm.py:L1", SizeGrid(["L1"], tokens={steps} * 8 * 64), seeds={list(seeds)},
                         overrides={{"data.seq_len": 64, "train.batch_size": 8, "train.log_every": 50, "eval.batches": 2,
                                    "eval.every_steps": 200, "checkpoint.every_steps": 50, "optim.warmup_steps": 0,
                                    "data.data_dir": {data_dir!r}}})
    """))
    return path


def registry_rows(workdir: Path) -> list[dict]:
    with open(workdir / "runs.csv", newline="") as file:
        return list(csv.DictReader(file))


def sweep_command(experiment: Path, workdir: Path, cluster: LocalRayCluster, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bigmodel", "sweep", str(experiment), "--workdir", str(workdir), "--backend", "ray",
            "--ray-address", cluster.address, *extra]


STEPS = 400  # the runs of the first two tests: the same study, so their final losses must agree
SEEDS = (0, 1, 2)  # three 1-CPU jobs on a 2-CPU cluster: one is PENDING in Ray's queue while two run


@pytest.fixture(scope="module")
def uninterrupted_sweep(ray_cluster, kjv_data_dir, tmp_path_factory):
    """A 3-run sweep (seeds 0-2) on the cluster, never disturbed: its registry rows."""
    root = tmp_path_factory.mktemp("ray_uninterrupted")
    workdir = root / "runs"
    experiment = tiny_study(root / "tiny.py", kjv_data_dir, STEPS, seeds=SEEDS)
    done = subprocess.run(sweep_command(experiment, workdir, ray_cluster), cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return workdir, registry_rows(workdir)


@pytest.mark.slow  # a local Ray cluster running real sweeps
def test_a_sweep_on_ray_runs_every_run_as_a_job_and_records_it(uninterrupted_sweep):
    workdir, rows = uninterrupted_sweep
    assert [(row["status"], row["backend"], row["attempts"]) for row in rows] == [("done", "ray", "1")] * len(SEEDS)
    assert all(row["job_id"] == submission_id(workdir / row["name"], 1) and row["host"] for row in rows)
    assert len({row["final_loss"] for row in rows}) == len(SEEDS)  # three seeds, three runs
    log = (workdir / rows[0]["name"] / "train.log").read_text()
    assert "ray: " in log and f"step {STEPS}/{STEPS}" in log  # the driver's header, then the trainer's own output


def trainer_on_the_worker(cluster: LocalRayCluster):
    """(process, run directory) of the trainer running on the worker node, or None."""
    for process in cluster.worker_processes()[1:]:
        try:
            command = process.cmdline()
        except Exception:  # noqa: BLE001 — it ended between listing and reading
            continue
        if "bigmodel" in command and "train" in command and "--workdir" in command:
            return process, Path(command[command.index("--workdir") + 1])
    return None


@pytest.mark.slow  # a local Ray cluster running real sweeps
def test_a_run_whose_node_dies_is_retried_and_resumes_to_the_same_final_loss(tmp_path, ray_cluster, uninterrupted_sweep,
                                                                               kjv_data_dir):
    workdir = tmp_path / "runs"
    experiment = tiny_study(tmp_path / "tiny.py", kjv_data_dir, STEPS, seeds=(0, 1))
    driver = subprocess.Popen(sweep_command(experiment, workdir, ray_cluster, "--retries", "1"), cwd=REPO_ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline, found = time.monotonic() + 180, None
    while found is None or not newest_step(found[1]):  # its first checkpoint is finalized
        assert time.monotonic() < deadline and driver.poll() is None, "no trainer on the worker node wrote a checkpoint"
        found = trainer_on_the_worker(ray_cluster) or found
        time.sleep(0.02)
    trainer, run_dir = found
    trainer.suspend()  # so it is certainly mid-run when its node dies
    assert not (run_dir / "summary.json").exists()
    ray_cluster.kill_worker()
    ray_cluster.start_worker()  # a replacement node, as an autoscaler would add
    output, _ = driver.communicate(timeout=300)
    assert driver.returncode == 0, output
    assert f"retrying {run_dir.name} (launch 2 of 2) after exit 1: " in output and "ended without the trainer's exit code" in output
    rows = {row["name"]: row for row in registry_rows(workdir)}
    assert rows[run_dir.name]["attempts"] == "2" and rows[run_dir.name]["job_id"] == submission_id(run_dir, 2)
    assert "resumed from checkpoint at step" in (run_dir / "train.log").read_text()
    expected = {row["name"]: row["final_loss"] for row in uninterrupted_sweep[1]}
    assert {name: row["final_loss"] for name, row in rows.items()} == {name: expected[name] for name in rows}
    assert {name: row["status"] for name, row in rows.items()} == dict.fromkeys(rows, "done")


@pytest.mark.slow  # a local Ray cluster running real sweeps
def test_a_driver_killed_mid_sweep_reattaches_and_submits_no_duplicate(tmp_path, ray_cluster, kjv_data_dir, monkeypatch, capsys):
    from ray.job_submission import JobSubmissionClient

    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setattr(RayBackend, "poll_interval_s", 0.5)
    workdir = tmp_path / "runs"
    # Short runs: the driver is killed as soon as both are submitted, and a job takes seconds to
    # start its trainer, so both are still live when the new driver attaches (100 steps: ~1 s more).
    experiment = tiny_study(tmp_path / "tiny.py", kjv_data_dir, steps=100)
    command = sweep_command(experiment, workdir, ray_cluster)
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not ((workdir / "runs.csv").exists() and [row["status"] for row in registry_rows(workdir)] == ["running"] * 2):
        assert time.monotonic() < deadline and driver.poll() is None, "the driver never had both runs in flight"
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)  # no chance to write anything more
    driver.wait()
    assert main(command[3:]) == 0, capsys.readouterr()
    assert capsys.readouterr().out.count("attached L1-") == 2
    rows = registry_rows(workdir)
    assert [(row["status"], row["attempts"]) for row in rows] == [("done", "1")] * 2
    # The cluster also holds the other tests' jobs: count those of this sweep's run directories.
    ids_of_this_sweep = {submission_id(workdir / row["name"], launch) for row in rows for launch in (1, 2, 3)}
    jobs = [job.submission_id for job in JobSubmissionClient(ray_cluster.address).list_jobs() if job.submission_id in ids_of_this_sweep]
    assert sorted(jobs) == sorted(row["job_id"] for row in rows)  # one job per run: none submitted twice
