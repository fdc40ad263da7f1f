"""CPU speed paths. The MLP's GELU recompute (bigmodel.model.Mlp): it saves fewer activations for
the backward pass and changes no gradient bit, so recorded losses (tests/test_mup.py) stay as they
were. Block-causal attention (heads_major): skips the masked key blocks, and computes what the
XLA path computes up to float32 rounding."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
# print_saved_residuals's data; jax exports only the printing form
from jax._src.ad_checkpoint import saved_residuals

from bigmodel.model import Mlp, ModelConfig, causal_query_blocks, heads_major_attention

CONFIG = ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=128, vocab_size=64)
TOKENS = (2, 24)  # 48 tokens: no activation shares a kernel's shape


def _plain_mlp(params, x):
    """The MLP as plain autodiff sees it, without the recompute: the reference."""
    up, down = params["up"]["kernel"], params["down"]["kernel"]
    return (nn.gelu(x.reshape(-1, x.shape[-1]) @ up) @ down).reshape(x.shape)


def _setup():
    x = jax.random.normal(jax.random.key(1), (*TOKENS, CONFIG.d_model))
    params = nn.unbox(Mlp(CONFIG).init(jax.random.key(0), x))["params"]
    return params, x


def _loss(mlp_fn):
    return lambda params, x: jnp.sum(jnp.sin(mlp_fn(params, x)))


def test_mlp_gradients_are_bitwise_those_of_plain_autodiff():
    params, x = _setup()
    model_loss = _loss(lambda p, inputs: Mlp(CONFIG).apply({"params": p}, inputs))
    got = jax.jit(jax.grad(model_loss, argnums=(0, 1)))(params, x)
    want = jax.jit(jax.grad(_loss(_plain_mlp), argnums=(0, 1)))(params, x)
    for got_leaf, want_leaf in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(np.asarray(got_leaf), np.asarray(want_leaf))


def _hidden_sized_residuals(loss, params, x) -> int:
    tokens = TOKENS[0] * TOKENS[1]
    return sum(1 for residual, _ in saved_residuals(loss, params, x) if residual.shape == (tokens, CONFIG.d_ff))


def test_the_backward_keeps_one_d_ff_activation_where_plain_autodiff_keeps_several():
    params, x = _setup()
    model_loss = _loss(lambda p, inputs: Mlp(CONFIG).apply({"params": p}, inputs))
    assert _hidden_sized_residuals(_loss(_plain_mlp), params, x) >= 5  # tanh-GELU's intermediates
    assert _hidden_sized_residuals(model_loss, params, x) == 1  # the up projection's output


@pytest.mark.parametrize("seq_len, blocks", [
    (64, [(0, 64)]),
    (256, [(0, 128), (128, 256)]),
    (300, [(0, 128), (128, 256), (256, 300)]),  # a ragged last block
    (1024, [(0, 256), (256, 512), (512, 768), (768, 1024)]),
])
def test_causal_query_blocks(seq_len, blocks):
    assert causal_query_blocks(seq_len) == blocks


def _xla_attention(query, key, value):
    return jax.nn.dot_product_attention(query, key, value, is_causal=True)


def _qkv(seq_len):
    return [jax.random.normal(jax.random.key(i), (2, seq_len, 2, 16)) for i in range(3)]


@pytest.mark.slow  # the gradients of both attention paths at seq 300
def test_block_causal_attention_equals_the_xla_path():
    query, key, value = _qkv(300)  # three query blocks, the last one ragged
    loss = lambda attention: lambda q, k, v: jnp.sum(jnp.sin(attention(q, k, v)))  # noqa: E731
    np.testing.assert_allclose(heads_major_attention(query, key, value), _xla_attention(query, key, value), rtol=1e-5, atol=1e-6)
    got, want = (jax.grad(loss(fn), argnums=(0, 1, 2))(query, key, value) for fn in (heads_major_attention, _xla_attention))
    for got_leaf, want_leaf in zip(got, want, strict=True):
        np.testing.assert_allclose(got_leaf, want_leaf, rtol=1e-5, atol=1e-6)


def test_block_causal_attention_skips_the_masked_blocks():
    """At seq 256 (two blocks of 128) the scores, softmax and value matmul cover 3/4 of the square."""
    query, key, value = _qkv(256)
    flops = {fn: jax.jit(fn).lower(query, key, value).compile().cost_analysis()["flops"] for fn in (heads_major_attention, _xla_attention)}
    assert 0.70 < flops[heads_major_attention] / flops[_xla_attention] < 0.80


@pytest.mark.parametrize("full", [pytest.param(False, marks=pytest.mark.slow), True])  # the fast tier compiles one form
def test_the_matmul_floor_benchmark_differentiates_every_weight(full, load_tool):
    """tools/cpu_matmul_floor.py (docs/benchmarks.md): both forms give every weight a finite,
    nonzero gradient, so the timed step is the whole forward and backward pass."""
    floor = load_tool("cpu_matmul_floor")
    gradients = floor.jax_step(full)()
    assert set(gradients) == {*floor.LAYER_SHAPES, "embedding"}
    for name, gradient in gradients.items():
        assert gradient.shape == ((floor.VOCAB, floor.D_MODEL) if name == "embedding" else (floor.LAYERS, *floor.LAYER_SHAPES[name]))
        assert bool(jnp.all(jnp.isfinite(gradient))) and float(jnp.max(jnp.abs(gradient))) > 0, name
