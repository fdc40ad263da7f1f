"""The Slurm backend: each run one Slurm job, submitted and watched through submitit.

The job runs the same `python -m bigmodel train ...` as a local run, once per host
(`--nodes=<hosts> --ntasks-per-node=1`): srun starts one task per node, each task runs
`TrainTask` (the trainer, its output appended to DIR/<run>/train.log, slurm/train.rank<N>.log
for the other hosts), and bigmodel's `jax.distributed` start-up finds its peers from the SLURM_*
environment (`bigmodel.runtime.detected_cluster`). submitit keeps its own files (the sbatch
script, the pickled task, its result: the trainer's exit code) in DIR/<run>/slurm/. So the sweep
directory must be on a filesystem every node sees, and the driver's python (same path) must run
on the nodes.

Slurm parameters come from the run's `Resources` (hosts, and per host cpus, gpus, memory, time
limit, and the study's partition, account and slurm_options; the command line overrides them)
and from `--partition`, `--account` and `--slurm-option KEY[=VALUE]` (any other sbatch option,
e.g. qos=high, constraint=h100, exclusive). Slurm's warning signal is SIGTERM, `SIGNAL_BEFORE_END_S` before the time limit: the
trainer checkpoints and exits 75 (`stopped`), and the next sweep resumes the run.

Jobs outlive the driver: a restarted sweep re-attaches to the runs whose jobs are still pending
or running (`reattach`) instead of submitting them again.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from bigmodel import exit_codes
from bigmodel.config import ConfigError
from bigmodel.scaling.backends import LOG_FILE, SubmitFailed, append_log_line, prepare_run_dir

MISSING_SUBMITIT = "--backend slurm needs submitit: pip install -e '.[slurm]'"
SLURM_FOLDER = "slurm"  # submitit's files, inside each run directory
SIGNAL_BEFORE_END_S = 120  # time for the trainer to write a checkpoint before Slurm's SIGKILL
OPTION_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
# sbatch options that have their own flag (or that the backend needs as it sets them).
DEDICATED_OPTIONS = {
    "partition": "--partition", "account": "--account", "time": "--time-limit", "nodes": "--hosts",
    "gpus-per-node": "--gpus", "cpus-per-task": "--cpus", "mem": "--memory-gb",
    "ntasks-per-node": "--hosts (one task per host)", "job-name": "nothing: the run's name is the job's",
    "output": "nothing: logs go to the run directory", "error": "nothing: logs go to the run directory",
}


def load_submitit():
    """Import submitit, or the one error line that says how to install it."""
    # On import submitit runs logging.config.dictConfig, which closes every logging handler the
    # process has (a test runner's capture included); NOCONFIG skips that, and its records go to
    # the root logger like any library's.
    os.environ.setdefault("SUBMITIT_LOG_LEVEL", "NOCONFIG")
    try:
        import submitit
    except ImportError:
        raise ConfigError(MISSING_SUBMITIT) from None
    return submitit


# ----------------------------------------------------------------------------- parameters


def parse_slurm_options(texts: list[str]) -> dict[str, str | bool]:
    """`--slurm-option KEY=VALUE` (or a bare `KEY` for a flag such as exclusive) → sbatch options."""
    options = {}
    for text in texts:
        key, has_value, value = text.partition("=")
        key = key.strip().removeprefix("--")
        if not OPTION_KEY.fullmatch(key) or (has_value and not value):
            raise ConfigError(f"--slurm-option {text!r} is not KEY=VALUE (or a bare KEY for a flag): e.g. --slurm-option qos=high")
        name = key.replace("_", "-")
        if name in DEDICATED_OPTIONS:
            raise ConfigError(f"--slurm-option {text!r}: use {DEDICATED_OPTIONS[name]} instead")
        options[name] = value if has_value else True
    return options


def memory_text(memory_gb: float) -> str:
    """sbatch --mem: whole gigabytes as "16G", else megabytes ("1536M")."""
    return f"{int(memory_gb)}G" if memory_gb == int(memory_gb) else f"{math.ceil(memory_gb * 1024)}M"


def slurm_parameters(name: str, resources, partition: str | None = None, account: str | None = None,
                     options: Mapping[str, str | bool] | None = None) -> dict:
    """submitit.SlurmExecutor parameters for one run: one task per host, the rest per host as
    asked; what is not asked (None) is left to the cluster's defaults."""
    parameters = {
        "job_name": name,
        "nodes": resources.hosts,
        "ntasks_per_node": 1,  # one process per host: jax.distributed joins them
        "cpus_per_task": resources.cpus,
        "gpus_per_node": resources.gpus or None,
        "mem": memory_text(resources.memory_gb) if resources.memory_gb else None,
        "partition": partition,
        "account": account,
        # submitit's own warning signal is USR2, which would kill the trainer: send SIGTERM instead.
        "additional_parameters": {"signal": f"TERM@{SIGNAL_BEFORE_END_S}", **(options or {})},
    }
    parameters = {key: value for key, value in parameters.items() if value is not None}
    # Always set: submitit's default time limit is 5 minutes; None leaves it to the partition.
    parameters["time"] = math.ceil(resources.time_limit_min) if resources.time_limit_min else None
    return parameters


def sbatch_script(parameters: dict, folder: Path, command: str = "python -u -m submitit.core._submit FOLDER") -> str:
    """The sbatch script submitit writes for `parameters`, rendered without a cluster (tests read it)."""
    from submitit.slurm.slurm import _make_sbatch_string  # submitit's own renderer, so this never drifts from it

    return _make_sbatch_string(command=command, folder=str(folder), **parameters)


# ----------------------------------------------------------------------------- the job


class TrainTask:
    """What each Slurm task runs (pickled by submitit, so it lives at module level): the trainer,
    its output appended to the run's log; returns its exit code as the job's result."""

    def __init__(self, command: list[str], run_dir: str | Path, cwd: str | Path):
        self.command, self.run_dir, self.cwd = list(command), str(run_dir), str(cwd)

    def log_path(self, environment: Mapping[str, str] = os.environ) -> Path:
        """train.log for the first host; the others' beside submitit's files (the trainer accepts
        nothing else in a run directory before its config.json)."""
        rank = int(environment.get("SLURM_PROCID", "0"))
        return Path(self.run_dir) / LOG_FILE if rank == 0 else Path(self.run_dir) / SLURM_FOLDER / f"train.rank{rank}.log"

    def __call__(self) -> int:
        with open(self.log_path(), "a") as log:
            process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       cwd=self.cwd, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        # submitit ignores SIGTERM in this process; the trainer checkpoints and exits 75 on it.
        signal.signal(signal.SIGTERM, lambda signum, frame: process.send_signal(signum))
        return process.wait()


# Slurm job states of a job that has not ended (squeue's long names).
LIVE_STATES = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING", "SIGNALING", "STAGE_OUT")


def squeue_state(job_id: str, run=subprocess.run) -> str:
    """The job's state as squeue knows it ("" once slurmctld has forgotten it, MinJobAge after
    it ended). submitit asks only sacct, which a cluster without an accounting database lacks:
    there every job reads UNKNOWN forever, and a job that ended without a result would be
    watched forever (seen on a real single-node Slurm without slurmdbd)."""
    try:
        done = run(["squeue", "-h", "-t", "all", "-j", str(job_id), "-o", "%T"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return "UNKNOWN"
    if done.returncode != 0:  # only "Invalid job id specified" means gone; a controller down says nothing
        return "" if "invalid job id" in (done.stderr or "").lower() else "UNKNOWN"
    return (done.stdout.split() or [""])[0]


FORGOTTEN = "ENDED (no longer known to Slurm)"


def job_state(job, squeue=squeue_state) -> str:
    """submitit's state (from sacct), or squeue's when sacct cannot say."""
    state = job.state
    if not state.startswith("UNKNOWN"):
        return state
    return squeue(job.job_id) or FORGOTTEN


def job_ended(job, force_check: bool = False, squeue=squeue_state) -> bool:
    """Whether the job is over. A state nobody can tell (sacct and squeue both failing) counts
    as not over: watching a job too long is harmless, submitting it twice is not."""
    if job.done(force_check=force_check):
        return True
    state = job_state(job, squeue)
    return not state.startswith(LIVE_STATES) and not state.startswith("UNKNOWN")


def stopped_by_slurm(state: str) -> bool:
    """Whether a job whose trainer checkpointed and exited 75 was stopped by Slurm: SIGTERM
    before its time limit (the job then ends FAILED or COMPLETED by its exit code, or TIMEOUT),
    or a preemption. `scancel` ends it CANCELLED: a person stopped it, so it stays stopped."""
    return not state.startswith("CANCELLED")


def combined_exit_code(codes: list[int]) -> int:
    """One run's exit code from its processes' (one per host): the first failure, else
    STOPPED if any process stopped, else 0."""
    failures = [code for code in codes if code not in (exit_codes.OK, exit_codes.STOPPED)]
    if failures:
        return failures[0]
    return exit_codes.STOPPED if exit_codes.STOPPED in codes else exit_codes.OK


class SlurmBackend:
    """Each run one Slurm job; `max_in_flight` (--jobs) caps the jobs queued at once (None: all)."""

    name = "slurm"
    outlives_driver = True
    poll_interval_s = 5.0

    def __init__(self, partition: str | None = None, account: str | None = None, options: Mapping | None = None,
                 max_in_flight: int | None = None, submitit=None):
        self.submitit = submitit or load_submitit()
        if shutil.which("sbatch") is None or shutil.which("srun") is None:
            raise ConfigError("--backend slurm: sbatch and srun are not on PATH: start the sweep on a Slurm login node")
        self.partition, self.account, self.options = partition, account, dict(options or {})
        self.max_in_flight = max_in_flight
        self.jobs: dict[str, tuple[object, Path]] = {}  # handle (job id) → (submitit job, run directory)
        self.scheduler_stops: set[str] = set()  # jobs whose trainer Slurm stopped (time limit, preemption)

    def check(self, runs) -> None:
        """Nothing to refuse up front: the scheduler judges what fits its partitions."""

    def can_start(self, resources) -> bool:
        return self.max_in_flight is None or len(self.jobs) < self.max_in_flight

    def submit(self, run, run_dir: Path, resources) -> str:
        command = run.command(run_dir, python=sys.executable)
        prepare_run_dir(run, run_dir, command, how="slurm: ")
        executor = self.submitit.SlurmExecutor(folder=run_dir / SLURM_FOLDER)
        partition, account = self.partition or resources.partition, self.account or resources.account
        options = {**dict(resources.slurm_options), **self.options}  # the command line's win
        executor.update_parameters(**slurm_parameters(run.name, resources, partition, account, options))
        try:
            job = executor.submit(TrainTask(command, run_dir, os.getcwd()))
        except Exception as error:  # noqa: BLE001 — sbatch refused (bad partition, account, limits): record its words
            text = " ".join(str(error).split()) or type(error).__name__
            raise SubmitFailed(f"sbatch refused the job: {text[:300]}") from None
        self.jobs[job.job_id] = (job, run_dir)
        return job.job_id

    def poll(self, handle: str) -> int | None:
        job, run_dir = self.jobs[handle]
        if not job_ended(job):
            return None
        del self.jobs[handle]
        return self.exit_code(job, run_dir)

    def exit_code(self, job, run_dir: Path) -> int:
        """The trainer's exit code from submitit's result files; a job that ended without one
        (killed, node failure, cancelled before it started) says so in train.log."""
        try:
            code = combined_exit_code([int(code) for code in job.results()])
        except self.submitit.core.utils.UncompletedJobError:
            state = job_state(job)
            append_log_line(run_dir, f"slurm job {job.job_id} ended {state} without an exit code (see {run_dir / SLURM_FOLDER}/)")
            return exit_codes.STOPPED if state.startswith("CANCELLED") else exit_codes.FAILED
        if code == exit_codes.STOPPED and stopped_by_slurm(job_state(job)):
            self.scheduler_stops.add(job.job_id)
        return code

    def is_alive(self, handle: str) -> bool:
        return handle in self.jobs and not job_ended(self.jobs[handle][0])

    def reattach(self, handle: str, run_dir: Path, resources) -> bool:
        """Watch a job an earlier driver submitted, if it is still pending or running."""
        job = self.submitit.SlurmJob(folder=run_dir / SLURM_FOLDER, job_id=handle, tasks=tuple(range(resources.hosts)))
        if job_ended(job, force_check=True):
            return False
        self.jobs[handle] = (job, run_dir)
        return True

    def cancel(self, handle: str) -> int | None:
        """scancel: the trainer gets SIGTERM, checkpoints and exits 75."""
        self.jobs[handle][0].cancel(check=False)
        return None

    def stopped_by_scheduler(self, handle: str) -> bool:
        return handle in self.scheduler_stops

    def host(self, handle: str) -> str:
        nodes = self.jobs[handle][0].get_info(mode="cache").get("NodeList", "") if handle in self.jobs else ""
        return "" if nodes.startswith("None") else nodes  # "None assigned" while pending
