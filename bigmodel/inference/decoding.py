"""Token generation with a KV cache: left-pad a batch of prompts, prefill the cache once, then
decode one token per step in a `lax.while_loop`, the loop inside one jitted call.

Prompts of different lengths are left-padded (`model.KVCache` says why): every row's prompt ends
at the same slot, so one write index serves the batch and the prefill's last logits are every
row's next-token logits. The cache has the slots the token buffer can fill (prompt slots +
buffer - 1: the last drawn token is never fed back), so attention reads nothing more.

The loop's carry (`DecodeState`) is what the jitted calls pass between them, and the loop runs
until a step bound given as an argument: one call runs the whole loop, or streaming runs it a
chunk at a time (one compiled program for any chunk size), drawing exactly the same tokens. A
server pads batches to a few fixed shapes (`BatchShape`) so requests of other sizes reuse them.

Deterministic: the draw at step s uses fold_in(key(seed), s), so the same seed, prompts and
settings give the same tokens. A row that has produced its stop sequence emits PAD from then on
(not counted), and the loop exits as soon as every row has stopped; rows are not compacted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time
from typing import Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from bigmodel.attention import KVCache, empty_cache
from bigmodel.model import Transformer
from bigmodel.inference.sampling import Sampling, sample

PAD = 0  # the id in padding slots and after a row stops: never attended to, never returned
STREAM_TOKENS = 16  # tokens per decode call when streaming: a host round trip (and a cache copy) per 16 costs little


@dataclasses.dataclass(frozen=True)
class PromptBatch:
    tokens: np.ndarray  # [rows, slots] int32, each prompt right-aligned after PAD
    start: np.ndarray  # [rows] int32: the slot of each row's first prompt token
    n_prompts: int  # rows beyond this repeat the last prompt to fill the batch's shards (or a BatchShape)


@dataclasses.dataclass(frozen=True)
class BatchShape:
    """The least rows, prompt slots and token-buffer length to pad a batch to. Each distinct
    shape compiles its own programs; a server that rounds batches up to a few shapes compiles a
    few. The defaults pad nothing beyond what the batch needs."""

    rows: int = 1
    slots: int = 1
    tokens: int = 1


@dataclasses.dataclass(frozen=True)
class Generated:
    """Per prompt: the drawn ids (a stop sequence included) and whether it stopped; and timings
    of the compiled calls (compilation excluded, timed on its own, when compiled ahead)."""

    tokens: list[list[int]]
    stopped: list[bool]
    prompt_tokens: int  # real prompt tokens of all prompts (padding not counted)
    prefill_s: float
    decode_s: float
    compile_s: float

    @property
    def decode_tokens(self) -> int:
        """Tokens drawn inside the decode loop; each row's first comes from the prefill."""
        return sum(max(len(ids) - 1, 0) for ids in self.tokens)


@flax.struct.dataclass
class DecodeState:
    """The decode loop's carry, and what one jitted call hands the next."""

    step: jax.Array  # [] int32: tokens drawn per row so far; the next goes to tokens[:, step]
    tokens: jax.Array  # [rows, buffer] int32: drawn tokens, PAD after a row has stopped
    cache: KVCache
    recent: jax.Array  # [rows, max(len(stop_ids), 1)]: each row's last tokens (-1 before there are that many)
    done: jax.Array  # [rows] bool: the row has drawn its stop sequence
    lengths: jax.Array  # [rows] int32: tokens drawn before (and including) the stop sequence


def left_pad(prompts: list[list[int]], row_multiple: int = 1, shape: BatchShape = BatchShape()) -> PromptBatch:
    """Prompts as one left-padded batch of at least `shape.rows` rows and `shape.slots` slots,
    its row count a multiple of `row_multiple` (the data-parallel width: each device gets whole
    rows; the extra rows are dropped later)."""
    rows = -(-max(len(prompts), shape.rows) // row_multiple) * row_multiple
    padded = prompts + [prompts[-1]] * (rows - len(prompts))
    slots = max(shape.slots, *map(len, padded))
    tokens = np.full((rows, slots), PAD, np.int32)
    start = np.array([slots - len(prompt) for prompt in padded], np.int32)
    for row, prompt in enumerate(padded):
        tokens[row, start[row]:] = prompt
    return PromptBatch(tokens, start, len(prompts))


def ends_with(recent: jax.Array, stop_ids: tuple[int, ...]) -> jax.Array:
    """[rows] bool: the last len(stop_ids) drawn tokens of each row are the stop sequence."""
    if not stop_ids:
        return jnp.zeros(recent.shape[0], bool)
    return jnp.all(recent == jnp.asarray(stop_ids, jnp.int32), axis=-1)


# Jitted at module level with the model and the settings static, so calls that differ only in
# parameters, prompts of the same shape, the seed or the step bound reuse one compiled program.
@functools.partial(jax.jit, static_argnames=("model", "buffer", "sampling", "stop_ids"))
def prefill(model: Transformer, params, tokens: jax.Array, start: jax.Array, key: jax.Array, buffer: int, sampling: Sampling,
            stop_ids: tuple[int, ...]) -> DecodeState:
    """The prompts in one pass, attending only to each other (an empty cache): their keys and
    values start a cache with room for `buffer` tokens, and the first token is drawn."""
    logits, keys_values = model.apply({"params": params}, tokens, cache=empty_cache(model.config, start, 0))
    cache = empty_cache(model.config, start, tokens.shape[1] + buffer - 1).append(*keys_values)
    first = sample(jax.random.fold_in(key, 0), logits[:, -1], sampling)
    rows = first.shape[0]
    recent = jnp.full((rows, max(len(stop_ids), 1)), -1, jnp.int32).at[:, -1].set(first)
    return DecodeState(step=jnp.int32(1), tokens=jnp.full((rows, buffer), PAD, jnp.int32).at[:, 0].set(first), cache=cache,
                       recent=recent, done=ends_with(recent, stop_ids), lengths=jnp.ones(rows, jnp.int32))


# `state` is not donated: donating it measured 10-25% slower decoding of 8 rows on XLA:CPU (and
# no faster for one), though without it each call copies the cache once (streaming: once a chunk).
@functools.partial(jax.jit, static_argnames=("model", "sampling", "stop_ids"))
def decode(model: Transformer, params, state: DecodeState, key: jax.Array, until: jax.Array, sampling: Sampling,
           stop_ids: tuple[int, ...]) -> DecodeState:
    """`state` after drawing tokens up to step `until` (≤ the buffer), or until every row has
    stopped: one cached forward of one token per step."""

    def not_finished(state: DecodeState) -> jax.Array:
        return (state.step < until) & ~jnp.all(state.done)

    def step_once(state: DecodeState) -> DecodeState:
        last = state.recent[:, -1]
        logits, keys_values = model.apply({"params": params}, last[:, None], cache=state.cache)
        token = jnp.where(state.done, PAD, sample(jax.random.fold_in(key, state.step), logits[:, 0], sampling))
        recent = jnp.concatenate([state.recent[:, 1:], token[:, None]], axis=1)
        return DecodeState(step=state.step + 1, tokens=state.tokens.at[:, state.step].set(token),
                           cache=state.cache.append(*keys_values), recent=recent, done=state.done | ends_with(recent, stop_ids),
                           lengths=state.lengths + (~state.done).astype(jnp.int32))

    return jax.lax.while_loop(not_finished, step_once, state)


def batch_shards(batch_sharding: NamedSharding | None) -> int:
    """How many devices split the batch axis (1 without a sharding)."""
    if batch_sharding is None:
        return 1
    axes = batch_sharding.spec[0] if batch_sharding.spec else None
    axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    return math.prod(batch_sharding.mesh.shape[axis] for axis in axes)


def _timed(function, *args):
    """(outputs, seconds) of one call, waiting for the device to finish."""
    begin = time.perf_counter()
    outputs = jax.block_until_ready(function(*args))
    return outputs, time.perf_counter() - begin


@dataclasses.dataclass(frozen=True)
class Programs:
    prefill: Callable  # (params, tokens, start, key) -> DecodeState
    decode: Callable  # (params, state, key, until) -> DecodeState
    compile_s: float  # 0 when they compile on first use


def compile_ahead(model, params, tokens, start, key, buffer: int, sampling: Sampling, stop_ids: tuple[int, ...]) -> Programs:
    """Both programs compiled now (`lower().compile()`), so the timed calls are runs only."""
    begin = time.perf_counter()
    traced = prefill.trace(model, params, tokens, start, key, buffer, sampling, stop_ids)
    prefill_compiled = traced.lower().compile()
    state = jax.tree.map(lambda shape, where: jax.ShapeDtypeStruct(shape.shape, shape.dtype, sharding=where),
                         traced.out_info, prefill_compiled.output_shardings)
    until = jax.ShapeDtypeStruct((), jnp.int32)
    decode_compiled = decode.lower(model, params, state, key, until, sampling, stop_ids).compile()
    return Programs(prefill_compiled, decode_compiled, time.perf_counter() - begin)


def compile_on_first_use(model, buffer: int, sampling: Sampling, stop_ids: tuple[int, ...]) -> Programs:
    """The jitted functions themselves: jit compiles each new shape once and keeps it, which is
    what a long-lived process (a server) wants."""
    return Programs(lambda params, tokens, start, key: prefill(model, params, tokens, start, key, buffer, sampling, stop_ids),
                    lambda params, state, key, until: decode(model, params, state, key, until, sampling, stop_ids), 0.0)


def drawn_ids(state: DecodeState, n_prompts: int) -> list[list[int]]:
    """Each real row's drawn ids so far (through its stop sequence), on the host."""
    tokens, lengths, step = np.asarray(state.tokens), np.asarray(state.lengths), int(state.step)
    return [tokens[row, : min(lengths[row], step)].tolist() for row in range(n_prompts)]


def run_decode(decode_program, params, state: DecodeState, key, max_tokens: int, on_chunk, n_prompts: int):
    """(final state, seconds in decode calls): one call to `max_tokens`; or, given `on_chunk`,
    calls of STREAM_TOKENS steps each, handing on_chunk the ids drawn so far after each one."""
    if on_chunk is None:
        return _timed(decode_program, params, state, key, np.int32(max_tokens))
    on_chunk(drawn_ids(state, n_prompts))  # the prefill's token, at once
    seconds, until = 0.0, 1
    while until < max_tokens and not bool(np.all(np.asarray(state.done)[:n_prompts])):
        until = min(until + STREAM_TOKENS, max_tokens)
        state, chunk_s = _timed(decode_program, params, state, key, np.int32(until))
        seconds += chunk_s
        on_chunk(drawn_ids(state, n_prompts))
    return state, seconds


def generate_tokens(model: Transformer, params, prompts: list[list[int]], max_tokens: int, sampling: Sampling, seed: int,
                    stop_ids: tuple[int, ...] = (), batch_sharding: NamedSharding | None = None, rules: tuple = (), *,
                    shape: BatchShape = BatchShape(), ahead_of_time: bool = True,
                    on_chunk: Callable[[list[list[int]]], None] | None = None) -> Generated:
    """Up to `max_tokens` new tokens after each prompt (lists of ids, none empty).

    With `batch_sharding` (the run's [batch, seq] sharding) and the run's logical axis `rules`,
    rows are split over its mesh and the model's logical constraints apply, as in training;
    parameters stay where they were restored. `ahead_of_time` compiles both programs before
    running them (a one-shot command: compile time reported apart); otherwise jit compiles on
    first use and keeps them (a server). `shape` pads the batch (rows, prompt slots, token
    buffer) to at least that. `on_chunk` streams: see `run_decode`.
    """
    batch = left_pad(prompts, batch_shards(batch_sharding), shape)
    buffer = max(max_tokens, shape.tokens)
    tokens, start, key = jnp.asarray(batch.tokens), jnp.asarray(batch.start), jax.random.key(seed)
    if batch_sharding is not None:
        tokens = jax.device_put(tokens, batch_sharding)
        start = jax.device_put(start, NamedSharding(batch_sharding.mesh, PartitionSpec(batch_sharding.spec[0])))
    placed = batch_sharding is not None
    with jax.set_mesh(batch_sharding.mesh) if placed else contextlib.nullcontext(), nn.logical_axis_rules(rules):
        if ahead_of_time:
            programs = compile_ahead(model, params, tokens, start, key, buffer, sampling, stop_ids)
            # The first run of a compiled program pays one-time setup (about 10 ms on a CPU, most of a
            # short prompt's prefill), so the prefill is timed on its second run. The decode loop is
            # timed on its first: the setup is spread over every step.
            _timed(programs.prefill, params, tokens, start, key)
        else:
            programs = compile_on_first_use(model, buffer, sampling, stop_ids)
        state, prefill_s = _timed(programs.prefill, params, tokens, start, key)
        state, decode_s = run_decode(programs.decode, params, state, key, max_tokens, on_chunk, batch.n_prompts)
    ids = drawn_ids(state, batch.n_prompts)
    stopped = [bool(stop_ids) and tuple(row_ids[-len(stop_ids):]) == tuple(stop_ids) for row_ids in ids]
    return Generated(ids, stopped, sum(map(len, prompts)), prefill_s, decode_s, programs.compile_s)
