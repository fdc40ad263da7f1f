"""Train (or resume) one language model in a workdir. Reads top to bottom:

  config → mesh + model + optimizer → state (fresh, or restored from the latest checkpoint)
  → loop: batch(seed, step) → jitted, donated train_step → log / eval / checkpoint → summary.json

The batch at step s and the dropout key at step s are pure functions of (seed, s), so a resumed
run computes exactly what an uninterrupted run would have.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from bigmodel import checkpoint, config as config_lib, files, metrics as metrics_lib, run_info, sharding
from bigmodel.flops import model_stats
from bigmodel.model import Transformer, cross_entropy, model_config
from bigmodel.optim import make_optimizer

# Keys that may change between a run and its resumption without changing what is computed
# (train.steps is allowed so a finished run can be extended; its schedule then changes).
# One validation order for every run, so eval losses compare across seeds and sizes.
VALIDATION_SEED = 0
RESUMABLE_CHANGES = ("train.steps", "train.log_every", "mesh.", "checkpoint.", "eval.every_steps")


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


@dataclasses.dataclass
class Setup:
    """Everything compiled or derived once from a config."""

    config: ml_collections.ConfigDict
    model: Transformer
    optimizer: optax.GradientTransformation
    schedule: optax.Schedule
    mesh: jax.sharding.Mesh
    state_shardings: Any
    batch_sharding: jax.sharding.NamedSharding
    abstract_state: Any
    init_state: Callable[[jax.Array], TrainState]


def build(config: ml_collections.ConfigDict) -> Setup:
    mesh = sharding.make_mesh(config.mesh)
    rules = sharding.logical_rules(config)
    model = Transformer(model_config(config))
    optimizer, schedule = make_optimizer(config.optim, config.train.steps)

    def boxed_state(key: jax.Array) -> TrainState:
        params = model.init(key, jnp.zeros((1, config.data.seq_len), jnp.int32))["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))

    with nn.logical_axis_rules(rules):
        abstract_boxed = jax.eval_shape(boxed_state, jax.random.key(0))
        state_shardings = sharding.tree_shardings(abstract_boxed, mesh, rules)
    init_state = jax.jit(lambda key: nn.unbox(boxed_state(key)), out_shardings=state_shardings)
    return Setup(
        config=config,
        model=model,
        optimizer=optimizer,
        schedule=schedule,
        mesh=mesh,
        state_shardings=state_shardings,
        batch_sharding=sharding.batch_sharding(mesh, rules),
        abstract_state=nn.unbox(abstract_boxed),
        init_state=init_state,
    )


def make_train_step(setup: Setup):
    """(state, batch [batch, seq+1]) → (state, {loss, grad_norm, lr}); jitted, state donated."""
    config, model, optimizer = setup.config, setup.model, setup.optimizer
    accum, dropout = config.train.grad_accum, config.model.dropout > 0
    rules = sharding.logical_rules(config)

    def loss_fn(params, tokens, key):
        logits = model.apply({"params": params}, tokens[:, :-1], deterministic=not dropout, rngs={"dropout": key})
        return cross_entropy(logits, tokens[:, 1:])

    def step_fn(state: TrainState, batch: jax.Array):
        key = jax.random.fold_in(jax.random.key(config.seed), state.step)
        if accum == 1:
            loss, grads = jax.value_and_grad(loss_fn)(state.params, batch, key)
        else:
            # Micro-batch i takes rows i, i+accum, ...: each device keeps its own rows.
            micro_batches = batch.reshape(-1, accum, batch.shape[-1]).swapaxes(0, 1)

            def add_micro(carry, inputs):
                index, tokens = inputs
                loss, grads = jax.value_and_grad(loss_fn)(state.params, tokens, jax.random.fold_in(key, index))
                return jax.tree.map(jnp.add, carry, (loss, grads)), None

            zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, state.params))
            (loss, grads), _ = jax.lax.scan(add_micro, zeros, (jnp.arange(accum), micro_batches))
            loss, grads = jax.tree.map(lambda total: total / accum, (loss, grads))
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        new_state = TrainState(step=state.step + 1, params=optax.apply_updates(state.params, updates), opt_state=opt_state)
        return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads), "lr": setup.schedule(state.step)}

    def with_rules(state, batch):
        with nn.logical_axis_rules(rules):
            return step_fn(state, batch)

    return jax.jit(
        with_rules,
        in_shardings=(setup.state_shardings, setup.batch_sharding),
        out_shardings=(setup.state_shardings, sharding.replicated(setup.mesh)),
        donate_argnums=0,
    )


def make_eval_step(setup: Setup):
    """(params, batch) → mean loss in nats/token."""
    rules = sharding.logical_rules(setup.config)

    def eval_fn(params, batch):
        with nn.logical_axis_rules(rules):
            logits = setup.model.apply({"params": params}, batch[:, :-1], deterministic=True)
        return cross_entropy(logits, batch[:, 1:])

    return jax.jit(eval_fn, in_shardings=(setup.state_shardings.params, setup.batch_sharding))


def evaluate(setup: Setup, eval_step, params, validation, n_batches: int) -> dict[str, float]:
    """Mean validation loss over the first n_batches fixed batches, and bits per byte."""
    batch_size = setup.config.train.batch_size // setup.config.train.grad_accum
    losses = []
    for index in range(n_batches):
        rows = validation.batch(index, batch_size, jax.process_index(), jax.process_count())
        losses.append(eval_step(params, sharding.global_batch(rows, setup.batch_sharding)))
    loss = float(np.mean(jax.device_get(losses)))
    return {"eval_loss": loss, "eval_bpb": loss / math.log(2) / validation.bytes_per_token}


def restore_or_init(setup: Setup, manager) -> tuple[TrainState, int]:
    """The latest checkpoint placed on this run's shardings, or a fresh state."""
    step = manager.latest_step()
    if step is None:
        return setup.init_state(jax.random.key(setup.config.seed)), 0
    target = checkpoint.abstract_target(setup.abstract_state, setup.state_shardings)
    return checkpoint.restore(manager, step, target), step


def _finite(record: dict) -> bool:
    return math.isfinite(record["loss"]) and math.isfinite(record["grad_norm"])


def _stop_requested_flag() -> threading.Event:
    """An event set by SIGTERM (preemption) or Ctrl-C, so the loop can checkpoint before exiting."""
    requested = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: requested.set())
    return requested


def write_summary(config, workdir: Path, compile_time_s: float | None) -> dict:
    """summary.json from config and metrics.jsonl (so it is right after any number of resumes)."""
    records = metrics_lib.read_metrics(workdir)
    train_records = [record for record in records if "loss" in record]
    eval_records = [record for record in records if "eval_loss" in record]
    stats = model_stats(config.model, config.data)
    tokens = config.train.steps * config.train.batch_size * config.data.seq_len
    summary = {
        **stats,
        "tokens": tokens,
        "flops": stats["flops_per_token"] * tokens,
        "final_loss": train_records[-1]["loss"] if train_records else None,
        "final_eval_loss": eval_records[-1]["eval_loss"] if eval_records else None,
        "eval_bpb": eval_records[-1]["eval_bpb"] if eval_records else None,
        "steps": config.train.steps,
        "wall_time_s": train_records[-1]["wall_time_s"] if train_records else None,
        "compile_time_s": compile_time_s,
        **run_info.environment(),
    }
    files.write_json_atomic(Path(workdir) / "summary.json", summary)
    return summary


def run(config: ml_collections.ConfigDict, workdir: Path, stop_at_step: int | None = None) -> int:
    """Train until config.train.steps (or stop_at_step), checkpointing; return an exit code."""
    from bigmodel.data import load_dataset  # tensorflow-datasets is slow to import; only runs need it

    is_writer = jax.process_index() == 0
    manager = checkpoint.make_manager(workdir, config.checkpoint.keep)
    if (manager.latest_step() or 0) >= config.train.steps:
        manager.close()
        if is_writer and not (workdir / "summary.json").exists():
            write_summary(config, workdir, compile_time_s=None)
        print(f"{workdir} already finished {config.train.steps} steps; see {workdir / 'summary.json'}")
        return 0

    setup = build(config)
    train_data = load_dataset(config.data, "train", config.seed)
    validation = load_dataset(config.data, "validation", seed=VALIDATION_SEED)
    state, start_step = restore_or_init(setup, manager)
    if is_writer:
        metrics_lib.truncate_metrics_after(workdir, start_step)
    earlier = [record for record in metrics_lib.read_metrics(workdir) if "wall_time_s" in record]
    earlier_wall_time_s = earlier[-1]["wall_time_s"] if earlier else 0.0  # wall time accumulates over resumes
    log = metrics_lib.MetricsLog(workdir, enabled=is_writer)
    end_step = min(config.train.steps, stop_at_step or config.train.steps)
    progress = metrics_lib.Progress(config.train.steps, start_step, enabled=is_writer)
    if start_step:
        progress.message(f"resumed from checkpoint at step {start_step}")

    global_batch, tokens_per_step = config.train.batch_size, config.train.batch_size * config.data.seq_len
    process = (jax.process_index(), jax.process_count())

    def batch_at(step: int) -> jax.Array:
        return sharding.global_batch(train_data.batch(step, global_batch, *process), setup.batch_sharding)

    run_start = time.perf_counter()
    train_step = make_train_step(setup).lower(state, batch_at(start_step)).compile()
    compile_time_s = time.perf_counter() - run_start
    eval_step = make_eval_step(setup)

    preempted = _stop_requested_flag()
    interval_start = time.perf_counter()
    interval_steps, last_good_checkpoint, exit_code = 0, manager.latest_step(), 0
    paused_s = 0.0  # eval and checkpoint time inside the current log interval: not step time
    for step in range(start_step, end_step):
        state, step_metrics = train_step(state, batch_at(step))
        interval_steps += 1
        done = step + 1
        if preempted.is_set():  # SIGTERM/SIGINT: checkpoint this step, then stop; rerun resumes here
            end_step = done
        checkpoint_now = done % config.checkpoint.every_steps == 0 or done == end_step
        if done % config.train.log_every == 0 or checkpoint_now:
            step_metrics = jax.device_get(step_metrics)
            now = time.perf_counter()
            elapsed = now - interval_start - paused_s
            record = {
                "step": done,
                "loss": float(step_metrics["loss"]),
                "lr": float(step_metrics["lr"]),
                "grad_norm": float(step_metrics["grad_norm"]),
                "tokens_seen": done * tokens_per_step,
                "tokens_per_s": interval_steps * tokens_per_step / elapsed,
                "step_time_s": elapsed / interval_steps,
                "wall_time_s": earlier_wall_time_s + now - run_start,
            }
            if not _finite(record):
                print(
                    f"error: loss became non-finite by step {done} (loss={record['loss']}, grad_norm={record['grad_norm']}); "
                    f"kept the last good checkpoint (step {last_good_checkpoint}); lower optim.lr or raise optim.warmup_steps",
                    file=sys.stderr,
                )
                exit_code = 1
                break
            log.write(record)
            progress.update(done, record)
            interval_start, interval_steps, paused_s = time.perf_counter(), 0, 0.0
        pause_start = time.perf_counter()
        if done % config.eval.every_steps == 0 or done == config.train.steps:
            result = evaluate(setup, eval_step, state.params, validation, config.eval.batches)
            log.write({"step": done, **result})
            progress.message(f"step {done} eval_loss {result['eval_loss']:.4f} eval_bpb {result['eval_bpb']:.4f}")
        if checkpoint_now:
            checkpoint.save(manager, done, state)
            last_good_checkpoint = done
        paused_s += time.perf_counter() - pause_start
        if done == end_step:
            break
    manager.wait_until_finished()
    manager.close()
    progress.close()
    log.close()
    if preempted.is_set():
        progress.message(f"stopped by signal after step {end_step} and checkpointed; run the same command to resume")
    if exit_code or end_step < config.train.steps:
        return exit_code
    if is_writer:
        summary = write_summary(config, workdir, compile_time_s)
        print(json.dumps({key: summary[key] for key in ("steps", "final_loss", "final_eval_loss", "eval_bpb", "wall_time_s")}))
    return 0


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


def prepare_workdir(config: ml_collections.ConfigDict, workdir: Path) -> None:
    """Refuse to mix runs: an existing workdir must hold this same run (resume), or be empty."""
    config_path = workdir / "config.json"
    if config_path.exists():
        saved = json.loads(config_path.read_text())
        new = json.loads(config_lib.to_json(config))
        changes = [change for change in _config_changes(saved, new) if not change.startswith(RESUMABLE_CHANGES)]
        if changes:
            raise config_lib.ConfigError(
                f"workdir {workdir} holds a run with a different config ({'; '.join(changes[:3])}): use a new --workdir"
            )
    elif workdir.exists() and any(workdir.iterdir()):
        raise config_lib.ConfigError(f"workdir {workdir} exists and is not a bigmodel run (no config.json): pick a new --workdir")


def train_command(spec: str, overrides: dict[str, str], workdir: str, stop_at_step: int | None = None) -> int:
    config = config_lib.load_config(spec, overrides)
    config_lib.validate(config, jax.device_count(), jax.process_count())
    workdir = Path(workdir)
    prepare_workdir(config, workdir)
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(config_lib.to_json(config) + "\n")
    return run(config, workdir, stop_at_step)
