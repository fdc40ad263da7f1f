"""The MLP's GELU recompute (bigmodel.model.Mlp): it saves fewer activations for the backward
pass and changes no gradient bit, so recorded losses (tests/test_mup.py) stay as they were."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
# print_saved_residuals's data; jax exports only the printing form
from jax._src.ad_checkpoint import saved_residuals

from bigmodel.model import Mlp, ModelConfig

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
