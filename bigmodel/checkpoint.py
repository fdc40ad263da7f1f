"""Orbax checkpoints of the whole TrainState: async saves, keep N, restore onto any mesh.

Which steps are saved and kept: every `checkpoint.every_steps` and the last, of which the
`checkpoint.keep` newest stay (rolling); besides them, "kept steps" are saved and never deleted:
1, 2, 4, 8, ... under `checkpoint.schedule=log` (Pythia's log-spaced early checkpoints, for eval
curves and for branching cooldowns off a run) and any `checkpoint.keep_steps`. Orbax deletes
through one preservation policy: the newest `keep` of any kind, or a kept step.

Restores always pass a target whose leaves are `jax.ShapeDtypeStruct`s carrying the *current*
shardings, so a checkpoint written on 8 devices lands on 1 (or the reverse) without a copy step.

A damaged checkpoint (files truncated or overwritten, a disk that lost blocks) is never fatal
while an older one is intact: `restore_newest_readable` warns once per unreadable step and falls
back. Training moves the unreadable step aside (never deletes it) so it can write that step
again; evaluation only reads.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from etils import epath

from bigmodel import exit_codes, files

CHECKPOINT_DIR = "checkpoints"
UNREADABLE_DIR = "checkpoints_unreadable"  # beside CHECKPOINT_DIR: orbax must not see these as steps
READING_DIR = "checkpoints_reading"  # beside CHECKPOINT_DIR: readers' hard-linked snapshots, one folder per reader pid
LISTING_TRIES = 5  # a listing that loses a race with a trainer deleting a step is simply taken again


class NoReadableCheckpoint(exit_codes.Failed):
    """Every checkpoint of a run failed to restore; the message is the one line to show (exit 1)."""


class ShapeMismatch(ValueError):
    """A checkpoint holds arrays of other shapes than the model asks for (another model's
    checkpoint, or a hand-edited config.json); the message is the one line to show."""


def checkpoint_dir(workdir: str | Path) -> epath.Path:
    """<workdir>/checkpoints as an absolute local path, or kept as a URL (gs://, s3://, ...):
    `pathlib` would turn "gs://b/run" into the local directory "gs:/b/run"."""
    text = str(workdir)
    root = epath.Path(text) if "://" in text else epath.Path(os.path.abspath(text))
    return root / CHECKPOINT_DIR


def saved_steps(workdir: str | Path) -> list[int]:
    """The finalized steps under <workdir>/checkpoints, oldest first ([] if none), from the listing alone.

    No CheckpointManager: its constructor is a barrier of all processes, and a check that only
    some processes reach (a slower one finds the checkpoints/ that process 0 just made) hung a
    4-process run there.
    """
    directory = checkpoint_dir(workdir)
    for attempt in range(LISTING_TRIES):
        try:
            return sorted(ocp.utils.checkpoint_steps(directory)) if directory.is_dir() else []
        except FileNotFoundError:  # a step deleted by a live trainer between listing and looking at it
            if attempt == LISTING_TRIES - 1:
                raise
    return []


def newest_step(workdir: str | Path) -> int:
    """The newest finalized step under <workdir>/checkpoints (0 if none), from the listing alone."""
    return max(saved_steps(workdir), default=0)


def log_steps(last_step: int) -> list[int]:
    """1, 2, 4, ... up to last_step: each doubling of training gets a checkpoint."""
    return [2**power for power in range(last_step.bit_length())]


def kept_steps(config) -> frozenset[int]:
    """The steps saved besides the rolling ones and never deleted (see the module docstring).
    A config saved before these keys existed reads as schedule=rolling, no keep_steps."""
    schedule = config.checkpoint.get("schedule", "rolling")
    return frozenset((log_steps(config.train.steps) if schedule == "log" else []) + list(config.checkpoint.get("keep_steps", ())))


def is_kept_step(step: int, config) -> bool:
    """Whether the loop must save `step` although `checkpoint.every_steps` does not ask for it."""
    return step in kept_steps(config)


def make_manager(workdir: Path, keep: int, kept: frozenset[int] | tuple = ()) -> ocp.CheckpointManager:
    """The writer's manager (train, finetune): it keeps the `keep` newest steps and every step in
    `kept`, and removes the unfinished saves of an earlier attempt when it starts."""
    # Orbax's own "keep forever": a preservation policy (max_to_keep is its LatestN alone, and
    # the two options may not be combined). CustomSteps keeps its steps whatever their age.
    policies = ocp.checkpoint_managers
    preserve = policies.AnyPreservationPolicy([policies.LatestN(n=keep), policies.CustomSteps(sorted(kept))])
    # cleanup_tmp_directories: a save cut short (kill -9, a full disk) leaves <step>.orbax-checkpoint-tmp;
    # the run's next writer removes it. Only writers make this manager: readers use `reading_manager`.
    options = ocp.CheckpointManagerOptions(preservation_policy=preserve, enable_async_checkpointing=True, create=True,
                                           cleanup_tmp_directories=True)
    # The handler is named so that item_metadata (shapes, read before any restore) works.
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_handlers=ocp.StandardCheckpointHandler())


def reading_manager(directory, handler=None) -> ocp.CheckpointManager:
    """A manager that only reads `directory` (a run's checkpoints/, or a reader's snapshot of one
    step): it deletes and creates nothing, whoever else writes there. `handler`: orbax's
    StandardCheckpointHandler (whole states) unless given (PyTreeCheckpointHandler: partial
    restores). Its listing is taken again if a live trainer deletes a step under it."""
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)  # orbax's note that the manager is read-only
    options = ocp.CheckpointManagerOptions(read_only=True, save_interval_steps=0, create=False)
    try:
        for attempt in range(LISTING_TRIES):
            try:
                return ocp.CheckpointManager(epath.Path(str(directory)), options=options, item_handlers=handler or ocp.StandardCheckpointHandler())
            except FileNotFoundError:
                if attempt == LISTING_TRIES - 1:
                    raise
    finally:
        absl.setLevel(level)


def remove_stale_snapshots(workdir: str | Path) -> None:
    """Delete the snapshots of readers that died (kill -9) before removing their own."""
    for folder in (Path(workdir) / READING_DIR).glob("*"):
        if folder.name.isdigit() and not files.process_alive(int(folder.name)):
            shutil.rmtree(folder, ignore_errors=True)


class StepVanished(FileNotFoundError):
    """A step was deleted (by the trainer that keeps only its newest steps) before it could be pinned."""


@contextlib.contextmanager
def linked_snapshot(workdir: str | Path, step: int):
    """<workdir>/checkpoints_reading/<pid>, holding `step` as hard links to the run's files (None
    where links cannot be made: read-only, another owner): a trainer may delete the step
    meanwhile, the links keep its files for this reader. Removed on exit (a killed reader's, by
    the next reader). Raises StepVanished if the step vanished before it was linked."""
    root = Path(workdir) / READING_DIR / str(os.getpid())
    try:
        remove_stale_snapshots(workdir)
        shutil.rmtree(root, ignore_errors=True)
        files.link_tree(Path(str(checkpoint_dir(workdir))) / str(step), root / str(step))
        linked = root
    except FileNotFoundError:
        shutil.rmtree(root, ignore_errors=True)
        raise StepVanished(errno.ENOENT, f"checkpoint step {step} was deleted while it was linked") from None
    except OSError:
        linked = None
    try:
        yield linked
    finally:
        shutil.rmtree(root, ignore_errors=True)
        with contextlib.suppress(OSError):
            root.parent.rmdir()  # the last reader out removes the folder


def save(manager: ocp.CheckpointManager, step: int, state) -> None:
    manager.save(step, args=ocp.args.StandardSave(state))


def abstract_target(abstract_state, shardings):
    """ShapeDtypeStructs with the shardings the restored arrays should have."""
    return jax.tree.map(lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding), abstract_state, shardings)


def restore(manager: ocp.CheckpointManager, step: int, target):
    return manager.restore(step, args=ocp.args.StandardRestore(target))


def _leaf_shapes(tree) -> dict[str, tuple]:
    """{"params.blocks.mlp.kernel": shape} for arrays, metadata or ShapeDtypeStructs alike."""
    def name(path) -> str:
        return ".".join(str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key)))) for key in path)

    return {name(path): tuple(leaf.shape) for path, leaf in jax.tree_util.tree_leaves_with_path(tree) if hasattr(leaf, "shape")}


def check_shapes(manager: ocp.CheckpointManager, step: int, target) -> None:
    """Raise ShapeMismatch naming the first array whose saved shape differs from the target's.
    Unreadable metadata is left to the restore (and its fallback) to report."""
    try:
        saved = _leaf_shapes(manager.item_metadata(step))
    except Exception:  # noqa: BLE001 — a damaged checkpoint: the restore attempt reports it
        return
    wanted = _leaf_shapes(target)
    for name, shape in wanted.items():
        if name in saved and saved[name] != shape:
            raise ShapeMismatch(f"checkpoint step {step} in {manager.directory} was written by another model shape ({name}: saved {saved[name]}, "
                                f"this config {shape}): restore the run's own config.json or start a new --workdir")


def one_line(error: BaseException, limit: int = 160) -> str:
    text = " ".join(str(error).split(" See full TensorStore details")[0].split()) or type(error).__name__
    return f"{type(error).__name__}: {text[:limit]}{'…' if len(text) > limit else ''}"


def set_aside(manager: ocp.CheckpointManager, step: int) -> epath.Path:
    """Move step's directory to <workdir>/checkpoints_unreadable/<step>-<time> and forget it."""
    source = epath.Path(manager.directory) / str(step)
    destination = epath.Path(manager.directory).parent / UNREADABLE_DIR / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
    if jax.process_index() == 0:
        destination.parent.mkdir(parents=True, exist_ok=True)
        source.rename(destination)
    manager.reload()
    return destination


def restore_newest_readable(manager: ocp.CheckpointManager, target, *, move_unreadable: bool):
    """(state, step) from the newest checkpoint that restores, or (None, None) if none exists.

    Each unreadable step costs one `warning:` line on stderr. With `move_unreadable`, it is moved
    aside (see `set_aside`); otherwise it stays where it is. If every step is unreadable, raises
    NoReadableCheckpoint: starting over silently would throw a run away.
    """
    steps = sorted(manager.all_steps(), reverse=True)
    for step in steps:
        check_shapes(manager, step, target)  # another model's checkpoint is not "damaged": no fallback
        try:
            return restore(manager, step, target), step
        except Exception as error:  # noqa: BLE001 — tensorstore and zarr raise many types for damaged files
            if move_unreadable:
                where = set_aside(manager, step)
                action = f"moved to {where}"
            else:
                action = "left in place"
            print(f"warning: checkpoint step {step} in {manager.directory} is unreadable ({one_line(error)}); {action}; "
                  "falling back to the previous step", file=sys.stderr, flush=True)
    if steps:
        raise NoReadableCheckpoint(f"no checkpoint in {manager.directory} is readable (tried steps {steps}): restore them from a backup or start a new --workdir")
    return None, None


def readable_states(manager: ocp.CheckpointManager, target):
    """(step, state) for every checkpoint that restores, oldest first, one at a time (only one
    state is held); a step a live trainer deletes meanwhile is skipped. Unreadable steps are left in place with one `warning:` line each; if none is
    readable, raises NoReadableCheckpoint. A checkpoint of another model raises ShapeMismatch."""
    steps = sorted(manager.all_steps())
    readable = 0
    for step in steps:
        check_shapes(manager, step, target)
        try:
            state = restore(manager, step, target)
        except Exception as error:  # noqa: BLE001 — as in restore_newest_readable
            if step not in saved_steps(Path(str(manager.directory)).parent):
                continue  # deleted meanwhile by the trainer still writing the run: gone, not damaged
            print(f"warning: checkpoint step {step} in {manager.directory} is unreadable ({one_line(error)}); left in place; skipped",
                  file=sys.stderr, flush=True)
            continue
        readable += 1
        yield step, state
    if not readable:
        raise NoReadableCheckpoint(f"no checkpoint in {manager.directory} is readable (tried steps {steps}): restore them from a backup or train the run again")
