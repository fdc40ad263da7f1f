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
import os
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
from jax.experimental import multihost_utils

from bigmodel import branch, checkpoint, config as config_lib, exit_codes, files, metrics as metrics_lib, run_info, runtime, sharding
from bigmodel import workdir as workdir_lib
from bigmodel.flops import run_stats
from bigmodel.memory import compiled_memory
from bigmodel.model import Transformer, model_config
from bigmodel.optim import make_optimizer
from bigmodel.prefetch import Prefetcher

# One validation order for every run, so eval losses compare across seeds and sizes.
VALIDATION_SEED = 0


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
    rules: tuple  # logical axis name → mesh axes, from config.sharding.rules
    compile_time_s: float | None = None  # set when the train step is compiled


def build(config: ml_collections.ConfigDict) -> Setup:
    mesh = sharding.make_mesh(config.mesh)
    rules = sharding.logical_rules(config)
    model = Transformer(model_config(config))
    optimizer, schedule = make_optimizer(config.optim, config.train.steps, model.config)  # model.config: muP's lr groups

    def boxed_state(key: jax.Array) -> TrainState:
        params = model.init(key, jnp.zeros((1, config.data.seq_len), jnp.int32))["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))

    with nn.logical_axis_rules(rules):
        abstract_boxed = jax.eval_shape(boxed_state, jax.random.key(0))
        state_shardings = sharding.tree_shardings(abstract_boxed, mesh, rules)
    def unboxed_state(key: jax.Array) -> TrainState:
        with nn.logical_axis_rules(rules):  # unboxing constrains each parameter to its sharding
            return nn.unbox(boxed_state(key))

    init_state = sharding.InMesh(jax.jit(unboxed_state, out_shardings=state_shardings), mesh)
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
        rules=rules,
    )


def make_train_step(setup: Setup):
    """(state, batch [batch, seq+1]) → (state, {loss, grad_norm, lr}); jitted, state donated."""
    config, model, optimizer = setup.config, setup.model, setup.optimizer
    accum, dropout = config.train.grad_accum, config.model.dropout > 0

    def loss_fn(params, tokens, key):
        # The model computes the loss itself: with model.loss_chunk_tokens it never holds the
        # whole micro-batch's float32 logits.
        return model.apply({"params": params}, tokens[:, :-1], deterministic=not dropout, targets=tokens[:, 1:], rngs={"dropout": key})

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
        with nn.logical_axis_rules(setup.rules):
            return step_fn(state, batch)

    jitted = jax.jit(
        with_rules,
        in_shardings=(setup.state_shardings, setup.batch_sharding),
        out_shardings=(setup.state_shardings, sharding.replicated(setup.mesh)),
        donate_argnums=0,
    )
    return sharding.InMesh(jitted, setup.mesh)


def make_eval_step(setup: Setup):
    """(params, batch) → mean loss in nats/token."""

    def eval_fn(params, batch):
        with nn.logical_axis_rules(setup.rules):
            return setup.model.apply({"params": params}, batch[:, :-1], deterministic=True, targets=batch[:, 1:])

    return sharding.InMesh(jax.jit(eval_fn, in_shardings=(setup.state_shardings.params, setup.batch_sharding)), setup.mesh)


def validation_loss(setup: Setup, eval_step, params, validation, n_batches: int) -> dict[str, float]:
    """Mean validation loss over the first n_batches fixed batches, and bits per byte."""
    batch_size = setup.config.train.batch_size // setup.config.train.grad_accum
    losses = []
    for index in range(n_batches):
        rows = validation.batch(index, batch_size, jax.process_index(), jax.process_count())
        losses.append(eval_step(params, sharding.global_batch(rows, setup.batch_sharding)))
    loss = float(np.mean(jax.device_get(losses)))
    return {"eval_loss": loss, "eval_bpb": loss / math.log(2) / validation.bytes_per_token}


# ----------------------------------------------------------------------------- resume


@dataclasses.dataclass
class Resumed:
    state: TrainState
    step: int  # the first step to run
    earlier_wall_time_s: float  # wall time of the earlier attempts (it accumulates over resumes)


def restore_or_init(setup: Setup, manager) -> tuple[TrainState, int]:
    """The newest readable checkpoint on this run's shardings (an unreadable one is moved aside, to
    be written again), else a branch's start, else a fresh state; `bigmodel.restore` only reads."""
    target = checkpoint.abstract_target(setup.abstract_state, setup.state_shardings)
    state, step = checkpoint.restore_newest_readable(manager, target, move_unreadable=True)
    if state is None and setup.config.train.get("init_from"):  # a cooldown branch's first start
        return branch.restore_branch_point(setup.config, target)
    if state is None:
        return setup.init_state(jax.random.key(setup.config.seed)), 0
    return state, step


def resume(setup: Setup, manager, workdir: Path, is_writer: bool) -> Resumed:
    """Restore (or init), and cut metrics.jsonl back to the restored step: the steps after it
    are computed again, so the curve stays single-valued."""
    state, step = restore_or_init(setup, manager)
    if is_writer:
        metrics_lib.truncate_metrics_after(workdir, step)
    earlier = [record for record in metrics_lib.read_metrics(workdir) if "wall_time_s" in record]
    return Resumed(state, step, earlier[-1]["wall_time_s"] if earlier else 0.0)


# ----------------------------------------------------------------------------- the loop


def due(step: int, every: int, last_step: int) -> bool:
    """The one cadence rule for logging, eval and checkpoints: every N steps, and the last step."""
    return step % every == 0 or step == last_step


def _finite(record: dict) -> bool:
    return math.isfinite(record["loss"]) and math.isfinite(record["grad_norm"])


class StopRequest:
    """Set by SIGTERM (preemption) or Ctrl-C: the loop checkpoints the current step and exits
    STOPPED. Further signals only say so: a second Ctrl-C must not tear the checkpoint.
    A preemption must be served within the scheduler's grace period: with several processes,
    keep train.log_every steps well inside it."""

    def __init__(self):
        self.requested = False
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, self._handle)

    def agreed(self, at_sync_point: bool) -> bool:
        """Whether to stop after this step. One process: its own request. Several: any process's,
        compared at sync points only (the log cadence, the same steps on every process), so all
        of them checkpoint the same step and no host sync is added between log steps."""
        if jax.process_count() == 1:
            return self.requested
        if not at_sync_point:
            return False
        return bool(np.any(multihost_utils.process_allgather(np.array(self.requested))))

    def _handle(self, signum, _frame) -> None:
        if self.requested:
            print(f"already stopping ({signal.Signals(signum).name}): checkpointing the current step, then exiting", file=sys.stderr, flush=True)
        self.requested = True


@dataclasses.dataclass
class Interval:
    """Steps and time since the last logged record, excluding eval and checkpoint pauses."""

    start: float
    steps: int = 0
    paused_s: float = 0.0

    def elapsed_s(self, now: float) -> float:
        return now - self.start - self.paused_s


def train_record(step: int, metrics: dict, interval: Interval, now: float, tokens_per_step: int, wall_time_s: float) -> dict:
    elapsed = interval.elapsed_s(now)
    return {
        "step": step,
        "loss": float(metrics["loss"]),
        "lr": float(metrics["lr"]),
        "grad_norm": float(metrics["grad_norm"]),
        "tokens_seen": step * tokens_per_step,
        "tokens_per_s": interval.steps * tokens_per_step / elapsed,
        "step_time_s": elapsed / interval.steps,
        "wall_time_s": wall_time_s,
    }


def state_bytes(abstract_state) -> int:
    """Bytes of the whole train state, uncompressed: an upper bound of a checkpoint's size."""
    return sum(math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(abstract_state))


def write_summary(config, workdir: Path, compile_time_s: float | None, train_data=None) -> dict:
    """summary.json from config and metrics.jsonl (so it is right after any number of resumes), and
    `train_data`'s size (`train_split_tokens`: the unique data a fit compares D_opt with)."""
    records = metrics_lib.read_metrics(workdir)
    train_records = [record for record in records if "loss" in record]
    eval_records = [record for record in records if "eval_loss" in record]
    stats = run_stats(config)
    tokens = config.train.steps * config.train.batch_size * config.data.seq_len
    compute = model_config(config)  # what "auto" resolved to on the devices of this (last) attempt
    summary = {
        **stats,
        "dtype": compute.dtype,
        "attention": compute.attention,
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
    if getattr(train_data, "tokens", None) is not None:
        summary["train_split_tokens"] = int(train_data.tokens.size)
    files.write_json_atomic(Path(workdir) / "summary.json", summary)
    return summary


def run(config: ml_collections.ConfigDict, workdir: Path, stop_at_step: int | None = None, stop: StopRequest | None = None) -> int:
    """Train until config.train.steps (or stop_at_step), checkpointing; return an exit code."""
    from bigmodel.data import load_dataset  # grain and sentencepiece load for a run, not for plan's compile

    is_writer = jax.process_index() == 0
    stop = stop or StopRequest()
    if checkpoint.newest_step(workdir) >= config.train.steps:  # before loading any data
        if is_writer and not (workdir / "summary.json").exists():
            write_summary(config, workdir, compile_time_s=None)
        print(f"{workdir} already finished {config.train.steps} steps; see {workdir / 'summary.json'}")
        return exit_codes.OK
    train_data = load_dataset(config.data, "train", config.seed)  # a bad dataset name fails here,
    validation = load_dataset(config.data, "validation", seed=VALIDATION_SEED)  # before anything is written
    lock = workdir_lib.claim(workdir)  # noqa: F841 — held until the process exits
    manager = checkpoint.make_manager(workdir, config.checkpoint.keep, checkpoint.kept_steps(config))
    setup = build(config)
    try:
        resumed = resume(setup, manager, workdir, is_writer)
    except checkpoint.NoReadableCheckpoint as error:
        print(f"error: {error}", file=sys.stderr)
        return exit_codes.FAILED
    except checkpoint.ShapeMismatch as error:
        raise config_lib.ConfigError(str(error)) from None
    if is_writer:
        workdir_lib.write_config(config, workdir)  # only now: every check has passed and the run will start
    log = metrics_lib.MetricsLog(workdir, enabled=is_writer, config=config)
    progress = metrics_lib.Progress(config.train.steps, resumed.step, enabled=is_writer)
    if resumed.step:
        fresh_branch = config.train.get("init_from") and not manager.all_steps()
        progress.message(f"branched from {config.train.init_from} at step {resumed.step}" if fresh_branch else f"resumed from checkpoint at step {resumed.step}")
    guard = files.StorageGuard.of(workdir, bytes_needed=state_bytes(setup.abstract_state))
    try:
        with files.storage_faults(guard):
            code = train_loop(setup, manager, resumed, train_data, validation, log, progress, stop, stop_at_step, guard)
            manager.wait_until_finished()  # async writes surface their errors here
            finished = code == exit_codes.OK and is_writer and (stop_at_step or config.train.steps) >= config.train.steps
            summary = write_summary(config, workdir, setup.compile_time_s, train_data) if finished else None
            log.summarize(summary)
    except exit_codes.StorageFailed as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return exit_codes.STORAGE_ERROR
    finally:
        progress.close()
        log.close()
    manager.close()
    if summary is not None:
        print(json.dumps({key: summary[key] for key in ("steps", "final_loss", "final_eval_loss", "eval_bpb", "wall_time_s")}))
    return code


def train_loop(setup: Setup, manager, resumed: Resumed, train_data, validation, log, progress, stop: StopRequest,
               stop_at_step: int | None, guard: files.StorageGuard) -> int:
    """Steps from resumed.step to the end (or a stop); logs, evaluates and checkpoints on the
    `due` cadence. Returns OK, STOPPED (signal; checkpointed) or FAILED (non-finite loss)."""
    config = setup.config
    last_step = config.train.steps
    end_step = min(last_step, stop_at_step or last_step)
    tokens_per_step = config.train.batch_size * config.data.seq_len
    process = (jax.process_index(), jax.process_count())

    def batch_at(step: int) -> jax.Array:
        return sharding.global_batch(train_data.batch(step, config.train.batch_size, *process), setup.batch_sharding)

    run_start = time.perf_counter()
    train_step = make_train_step(setup).lower(resumed.state, batch_at(resumed.step)).compile()
    setup.compile_time_s = time.perf_counter() - run_start
    progress.message(f"compiled in {setup.compile_time_s:.1f}s; {compiled_memory(train_step, setup, config.train.batch_size).line()}")
    eval_step = make_eval_step(setup)
    state, interval, last_checkpoint = resumed.state, Interval(time.perf_counter()), manager.latest_step()
    stopping = False
    # Step s+1's batch is read and placed on the devices while step s runs. From here on only the
    # prefetch thread reads train_data (the compile above read the first batch before it started).
    with Prefetcher(batch_at, range(resumed.step, end_step)) as batches:
        for done in range(resumed.step + 1, end_step + 1):
            state, step_metrics = train_step(state, next(batches))
            interval.steps += 1
            if stop.agreed(at_sync_point=due(done, config.train.log_every, last_step)):  # checkpoint this step, then stop
                end_step, stopping = done, True
            checkpoint_now = due(done, config.checkpoint.every_steps, end_step) or checkpoint.is_kept_step(done, config)
            if due(done, config.train.log_every, last_step) or checkpoint_now:
                step_metrics = jax.device_get(step_metrics)  # waits for the step: dispatch is asynchronous
                now = time.perf_counter()
                record = train_record(done, step_metrics, interval, now, tokens_per_step, resumed.earlier_wall_time_s + now - run_start)
                if not _finite(record):  # never checkpoint a diverged state
                    print(f"error: loss became non-finite by step {done} (loss={record['loss']}, grad_norm={record['grad_norm']}); "
                          f"kept the last good checkpoint (step {last_checkpoint}); lower optim.lr or raise optim.warmup_steps",
                          file=sys.stderr, flush=True)
                    return exit_codes.FAILED
                if due(done, config.train.log_every, last_step):  # a stop's checkpoint adds no point to the curve
                    log.write(record)
                    progress.update(done, record)
                    interval = Interval(time.perf_counter())
            pause_start = time.perf_counter()
            if due(done, config.eval.every_steps, last_step):
                result = validation_loss(setup, eval_step, state.params, validation, config.eval.batches)
                log.write({"step": done, **result})
                progress.message(f"step {done} eval_loss {result['eval_loss']:.4f} eval_bpb {result['eval_bpb']:.4f}")
            if checkpoint_now:
                guard.check()  # fail before writing, not halfway through
                checkpoint.save(manager, done, state)
                last_checkpoint = done
            interval.paused_s += time.perf_counter() - pause_start
            if done == end_step:  # a stop request moved the end here
                break
    if stopping and end_step < last_step:
        progress.message(f"stopped by signal after step {end_step} and checkpointed; run the same command to resume")
        return exit_codes.STOPPED
    return exit_codes.OK


def train_command(spec: str, overrides: dict[str, str], workdir: str, stop_at_step: int | None = None) -> int:
    config = config_lib.load_config(spec, overrides)
    config_lib.validate(config, jax.device_count(), jax.process_count())
    workdir = Path(workdir)
    workdir_lib.check(config, workdir)
    stop = StopRequest()  # from here on, a signal means "checkpoint and exit", not a traceback
    if runtime.EARLY_STOP["requested"]:  # SIGTERM while starting (bigmodel.runtime): nothing is written yet
        print("stopped by SIGTERM while starting, before any step: rerun the same command to start or resume", file=sys.stderr)
        return exit_codes.STOPPED
    code = run(config, workdir, stop_at_step, stop)
    if code == exit_codes.STORAGE_ERROR:
        leave_at_once(code)
    return code


def leave_at_once(code: int) -> None:
    """Exit now, after a storage failure: orbax's writer threads are still failing against the
    broken storage, and a normal exit joins them and prints their tracebacks under the one error
    line. The metrics are flushed; the kernel releases the lock and closes the files."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
