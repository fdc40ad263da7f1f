"""A run's directory: refuse to mix runs, claim it with a lock, record the config it runs.

Nothing here writes before every check has passed: a refused command leaves the directory as
it found it (the issue behind this: a failed `train` used to rewrite config.json). The rules
serve every command that writes a run: `train`, and `finetune` through its own `RunDirectory`
(its lock, what may precede its config.json, the words of its messages).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import ml_collections

from bigmodel import config as config_lib, files
from bigmodel.checkpoint import CHECKPOINT_DIR

# Keys that may change between a run and its resumption without changing what is computed
# (train.steps too, under a constant schedule: see `changes_that_alter_the_run`). `logging`
# covers runs saved before the group existed, and W&B turned on for a resumed run.
RESUMABLE_CHANGES = ("train.log_every", "mesh.", "checkpoint.", "eval.every_steps", "logging")
# The sweep runner's, before config.json: the log, the command, the lock, and the Slurm backend's
# submitit folder (bigmodel.scaling.backends.slurm.SLURM_FOLDER).
RUNNER_FILES = ("train.log", "command.sh", files.LOCK_FILE, "slurm")


@dataclasses.dataclass(frozen=True)
class RunDirectory:
    """One command's run directory: whose lock it is, what may precede its config.json, and the
    words its messages use (each command's messages are part of its interface)."""

    command: str  # the lock's owner, as `files.exclusive_workdir` names it
    may_precede_config: tuple[str, ...]  # file names a claimed directory holds before config.json
    resumable: str  # what an existing directory may hold: "a run"
    repair: str  # how to mend a config.json that is not JSON
    called: str  # how the messages name the directory


TRAIN_RUN = RunDirectory("train", RUNNER_FILES, "a run", "restore it from the run's command", "workdir")


def _config_changes(saved: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved configs."""
    changes = []
    for key in sorted(set(saved) | set(new)):
        dotted = f"{prefix}{key}"
        old_value, new_value = saved.get(key), new.get(key)
        if isinstance(old_value, dict) and isinstance(new_value, dict):
            changes += _config_changes(old_value, new_value, dotted + ".")
        elif old_value != new_value:
            changes.append(f"{dotted}: {old_value!r} -> {new_value!r}")
    return changes


def changes_that_alter_the_run(saved: dict, new: dict) -> list[str]:
    """Differences that would make a resumed run compute something else than it started to.

    train.steps may change only under a constant schedule: cosine and WSD are functions of the
    run length, and changing it mid-run would bend the learning-rate curve."""
    allowed = RESUMABLE_CHANGES + (("train.steps",) if new["optim"]["schedule"] == "constant" else ())
    return [change for change in _config_changes(saved, new) if not change.startswith(allowed)]


def _left_before_config(path: Path, kind: RunDirectory) -> bool:
    """Files that may precede config.json: the runner's, the lock, an empty checkpoints/ of an
    attempt that failed before its first step."""
    if path.name == CHECKPOINT_DIR and path.is_dir():
        return not any(path.iterdir())
    return path.name in kind.may_precede_config


def saved_config(workdir: Path, kind: RunDirectory = TRAIN_RUN) -> dict | None:
    """workdir/config.json as saved, or None for a directory to start in (new, or holding only
    what may precede config.json). ConfigError for a file, a config.json that is not JSON, or a
    directory of someone else's files. Reads only."""
    if workdir.exists() and not workdir.is_dir():
        raise config_lib.ConfigError(f"--workdir {workdir} is a file: pass a directory (new or {kind.resumable} to resume)")
    config_path = workdir / "config.json"
    if config_path.exists():
        saved = files.read_json(config_path)
        if saved is None:
            raise config_lib.ConfigError(f"{config_path} is not valid JSON: {kind.repair}, or use a new --workdir")
        return saved
    if workdir.exists() and not all(_left_before_config(path, kind) for path in workdir.iterdir()):
        raise config_lib.ConfigError(f"{kind.called} {workdir} exists and is not a bigmodel run (no config.json): pick a new --workdir")
    return None


def check(config: ml_collections.ConfigDict, workdir: Path) -> None:
    """Refuse to mix runs: an existing workdir must hold this same run (resume), or nothing of
    a user's (the sweep runner's train.log and command.sh are expected). Reads only."""
    saved = saved_config(workdir)
    if saved is None:
        return
    changes = changes_that_alter_the_run(config_lib.with_later_keys(saved), json.loads(config_lib.to_json(config)))
    if changes:
        raise config_lib.ConfigError(
            f"workdir {workdir} holds a run with a different config ({'; '.join(changes[:3])}): use a new --workdir"
        )


def claim(workdir: Path, kind: RunDirectory = TRAIN_RUN):
    """Create the workdir and hold its lock for this process's life (process 0 only: the
    processes of one multi-host run share it). Returns the lock to keep alive."""
    if jax.process_index():
        return None
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        return files.exclusive_workdir(workdir, kind.command)
    except files.WorkdirBusy as error:
        raise config_lib.ConfigError(str(error)) from None
    except OSError as error:
        raise config_lib.ConfigError(f"cannot write to --workdir {workdir}: {error.strerror}: pick a writable directory") from None


def write_config(config: ml_collections.ConfigDict, workdir: Path) -> None:
    """config.json as this attempt runs it (resumable changes such as log_every included)."""
    text = config_lib.to_json(config) + "\n"
    path = workdir / "config.json"
    if not path.exists() or path.read_text() != text:
        files.write_atomically(path, text)
