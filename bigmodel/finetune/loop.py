"""The fine-tuning loop: state, jitted steps, evaluation, early stopping, checkpoints.

One checkpoint holds everything a resume needs: the train state (step, params, optimizer state),
the best parameters so far and the early-stopping counters. Saving them together means a run
stopped at any step resumes to the same best model and the same stopping decision as an
uninterrupted one; it costs one more copy of the parameters (not of the optimizer state).

Validation runs every `eval.every_steps` steps and at the last step; the score is `eval.metric`
(higher is better; for "loss" the score is −loss). A strictly better score replaces the best
parameters; with `eval.patience` P > 0, P evaluations in a row without one stop the run early.
The test split is evaluated once, with the best parameters (`command.py`).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bigmodel import checkpoint, exit_codes, sharding
from bigmodel.finetune import classification_metrics as classification
from bigmodel.finetune.batches import Encoded, eval_batches, train_indices
from bigmodel.finetune.classifier import BACKBONE, Classifier, classification_loss, make_classifier_optimizer
from bigmodel.train import TrainState, due

EVAL_METRICS = ("accuracy", "macro_f1", "loss")


@flax.struct.dataclass
class FinetuneState:
    train: TrainState
    best_params: Any
    best_score: jax.Array  # float32; −inf before the first evaluation
    best_step: jax.Array  # int32; the step best_params were taken at (0: none yet)
    evals_since_best: jax.Array  # int32


@dataclasses.dataclass
class Setup:
    config: Any  # the fine-tuning config
    model: Classifier
    optimizer: optax.GradientTransformation
    schedule: optax.Schedule
    mesh: jax.sharding.Mesh
    rules: tuple
    params_shardings: Any
    state_shardings: Any
    abstract_state: Any
    batch_sharding: jax.sharding.NamedSharding  # tokens [batch, seq]
    row_sharding: jax.sharding.NamedSharding  # lengths, labels [batch]


def build(config, backbone, n_classes: int, mesh, rules) -> Setup:
    """Model, optimizer and the abstract state with its shardings, from the logical axis names."""
    model = Classifier(backbone, n_classes, config.classifier.pooling, config.classifier.dropout, config.backbone.freeze)
    optimizer, schedule = make_classifier_optimizer(config.optim, config.train.steps, config.backbone.freeze)

    def boxed_state(key):
        params = model.init(key, jnp.ones((1, config.task.seq_len), jnp.int32), jnp.ones((1,), jnp.int32))["params"]
        scalar = lambda value, dtype: jnp.asarray(value, dtype)  # noqa: E731
        return FinetuneState(TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params)), params,
                             scalar(-jnp.inf, jnp.float32), scalar(0, jnp.int32), scalar(0, jnp.int32))

    with nn.logical_axis_rules(rules):
        abstract_boxed = jax.eval_shape(boxed_state, jax.random.key(0))
        state_shardings = sharding.tree_shardings(abstract_boxed, mesh, rules)
    return Setup(config, model, optimizer, schedule, mesh, rules, state_shardings.train.params, state_shardings,
                 nn.unbox(abstract_boxed), sharding.batch_sharding(mesh, rules),
                 jax.sharding.NamedSharding(mesh, nn.logical_to_mesh_axes(("batch",), rules)))


def initial_state(setup: Setup, backbone_params=None) -> FinetuneState:
    """A fresh state; with `backbone_params` (restored onto `params_shardings["backbone"]`),
    those replace the random backbone before the optimizer state is made."""
    config = setup.config

    def init_params(key):
        with nn.logical_axis_rules(setup.rules):
            tokens, lengths = jnp.ones((1, config.task.seq_len), jnp.int32), jnp.ones((1,), jnp.int32)
            return nn.unbox(setup.model.init(key, tokens, lengths)["params"])

    def complete(params):
        with nn.logical_axis_rules(setup.rules):
            return FinetuneState(TrainState(jnp.zeros((), jnp.int32), params, setup.optimizer.init(params)),
                                 jax.tree.map(jnp.copy, params), jnp.asarray(-jnp.inf, jnp.float32),
                                 jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))

    in_mesh = lambda function, out: sharding.InMesh(jax.jit(function, out_shardings=out), setup.mesh)  # noqa: E731
    params = in_mesh(init_params, setup.params_shardings)(jax.random.key(config.seed))
    if backbone_params is not None:
        params = {**params, BACKBONE: backbone_params}
    return in_mesh(complete, setup.state_shardings)(params)


def make_train_step(setup: Setup):
    """(TrainState, tokens, lengths, labels) → (TrainState, {loss, grad_norm, lr}); state donated."""
    model, optimizer, config = setup.model, setup.optimizer, setup.config
    dropout = config.classifier.dropout > 0 or model.backbone.dropout > 0

    def step_fn(state: TrainState, tokens, lengths, labels):
        key = jax.random.fold_in(jax.random.key(config.seed), state.step)

        def loss_fn(params):
            with nn.logical_axis_rules(setup.rules):
                logits = model.apply({"params": params}, tokens, lengths, deterministic=not dropout, rngs={"dropout": key})
            return classification_loss(logits, labels)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        new_state = TrainState(state.step + 1, optax.apply_updates(state.params, updates), opt_state)
        return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads), "lr": setup.schedule(state.step)}

    shardings = (setup.state_shardings.train, setup.batch_sharding, setup.row_sharding, setup.row_sharding)
    jitted = jax.jit(step_fn, in_shardings=shardings, out_shardings=(setup.state_shardings.train, sharding.replicated(setup.mesh)),
                     donate_argnums=0)
    return sharding.InMesh(jitted, setup.mesh)


def make_predict(setup: Setup):
    """(params, tokens, lengths) → float32 logits, replicated (every process reads them all)."""
    def predict(params, tokens, lengths):
        with nn.logical_axis_rules(setup.rules):
            return setup.model.apply({"params": params}, tokens, lengths)

    jitted = jax.jit(predict, in_shardings=(setup.params_shardings, setup.batch_sharding, setup.row_sharding),
                     out_shardings=sharding.replicated(setup.mesh))
    return sharding.InMesh(jitted, setup.mesh)


def local_rows(rows: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """This process's slice of a global batch's rows."""
    count, index = jax.process_count(), jax.process_index()
    return tuple(np.array_split(array, count)[index] for array in rows)


def place(setup: Setup, rows: tuple[np.ndarray, np.ndarray, np.ndarray]):
    tokens, lengths, labels = local_rows(rows)
    return (sharding.global_batch(tokens, setup.batch_sharding), sharding.global_batch(lengths, setup.row_sharding),
            sharding.global_batch(labels, setup.row_sharding))


def predict_logits(setup: Setup, predict, params, data: Encoded) -> np.ndarray:
    """float32 logits [n, classes] of every example, in order."""
    outputs = []
    for rows, real in eval_batches(data, setup.config.eval.batch_size):
        tokens, lengths, _ = place(setup, rows)
        outputs.append((predict(params, tokens, lengths), real))
    return np.concatenate([np.asarray(jax.device_get(logits))[:real] for logits, real in outputs]).astype(np.float32)


def evaluate(setup: Setup, predict, params, data: Encoded, class_names) -> dict:
    """The classification report of `data` plus its mean loss (nats)."""
    logits = predict_logits(setup, predict, params, data)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = float(-log_probabilities[np.arange(len(data)), data.labels].mean())
    report = classification.classification_report(
        classification.confusion_matrix(data.labels, logits.argmax(axis=1), len(class_names)), class_names)
    return {"loss": loss, **report}


def score(result: dict, metric: str) -> float:
    """Higher is better: accuracy, macro F1, or −loss."""
    return {"accuracy": result["accuracy"], "macro_f1": result["macro"]["f1"], "loss": -result["loss"]}[metric]


def after_eval(best_score: float, evals_since_best: int, new_score: float) -> tuple[bool, int]:
    """(improved, evaluations since the best) after one evaluation; only a strictly higher score
    counts, so a plateau runs out the patience."""
    if new_score > best_score:
        return True, 0
    return False, evals_since_best + 1


def patience_ran_out(state: FinetuneState, patience: int) -> bool:
    return patience > 0 and int(state.evals_since_best) >= patience


def make_copy(setup: Setup):
    """params → a copy in new buffers (the train step donates the originals); one compile for
    the whole tree, where an eager jnp.copy per leaf would compile once per shape."""
    copy = jax.jit(lambda params: jax.tree.map(jnp.copy, params), out_shardings=setup.params_shardings)
    return sharding.InMesh(copy, setup.mesh)


def record_eval(state: FinetuneState, new_score: float, step: int, copy) -> FinetuneState:
    new_score = float(np.float32(new_score))  # compared as stored: a float32 in the checkpoint
    improved, since = after_eval(float(state.best_score), int(state.evals_since_best), new_score)
    if not improved:
        return state.replace(evals_since_best=jnp.asarray(since, jnp.int32))
    return state.replace(best_params=copy(state.train.params), best_score=jnp.asarray(new_score, jnp.float32),
                         best_step=jnp.asarray(step, jnp.int32), evals_since_best=jnp.asarray(0, jnp.int32))


def finished(state: FinetuneState, config) -> bool:
    return int(state.train.step) >= config.train.steps or patience_ran_out(state, config.eval.patience)


def eval_record(step: int, result: dict) -> dict:
    return {"step": step, "eval_loss": result["loss"], "eval_accuracy": result["accuracy"], "eval_macro_f1": result["macro"]["f1"]}


def train_loop(setup: Setup, manager, state: FinetuneState, data: dict, class_names, log, progress, stop, stop_at_step: int | None,
               guard=None):
    """Steps from the restored step until the end, an early stop, stop_at_step or a signal.
    Returns (exit code, state): OK when done or at stop_at_step, STOPPED on a signal, FAILED on a
    non-finite loss (the last good checkpoint is kept). `guard` (files.StorageGuard) is checked
    before each checkpoint."""
    config = setup.config
    last_step = config.train.steps
    end_step = min(last_step, stop_at_step or last_step)
    train, validation = data["train"], data["validation"]
    predict, copy = make_predict(setup), make_copy(setup)

    def batch_at(step: int):
        return place(setup, train.rows(train_indices(step, config.train.batch_size, len(train), config.seed)))

    start_step = int(state.train.step)
    compile_start = time.perf_counter()
    train_step = make_train_step(setup).lower(state.train, *batch_at(start_step)).compile()
    progress.message(f"compiled the train step in {time.perf_counter() - compile_start:.1f}s")
    interval_start = time.perf_counter()
    for done in range(start_step + 1, end_step + 1):
        train_state, step_metrics = train_step(state.train, *batch_at(done - 1))
        state = state.replace(train=train_state)
        stopping = stop.agreed(at_sync_point=due(done, config.train.log_every, last_step))
        if due(done, config.train.log_every, last_step):
            record = {"step": done, **{key: float(value) for key, value in jax.device_get(step_metrics).items()}}
            if not (math.isfinite(record["loss"]) and math.isfinite(record["grad_norm"])):
                print(f"error: loss became non-finite by step {done}; kept the last good checkpoint: lower optim.lr",
                      file=sys.stderr, flush=True)
                return exit_codes.FAILED, state
            record["examples_per_s"] = config.train.batch_size * (done - start_step) / (time.perf_counter() - interval_start)
            record["tokens_per_s"] = record["examples_per_s"] * config.task.seq_len  # padded rows, as the model computes them
            log.write(record)
            progress.update(done, record)
        out_of_patience = False
        if due(done, config.eval.every_steps, last_step):
            result = evaluate(setup, predict, state.train.params, validation, class_names)
            state = record_eval(state, score(result, config.eval.metric), done, copy)
            log.write(eval_record(done, result))
            out_of_patience = patience_ran_out(state, config.eval.patience)
            progress.message(f"step {done} validation accuracy {result['accuracy']:.4f} macro-F1 {result['macro']['f1']:.4f} "
                             f"loss {result['loss']:.4f} (best at step {int(state.best_step)})"
                             + (f"; no improvement in {config.eval.patience} evaluations: stopping early" if out_of_patience else ""))
        if due(done, config.checkpoint.every_steps, end_step) or stopping or out_of_patience:
            if guard is not None:
                guard.check()  # fail before writing (disk full, OUT gone), not halfway through
            checkpoint.save(manager, done, state)
        if out_of_patience:
            break
        if stopping and done < last_step:
            progress.message(f"stopped by signal after step {done} and checkpointed; run the same command to resume")
            return exit_codes.STOPPED, state
    return exit_codes.OK, state
