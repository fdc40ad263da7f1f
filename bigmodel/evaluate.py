"""`bigmodel eval --workdir DIR [--all]`: validation loss and bits/byte of a run's checkpoints.

Plain `eval`: the newest readable checkpoint → one JSON line and DIR/eval.json.
`eval --all`: every kept checkpoint, oldest first (with `checkpoint.schedule=log`: steps 1, 2, 4,
...) → one JSON line each and DIR/eval_curve.json (a list of {step, tokens_seen, batches,
eval_loss, eval_bpb}) with its figure DIR/eval_curve.png (+ .svg): eval loss vs tokens seen.

The run is opened as `bigmodel.restore` opens it: onto the devices present now, read only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax

from bigmodel import checkpoint, config as config_lib, files, metrics as metrics_lib
from bigmodel.restore import open_run, restore_params
from bigmodel.train import VALIDATION_SEED, build, make_eval_step, validation_loss


def eval_command(workdir: str, batches: int | None = None, every_checkpoint: bool = False) -> int:
    from bigmodel.data import load_dataset
    from bigmodel.data.pipeline import check_batches

    workdir = Path(workdir)
    config, manager = open_run(workdir)
    validation = load_dataset(config.data, "validation", seed=VALIDATION_SEED)
    if batches:  # before any checkpoint is read
        check_batches(batches, validation, config.train.batch_size // config.train.grad_accum)
    if every_checkpoint:
        return eval_curve(workdir, config, manager, batches or config.eval.batches, validation)
    setup, params, step = restore_params(config, manager)  # eval only reads
    n_batches = batches or config.eval.batches
    result = {
        "step": step,
        "batches": n_batches,
        "tokens": n_batches * (config.train.batch_size // config.train.grad_accum) * config.data.seq_len,
        **validation_loss(setup, make_eval_step(setup), params, validation, n_batches),
    }
    if jax.process_index() == 0:
        print(json.dumps(result))
        try:
            files.write_json_atomic(workdir / "eval.json", result)
        except OSError as error:  # a read-only archive of runs: the printed result is the output
            print(f"warning: could not write {workdir / 'eval.json'}: {error.strerror}", file=sys.stderr)
    return 0


def curve_point(step: int, config, n_batches: int, result: dict) -> dict:
    """One eval_curve.json entry; tokens_seen is training tokens, as in metrics.jsonl."""
    return {"step": step, "tokens_seen": step * config.train.batch_size * config.data.seq_len, "batches": n_batches, **result}


def eval_curve(workdir: Path, config, manager, n_batches: int, validation) -> int:
    """`eval --all`: every readable checkpoint, oldest first, on the same validation batches."""
    setup = build(config)
    target = checkpoint.abstract_target(setup.abstract_state, setup.state_shardings)
    eval_step = make_eval_step(setup)  # one jit for all: same shapes and shardings, so one compile
    is_writer = jax.process_index() == 0
    curve = []
    try:
        for step, state in checkpoint.readable_states(manager, target):
            curve.append(curve_point(step, config, n_batches, validation_loss(setup, eval_step, state.params, validation, n_batches)))
            del state  # one checkpoint in memory at a time
            if is_writer:
                print(json.dumps(curve[-1]), flush=True)
    except checkpoint.ShapeMismatch as error:  # no readable checkpoint at all: NoReadableCheckpoint, exit 1
        raise config_lib.ConfigError(str(error)) from None
    manager.close()
    if is_writer:
        write_curve(workdir, curve, metrics_lib.read_metrics(workdir))
    return 0


def write_curve(workdir: Path, curve: list[dict], records: list[dict]) -> None:
    """eval_curve.json (atomically) and its figure; stdout stays one JSON line per checkpoint,
    so what was written is said on stderr."""
    try:
        files.write_json_atomic(workdir / "eval_curve.json", curve)
        from bigmodel.scaling.plot_eval import plot_eval_curve  # matplotlib: only when a figure is drawn
        from bigmodel.scaling.plot_style import save_figure

        save_figure(plot_eval_curve(curve, records, title=f"Eval curve of {workdir.resolve().name}"), workdir, "eval_curve")
    except OSError as error:  # a read-only archive of runs: the printed lines are the output
        print(f"warning: could not write {workdir / 'eval_curve.json'} or its figure: {error.strerror}", file=sys.stderr)
        return
    print(f"wrote {workdir / 'eval_curve.json'} and {workdir / 'eval_curve.png'} (+ .svg)", file=sys.stderr)
