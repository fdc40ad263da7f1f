"""Decoder-only Transformer in Flax linen, with logical axis names on every parameter.

Pre-norm blocks written as the two residual lines they are, stacked with `nn.scan` (one
compiled block at any depth, or unrolled with `scan_layers=False`), rotary or learned
positions, an untied or tied LM head. The block is GPT's (`mlp="gelu"`, every head its own keys
and values) or Llama's (`mlp="swiglu"`, and `n_kv_heads` < n_heads for grouped-query attention).
Parameters are float32; `dtype` is the compute dtype; the LM head runs in it with float32
accumulation; logits, softmax and the loss are float32.
Given a `KVCache`, the same parameters decode: new tokens attend to the cached ones and to each
other, and come back with their keys and values for the cache (`bigmodel.inference.decoding` runs the loop).
`config` is a `ModelConfig` (`bigmodel.model_config`); `model_config(run_config)` builds one.
`bigmodel.flops.param_counts` states the exact parameter count (a test holds them equal).
`config.parametrization="mup"` rescales hidden inits, the attention scale and the logits
(`bigmodel.mup`, whose table the optimizer's per-group learning rates share).
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.ad_checkpoint import checkpoint_name

from bigmodel import mup
# The attention arithmetic and the cache live in bigmodel.attention; re-exported for the callers
# that import them from here (the decoding loop, tests, tools).
from bigmodel.attention import (KVCache, NewTokens, cached_attention, causal_attention, causal_query_blocks,  # noqa: F401
                                empty_cache, heads_major_attention, new_tokens, rotary)
# model_config is re-exported: the trainer builds `Transformer(model_config(config))` from here.
from bigmodel.model_config import ModelConfig, model_config  # noqa: F401

# Activations are named (checkpoint_name) as MaxText names them, so its policies read the same.
_SAVE = jax.checkpoint_policies.save_only_these_names
REMAT_POLICIES = {
    "full": None,  # recompute everything in the backward pass
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # keep every matmul output
    # keep the q/k/v projections; recompute attention, its output projection and the MLP
    "save_qkv_proj": _SAVE("query_proj", "key_proj", "value_proj"),
    # keep q/k/v, the attention output and its projection; recompute only the MLP
    "save_dot_with_context_except_mlp": _SAVE("query_proj", "key_proj", "value_proj", "context", "out_proj"),
}


def _dense_init(std: float, names: tuple[str, ...]):
    return nn.with_logical_partitioning(nn.initializers.normal(std), names)


def _norm(name: str) -> nn.RMSNorm:
    return nn.RMSNorm(name=name, scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)))


def _tokens_first(x: jax.Array) -> jax.Array:
    """[batch, seq, ...] → [batch·seq, ...]. XLA:CPU computes weight gradients about 2× faster
    when they contract over one token axis instead of two (measured: Dense 256→1024 on 16×256
    tokens, backward 67 ms → 32 ms); GPUs and TPUs see the same matmuls either way."""
    return x.reshape(-1, *x.shape[2:])


class Projection(nn.Module):
    """A bias-free linear map with a multi-axis kernel (e.g. [embed, heads, head_dim]) that keeps
    its shape and logical names from initialisation on. (nn.DenseGeneral initialises a flattened
    2-D kernel; under a mesh, flax then constrains that 2-D value with the three names and fails.)
    Contracts the input's last `n_contract` axes with the kernel's first ones."""

    kernel_shape: tuple[int, ...]
    names: tuple[str, ...]
    std: float
    dtype: jnp.dtype
    n_contract: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", _dense_init(self.std, self.names), self.kernel_shape)
        contract = (tuple(range(x.ndim - self.n_contract, x.ndim)), tuple(range(self.n_contract)))
        return jax.lax.dot_general(x.astype(self.dtype), kernel.astype(self.dtype), (contract, ((), ())))


class Attention(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array, layer_cache: tuple | None = None, new: NewTokens | None = None):
        """(output, None): causal attention over x (training). With this layer's cached (keys,
        values) [batch, kv_heads, slots, head_dim]: x attends to them and to itself, and the second
        output is x's own (keys, values) [batch, kv_heads, new, head_dim], for the cache. Keys and
        values have n_kv_heads heads (logical axis `kv_heads`), queries n_heads."""
        config = self.config
        batch, seq_len = x.shape[:2]
        head_dim = config.head_dim
        dtype = jnp.dtype(config.dtype)
        tokens = _tokens_first(x)
        scale = mup.attention_scale(config)  # None: 1/√head_dim

        def project(name: str, n_heads: int, heads_axis: str) -> jax.Array:
            projected = Projection((config.d_model, n_heads, head_dim), ("embed", heads_axis, "kv"), mup.hidden_init_std(0.02, config),
                                   dtype, name=name)(tokens)
            return checkpoint_name(projected.reshape(batch, seq_len, n_heads, head_dim), f"{name}_proj")

        query = project("query", config.n_heads, "heads")
        key, value = project("key", config.n_kv_heads, "kv_heads"), project("value", config.n_kv_heads, "kv_heads")
        if layer_cache is None:
            if config.positions == "rope":
                query, key = rotary(query), rotary(key)
            context = causal_attention(query, key, value, config.attention, scale)
        else:
            if config.positions == "rope":
                query, key = rotary(query, new.positions), rotary(key, new.positions)
            context = cached_attention(query, key, value, *layer_cache, new.bias, scale)
            layer_cache = (key.swapaxes(1, 2), value.swapaxes(1, 2))
        context = checkpoint_name(context, "context")
        context = nn.with_logical_constraint(context, ("batch", "seq", "heads", "kv"))
        out_std = mup.hidden_init_std(0.02 / math.sqrt(2 * config.n_layers), config)
        out = Projection((config.n_heads, head_dim, config.d_model), ("heads", "kv", "embed"), out_std,
                         dtype, n_contract=2, name="out")(_tokens_first(context)).reshape(batch, seq_len, config.d_model)
        return checkpoint_name(out, "out_proj"), layer_cache


class Mlp(nn.Module):
    """GELU: down(gelu(up·x)). SwiGLU: down(silu(gate·x) ⊙ up·x). Either way [.., d_model] in and out."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        config = self.config
        dtype = jnp.dtype(config.dtype)

        def dense(name: str, features: int, std: float, names: tuple[str, str]) -> nn.Dense:
            return nn.Dense(features, use_bias=False, dtype=dtype, name=name, kernel_init=_dense_init(mup.hidden_init_std(std, config), names))

        up = dense("up", config.d_ff, 0.02, ("embed", "mlp"))
        down = dense("down", config.d_model, 0.02 / math.sqrt(2 * config.n_layers), ("mlp", "embed"))
        tokens = _tokens_first(x)
        # The activation and the down projection under remat: the backward keeps only the
        # projections' outputs and recomputes the activation from them. Autodiff of tanh-GELU
        # otherwise saves five or six more [tokens, d_ff] intermediates per layer, which the layer
        # scan stacks (320 of the benchmark model's 705 MiB of residuals); on a 2-core CPU a step
        # is 7-15% faster, with bitwise-identical gradients (docs/benchmarks.md). prevent_cse
        # stays on for unrolled layers.
        if config.mlp == "swiglu":
            gate = dense("gate", config.d_ff, 0.02, ("embed", "mlp"))
            return nn.remat(_swiglu_down)(down, gate(tokens), up(tokens)).reshape(x.shape)
        return nn.remat(_gelu_down)(down, up(tokens)).reshape(x.shape)


def _gelu_down(down: nn.Dense, pre_activation: jax.Array) -> jax.Array:
    return down(nn.with_logical_constraint(nn.gelu(pre_activation), ("batch", "mlp")))


def _swiglu_down(down: nn.Dense, gate: jax.Array, up: jax.Array) -> jax.Array:
    return down(nn.with_logical_constraint(nn.silu(gate) * up, ("batch", "mlp")))


class Block(nn.Module):
    """x + attention(norm(x)), then x + mlp(norm(x)); shaped (carry, layer_cache) → (carry, ...)
    for nn.scan: (x, None) → (x, None) in training; when decoding, the layer's cached (keys,
    values) in and the new tokens' (keys, values) out."""

    config: ModelConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, layer_cache: tuple | None = None, new: NewTokens | None = None):
        dropout = nn.Dropout(self.config.dropout, deterministic=self.deterministic)
        attended, layer_cache = Attention(self.config, name="attention")(_norm("attention_norm")(x), layer_cache, new)
        x = x + dropout(attended)
        x = x + dropout(Mlp(self.config, name="mlp")(_norm("mlp_norm")(x)))
        return nn.with_logical_constraint(x, ("batch", "seq", "embed")), layer_cache


class LMHead(nn.Module):
    """The untied head's [d_model, vocab] matrix (at `lm_head/kernel`, where nn.Dense put it);
    the matmul itself is `head_logits`, shared with the tied head and the chunked loss."""

    config: ModelConfig

    @nn.compact
    def __call__(self) -> jax.Array:
        shape = (self.config.d_model, self.config.vocab_size)
        return self.param("kernel", _dense_init(0.02, ("embed", "vocab")), shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def head_logits(hidden: jax.Array, head_weight: jax.Array, dtype) -> jax.Array:
    """[tokens, d_model] @ [d_model, vocab] in the compute dtype, accumulated and returned in float32.

    The backward casts the float32 logit gradient to the compute dtype before its two matmuls.
    Autodiff would multiply it as float32 (a float32 cotangent against a bf16 operand), which on
    an H100 made those two matmuls TF32 kernels: 15% of a 124m step (docs/benchmarks.md).
    """
    return jnp.dot(hidden.astype(dtype), head_weight.astype(dtype), preferred_element_type=jnp.float32)


def _head_logits_forward(hidden, head_weight, dtype):
    return head_logits(hidden, head_weight, dtype), (hidden, head_weight)


def _head_logits_backward(dtype, residuals, logits_grad):
    hidden, head_weight = residuals
    logits_grad = logits_grad.astype(dtype)
    hidden_grad = jnp.dot(logits_grad, head_weight.astype(dtype).T, preferred_element_type=jnp.float32)
    weight_grad = jnp.dot(hidden.astype(dtype).T, logits_grad, preferred_element_type=jnp.float32)
    return hidden_grad.astype(hidden.dtype), weight_grad.astype(head_weight.dtype)


head_logits.defvjp(_head_logits_forward, _head_logits_backward)


def full_logits(hidden: jax.Array, head_weight: jax.Array, dtype) -> jax.Array:
    """[batch, seq, d_model] → float32 logits [batch, seq, vocab]."""
    batch, seq_len, _ = hidden.shape
    logits = head_logits(_tokens_first(hidden), head_weight, dtype).reshape(batch, seq_len, -1)
    return nn.with_logical_constraint(logits, ("batch", "seq", "vocab"))


def cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean next-token loss in nats, computed in float32."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets).mean()


def chunked_cross_entropy(hidden: jax.Array, head_weight: jax.Array, targets: jax.Array, dtype, chunk_tokens: int) -> jax.Array:
    """`cross_entropy(full_logits(hidden, ...), targets)` computed a chunk of positions at a time.

    A chunk holds the same `chunk_tokens // batch` sequence positions of every row, so it keeps
    the batch sharding; the sequence is padded to whole chunks with weight-0 positions. Each
    chunk's logits are recomputed in the backward pass (jax.checkpoint) instead of stored, so
    float32 logits exist for one chunk at a time, for one more head matmul per chunk.
    """
    batch, seq_len = hidden.shape[:2]
    positions = max(1, min(seq_len, chunk_tokens // batch))
    n_chunks = -(-seq_len // positions)
    padding = ((0, 0), (0, n_chunks * positions - seq_len))
    weights = jnp.pad(jnp.ones((batch, seq_len), jnp.float32), padding)
    hidden, targets = jnp.pad(hidden, (*padding, (0, 0))), jnp.pad(targets, padding)

    def chunks(array: jax.Array) -> jax.Array:
        """[batch, n_chunks·positions, ...] → [n_chunks, batch·positions, ...]."""
        split = array.reshape(batch, n_chunks, positions, *array.shape[2:]).swapaxes(0, 1)
        return split.reshape(n_chunks, batch * positions, *array.shape[2:])

    @jax.checkpoint
    def chunk_loss_sum(chunk) -> jax.Array:
        hidden_chunk, target_chunk, weight_chunk = chunk
        logits = nn.with_logical_constraint(head_logits(hidden_chunk, head_weight, dtype), ("batch", "vocab"))
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, target_chunk)
        return jnp.sum(losses * weight_chunk)

    sums = jax.lax.map(chunk_loss_sum, (chunks(hidden), chunks(targets), chunks(weights)))
    return jnp.sum(sums) / (batch * seq_len)


def _layer_stack(block, config: ModelConfig, **scan_arguments):
    """`block` scanned over the layers: one set of stacked parameters (at `layers/...`) for both
    the training stack and the decoding one (which takes no remat, and broadcasts its NewTokens)."""
    return nn.scan(
        block,
        # "intermediates": what `capture_intermediates` records inside the layers (the coord
        # check, tools/coord_check.py), stacked per layer as the parameters are.
        variable_axes={"params": 0, "intermediates": 0},
        split_rngs={"params": True, "dropout": True},
        length=config.n_layers,
        # Fully unrolled, the loop is straight-line code over the same stacked parameters,
        # so checkpoints do not depend on this switch.
        unroll=1 if config.scan_layers else config.n_layers,
        metadata_params={nn.PARTITION_NAME: "layers"},
        **scan_arguments,
    )


class Transformer(nn.Module):
    """tokens [batch, seq] int32 → logits [batch, seq, vocab] float32; given `targets`
    [batch, seq] (as nanoGPT's forward), the mean next-token loss instead, chunked when
    `config.loss_chunk_tokens` is set so the whole batch's logits are never materialised.
    Given a `cache` (decoding): (logits, these tokens' (keys, values) per layer), which
    `cache.append` writes in one dynamic_update_slice: inside the layer scan the cache is only
    read (returning it updated from the scan made XLA copy the whole cache several times a step).
    With `return_hidden`, the final-normed hidden states [batch, seq, d_model] instead of logits
    (the features a task head such as fine-tuning's classifier reads)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, tokens: jax.Array, deterministic: bool = True, targets: jax.Array | None = None,
                 cache: KVCache | None = None, return_hidden: bool = False):
        config = self.config
        dtype = jnp.dtype(config.dtype)
        embed = nn.Embed(
            config.vocab_size, config.d_model, name="token_embedding",
            embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), ("vocab", "embed")),
        )
        x = embed(tokens)
        new = None if cache is None else new_tokens(cache, tokens.shape[1])
        if config.positions == "learned":
            positions = self.param(
                "position_embedding",
                nn.with_logical_partitioning(nn.initializers.normal(0.02), ("seq", "embed")),
                (config.max_seq_len, config.d_model),
            )
            x = x + (positions[None, : tokens.shape[1]] if new is None else positions[new.positions])
        x = nn.Dropout(config.dropout, deterministic=deterministic)(x.astype(dtype))
        x = nn.with_logical_constraint(x, ("batch", "seq", "embed"))

        if cache is None:
            block = Block
            if config.remat != "none":
                block = nn.remat(Block, policy=REMAT_POLICIES[config.remat], prevent_cse=False)
            x, _ = _layer_stack(block, config)(config, deterministic, name="layers")(x, None)
        else:
            stack = _layer_stack(Block, config, in_axes=(0, nn.broadcast))
            x, new_keys_values = stack(config, deterministic, name="layers")(x, (cache.keys, cache.values), new)
        x = _norm("final_norm")(x)
        if return_hidden:
            return x
        readout_multiplier = mup.readout_multiplier(config)  # muP's logits × 1/m; None under SP
        if readout_multiplier is not None:
            x = x * jnp.asarray(readout_multiplier, x.dtype)

        head_weight = embed.embedding.T if config.tie_embeddings else LMHead(config, name="lm_head")()
        if cache is not None:
            return full_logits(x, head_weight, dtype), new_keys_values
        if targets is None:
            return full_logits(x, head_weight, dtype)
        if config.loss_chunk_tokens:
            return chunked_cross_entropy(x, head_weight, targets, dtype, config.loss_chunk_tokens)
        return cross_entropy(full_logits(x, head_weight, dtype), targets)
