"""Open a finished train run without training it: its config fitted to the devices present, its
checkpoints, its tokenizer and its parameters. One home for every command that uses a run
rather than trains it: eval, compare, generate, serve, export, and finetune's --from run.

Nothing here writes to the run (the one exception, `restore_newest` with move_unreadable, is for a
fine-tuning run resuming itself), and nothing falls back the way the trainer does: a run with no
checkpoint is an error here, where `train` would start it fresh or from its branch point.
Checkpoints are restored onto the devices present now: the run's own mesh when it fits,
otherwise plain data parallelism over every device.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from bigmodel import checkpoint, config as config_lib, files
from bigmodel.config import ConfigError


def config_for_these_devices(config):
    """The saved config with a mesh that fits jax.device_count() (and a batch it divides)."""
    import jax

    try:
        config_lib.validate(config, jax.device_count(), jax.process_count())
        return config
    except ConfigError:
        config = config_lib.apply_overrides(config, {"mesh.data": "-1", "mesh.fsdp": "1", "mesh.tensor": "1"})
        config_lib.validate(config, jax.device_count(), jax.process_count())
        return config


def saved_train_config(workdir: Path) -> dict | None:
    """workdir/config.json of a train run as saved; None where there is none to read: missing,
    not JSON, or another kind of run's (a fine-tuning run's has no model group)."""
    path = workdir / "config.json"
    saved = files.read_json(path) if path.is_file() else None
    return saved if saved is not None and "model" in saved else None


def open_run(workdir: Path):
    """(the run's config fitted to these devices, its checkpoint manager); ConfigError when the
    directory is not a train run or has no checkpoint yet."""
    config_path = workdir / "config.json"
    if not config_path.exists():
        raise ConfigError(f"{workdir} has no config.json: pass the --workdir of a bigmodel train run")
    saved = files.read_json(config_path)
    if saved is None:
        raise ConfigError(f"{config_path} is not valid JSON: restore it from the run's command (command.sh) or its original config")
    config = config_for_these_devices(config_lib.from_json(json.dumps(saved)))
    no_checkpoint = f"{workdir} has no checkpoint yet: train it first (bigmodel train --workdir {workdir} ...)"
    if not (workdir / checkpoint.CHECKPOINT_DIR).is_dir():
        raise ConfigError(no_checkpoint)
    manager = checkpoint.make_manager(workdir, config.checkpoint.keep)
    if manager.latest_step() is None:
        raise ConfigError(no_checkpoint)
    return config, manager


def run_tokenizer(config, workdir: Path):
    """The tokenizer the run trained with. A missing BPE model is an error, not retrained: a
    retrained one need not give the same ids the checkpoint learned."""
    from bigmodel.data import ByteTokenizer
    from bigmodel.data.token_cache import TOKENIZERS_DIR
    from bigmodel.data.names import SYNTHETIC, dataset_slug
    from bigmodel.data.sources import resolve_data_dir
    from bigmodel.data.tokenizers import load_tokenizer_file, tokenizer_path

    data = config.data
    if data.dataset == SYNTHETIC:
        raise ConfigError(f"{workdir} was trained on synthetic random tokens: it has no tokenizer to read a prompt with")
    if data.tokenizer == "bytes":
        return ByteTokenizer()
    path = tokenizer_path(Path(resolve_data_dir(data)) / TOKENIZERS_DIR, dataset_slug(data.dataset), data.tokenizer, data.vocab_size)
    if not path.exists():
        raise ConfigError(f"the run's tokenizer {path} is missing: run generate where the run was trained, or set data_dir in {workdir}/config.json")
    return load_tokenizer_file(data.tokenizer, path)


def open_for_use(workdir: Path):
    """(config, checkpoint manager, tokenizer) of a train run: everything needed to check a
    request before any JAX work. ConfigError if it is not a run, has no checkpoint or tokenizer."""
    config, manager = open_run(workdir)
    try:
        return config, manager, run_tokenizer(config, workdir)
    except ConfigError:
        manager.close()
        raise


def restore_newest(manager, abstract_state, shardings, *, move_unreadable: bool):
    """(state, step) of the newest readable checkpoint placed on `shardings`, or (None, None)
    where there is none. Every step unreadable, or another model's checkpoint: ConfigError."""
    target = checkpoint.abstract_target(abstract_state, shardings)
    try:
        return checkpoint.restore_newest_readable(manager, target, move_unreadable=move_unreadable)
    except (checkpoint.NoReadableCheckpoint, checkpoint.ShapeMismatch) as error:
        raise ConfigError(str(error)) from None


def restore_step(manager, step: int, abstract_state, shardings):
    """The state saved at `step`, placed on `shardings`; ConfigError if there is none or it is unreadable."""
    if step not in manager.all_steps():
        raise ConfigError(f"{manager.directory} has no checkpoint at step {step}: pick one of {sorted(manager.all_steps())}")
    target = checkpoint.abstract_target(abstract_state, shardings)
    try:
        checkpoint.check_shapes(manager, step, target)
        return checkpoint.restore(manager, step, target)
    except checkpoint.ShapeMismatch as error:
        raise ConfigError(str(error)) from None
    except Exception as error:  # noqa: BLE001 — tensorstore raises many types for damaged files
        raise ConfigError(f"checkpoint step {step} in {manager.directory} is unreadable ({type(error).__name__}): "
                          "pick another --step") from None


def restore_params(config, manager, step: int | None = None):
    """(setup, params, step): the run built for the devices present and its parameters, from
    the newest readable checkpoint or from `step`. Only reads; closes the manager."""
    from bigmodel.train import build

    setup = build(config)
    try:
        if step is None:
            state, step = restore_newest(manager, setup.abstract_state, setup.state_shardings, move_unreadable=False)
            if state is None:  # open_run saw a checkpoint: it went away since
                raise ConfigError(f"{manager.directory} holds no checkpoint any more: train the run first")
        else:
            state = restore_step(manager, step, setup.abstract_state, setup.state_shardings)
    finally:
        manager.close()
    return setup, state.params, step


def read_only_manager(workdir: Path):
    """A manager that can only read `workdir`'s checkpoints (orbax's note that it is read-only is silenced)."""
    import orbax.checkpoint as ocp

    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        options = ocp.CheckpointManagerOptions(read_only=True, save_interval_steps=0, create=False)
        return ocp.CheckpointManager(checkpoint.checkpoint_dir(workdir), options=options, item_handlers=ocp.PyTreeCheckpointHandler())
    finally:
        absl.setLevel(level)


def read_params(workdir: Path, step: int, params_target):
    """The parameters saved at `step` that `params_target` (ShapeDtypeStructs carrying shardings)
    names, a subtree of the run's params, read without its optimizer state (orbax partial
    restore) and without writing to the run. Raises checkpoint.ShapeMismatch for another
    model's checkpoint and whatever orbax raises for a damaged one: the caller words them."""
    import jax
    import orbax.checkpoint as ocp

    target = {"params": params_target}
    manager = read_only_manager(workdir)
    try:
        checkpoint.check_shapes(manager, step, target)
        restore_args = jax.tree.map(lambda leaf: ocp.ArrayRestoreArgs(sharding=leaf.sharding, global_shape=leaf.shape, dtype=leaf.dtype), target)
        return manager.restore(step, args=ocp.args.PyTreeRestore(target, restore_args=restore_args, partial_restore=True))["params"]
    finally:
        manager.close()
