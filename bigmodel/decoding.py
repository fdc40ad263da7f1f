"""Token generation with a KV cache: left-pad a batch of prompts, prefill the cache once, then
decode one token per step in a `lax.while_loop`, the whole loop inside one jitted call.

Prompts of different lengths are left-padded (`model.KVCache` says why): every row's prompt ends
at the same slot, so one write index serves the batch and the prefill's last logits are every
row's next-token logits. The cache has exactly the slots this call fills (prompt slots +
max_tokens - 1: the last drawn token is never fed back), so attention reads nothing more.

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

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from bigmodel.model import Transformer, empty_cache
from bigmodel.sampling import Sampling, sample

PAD = 0  # the id in padding slots and after a row stops: never attended to, never returned


@dataclasses.dataclass(frozen=True)
class PromptBatch:
    tokens: np.ndarray  # [rows, slots] int32, each prompt right-aligned after PAD
    start: np.ndarray  # [rows] int32: the slot of each row's first prompt token
    n_prompts: int  # rows beyond this repeat the last prompt to fill the batch's shards


@dataclasses.dataclass(frozen=True)
class Generated:
    """Per prompt: the drawn ids (a stop sequence included) and whether it stopped; and timings
    of the compiled calls (compilation excluded, timed on its own)."""

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


def left_pad(prompts: list[list[int]], row_multiple: int = 1) -> PromptBatch:
    """Prompts as one left-padded batch whose row count is a multiple of `row_multiple` (the
    data-parallel width: each device gets whole rows; the extra rows are dropped later)."""
    rows = -(-len(prompts) // row_multiple) * row_multiple
    padded = prompts + [prompts[-1]] * (rows - len(prompts))
    slots = max(len(prompt) for prompt in padded)
    tokens = np.full((rows, slots), PAD, np.int32)
    start = np.array([slots - len(prompt) for prompt in padded], np.int32)
    for row, prompt in enumerate(padded):
        tokens[row, start[row]:] = prompt
    return PromptBatch(tokens, start, len(prompts))


# Jitted at module level with the model and the settings static, so calls that differ only in
# parameters, prompts of the same shape or the seed reuse one compiled program.
@functools.partial(jax.jit, static_argnames=("model", "max_tokens", "sampling"))
def prefill(model: Transformer, params, tokens: jax.Array, start: jax.Array, key: jax.Array, max_tokens: int, sampling: Sampling):
    """(first drawn token [rows], cache): the prompts run in one pass, attending only to each
    other (an empty cache), and their keys and values start a cache with room for the rest."""
    logits, keys_values = model.apply({"params": params}, tokens, cache=empty_cache(model.config, start, 0))
    cache = empty_cache(model.config, start, tokens.shape[1] + max_tokens - 1).append(*keys_values)
    return sample(jax.random.fold_in(key, 0), logits[:, -1], sampling), cache


def ends_with(recent: jax.Array, stop_ids: tuple[int, ...]) -> jax.Array:
    """[rows] bool: the last len(stop_ids) drawn tokens of each row are the stop sequence."""
    if not stop_ids:
        return jnp.zeros(recent.shape[0], bool)
    return jnp.all(recent == jnp.asarray(stop_ids, jnp.int32), axis=-1)


@functools.partial(jax.jit, static_argnames=("model", "max_tokens", "sampling", "stop_ids"))
def decode(model: Transformer, params, first: jax.Array, cache, key: jax.Array, max_tokens: int, sampling: Sampling,
           stop_ids: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """(tokens [rows, max_tokens], lengths [rows]): `first` and the tokens drawn after it, one
    cached forward of one token per step. `recent` holds each row's last len(stop_ids) tokens
    (-1, no token, before there are that many) to spot the stop sequence."""
    rows = first.shape[0]
    recent = jnp.full((rows, max(len(stop_ids), 1)), -1, jnp.int32).at[:, -1].set(first)
    tokens = jnp.full((rows, max_tokens), PAD, jnp.int32).at[:, 0].set(first)
    initial = (jnp.int32(1), tokens, cache, first, recent, ends_with(recent, stop_ids), jnp.ones(rows, jnp.int32))

    def not_finished(carry) -> jax.Array:
        step, *_, done, _ = carry
        return (step < max_tokens) & ~jnp.all(done)

    def step_once(carry):
        step, tokens, cache, last, recent, done, lengths = carry
        logits, keys_values = model.apply({"params": params}, last[:, None], cache=cache)
        cache = cache.append(*keys_values)
        token = jnp.where(done, PAD, sample(jax.random.fold_in(key, step), logits[:, 0], sampling))
        recent = jnp.concatenate([recent[:, 1:], token[:, None]], axis=1)
        lengths = lengths + (~done).astype(jnp.int32)
        done = done | ends_with(recent, stop_ids)
        return step + 1, tokens.at[:, step].set(token), cache, token, recent, done, lengths

    _, tokens, *_, lengths = jax.lax.while_loop(not_finished, step_once, initial)
    return tokens, lengths


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


def generate(model: Transformer, params, prompts: list[list[int]], max_tokens: int, sampling: Sampling, seed: int,
             stop_ids: tuple[int, ...] = (), batch_sharding: NamedSharding | None = None, rules: tuple = ()) -> Generated:
    """Up to `max_tokens` new tokens after each prompt (lists of ids, none empty).

    With `batch_sharding` (the run's [batch, seq] sharding) and the run's logical axis `rules`,
    rows are split over its mesh and the model's logical constraints apply, as in training;
    parameters stay where they were restored. Both calls are compiled ahead (`lower().compile()`)
    so the timings are runs only.
    """
    batch = left_pad(prompts, batch_shards(batch_sharding))
    tokens, start, key = jnp.asarray(batch.tokens), jnp.asarray(batch.start), jax.random.key(seed)
    if batch_sharding is not None:
        tokens = jax.device_put(tokens, batch_sharding)
        start = jax.device_put(start, NamedSharding(batch_sharding.mesh, PartitionSpec(batch_sharding.spec[0])))
    placed = batch_sharding is not None
    with jax.set_mesh(batch_sharding.mesh) if placed else contextlib.nullcontext(), nn.logical_axis_rules(rules):
        begin = time.perf_counter()
        prefill_traced = prefill.trace(model, params, tokens, start, key, max_tokens, sampling)
        prefill_compiled = prefill_traced.lower().compile()
        first_and_cache = jax.tree.map(lambda shape, where: jax.ShapeDtypeStruct(shape.shape, shape.dtype, sharding=where),
                                       prefill_traced.out_info, prefill_compiled.output_shardings)
        decode_compiled = decode.lower(model, params, *first_and_cache, key, max_tokens, sampling, stop_ids).compile()
        compile_s = time.perf_counter() - begin
        # The first run of a compiled program pays one-time setup (about 10 ms on a CPU, most of a
        # short prompt's prefill), so the prefill is timed on its second run. The decode loop is
        # timed on its first: the setup is spread over every step.
        _timed(prefill_compiled, params, tokens, start, key)
        (first, cache), prefill_s = _timed(prefill_compiled, params, tokens, start, key)
        (drawn, lengths), decode_s = _timed(decode_compiled, params, first, cache, key)
    drawn, lengths = np.asarray(drawn)[: batch.n_prompts], np.asarray(lengths)[: batch.n_prompts]
    ids = [drawn[row, : lengths[row]].tolist() for row in range(batch.n_prompts)]
    stopped = [bool(stop_ids) and tuple(row_ids[-len(stop_ids):]) == tuple(stop_ids) for row_ids in ids]
    return Generated(ids, stopped, sum(map(len, prompts)), prefill_s, decode_s, compile_s)
