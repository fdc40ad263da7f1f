"""The Ray backend: each run one Ray job on an existing cluster, through the Job Submission API.

The job's entrypoint is the run's own `python -m bigmodel train ...` (the same command as a
local run, DIR/<run>/command.sh), started from the driver's working directory with its output
appended to DIR/<run>/train.log: `cd <cwd> && exec <python> -m bigmodel train ... >> train.log 2>&1`.
No `working_dir` is uploaded: like Slurm, the sweep directory must be on a filesystem every node
sees and the driver's python (same path, bigmodel installed) must run on every node. Ray places
each job on a node with the run's `cpus` (default 1), `gpus` and `memory_gb` free, so several
runs share a node when they fit, and queues the others (PENDING).

Jobs outlive the driver: their submission id is recorded in runs.csv, and a restarted sweep
re-attaches to the jobs still pending or running instead of submitting them again. The id is a
function of the run directory and the launch number (`submission_id`), so even a driver killed
between `submit_job` and writing runs.csv cannot launch a second copy: the next one finds the
id taken by a live job and adopts it.

Exit codes: Ray records the entrypoint's (`driver_exit_code`); `ray job stop` sends SIGTERM and
waits `STOP_WAIT_S` before SIGKILL, time for the trainer to checkpoint and exit 75, so a stopped
job is `stopped` (resumable), never failed. A run of several hosts is refused for now.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from bigmodel import exit_codes
from bigmodel.config import ConfigError
from bigmodel.scaling.backends import ClusterLost, LOG_FILE, SubmitFailed, append_log_line, prepare_run_dir

MISSING_RAY = "--backend ray needs Ray's job API: pip install -e '.[ray]'"
STOP_WAIT_S = 120  # between `ray job stop`'s SIGTERM and its SIGKILL: time to write a checkpoint (Ray's default is 3 s)
LIVE_STATUSES = ("PENDING", "RUNNING")
GONE = ""  # a job the cluster does not know (a new cluster, or never submitted)


def load_job_submission():
    """Import Ray's job submission module, or the one error line that says how to install it."""
    try:
        from ray import job_submission
    except ImportError:
        raise ConfigError(MISSING_RAY) from None
    return job_submission


def connect(address: str | None, job_submission=None):
    """A JobSubmissionClient for `address` (auto, ray://host:10001, http://host:8265), or one
    error line saying the cluster is not reachable."""
    job_submission = job_submission or load_job_submission()
    if address not in (None, "auto"):  # Ray lets these variables override the address it is given: the flag must win
        for variable in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
            os.environ.pop(variable, None)
    try:
        return job_submission.JobSubmissionClient(address)
    except Exception as error:  # noqa: BLE001 — ConnectionError, ValueError, RuntimeError: all "no cluster there"
        text = " ".join(str(error).split())[:200] or type(error).__name__
        raise ConfigError(f"--backend ray: no Ray cluster at --ray-address {address} ({text}): "
                          "start one (ray start --head) or pass its address, e.g. --ray-address http://HEAD:8265") from None


# ----------------------------------------------------------------------------- the job


def entrypoint(command: list[str], run_dir: Path, cwd: str | Path) -> str:
    """The shell line Ray runs: the trainer itself (exec: Ray's SIGTERM reaches it, and its exit
    code is the job's), from the driver's directory, its output appended to the run's log."""
    return f"cd {shlex.quote(str(cwd))} && exec {shlex.join(command)} >> {shlex.quote(str(Path(run_dir) / LOG_FILE))} 2>&1"


def submission_id(run_dir: Path, launch: int) -> str:
    """The job id of a run's `launch`-th submission: the run's name and a hash of its absolute
    directory (two sweeps on one cluster never collide), so a restarted driver can find it."""
    path = str(Path(run_dir).resolve())
    digest = hashlib.sha1(path.encode()).hexdigest()[:8]
    return f"bigmodel-{Path(path).name}-{digest}-{launch}"


def job_options(resources) -> dict:
    """submit_job's resource arguments for one run; what is not asked is left out (Ray's default)."""
    options = {"entrypoint_num_cpus": resources.cpus or 1}  # a trainer keeps one core busy at least
    if resources.gpus:
        options["entrypoint_num_gpus"] = resources.gpus
    if resources.memory_gb:
        options["entrypoint_memory"] = int(resources.memory_gb * 1024**3)
    return options


def runtime_env() -> dict:
    """Environment variables only: the code and the workdir are already on every node."""
    return {"env_vars": {"PYTHONUNBUFFERED": "1", "RAY_JOB_STOP_WAIT_TIME_S": str(STOP_WAIT_S)}}


def exit_code_of(status: str, driver_exit_code: int | None) -> int | None:
    """The run's exit code from a Ray job's status: None while pending or running; a stopped job
    is STOPPED (resumable); a failed one is the trainer's own code (75 if it was stopped some
    other way), or FAILED when the entrypoint never ran (a node lost, a runtime env failed)."""
    if status in LIVE_STATUSES:
        return None
    if status == "SUCCEEDED":
        return exit_codes.OK
    if status == "STOPPED":
        return exit_codes.STOPPED
    if isinstance(driver_exit_code, int) and driver_exit_code != 0:
        return driver_exit_code
    return exit_codes.FAILED


def host_of(job_info) -> str:
    """The node a job's entrypoint runs on, from its agent's address ("" until it is placed)."""
    address = getattr(job_info, "driver_agent_http_address", None) or ""
    return (urlsplit(address).hostname or "") if "://" in address else ""


def job_status(client, handle: str) -> str:
    """The job's status name ("RUNNING", ...), GONE if the cluster does not know it. Any other
    error (the head unreachable a moment) raises: the caller keeps watching, never resubmits."""
    try:
        status = client.get_job_status(handle)
    except RuntimeError as error:
        if "does not exist" in str(error):
            return GONE
        raise
    return str(getattr(status, "value", status))


class RayBackend:
    """Each run one Ray job; `max_in_flight` (--jobs) caps the jobs submitted at once (None: all,
    and Ray queues what does not fit)."""

    name = "ray"
    outlives_driver = True
    poll_interval_s = 2.0
    # A head that restarts answers again within a minute or two; one gone for this long is lost.
    unreachable_limit_s = 300.0

    def __init__(self, address: str | None = "auto", max_in_flight: int | None = None, client=None):
        self.client = client or connect(address)
        self.max_in_flight = max_in_flight
        self.jobs: dict[str, Path] = {}  # handle (submission id) → run directory
        self.hosts: dict[str, str] = {}
        self.unreachable_since: float | None = None  # time.monotonic() of the first unanswered poll in a row

    def check(self, runs) -> None:
        """Refuse runs of several hosts before anything starts: a Ray job is one process."""
        for run in runs:
            if run.resources.hosts > 1:
                raise ConfigError(f"run {run.name} asks for {run.resources.hosts} hosts; the ray backend runs each run as one "
                                  "process on one node: use --backend slurm, or --hosts 1")

    def can_start(self, resources) -> bool:
        return self.max_in_flight is None or len(self.jobs) < self.max_in_flight

    def submit(self, run, run_dir: Path, resources) -> str:
        command = run.command(run_dir, python=sys.executable)
        prepare_run_dir(run, run_dir, command, how="ray: ")
        launch = 1
        while True:  # the first id no earlier launch of this run took
            handle = submission_id(run_dir, launch)
            status = self.status_or_raise(handle)
            if status in LIVE_STATUSES:  # a driver died before recording it: watch it, never launch twice
                self.jobs[handle] = run_dir
                return handle
            if status == GONE:
                break
            launch += 1
        try:
            self.client.submit_job(entrypoint=entrypoint(command, run_dir, os.getcwd()), submission_id=handle,
                                   runtime_env=runtime_env(), metadata={"bigmodel_run": run.name}, **job_options(resources))
        except Exception as error:  # noqa: BLE001 — Ray refused it (resources no node has, the head down): record its words
            text = " ".join(str(error).split()) or type(error).__name__
            raise SubmitFailed(f"ray refused the job: {text[:300]}") from None
        self.jobs[handle] = run_dir
        return handle

    def status_or_raise(self, handle: str) -> str:
        try:
            return job_status(self.client, handle)
        except Exception as error:  # noqa: BLE001 — without an answer a submission could be a second copy
            raise SubmitFailed(f"ray did not answer for job {handle}: {' '.join(str(error).split())[:300]}") from None

    def poll(self, handle: str) -> int | None:
        try:
            info = self.client.get_job_info(handle)
        except Exception as error:  # noqa: BLE001 — the head unreachable a moment: keep watching, for a while
            self.note_unreachable(error)
            return None
        self.unreachable_since = None
        status = str(getattr(info.status, "value", info.status))
        code = exit_code_of(status, info.driver_exit_code)
        if code is None:
            return None
        if status == "FAILED" and info.driver_exit_code is None:  # the trainer never ran or its node died: Ray's message says which
            append_log_line(self.jobs[handle], f"ray job {handle} ended without the trainer's exit code: {' '.join(str(info.message).split())[:300]}")
        del self.jobs[handle]
        return code

    def note_unreachable(self, error: Exception, now: float | None = None) -> None:
        """Raise ClusterLost once the cluster has not answered for `unreachable_limit_s`."""
        now = time.monotonic() if now is None else now
        if self.unreachable_since is None:
            self.unreachable_since = now
        elif now - self.unreachable_since > self.unreachable_limit_s:
            raise ClusterLost(f"the Ray cluster has not answered for {now - self.unreachable_since:.0f}s "
                              f"({' '.join(str(error).split())[:160]}): rerun the same command once it is back; "
                              "runs still in flight re-attach, the others resume")

    def is_alive(self, handle: str) -> bool:
        try:
            return handle in self.jobs and job_status(self.client, handle) in LIVE_STATUSES
        except Exception:  # noqa: BLE001 — unknown counts as alive: watching too long is harmless
            return handle in self.jobs

    def reattach(self, handle: str, run_dir: Path, resources) -> bool:
        """Watch a job an earlier driver submitted, if it is still pending or running."""
        try:
            status = job_status(self.client, handle)
        except Exception as error:  # noqa: BLE001 — relaunching a run whose job may still run would be a second copy
            raise ConfigError(f"--backend ray: cannot tell whether job {handle} still runs ({' '.join(str(error).split())[:200]}): "
                              "rerun when the cluster answers") from None
        if status not in LIVE_STATUSES:
            return False
        self.jobs[handle] = run_dir
        return True

    def cancel(self, handle: str) -> int | None:
        """ray job stop: the trainer gets SIGTERM, checkpoints and exits 75."""
        self.client.stop_job(handle)
        return None

    def stopped_by_scheduler(self, handle: str) -> bool:
        return False  # Ray sets no time limit; a stopped job was stopped by `ray job stop`

    def host(self, handle: str) -> str:
        if handle in self.jobs and not self.hosts.get(handle):
            try:
                self.hosts[handle] = host_of(self.client.get_job_info(handle))
            except Exception:  # noqa: BLE001 — only a label
                return ""
        return self.hosts.get(handle, "")
