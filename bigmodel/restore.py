"""Open a finished train run without training it: its config fitted to the devices present, its
checkpoints, its tokenizer and its parameters. One home for every command that uses a run
rather than trains it: eval, compare, generate, serve, export, and finetune's --from run.

Nothing here writes to the run (the exceptions: `restore_newest` with move_unreadable, for a
fine-tuning run resuming itself; and the hard-linked snapshot a reader makes of a step while a
trainer still writes the run, removed when read), and nothing falls back the way the trainer
does: a run with no checkpoint is an error here, where `train` would start it fresh or from its
branch point. A run still training is read as it goes: see "reading a run that may be training".
Checkpoints are restored onto the devices present now: the run's own mesh when it fits,
otherwise plain data parallelism over every device.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bigmodel import checkpoint, config as config_lib, exit_codes, files
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
    """(the run's config fitted to these devices, a manager that only reads its checkpoints);
    ConfigError when the directory is not a train run or has no checkpoint yet."""
    config_path = workdir / "config.json"
    if not config_path.exists():
        raise ConfigError(f"{workdir} has no config.json: pass the --workdir of a bigmodel train run")
    saved = files.read_json(config_path)
    if saved is None:
        raise ConfigError(f"{config_path} is not valid JSON: restore it from the run's command (command.sh) or its original config")
    config = config_for_these_devices(config_lib.from_json(json.dumps(saved)))
    if not checkpoint.saved_steps(workdir):
        writer = files.lock_holder(workdir)
        still = f"the run is still training (pid {writer}) and has not written its first checkpoint yet: rerun after step " \
                f"{config.checkpoint.every_steps}" if writer else f"train it first (bigmodel train --workdir {workdir} ...)"
        raise ConfigError(f"{workdir} has no checkpoint yet: {still}")
    return config, checkpoint.reading_manager(checkpoint.checkpoint_dir(workdir))


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


# ----------------------------------------------------------------------------- reading a run that may be training
#
# A trainer keeps only its `checkpoint.keep` newest steps: a step a reader picked can be deleted
# before the reader is done with it (with keep=1 and a checkpoint every step, within a fraction
# of a second). While a trainer holds the run (its .lock), a step is read from a hard-linked
# snapshot (`checkpoint.linked_snapshot`), which the trainer cannot take away; a step deleted
# before it was linked, or one read in place that vanished, sends the reader back to the newest
# step, up to READ_ATTEMPTS times. A step that fails to restore and is still the newest is
# damaged: a warning, and the next older one.

READ_ATTEMPTS = 10


class StepGone(Exception):
    """The step was deleted, or a newer one appeared, while it was being read: a live trainer's."""


def run_of(manager) -> Path:
    """The run directory of a manager over <run>/checkpoints."""
    return Path(str(manager.directory)).parent


def superseded(workdir: Path, step: int) -> bool:
    steps = checkpoint.saved_steps(workdir)
    return step not in steps or max(steps) > step


def read_pinned(manager, step: int, read, handler=None):
    """read(manager, step) where `step` cannot vanish meanwhile: a snapshot while a trainer holds
    the run, else the run's own checkpoints. StepGone if a trainer deleted the step first."""
    workdir = run_of(manager)
    if files.lock_holder(workdir) is not None:
        try:
            with checkpoint.linked_snapshot(workdir, step) as snapshot:
                if snapshot is not None:
                    reader = checkpoint.reading_manager(snapshot, handler)
                    try:
                        return read(reader, step)
                    finally:
                        reader.close()
        except checkpoint.StepVanished:
            raise StepGone(step) from None
    try:  # nobody writes the run, or links cannot be made here
        return read(manager, step)
    except checkpoint.ShapeMismatch:
        raise
    except Exception:
        if superseded(workdir, step):
            raise StepGone(step) from None
        raise


def still_training(workdir: Path) -> str:
    writer = files.lock_holder(workdir)
    return f"the run is still training (pid {writer}); " if writer else ""


def read_newest(manager, read, handler=None):
    """(read(manager, step), step) for the newest step that reads, or (None, None) where the run
    has no checkpoint. Unreadable steps: one warning each, then the next older one; none
    readable: NoReadableCheckpoint (exit 1). Another model's checkpoint: ShapeMismatch."""
    workdir = run_of(manager)
    damaged: list[int] = []
    for _ in range(READ_ATTEMPTS):
        steps = [step for step in reversed(checkpoint.saved_steps(workdir)) if step not in damaged]
        if not steps:
            break
        for step in steps:
            try:
                return read_pinned(manager, step, read, handler), step
            except StepGone:
                break  # the trainer moved on: start again from its newest step
            except checkpoint.ShapeMismatch:
                raise
            except Exception as error:  # noqa: BLE001 — tensorstore and zarr raise many types for damaged files
                if superseded(workdir, step):
                    break
                damaged.append(step)
                print(f"warning: checkpoint step {step} in {manager.directory} is unreadable ({checkpoint.one_line(error)}); left in place; "
                      "falling back to the previous step", file=sys.stderr, flush=True)
        else:
            break  # every step listed is damaged
    else:
        raise exit_codes.Failed(f"{still_training(workdir)}its checkpoints in {manager.directory} were replaced {READ_ATTEMPTS} times while "
                                "being read: rerun, or read a step it keeps (--step, checkpoint.keep_steps)")
    if damaged:
        raise checkpoint.NoReadableCheckpoint(f"no checkpoint in {manager.directory} is readable (tried steps {damaged}): "
                                              f"{still_training(workdir) + 'rerun after its next checkpoint' if still_training(workdir) else 'restore them from a backup or train the run again'}")
    return None, None


def full_state(target):
    """read(manager, step) of a whole train state onto `target`'s shardings."""
    def read(manager, step):
        checkpoint.check_shapes(manager, step, target)  # another model's checkpoint is not "damaged": no fallback
        return checkpoint.restore(manager, step, target)
    return read


def restore_newest(manager, abstract_state, shardings, *, move_unreadable: bool):
    """(state, step) of the newest readable checkpoint placed on `shardings`, or (None, None)
    where there is none. A run resuming itself (move_unreadable) sets unreadable steps aside;
    a reader leaves them and copes with a live trainer (`read_newest`). Another model's
    checkpoint: ConfigError; none readable: NoReadableCheckpoint (exit 1)."""
    target = checkpoint.abstract_target(abstract_state, shardings)
    try:
        if move_unreadable:
            return checkpoint.restore_newest_readable(manager, target, move_unreadable=True)
        return read_newest(manager, full_state(target))
    except checkpoint.ShapeMismatch as error:
        raise ConfigError(str(error)) from None


def restore_step(manager, step: int, abstract_state, shardings):
    """The state saved at `step`, placed on `shardings`; ConfigError if there is none or it is unreadable."""
    workdir = run_of(manager)
    steps = checkpoint.saved_steps(workdir)
    if step not in steps:
        raise ConfigError(f"{manager.directory} has no checkpoint at step {step}: {still_training(workdir)}pick one of {steps}")
    target = checkpoint.abstract_target(abstract_state, shardings)
    try:
        return read_pinned(manager, step, full_state(target))
    except checkpoint.ShapeMismatch as error:
        raise ConfigError(str(error)) from None
    except StepGone:
        raise ConfigError(f"{manager.directory} deleted step {step} while it was read: {still_training(workdir)}pick a step it keeps "
                          f"(now {checkpoint.saved_steps(workdir)}), or leave --step out for the newest") from None
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


def read_params(workdir: Path, step: int | None, params_target):
    """(params, step): the parameters saved at `step` (None: the newest readable one) that
    `params_target` (ShapeDtypeStructs carrying shardings) names, a subtree of the run's params,
    read without its optimizer state (orbax partial restore) and without writing to the run.
    Raises checkpoint.ShapeMismatch for another model's checkpoint, StepGone for a step a live
    trainer deleted, NoReadableCheckpoint, and whatever orbax raises for a damaged `step`."""
    import jax
    import orbax.checkpoint as ocp

    target = {"params": params_target}

    def read(manager, step):
        checkpoint.check_shapes(manager, step, target)
        restore_args = jax.tree.map(lambda leaf: ocp.ArrayRestoreArgs(sharding=leaf.sharding, global_shape=leaf.shape, dtype=leaf.dtype), target)
        return manager.restore(step, args=ocp.args.PyTreeRestore(target, restore_args=restore_args, partial_restore=True))["params"]

    manager = checkpoint.reading_manager(checkpoint.checkpoint_dir(workdir), ocp.PyTreeCheckpointHandler())
    try:
        if step is None:
            return read_newest(manager, read, ocp.PyTreeCheckpointHandler())
        return read_pinned(manager, step, read, ocp.PyTreeCheckpointHandler()), step
    finally:
        manager.close()
