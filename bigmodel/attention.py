"""Causal self-attention's arithmetic and the KV cache it decodes with: rotary positions, the
training kernels (`causal_attention`), and new tokens attending to cached ones (`cached_attention`).

Grouped-query attention (`ModelConfig.n_kv_heads` < n_heads): query head h reads key/value head
h // groups (Llama's and transformers' order). Training repeats each key/value head for its
group where a kernel lacks native GQA (heads_major); the cache holds only n_kv_heads heads and
decoding reads it grouped, so a smaller cache is the point of GQA, not a copy made each step.
`bigmodel.model` holds the layers that call these.
"""

from __future__ import annotations

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from bigmodel.model_config import ModelConfig

def rotary(x: jax.Array, positions: jax.Array | None = None) -> jax.Array:
    """Rotary position embedding (RoFormer) of x: [batch, seq, heads, head_dim], at `positions`
    [batch, seq] (each row's own, when decoding left-padded prompts) or 0, 1, ... seq-1."""
    seq_len, head_dim = x.shape[1], x.shape[-1]
    inverse_freq = 1.0 / (10_000 ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    if positions is None:  # training: every row at 0 .. seq-1 (one table, broadcast over rows)
        angles = jnp.arange(seq_len, dtype=jnp.float32)[:, None] * inverse_freq[None, :]
        cos, sin = jnp.cos(angles)[None, :, None, :], jnp.sin(angles)[None, :, None, :]
    else:
        angles = positions.astype(jnp.float32)[:, :, None] * inverse_freq[None, None, :]
        cos, sin = jnp.cos(angles)[:, :, None, :], jnp.sin(angles)[:, :, None, :]
    first, second = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    rotated = jnp.concatenate([first * cos - second * sin, first * sin + second * cos], axis=-1)
    return rotated.astype(x.dtype)


def causal_query_blocks(seq_len: int) -> list[tuple[int, int]]:
    """The query blocks [start, end) that `heads_major_attention` computes one at a time.

    A block's queries attend to keys [0, end) only: the blocks of the causal mask's upper
    triangle, all -inf, are never multiplied, which saves 1/4 of the score and value matmuls and
    of the softmax at 2 blocks (seq 256), 3/8 at 4. Blocks of at least 128 queries, at most 4 of
    them: smaller matmuls lose more to overheads than they skip (XLA:CPU, 2 cores, docs/benchmarks.md).
    """
    size = max(128, -(-seq_len // 4))
    return [(start, min(start + size, seq_len)) for start in range(0, seq_len, size)]


def heads_major_attention(query: jax.Array, key: jax.Array, value: jax.Array, scale: float | None = None) -> jax.Array:
    """Causal softmax(q·kᵀ/√d)·v computed on [batch, heads, seq, head_dim] operands (`scale`
    in place of 1/√d when given: muP's, `bigmodel.mup.attention_scale`).

    The arithmetic of jax.nn.dot_product_attention's XLA path (float32 scores and softmax,
    probabilities cast back to the compute dtype), laid out so XLA:CPU runs both batched matmuls
    without relayouts inside them, with the scale applied to q (T× fewer multiplies than to the
    scores), the mask added as a bias (its gradient is the identity; a select's is not), and
    queries taken in `causal_query_blocks` so that fully masked key blocks are skipped. On CPU the
    layout takes 25–35% off the XLA path's attention time (forward + backward), and the blocks a
    further 22% at seq 256 and 46–50% at seq 512–1024 (docs/benchmarks.md).
    """
    query = query * jnp.asarray(query.shape[-1] ** -0.5 if scale is None else scale, query.dtype)
    query, key, value = (array.swapaxes(1, 2) for array in (query, key, value))
    contexts = []
    for start, end in causal_query_blocks(query.shape[2]):
        scores = jnp.einsum("bnqh,bnkh->bnqk", query[:, :, start:end], key[:, :, :end], preferred_element_type=jnp.float32)
        visible = jnp.arange(start, end)[:, None] >= jnp.arange(end)[None, :]
        probabilities = jax.nn.softmax(scores + jnp.where(visible, 0.0, -1e30).astype(jnp.float32), axis=-1)
        contexts.append(jnp.einsum("bnqk,bnkh->bnqh", probabilities.astype(value.dtype), value[:, :, :end]))
    return jnp.concatenate(contexts, axis=2).swapaxes(1, 2)


def repeat_kv(keys_or_values: jax.Array, groups: int) -> jax.Array:
    """[batch, seq, kv_heads, head_dim] → [batch, seq, kv_heads·groups, head_dim], each head
    repeated for the query heads of its group (query head h reads kv head h // groups)."""
    return keys_or_values if groups == 1 else jnp.repeat(keys_or_values, groups, axis=2)


def causal_attention(query: jax.Array, key: jax.Array, value: jax.Array, implementation: str, scale: float | None = None) -> jax.Array:
    """Queries [batch, seq, heads, head_dim] attending to keys and values [batch, seq, kv_heads,
    head_dim] (kv_heads dividing heads) by the named implementation (`ATTENTIONS`), with scores
    scaled by `scale` (None: 1/√head_dim). jax.nn.dot_product_attention groups natively."""
    if implementation == "heads_major":
        groups = query.shape[2] // key.shape[2]
        return heads_major_attention(query, repeat_kv(key, groups), repeat_kv(value, groups), scale)
    if implementation == "xla_recompute":
        return jax.checkpoint(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, scale=scale, is_causal=True))(query, key, value)
    # cuDNN's flash kernel skips the masked half given is_causal (a boolean mask would not).
    kernel = "cudnn" if implementation == "cudnn" else None
    return jax.nn.dot_product_attention(query, key, value, scale=scale, is_causal=True, implementation=kernel)


@flax.struct.dataclass
class KVCache:
    """Every layer's keys and values of the tokens decoded so far, for a batch of prompts.

    Prompts are left-padded so that all of them end at the same slot: one write index serves the
    whole batch (one dynamic_update_slice per step, no per-row scatter), and the prefill's last
    position holds every row's next-token logits. A token's position (rope angle or learned
    embedding) is its slot minus its row's `start`, so padding shifts no row, and slots before
    `start` are never attended to. Heads-major, as attention reads it: no transpose per step.
    """

    keys: jax.Array  # [layers, batch, kv_heads, slots, head_dim] in the compute dtype
    values: jax.Array
    start: jax.Array  # [batch] int32: the slot of each row's first real token
    index: jax.Array  # [] int32: slots before it hold tokens; the next token goes there

    def append(self, keys: jax.Array, values: jax.Array) -> KVCache:
        """The cache with new tokens' keys and values [layers, batch, kv_heads, new, head_dim] (what
        `Transformer` returns with a cache) written at `index`; in place inside a jitted loop.
        Rows and heads are split as the activations are (batch over data, kv_heads over tensor)."""
        def write(stored, new):
            written = jax.lax.dynamic_update_slice_in_dim(stored, new.astype(stored.dtype), self.index, axis=3)
            return nn.with_logical_constraint(written, ("layers", "batch", "kv_heads", "seq", "kv"))

        return self.replace(keys=write(self.keys, keys), values=write(self.values, values), index=self.index + keys.shape[3])


def empty_cache(config: ModelConfig, start: jax.Array, slots: int) -> KVCache:
    """A cache of `slots` empty positions for rows whose first real token will be at `start`.
    A prefill passes `slots=0`: its tokens attend only to each other, and it fills a cache of
    the length it needs from what the model returns (`append`)."""
    zeros = jnp.zeros((config.n_layers, start.shape[0], config.n_kv_heads, slots, config.head_dim), config.dtype)
    return KVCache(keys=zeros, values=zeros, start=start.astype(jnp.int32), index=jnp.zeros((), jnp.int32))


@flax.struct.dataclass
class NewTokens:
    """Where one call's tokens sit, shared by every layer (broadcast through the layer scan)."""

    positions: jax.Array  # [batch, new] each token's position in its own row
    bias: jax.Array  # [batch, 1, new, slots + new] float32: 0 where a token may attend, -1e30 elsewhere


def new_tokens(cache: KVCache, n_new: int) -> NewTokens:
    """Positions and attention mask of `n_new` tokens at slots index, index+1, ...: a token sees
    its row's cached slots (from `start` up to `index`) and the new tokens up to itself that are
    not padding. A padding token sees nothing: its softmax is uniform and finite, and unused."""
    slots = cache.index + jnp.arange(n_new)
    all_slots = jnp.concatenate([jnp.arange(cache.keys.shape[3]), slots])[None, None, :]  # cached, then new
    is_new = jnp.arange(all_slots.shape[-1]) >= cache.keys.shape[3]
    written = (all_slots < cache.index) | (is_new & (all_slots <= slots[None, :, None]))
    visible = written & (all_slots >= cache.start[:, None, None])
    positions = jnp.maximum(slots[None, :] - cache.start[:, None], 0)
    return NewTokens(positions=positions, bias=jnp.where(visible, 0.0, -1e30)[:, None])


def cached_attention(query: jax.Array, key: jax.Array, value: jax.Array, cached_keys: jax.Array, cached_values: jax.Array,
                     bias: jax.Array, scale: float | None = None) -> jax.Array:
    """New tokens' queries [batch, new, heads, head_dim], keys and values [batch, new, kv_heads,
    head_dim] attending to the cached slots [batch, kv_heads, slots, head_dim] and to each other
    under `bias` (`NewTokens.bias`), with heads_major_attention's arithmetic (scale on q, float32
    scores and softmax). Queries are grouped [batch, kv_heads, groups, new, head_dim], so each
    kv head is read once for its group and never copied. The cache is only read; the caller
    writes the new keys and values once, after every layer has run. Plain einsums: the XLA path
    on every device (cuDNN's kernel takes no per-row padding mask, and one decoded token is a
    matrix-vector product anyway)."""
    batch, n_new, n_heads, head_dim = query.shape
    kv_heads = key.shape[2]
    query = query * jnp.asarray(head_dim ** -0.5 if scale is None else scale, query.dtype)
    query = query.swapaxes(1, 2).reshape(batch, kv_heads, n_heads // kv_heads, n_new, head_dim)
    key, value = key.swapaxes(1, 2), value.swapaxes(1, 2)
    scores = jnp.concatenate([jnp.einsum("bkgqh,bksh->bkgqs", query, keys, preferred_element_type=jnp.float32)
                              for keys in (cached_keys, key)], axis=-1)
    probabilities = jax.nn.softmax(scores + bias[:, :, None], axis=-1).astype(value.dtype)
    n_cached = cached_keys.shape[2]
    context = sum(jnp.einsum("bkgqs,bksh->bkgqh", weights, values, preferred_element_type=jnp.float32)
                  for weights, values in ((probabilities[..., :n_cached], cached_values), (probabilities[..., n_cached:], value)))
    return context.reshape(batch, n_heads, n_new, head_dim).astype(value.dtype).swapaxes(1, 2)
