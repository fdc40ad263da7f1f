"""Where a sweep's runs execute: one small interface, one module per backend.

The runner (`bigmodel.scaling.runner`) owns the order of runs, retries and the registry; a
backend only launches and watches. Every launch runs the same command,
`python -m bigmodel train --config ... --workdir DIR/<run>` (`Run.command`), whose output goes to
DIR/<run>/train.log, so any run can be repeated by hand from DIR/<run>/command.sh.

    check(runs)                       refuse (ConfigError) runs it can never hold, before any starts
    can_start(resources) -> bool      room for one more run now (the local slots, a queue limit)
    submit(run, run_dir, resources)   launch; returns a handle (a pid, a Slurm or Ray job id), a string
    poll(handle) -> int | None        None while it runs, then its exit code (bigmodel.exit_codes)
    is_alive(handle) -> bool          still pending or running
    reattach(handle, run_dir, resources) -> bool   adopt a launch of an earlier driver; True if alive
    cancel(handle)                    stop it (the trainer checkpoints on SIGTERM)
    host(handle) -> str               where it runs, "" while unknown
    stopped_by_scheduler(handle) -> bool   after poll gave STOPPED: the scheduler stopped it (a
                                      time limit, a preemption), not a user: it is requeued

`outlives_driver` says whether launches survive the driver: local runs do not (they stop with
it, `local.stop_with_parent`), Slurm and Ray jobs do, and a restarted sweep re-attaches to them.

Backends that need an optional package (Slurm: submitit; Ray: ray[default]) import it only when chosen.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Protocol

LOG_FILE = "train.log"
COMMAND_FILE = "command.sh"
BACKENDS = ("local", "slurm", "ray")


class ClusterLost(RuntimeError):
    """The cluster stopped answering for longer than a blip (a Ray head gone): the driver stops
    watching, leaves its runs recorded in flight, and a rerun re-attaches to those still alive.
    The message is the one line to show."""


class SubmitFailed(RuntimeError):
    """A launch that did not happen (a busy run directory, a rejected sbatch); the message is
    the one line the registry records."""


class Backend(Protocol):
    name: str
    outlives_driver: bool
    poll_interval_s: float

    def check(self, runs) -> None: ...
    def can_start(self, resources) -> bool: ...
    def submit(self, run, run_dir: Path, resources) -> str: ...
    def poll(self, handle: str) -> int | None: ...
    def is_alive(self, handle: str) -> bool: ...
    def reattach(self, handle: str, run_dir: Path, resources) -> bool: ...
    def cancel(self, handle: str) -> int | None: ...
    def host(self, handle: str) -> str: ...
    def stopped_by_scheduler(self, handle: str) -> bool: ...


def prepare_run_dir(run, run_dir: Path, command: list[str], how: str = "") -> None:
    """Write command.sh and open train.log with a header line for this launch: the only files a
    backend writes in a run directory (the trainer checks the run and writes the rest)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / COMMAND_FILE).write_text(
        "#!/bin/sh\n# re-run (or resume) this run by hand from the repo root\n" + run.command_line(run_dir) + "\n")
    with open(run_dir / LOG_FILE, "a") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {how}{shlex.join(command)}\n")


def append_log_line(run_dir: Path, text: str) -> None:
    """A line from the driver in a run's log (why a launch ended without an exit code): the
    registry's error column is the log's last line."""
    with open(run_dir / LOG_FILE, "a") as log:
        log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")


def outlives_driver(backend_name: str) -> bool:
    """Whether a launch recorded under `backend_name` may still run after its driver died:
    Slurm and Ray jobs do; local children stop with their driver (`local.stop_with_parent`)."""
    return backend_name in ("slurm", "ray")
