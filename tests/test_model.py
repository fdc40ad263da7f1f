"""The Transformer: causal masking, exact parameter counts, logical axis names, precision."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigmodel.config import apply_overrides, load_config
from bigmodel.flops import flops_per_token, model_stats, param_counts
from bigmodel.model import Transformer, model_config
from bigmodel.presets import PRESETS, model_shape


def _config(preset="L2", **overrides):
    return load_config(f"configs/lm.py:{preset}", {key: str(value) for key, value in overrides.items()})


def _init(config, seq_len=16):
    model = Transformer(model_config(config))
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((2, seq_len), jnp.int32))
    return model, variables


@pytest.mark.parametrize("positions", ["rope", "learned"])
def test_changing_a_future_token_never_changes_earlier_logits(positions):
    config = _config("L2", **{"model.positions": positions})
    model, variables = _init(config)
    params = nn.unbox(variables)
    tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, 256)
    position = 9
    changed = tokens.at[:, position].set((tokens[:, position] + 7) % 256)
    apply = jax.jit(model.apply)
    logits, changed_logits = apply(params, tokens), apply(params, changed)
    np.testing.assert_array_equal(logits[:, :position], changed_logits[:, :position])
    assert not np.allclose(logits[:, position:], changed_logits[:, position:])


@pytest.mark.parametrize(
    "preset,overrides",
    [("L1", {}), ("L3", {}), ("L2", {"model.tie_embeddings": True}), ("L2", {"model.positions": "learned"}),
     ("L2", {"model.d_ff": 100, "model.n_heads": 4})],
)
def test_parameter_count_equals_the_presets_formula(preset, overrides):
    config = _config(preset, **overrides)
    _, variables = _init(config)
    leaves = jax.tree.leaves(nn.unbox(variables["params"]))
    stats = model_stats(config.model, config.data)
    assert sum(leaf.size for leaf in leaves) == stats["params"]
    embedding = variables["params"]["token_embedding"]["embedding"].value.size
    head = 0 if config.model.tie_embeddings else variables["params"]["lm_head"]["kernel"].value.size
    positions = variables["params"]["position_embedding"].value.size if "position_embedding" in variables["params"] else 0
    assert stats["non_embedding_params"] == stats["params"] - embedding - head - positions


def test_presets_are_one_family_spanning_10k_to_1b():
    shapes = [model_shape(name) for name in PRESETS]
    counts = [
        param_counts(d_model=shape["d_model"], n_layers=shape["n_layers"], d_ff=shape["d_ff"], vocab_size=256)["non_embedding_params"]
        for shape in shapes
    ]
    assert counts == sorted(counts)
    assert 5e3 < counts[0] < 2e4 and counts[-1] > 1e9
    for name in PRESETS:
        shape = model_shape(name)
        assert shape["d_model"] == 32 * shape["n_layers"] and shape["d_ff"] == 4 * shape["d_model"]
        assert shape["d_model"] // shape["n_heads"] == 32


def test_flops_per_token_is_palm_appendix_b():
    # 6·(N + d·V) + 12·L·d·T for L2: N = 98,624, d = 64, V = 256, T = 256.
    assert flops_per_token(non_embedding_params=98_624, d_model=64, n_layers=2, vocab_size=256, seq_len=256) == (
        6 * (98_624 + 64 * 256) + 12 * 2 * 64 * 256
    )


def test_every_parameter_has_logical_axis_names():
    _, variables = _init(_config("L2", **{"model.positions": "learned"}))
    boxed = jax.tree.leaves(variables["params"], is_leaf=lambda leaf: isinstance(leaf, nn.LogicallyPartitioned))
    assert boxed and all(isinstance(leaf, nn.LogicallyPartitioned) for leaf in boxed)
    specs = nn.get_partition_spec(variables)["params"]
    assert specs["layers"]["mlp"]["up"]["kernel"] == jax.sharding.PartitionSpec("layers", "embed", "mlp")
    assert specs["lm_head"]["kernel"] == jax.sharding.PartitionSpec("embed", "vocab")


def test_bfloat16_compute_keeps_float32_params_and_logits():
    config = _config("L2", **{"model.dtype": "bfloat16"})
    model, variables = _init(config)
    params = nn.unbox(variables)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
    logits = jax.jit(model.apply)(params, jnp.zeros((2, 16), jnp.int32))
    assert logits.dtype == jnp.float32


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_remat_policies_do_not_change_gradients(remat):
    tokens = jax.random.randint(jax.random.key(2), (2, 17), 0, 256)
    base = _config("L2")
    model, variables = _init(base)
    params = nn.unbox(variables)
    remat_model = Transformer(model_config(apply_overrides(base, {"model.remat": remat})))

    def loss(model, params):
        logits = model.apply(params, tokens[:, :-1])
        return -jnp.mean(jax.nn.log_softmax(logits)[..., 0])

    expected = jax.jit(jax.grad(lambda p: loss(model, p)))(params)
    actual = jax.jit(jax.grad(lambda p: loss(remat_model, p)))(params)
    for left, right in zip(jax.tree.leaves(expected), jax.tree.leaves(actual)):
        np.testing.assert_allclose(left, right, rtol=1e-5, atol=1e-7)
