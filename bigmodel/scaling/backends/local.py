"""The local backend: each run a subprocess of the sweep driver, `--jobs` at a time.

- CPUs: with --jobs > 1 the cores this process may use are split into disjoint sets, one per
  concurrent run, and each child is pinned to its set with matching thread counts, so parallel
  runs do not oversubscribe the cores.
- GPUs: a run that asks for `gpus` (per host; it has one host here) gets that many devices of
  its own through CUDA_VISIBLE_DEVICES, taken from the devices the driver may use
  (CUDA_VISIBLE_DEVICES if set, else `nvidia-smi -L`); a run waits until enough are free, so no
  two runs ever share a GPU. A run asking for 0 GPUs is left alone: it sees what the driver sees.
- Children never outlive the driver: Linux sends them SIGTERM when it dies (even by kill -9),
  they checkpoint and exit 75, and a restarted sweep resumes them from their checkpoint.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from bigmodel import files
from bigmodel.config import ConfigError
from bigmodel.scaling.backends import LOG_FILE, SubmitFailed, prepare_run_dir

PR_SET_PDEATHSIG = 1  # linux/prctl.h
RUN_LOCK_WAIT_S = 120.0  # how long a run's orphaned trainer may take to checkpoint and exit


# ----------------------------------------------------------------------------- CPUs


def cpu_slots(jobs: int) -> list[list[int]]:
    """Split the CPUs this process may use into `jobs` disjoint sets (shared when too few)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    per_job = max(1, len(cpus) // jobs)
    return [[cpus[(slot * per_job + offset) % len(cpus)] for offset in range(per_job)] for slot in range(jobs)]


def child_environment(threads: int, pinned: bool, gpus: list[str] | None = None,
                      base: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Thread counts for one of several jobs sharing the cores, so they do not oversubscribe;
    with `gpus`, the only devices the child may see."""
    environment = dict(base, PYTHONUNBUFFERED="1")
    if pinned:
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            environment[variable] = str(threads)
        if threads == 1:
            flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
            environment["XLA_FLAGS"] = f"{environment.get('XLA_FLAGS', '')} {flags}".strip()
    if gpus:
        environment["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    return environment


# ----------------------------------------------------------------------------- GPUs


def gpus_from_environment(environment: Mapping[str, str]) -> list[str] | None:
    """The devices CUDA_VISIBLE_DEVICES allows ([] when it hides them all), None when unset."""
    if "CUDA_VISIBLE_DEVICES" not in environment:
        return None
    devices = [device.strip() for device in environment["CUDA_VISIBLE_DEVICES"].split(",") if device.strip()]
    return [] if devices[:1] == ["-1"] else devices  # CUDA stops at the first invalid id; -1 is the usual "none"


def gpus_from_nvidia_smi(listing: str) -> list[str]:
    """Device indices from `nvidia-smi -L` ("GPU 0: NVIDIA H100 ... (UUID: ...)" per line)."""
    return [str(index) for index, line in enumerate(line for line in listing.splitlines() if line.startswith("GPU "))]


def visible_gpus(environment: Mapping[str, str] = os.environ) -> list[str]:
    """The GPUs the driver may hand out: CUDA_VISIBLE_DEVICES if set, else what nvidia-smi lists,
    else none."""
    devices = gpus_from_environment(environment)
    if devices is not None:
        return devices
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):  # no driver, no GPU
        return []
    return gpus_from_nvidia_smi(listing)


def assign_gpus(free: list[str], count: int) -> list[str] | None:
    """The `count` devices a run gets from `free` (the first ones, in order), or None while too
    few are free. Taking them out of `free` is the caller's part: no device is ever in two runs."""
    if count < 1:
        return []
    return list(free[:count]) if len(free) >= count else None


# ----------------------------------------------------------------------------- processes


def stop_with_parent() -> None:
    """Ask Linux to SIGTERM this (child) process when the sweep driver dies, even by kill -9:
    the trainer then checkpoints and exits 75, and a restarted sweep resumes it instead of
    racing an orphan. Elsewhere (no prctl) orphans finish on their own."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def start_process(command: list[str], run_dir: Path, cpus: list[int] | None, environment: dict[str, str]) -> subprocess.Popen:
    """Start the trainer with its output appended to train.log, pinned to `cpus`."""
    log = open(run_dir / LOG_FILE, "a")

    def prepare_child() -> None:
        # The parent is single-threaded (no thread pool below), so preexec_fn is safe here.
        stop_with_parent()
        if cpus:  # XLA sizes its thread pool from the affinity mask: pinning sets its thread count
            os.sched_setaffinity(0, cpus)

    try:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=environment, preexec_fn=prepare_child)
    finally:
        log.close()  # the child holds its own copy of the descriptor


class LocalBackend:
    """Runs as children of the driver: `jobs` at a time, each on its own cores and GPUs."""

    name = "local"
    outlives_driver = False
    poll_interval_s = 0.5

    def __init__(self, jobs: int = 1, gpus: list[str] | None = None, start=start_process):
        self.cpu_sets = cpu_slots(jobs) if jobs > 1 else [None]
        self.free_slots = list(range(len(self.cpu_sets)))
        self.free_gpus = list(gpus) if gpus is not None else None  # None: look them up when a run first asks
        self.start = start
        self.launches: dict[str, tuple[subprocess.Popen, int, list[str]]] = {}  # handle → (process, slot, gpus)
        self.hostname = socket.gethostname()

    def gpus(self) -> list[str]:
        if self.free_gpus is None:
            self.free_gpus = visible_gpus()
        return self.free_gpus

    def check(self, runs) -> None:
        """Refuse, before anything starts, runs this machine can never hold."""
        for run in runs:
            if run.resources.hosts > 1:
                raise ConfigError(f"run {run.name} asks for {run.resources.hosts} hosts; the local backend runs on this one: "
                                  "use --backend slurm, or --hosts 1")
        wanted = max((run.resources.gpus for run in runs), default=0)
        if wanted and wanted > len(self.gpus()):
            have = f"only {len(self.gpus())} ({','.join(self.gpus())})" if self.gpus() else "none (no CUDA_VISIBLE_DEVICES, no nvidia-smi)"
            raise ConfigError(f"runs ask for up to {wanted} GPUs each and this machine has {have}: "
                              "run on a GPU machine, use --backend slurm, or pass --gpus 0")

    def can_start(self, resources) -> bool:
        return bool(self.free_slots) and (resources.gpus == 0 or assign_gpus(self.gpus(), resources.gpus) is not None)

    def submit(self, run, run_dir: Path, resources) -> str:
        command = run.command(run_dir, python=sys.executable)
        slot = self.free_slots.pop(0)
        gpus = assign_gpus(self.gpus(), resources.gpus) if resources.gpus else []
        for device in gpus:
            self.free_gpus.remove(device)
        try:
            prepare_run_dir(run, run_dir, command, how=f"GPUs {','.join(gpus)}: " if gpus else "")
            files.wait_until_unlocked(run_dir, timeout_s=RUN_LOCK_WAIT_S)  # a run orphaned by a killed driver is still checkpointing
            cpus = self.cpu_sets[slot]
            process = self.start(command, run_dir, cpus, child_environment(len(cpus) if cpus else 0, bool(cpus), gpus))
        except files.WorkdirBusy as error:  # another process still trains this run: leave it be
            self.release(slot, gpus)
            raise SubmitFailed(str(error)) from None
        handle = str(process.pid)
        self.launches[handle] = (process, slot, gpus)
        return handle

    def release(self, slot: int, gpus: list[str]) -> None:
        self.free_slots.append(slot)
        if gpus:
            self.free_gpus.extend(gpus)

    def poll(self, handle: str) -> int | None:
        process, slot, gpus = self.launches[handle]
        code = process.poll()
        if code is not None:
            del self.launches[handle]
            self.release(slot, gpus)
        return code

    def is_alive(self, handle: str) -> bool:
        return handle in self.launches and self.launches[handle][0].poll() is None

    def reattach(self, handle: str, run_dir: Path, resources) -> bool:
        return False  # a child of an earlier driver stopped with it (PDEATHSIG): it is resumed instead

    def cancel(self, handle: str) -> int | None:
        """SIGTERM (the trainer checkpoints) and wait for the exit code."""
        process = self.launches[handle][0]
        process.terminate()
        process.wait()
        return self.poll(handle)

    def host(self, handle: str) -> str:
        return self.hostname

    def stopped_by_scheduler(self, handle: str) -> bool:
        return False  # a local run is stopped only by its user (or its driver's own stop)
