"""`bigmodel eval --workdir DIR`: validation loss and bits/byte of a run's newest readable checkpoint.

The checkpoint is restored onto the devices present now: the run's own mesh when it fits,
otherwise plain data parallelism over every device.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax

from bigmodel import checkpoint, config as config_lib, files, metrics as metrics_lib
from bigmodel.train import VALIDATION_SEED, build, evaluate, make_eval_step, restore_or_init


def config_for_these_devices(config):
    """The saved config with a mesh that fits jax.device_count() (and a batch it divides)."""
    try:
        config_lib.validate(config, jax.device_count(), jax.process_count())
        return config
    except config_lib.ConfigError:
        config = config_lib.apply_overrides(config, {"mesh.data": "-1", "mesh.fsdp": "1", "mesh.tensor": "1"})
        config_lib.validate(config, jax.device_count(), jax.process_count())
        return config


def eval_command(workdir: str, batches: int | None = None) -> int:
    from bigmodel.data import load_dataset

    workdir = Path(workdir)
    config_path = workdir / "config.json"
    if not config_path.exists():
        raise config_lib.ConfigError(f"{workdir} has no config.json: pass the --workdir of a bigmodel train run")
    saved = files.read_json(config_path)
    if saved is None:
        raise config_lib.ConfigError(f"{config_path} is not valid JSON: restore it from the run's command (command.sh) or its original config")
    config = config_for_these_devices(config_lib.from_json(json.dumps(saved)))
    no_checkpoint = f"{workdir} has no checkpoint yet: train it first (bigmodel train --workdir {workdir} ...)"
    if not (workdir / checkpoint.CHECKPOINT_DIR).is_dir():
        raise config_lib.ConfigError(no_checkpoint)
    manager = checkpoint.make_manager(workdir, config.checkpoint.keep)
    if manager.latest_step() is None:
        raise config_lib.ConfigError(no_checkpoint)
    setup = build(config)
    try:
        state, step = restore_or_init(setup, manager, move_unreadable=False)  # eval only reads
    except (checkpoint.NoReadableCheckpoint, checkpoint.ShapeMismatch) as error:
        raise config_lib.ConfigError(str(error)) from None
    manager.close()
    validation = load_dataset(config.data, "validation", seed=VALIDATION_SEED)
    n_batches = batches or config.eval.batches
    result = {
        "step": step,
        "batches": n_batches,
        "tokens": n_batches * (config.train.batch_size // config.train.grad_accum) * config.data.seq_len,
        **evaluate(setup, make_eval_step(setup), state.params, validation, n_batches),
    }
    if jax.process_index() == 0:
        print(json.dumps(result))
        try:
            files.write_json_atomic(workdir / "eval.json", result)
        except OSError as error:  # a read-only archive of runs: the printed result is the output
            print(f"warning: could not write {workdir / 'eval.json'}: {error.strerror}", file=sys.stderr)
    return 0
