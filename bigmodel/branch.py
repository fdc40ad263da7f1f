"""Cooldown branches: a run that starts from another run's checkpoint instead of a fresh init.

Hägele et al. 2024 ("Scaling Laws and Compute-Optimal Training Beyond Fixed Training
Durations"): a warmup-stable run (constant learning rate after warmup) checkpointed at step S,
then a short cooldown from there to T steps, reaches about the loss of a cosine run of T steps
for the cost of the cooldown alone. One stable run per model size then gives the loss at many
token counts D.

A branch is an ordinary run with `train.init_from=<the parent's workdir>` and
`train.init_step=S`, usually `optim.schedule=wsd` whose decay starts at S
(S = T - round(T · optim.decay_fraction)). On its first start (its own workdir has no
checkpoint) it restores the parent's checkpoint at step S and trains steps S+1..T; from then on
it checkpoints and resumes in its own workdir like any run, and the parent's files are only read.

A branch continues the parent's exact trajectory, because the batch of step s is a function of
(seed, s) and `check_branch` refuses a branch that would have computed anything else before S:
another model, data, batch, seed or optimizer, or a learning rate that differs from the
parent's at any step before S.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from bigmodel import checkpoint, config as config_lib, files
from bigmodel.optim import learning_rate_schedule

# What a branch may change: its length and schedule (the cooldown), and bookkeeping.
MAY_DIFFER = ("train.steps", "train.init_from", "train.init_step", "train.log_every", "optim.schedule",
              "optim.decay_fraction", "optim.decay_shape", "optim.min_lr_ratio", "checkpoint.", "eval.", "mesh.")


def parent_config(init_from: str | Path) -> ml_collections.ConfigDict:
    """The parent run's config.json, or the one error line saying what init_from must be."""
    path = Path(init_from) / "config.json"
    saved = files.read_json(path) if path.is_file() else None
    if saved is None:
        raise config_lib.ConfigError(f"config.train.init_from={str(init_from)!r} has no readable config.json: "
                                     "point it at the workdir of a bigmodel train run")
    return config_lib.from_json(json.dumps(saved))


def differences(config: ml_collections.ConfigDict, parent: ml_collections.ConfigDict) -> list[str]:
    """Dotted keys (with both values) where the branch would compute something else than its parent."""
    from bigmodel.workdir import _config_changes  # the one config diff

    changes = _config_changes(json.loads(config_lib.to_json(parent)), json.loads(config_lib.to_json(config)))
    return [change for change in changes if not change.startswith(MAY_DIFFER)]


def first_lr_difference(config: ml_collections.ConfigDict, parent: ml_collections.ConfigDict, until_step: int) -> int | None:
    """The first step before `until_step` where the two runs' learning rates differ, else None."""
    steps = np.arange(until_step)
    mine = np.asarray(learning_rate_schedule(config.optim, config.train.steps)(steps))
    theirs = np.asarray(learning_rate_schedule(parent.optim, parent.train.steps)(steps))
    differ = np.flatnonzero(~np.isclose(mine, theirs, rtol=1e-6, atol=0.0))
    return int(differ[0]) if differ.size else None


def check_branch(config: ml_collections.ConfigDict, parent: ml_collections.ConfigDict) -> None:
    """Refuse (one ConfigError line) a branch that would not continue its parent exactly."""
    step, where = config.train.init_step, config.train.init_from
    if step > parent.train.steps:
        raise config_lib.ConfigError(f"config.train.init_step={step} is past the end of {where} ({parent.train.steps} steps): "
                                     "branch at a step the parent trains")
    changed = differences(config, parent)
    if changed:
        raise config_lib.ConfigError(f"a branch must train what its parent {where} trained, but {'; '.join(changed[:3])}: "
                                     "change only train.steps, optim.schedule/decay_* and bookkeeping")
    differing = first_lr_difference(config, parent, step)
    if differing is not None:
        raise config_lib.ConfigError(
            f"the branch's learning rate differs from its parent's at step {differing}, before init_step {step}: start its "
            f"cooldown at init_step (wsd: train.steps - round(train.steps * decay_fraction) = {step}), from a parent not yet decaying")


def restore_branch_point(config: ml_collections.ConfigDict, target) -> tuple[object, int]:
    """(state, init_step) restored from the parent's checkpoint at init_step onto `target`'s
    shardings, after `check_branch`; the parent's checkpoints are opened read-only."""
    parent = parent_config(config.train.init_from)
    check_branch(config, parent)
    step = config.train.init_step
    options = ocp.CheckpointManagerOptions(read_only=True, save_interval_steps=0, create=False)
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)  # orbax warns that a read-only directory is read-only
    try:
        manager = ocp.CheckpointManager(checkpoint.checkpoint_dir(config.train.init_from), options=options,
                                        item_handlers=ocp.StandardCheckpointHandler())
    finally:
        absl.setLevel(level)
    try:
        if step not in manager.all_steps():
            raise config_lib.ConfigError(
                f"{config.train.init_from} has no checkpoint at step {step} (it has {sorted(manager.all_steps())}): "
                f"train the parent with --config.checkpoint.keep_steps including {step}")
        checkpoint.check_shapes(manager, step, target)
        return checkpoint.restore(manager, step, target), step
    finally:
        manager.close()
