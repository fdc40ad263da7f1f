"""Process-wide JAX setup, done once by the CLI before a command compiles anything.

- `join_processes`: `jax.distributed` for multi-host runs. Explicit flags win; without them,
  JAX's own cluster detection runs when the process was started by Slurm (`srun`), Open MPI
  (`mpirun`) or on a multi-host TPU VM, so the same command works under each launcher.
- `set_gpu_memory_fraction`: the share of each GPU XLA preallocates, 0.9 unless set.
- `use_fake_cpu_devices`: N CPU devices standing in for a mesh this machine lacks (`plan --devices`).
- `enable_compilation_cache`: XLA executables are cached on disk and reused by later processes
  with the same program (a resumed run, every process of a sweep, the next benchmark), which
  removes most of a restart's compile time. Under `$XDG_CACHE_HOME/bigmodel/jax` (~/.cache),
  or `BIGMODEL_COMPILATION_CACHE=<dir>`; `BIGMODEL_COMPILATION_CACHE=off` turns it off.
  A `JAX_COMPILATION_CACHE_DIR` set by the user is left alone.
"""

from __future__ import annotations

import math
import os
import re
import signal
from pathlib import Path
from typing import Mapping

from bigmodel.exit_codes import ConfigError

CACHE_VARIABLE = "BIGMODEL_COMPILATION_CACHE"
MEMORY_FRACTION_VARIABLE = "XLA_PYTHON_CLIENT_MEM_FRACTION"
DEFAULT_GPU_MEMORY_FRACTION = "0.9"  # JAX's own default, 0.75, leaves a fifth of an H100 idle


def set_gpu_memory_fraction(environment=os.environ) -> None:
    """Let XLA preallocate 90% of each GPU unless the user chose (must precede importing jax)."""
    environment.setdefault(MEMORY_FRACTION_VARIABLE, DEFAULT_GPU_MEMORY_FRACTION)
    gpu_memory_fraction(environment)  # a value of the user's that XLA cannot use is one line now


def use_fake_cpu_devices(count: int, environment=os.environ) -> None:
    """Run on `count` fake CPU devices (must precede importing jax)."""
    environment["JAX_PLATFORMS"] = "cpu"
    environment["XLA_FLAGS"] = f"{environment.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={count}".strip()


def gpu_memory_fraction(environment: Mapping[str, str] = os.environ) -> float:
    """$XLA_PYTHON_CLIENT_MEM_FRACTION as a share of each GPU in (0, 1], or ConfigError."""
    text = environment.get(MEMORY_FRACTION_VARIABLE, DEFAULT_GPU_MEMORY_FRACTION)
    try:
        fraction = float(text)
    except ValueError:
        fraction = math.nan
    if not 0 < fraction <= 1:  # also NaN
        raise ConfigError(f"{MEMORY_FRACTION_VARIABLE}={text!r} must be a share of each GPU in (0, 1], e.g. 0.9: fix or unset it")
    return fraction


def detected_cluster(environment: Mapping[str, str]) -> str | None:
    """The launcher that started this process as one of several, or None for a lone process."""

    def count(name: str) -> int:
        try:
            return int(environment.get(name, "1"))
        except ValueError:
            return 1

    if "SLURM_JOB_ID" in environment and count("SLURM_NTASKS") > 1:
        return "slurm"
    if count("OMPI_COMM_WORLD_SIZE") > 1:
        return "openmpi"
    if len([host for host in environment.get("TPU_WORKER_HOSTNAMES", "").split(",") if host]) > 1:
        return "tpu"
    return None


COORDINATOR = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):(\d{1,5})")  # host:port, or [IPv6]:port


def check_process_flags(coordinator: str | None, num_processes: int | None, process_id: int | None,
                        environment: Mapping[str, str] = os.environ) -> None:
    """The multi-host flags make sense together, or ConfigError (before JAX, which would hang,
    raise a traceback or, without --coordinator, silently run one process)."""
    if coordinator is None:
        if num_processes is not None or process_id is not None:
            raise ConfigError("--num_processes and --process_id apply with --coordinator HOST:PORT (process 0's address): "
                              "add it, or drop them to run one process")
        return
    address = COORDINATOR.fullmatch(coordinator)
    if not address or not 1 <= int(address.group(2)) <= 65535:
        raise ConfigError(f"--coordinator {coordinator!r} is not HOST:PORT with a port from 1 to 65535, e.g. 10.0.0.1:1234")
    if (num_processes is None or process_id is None) and not detected_cluster(environment):
        raise ConfigError("--coordinator needs --num_processes N and --process_id I (0 to N-1) outside Slurm, Open MPI and TPU VMs")
    if num_processes is not None and process_id is not None and process_id >= num_processes:
        raise ConfigError(f"--process_id {process_id} must be below --num_processes {num_processes} (processes count from 0)")


def join_processes(coordinator: str | None, num_processes: int | None, process_id: int | None,
                   environment: Mapping[str, str] = os.environ) -> str | None:
    """Initialise jax.distributed when asked or when a launcher is detected (before any other
    JAX call); returns how the processes were joined, or None for a single process."""
    check_process_flags(coordinator, num_processes, process_id, environment)
    import jax

    if coordinator:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
        return "flags"
    cluster = detected_cluster(environment)
    if cluster:
        jax.distributed.initialize()  # JAX reads the launcher's environment itself
    return cluster


def user_cache_dir(environment: Mapping[str, str] = os.environ) -> Path:
    """bigmodel's cache home, by the XDG base-directory rule: $XDG_CACHE_HOME/bigmodel when that
    is an absolute path (the spec says to ignore a relative one), else ~/.cache/bigmodel."""
    base = environment.get("XDG_CACHE_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / "bigmodel"


def compilation_cache_dir(environment: Mapping[str, str] = os.environ) -> Path | None:
    """Where executables are cached, or None when the cache is off or the user set JAX's own."""
    if "JAX_COMPILATION_CACHE_DIR" in environment:
        return None
    chosen = environment.get(CACHE_VARIABLE, "")
    if chosen.lower() in ("off", "0", "none"):
        return None
    if chosen:
        return Path(chosen)
    return user_cache_dir(environment) / "jax"


def enable_compilation_cache(environment: Mapping[str, str] = os.environ) -> Path | None:
    directory = compilation_cache_dir(environment)
    if directory is None:
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", str(directory))
    return directory


# ----------------------------------------------------------------------------- stops while starting

EARLY_STOP = {"requested": False}


def note_early_stop_requests() -> None:
    """Remember a SIGTERM that arrives while `train` imports JAX, loads data or compiles, before
    its own handler exists (a scheduler's preemption in the first seconds): the trainer then exits
    STOPPED (75) before writing anything, instead of dying of the signal (-15, read as a failure).
    Raising from the handler instead would interrupt native module imports (an abort)."""
    signal.signal(signal.SIGTERM, lambda signum, frame: EARLY_STOP.update(requested=True))
