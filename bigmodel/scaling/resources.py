"""What one run of a sweep asks of the machines: hosts, and per host CPUs, GPUs and memory, and
a time limit.

Every quantity but `hosts` is per host, because each host runs one process of the run (one
Slurm task per node; `jax.distributed` joins them): a run of `hosts=2, gpus=8` trains on 16 GPUs.
A study declares them with `Study(resources=lambda plan: {...})` (a function of the
`sweep.RunPlan`, like `rules`), the sweep's command line overrides them for every run, and the
defaults fit today's CPU runs: one host, no GPUs managed, the scheduler's own CPU, memory and
time defaults. Backends read them: the local backend hands out GPUs, Slurm turns them into
sbatch parameters (`backends.slurm`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from bigmodel.config import ConfigError


@dataclasses.dataclass(frozen=True)
class Resources:
    """cpus: per host; None leaves it to the backend (local: the cores split over --jobs).
    gpus: per host; 0 means GPUs are not managed (a local run sees what the driver sees).
    hosts: processes (one per host) of one run.
    memory_gb: per host; None: the scheduler's default.
    time_limit_min: wall-clock limit of one launch; None: the partition's default (Slurm),
      unlimited locally.
    partition, account, slurm_options: where a Slurm job goes and any other sbatch options
      ({"qos": "high", "exclusive": True}, kept as sorted pairs); only `--backend slurm` reads
      them, so one experiment runs on any backend. The command line's --partition and --account
      replace them, its --slurm-option entries are added over them."""

    cpus: int | None = None
    gpus: int = 0
    hosts: int = 1
    memory_gb: float | None = None
    time_limit_min: float | None = None
    partition: str | None = None
    account: str | None = None
    slurm_options: tuple[tuple[str, str | bool], ...] = ()


RESOURCE_KEYS = tuple(field.name for field in dataclasses.fields(Resources))
SMALLEST_COUNT = {"cpus": 1, "gpus": 0, "hosts": 1}  # whole numbers; memory_gb and time_limit_min: any number > 0


TEXT_KEYS = ("partition", "account")


def checked_slurm_options(value: Any, where: str) -> tuple[tuple[str, str | bool], ...]:
    """A study's {"qos": "high", "exclusive": True} as sorted pairs, each checked as
    --slurm-option checks it (bigmodel.scaling.backends.slurm.parse_slurm_options)."""
    from bigmodel.scaling.backends.slurm import parse_slurm_options  # no submitit: only the option rules

    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: resources slurm_options={value!r} must be a dict such as {{'qos': 'high', 'exclusive': True}}")
    texts = [str(key) if option is True else f"{key}={option}" for key, option in value.items()]
    try:
        return tuple(sorted(parse_slurm_options(texts).items()))
    except ConfigError as error:
        raise ConfigError(f"{where}: resources slurm_options: {error}") from None


def checked_value(key: str, value: Any, where: str) -> Any:
    """One resource value, or a ConfigError naming `where` it came from and what it must be."""
    if value is None and getattr(Resources(), key) is None:
        return None
    if key == "slurm_options":
        return checked_slurm_options(value, where)
    if key in TEXT_KEYS:
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where}: resources {key}={value!r} must be a non-empty string, e.g. 'gpu'")
        return value
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if key in SMALLEST_COUNT:
        if not (is_number and isinstance(value, int) and value >= SMALLEST_COUNT[key]):
            raise ConfigError(f"{where}: resources {key}={value!r} must be a whole number >= {SMALLEST_COUNT[key]}")
    elif not (is_number and value > 0):
        raise ConfigError(f"{where}: resources {key}={value!r} must be a number > 0")
    return value


def resources_from(mapping: Mapping[str, Any] | None, where: str) -> Resources:
    """A `Resources` from a study's mapping ({} or None: the defaults), every key and value checked."""
    if mapping is None:
        return Resources()
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{where}: resources must return a dict such as {{'gpus': 1}}, got {type(mapping).__name__}")
    unknown = [key for key in mapping if key not in RESOURCE_KEYS]
    if unknown:
        raise ConfigError(f"{where}: unknown resources key {unknown[0]!r}: use {', '.join(RESOURCE_KEYS)}")
    return Resources(**{key: checked_value(key, value, where) for key, value in mapping.items()})


def with_overrides(resources: Resources, overrides: Mapping[str, Any]) -> Resources:
    """`resources` with the command line's values (None: not given) put in place of the study's."""
    given = {key: value for key, value in overrides.items() if value is not None}
    return dataclasses.replace(resources, **given) if given else resources


def as_dict(resources: Resources) -> dict[str, Any]:
    """For `sweep --dry-run --json`."""
    return {**dataclasses.asdict(resources), "slurm_options": dict(resources.slurm_options)}
