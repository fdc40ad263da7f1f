"""`python -m bigmodel finetune --from RUN --task NAME --workdir OUT`: the command, top to bottom.

  flags + config → every check (nothing written yet) → the task's texts, tokenized with RUN's
  tokenizer → classifier + mesh → state: OUT's newest checkpoint, else RUN's params (read-only)
  or a random init (--scratch) → the loop (`loop.py`) → test metrics with the best parameters

OUT resumes like a train run: the same command continues from its newest checkpoint, and a
finished run (OUT/test_metrics.json written) says so and exits 0. A workdir holding anything
else (a train run, other files, a fine-tuning run of another config) is refused.

Outputs in OUT: config.json, checkpoints/, metrics.jsonl (+ tensorboard/), test_metrics.json
(accuracy, macro/micro precision/recall/F1, per-class rows, the confusion matrix) and
confusion_matrix.png (+ .svg); the per-class table and one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bigmodel.arguments import path_text, positive_int
from bigmodel.config import ConfigError

FINETUNE_HELP = "fine-tune a train run as a text classifier (head + pooled features; early stopping; test metrics)"
TEST_METRICS = "test_metrics.json"


def add_finetune_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="init_from", type=path_text, required=True, metavar="RUN",
                        help="a bigmodel train run's workdir: its architecture, tokenizer and checkpoint (only read)")
    parser.add_argument("--task", required=True, help="kjv_books (built in) or tfds:<name>[/<config>] of a prepared text-classification dataset")
    parser.add_argument("--workdir", type=path_text, required=True, help="this fine-tuning run's directory; an existing one is resumed")
    parser.add_argument("--config", type=path_text, default=None, help="path/to/config.py (default: configs/finetune.py)")
    parser.add_argument("--scratch", action="store_true", help="random init of the same architecture: the from-scratch baseline")
    parser.add_argument("--stop_at_step", type=positive_int, default=None, help="checkpoint and exit after this step (resume later)")


# ----------------------------------------------------------------------------- checks (read only)


def backbone_run(config):
    """(the --from run's config fitted to these devices, the checkpoint step to start from): the
    run is opened as `bigmodel.restore` opens any; which step, and the words, are finetune's."""
    from bigmodel import checkpoint, config as config_lib
    from bigmodel.restore import config_for_these_devices, saved_train_config

    run = Path(config.backbone.init_from)
    saved = saved_train_config(run)
    if saved is None:
        raise ConfigError(f"--from {run} is not a bigmodel train run (no readable config.json of one): pass a train run's --workdir")
    backbone_config = config_for_these_devices(config_lib.from_json(json.dumps(saved)))
    if config.backbone.init == "scratch":
        return backbone_config, 0
    steps = checkpoint.saved_steps(run)
    if not steps:
        raise ConfigError(f"--from {run} has no checkpoint yet: train it first, or pass --scratch for a random init")
    step = config.backbone.step or steps[-1]
    if step not in steps:
        raise ConfigError(f"--from {run} has no checkpoint at config.backbone.step={step} (it has {steps}): pick one of them, or 0 for the newest")
    return backbone_config, step


def finetune_run_directory():
    """OUT as `bigmodel.workdir` checks and claims it, in finetune's words."""
    from bigmodel import files
    from bigmodel.workdir import RunDirectory

    return RunDirectory("finetune", (files.LOCK_FILE,), "a fine-tuning run", "restore it", "--workdir")


def saved_finetune_config(workdir: Path) -> dict | None:
    """OUT/config.json if it is a fine-tuning run's (None for a new OUT); ConfigError for anything else in OUT."""
    from bigmodel.finetune.settings import is_finetune_config
    from bigmodel.workdir import saved_config

    saved = saved_config(workdir, finetune_run_directory())
    if saved is not None and not is_finetune_config(saved):
        raise ConfigError(f"--workdir {workdir} holds a bigmodel train run, not a fine-tuning run: pick a new --workdir")
    return saved


def check_resumable(config, saved: dict | None, workdir: Path) -> None:
    from bigmodel import config as config_lib
    from bigmodel.finetune.settings import resumable_differences

    if saved is None:
        return
    changes = resumable_differences(saved, json.loads(config_lib.to_json(config)))
    if changes:
        raise ConfigError(f"--workdir {workdir} holds a fine-tuning run with a different config ({'; '.join(changes[:3])}): "
                          "use a new --workdir")


# ----------------------------------------------------------------------------- restore


def restore_backbone(setup, run: Path, step: int | None):
    """(the --from run's parameters at `step` (None: its newest readable step) less its LM head,
    on the backbone's shardings, the step read), read without its optimizer state (orbax partial
    restore) and without writing to the run; a run still training is read as `bigmodel.restore`
    reads one (its newest step may be replaced meanwhile)."""
    from bigmodel import checkpoint
    from bigmodel.finetune.classifier import BACKBONE
    from bigmodel.restore import StepGone, read_params, still_training

    target = checkpoint.abstract_target(setup.abstract_state.train.params[BACKBONE], setup.params_shardings[BACKBONE])
    try:
        return read_params(run, step, target)
    except checkpoint.ShapeMismatch as error:
        raise ConfigError(str(error)) from None
    except StepGone:
        raise ConfigError(f"--from {run} deleted checkpoint step {step} while it was read: {still_training(run)}pick a step it keeps "
                          "with --config.backbone.step, or 0 for the newest") from None
    except checkpoint.NoReadableCheckpoint:
        raise
    except Exception as error:  # noqa: BLE001 — a damaged checkpoint: one line, no fallback to another step
        raise ConfigError(f"--from {run} checkpoint step {step} cannot be read ({type(error).__name__}: {str(error)[:160]}): "
                          "pick another with --config.backbone.step") from None


# ----------------------------------------------------------------------------- outputs


def test_results(config, backbone_step: int, state, report: dict, task, data) -> dict:
    return {
        "task": task.name,
        "source": task.source,
        "from": config.backbone.init_from,
        "init": config.backbone.init,
        "backbone_step": backbone_step,
        "frozen_backbone": config.backbone.freeze,
        "pooling": config.classifier.pooling,
        "steps": int(state.train.step),
        "stopped_early": int(state.train.step) < config.train.steps,
        "best_step": int(state.best_step),
        "validation_" + config.eval.metric: float(state.best_score) * (-1 if config.eval.metric == "loss" else 1),
        "examples": {split: len(data[split]) for split in ("train", "validation", "test")},
        "truncated_to_seq_len": {split: data[split].truncated for split in ("train", "validation", "test")},
        **{key: report[key] for key in ("loss", "accuracy", "macro", "micro", "per_class", "class_names", "confusion_matrix")},
        "test_examples": report["examples"],
    }


def write_outputs(workdir: Path, results: dict, report: dict) -> None:
    from bigmodel import files
    from bigmodel.finetune import classification_metrics as classification

    print(classification.format_table(report))
    classification.write_confusion_figure(report, workdir, f"{results['task']} test set, {results['init']} backbone (best step {results['best_step']})")
    files.write_json_atomic(workdir / TEST_METRICS, results)  # last: its presence marks the run finished
    print(json.dumps({"task": results["task"], "init": results["init"], "steps": results["steps"], "best_step": results["best_step"],
                      "test_accuracy": round(results["accuracy"], 4), "test_macro_f1": round(results["macro"]["f1"], 4),
                      "test_examples": results["test_examples"]}))


# ----------------------------------------------------------------------------- the command


def finetune_command(args: argparse.Namespace, overrides: dict[str, str]) -> int:
    from bigmodel import exit_codes, runtime
    from bigmodel.finetune.settings import load_finetune_config
    from bigmodel.finetune.tasks import check_task_name

    config = load_finetune_config(args.config, overrides, args.task, args.init_from, args.scratch)
    check_task_name(config.task.name)
    workdir = Path(args.workdir)
    if workdir.resolve() == Path(config.backbone.init_from).resolve():
        raise ConfigError(f"--workdir {workdir} is the --from run itself: fine-tune into a new directory")
    saved = saved_finetune_config(workdir)
    if saved is not None and config.backbone.step == 0:
        config.backbone.step = saved["backbone"]["step"]  # "newest" means the one the run started from
    newest = config.backbone.step == 0  # read whichever step is newest when the run is read (it may be training)
    backbone_config, backbone_step = backbone_run(config)
    config.backbone.step = backbone_step
    check_resumable(config, saved, workdir)
    if (workdir / TEST_METRICS).exists():
        print(f"{workdir} already finished; see {workdir / TEST_METRICS}")
        return exit_codes.OK
    from bigmodel.train import StopRequest

    stop = StopRequest()  # from here on, a signal means "checkpoint and exit", not a traceback
    if runtime.EARLY_STOP["requested"]:
        print("stopped by SIGTERM while starting, before any step: rerun the same command to start or resume", file=sys.stderr)
        return exit_codes.STOPPED
    try:
        return run(config, backbone_config, None if newest else backbone_step, workdir, args.stop_at_step, stop)
    except exit_codes.StorageFailed as error:
        from bigmodel.train import leave_at_once

        print(f"error: {error}", file=sys.stderr, flush=True)
        leave_at_once(exit_codes.STORAGE_ERROR)


def task_data(config, backbone_config):
    """(the task, its three splits tokenized with the --from run's tokenizer); validation capped
    at eval.max_examples, the same subset for every run."""
    from bigmodel.data.sources import resolve_data_dir
    from bigmodel.finetune.batches import capped, encode_split
    from bigmodel.finetune.tasks import load_task
    from bigmodel.restore import run_tokenizer

    tokenizer = run_tokenizer(backbone_config, Path(config.backbone.init_from))
    data_dir = str(Path(config.task.data_dir).expanduser().absolute()) if config.task.data_dir else resolve_data_dir(backbone_config.data)
    task = load_task(config.task, data_dir, config.seed)
    data = {split: encode_split(getattr(task, split), tokenizer, config.task.seq_len, f"{task.name} {split}")
            for split in ("train", "validation", "test")}
    data["validation"] = capped(data["validation"], config.eval.max_examples, seed=0)
    return task, data


def run(config, backbone_config, backbone_step: int | None, workdir: Path, stop_at_step: int | None, stop) -> int:
    """Train OUT from `backbone_step` of the --from run (None: its newest, as found when read)."""
    import jax

    from bigmodel import checkpoint, files, sharding
    from bigmodel.finetune import loop
    from bigmodel.finetune.settings import check_against_backbone
    from bigmodel.model import model_config
    from bigmodel.train import state_bytes
    from bigmodel.workdir import claim

    task, data = task_data(config, backbone_config)
    mesh = sharding.make_mesh(backbone_config.mesh)
    check_against_backbone(config, backbone_config, mesh.shape["data"] * mesh.shape["fsdp"], jax.process_count())
    setup = loop.build(config, model_config(backbone_config), len(task.class_names), mesh, sharding.logical_rules(backbone_config))
    fresh = checkpoint.newest_step(workdir) == 0
    parent_params = None
    if fresh and config.backbone.init == "pretrained":
        parent_params, backbone_step = restore_backbone(setup, Path(config.backbone.init_from), backbone_step)
    backbone_step = config.backbone.step = backbone_step or config.backbone.step  # the step config.json records

    lock = claim(workdir, finetune_run_directory())  # noqa: F841 — every check has passed: the workdir is ours until we return
    guard = files.StorageGuard.of(workdir, bytes_needed=state_bytes(setup.abstract_state))
    with files.storage_faults(guard):  # disk full, read-only, OUT deleted: one line, exit 74 (as train)
        return train_and_test(config, setup, task, data, parent_params, backbone_step, workdir, stop_at_step, stop, guard)


def train_and_test(config, setup, task, data, parent_params, backbone_step: int, workdir: Path, stop_at_step: int | None, stop, guard) -> int:
    """Everything that writes OUT: resume or start, the loop, then the test set's report."""
    import jax

    from bigmodel import checkpoint, exit_codes, metrics as metrics_lib
    from bigmodel.finetune import loop
    from bigmodel.restore import restore_newest
    from bigmodel.workdir import write_config

    is_writer = jax.process_index() == 0
    manager = checkpoint.make_manager(workdir, config.checkpoint.keep)
    state, _ = restore_newest(manager, setup.abstract_state, setup.state_shardings, move_unreadable=True)  # resume OUT
    if state is None:
        state = loop.initial_state(setup, parent_params)
    if is_writer:
        metrics_lib.truncate_metrics_after(workdir, int(state.train.step))
        write_config(config, workdir)
    log = metrics_lib.MetricsLog(workdir, enabled=is_writer)
    progress = metrics_lib.Progress(config.train.steps, int(state.train.step), enabled=is_writer)
    try:
        code = exit_codes.OK
        if not loop.finished(state, config):
            code, state = loop.train_loop(setup, manager, state, data, task.class_names, log, progress, stop, stop_at_step, guard)
        manager.wait_until_finished()
    finally:
        progress.close()
        log.close()
    manager.close()
    if code != exit_codes.OK or not loop.finished(state, config):
        if code == exit_codes.OK:
            progress.message(f"stopped after step {int(state.train.step)} (--stop_at_step); run the same command without it to continue")
        return code  # a signal, a failure, or --stop_at_step: the test set waits for the end
    report = loop.evaluate(setup, loop.make_predict(setup), state.best_params, data["test"], task.class_names)
    if is_writer:
        write_outputs(workdir, test_results(config, backbone_step, state, report, task, data), report)
    return exit_codes.OK
