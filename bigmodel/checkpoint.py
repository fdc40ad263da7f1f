"""Orbax checkpoints of the whole TrainState: async saves, keep N, restore onto any mesh.

Restores always pass a target whose leaves are `jax.ShapeDtypeStruct`s carrying the *current*
shardings, so a checkpoint written on 8 devices lands on 1 (or the reverse) without a copy step.
"""

from __future__ import annotations

from pathlib import Path

import jax
import orbax.checkpoint as ocp

CHECKPOINT_DIR = "checkpoints"


def make_manager(workdir: Path, keep: int) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True, create=True)
    return ocp.CheckpointManager(Path(workdir).absolute() / CHECKPOINT_DIR, options=options)


def save(manager: ocp.CheckpointManager, step: int, state) -> None:
    manager.save(step, args=ocp.args.StandardSave(state))


def abstract_target(abstract_state, shardings):
    """ShapeDtypeStructs with the shardings the restored arrays should have."""
    return jax.tree.map(lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding), abstract_state, shardings)


def restore(manager: ocp.CheckpointManager, step: int, target):
    return manager.restore(step, args=ocp.args.StandardRestore(target))
