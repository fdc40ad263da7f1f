"""The Transformer: causal masking, exact parameter counts, logical axis names, precision."""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigmodel.config import apply_overrides, load_config
from bigmodel.flops import FLOPS_FORMULA, flops_per_token, param_counts, run_stats
from bigmodel.model import ModelConfig, Transformer, model_config
from bigmodel.presets import PRESETS, model_shape, preset_model, presets_table


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


def _initialised_counts(model: ModelConfig) -> dict[str, int]:
    """Parameter counts of the Flax model as `init` builds it (shapes only), split the way
    `bigmodel.flops` defines them: embeddings = token + position tables, head = untied lm_head."""
    shapes = jax.eval_shape(Transformer(model).init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
    params = nn.unbox(shapes["params"])

    def size(tree) -> int:
        return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))

    embedding = size(params["token_embedding"]) + size(params.get("position_embedding", {}))
    head = size(params.get("lm_head", {}))
    return {
        "params": size(params),
        "non_embedding_params": size(params) - embedding - head,
        "embedding_params": embedding,
        "head_params": head,
    }


@pytest.mark.parametrize(
    "preset,overrides",
    [("L1", {}), ("L3", {}), ("L2", {"model.tie_embeddings": True}), ("L2", {"model.positions": "learned"}),
     ("L2", {"model.d_ff": 100, "model.n_heads": 4}), ("L2", {"data.vocab_size": 1000}),
     ("L4", {"model.mlp": "swiglu", "model.n_kv_heads": 2, "model.d_ff": 0}), ("L2", {"model.mlp": "swiglu", "model.n_kv_heads": 1})],
)
def test_parameter_count_equals_the_formula(preset, overrides):
    model = model_config(_config(preset, **overrides))
    assert _initialised_counts(model) == param_counts(model)


@pytest.mark.parametrize("preset,vocab_size,family", [("L1", 256, "lm"), ("L6", 1000, "lm"), ("L12", 32_000, "lm"),
                                                      ("L6", 1000, "llama"), ("L8", 256, "llama")])
def test_presets_table_counts_what_flax_initialises(preset, vocab_size, family):
    row = next(line.split() for line in presets_table(vocab_size, 256, family) if line.split()[0] == preset)
    columns = slice(6, 8) if family == "llama" else slice(5, 7)  # llama's table has a kv_heads column
    printed_params, printed_non_embedding = (int(field.replace(",", "")) for field in row[columns])
    counts = _initialised_counts(preset_model(preset, vocab_size, family))
    assert (printed_params, printed_non_embedding) == (counts["params"], counts["non_embedding_params"])


def test_model_config_is_frozen():
    model = model_config(_config("L2"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.d_model = 128


def test_model_config_carries_every_model_key_and_the_vocabulary():
    overrides = {
        "model.positions": "learned", "model.tie_embeddings": True, "model.dropout": 0.1, "model.dtype": "bfloat16",
        "model.remat": "dots", "model.attention": "cudnn", "model.max_seq_len": 512, "data.vocab_size": 4096,
        "model.scan_layers": False, "model.loss_chunk_tokens": 4096,
        "model.parametrization": "mup", "model.mup_base_width": 128, "model.mup_base_head_dim": 16,
        "model.mlp": "swiglu", "model.n_kv_heads": 1,
    }
    config = _config("L3", **overrides)
    assert dataclasses.asdict(model_config(config)) == {
        "d_model": 96, "n_layers": 3, "n_heads": 3, "d_ff": 384, "vocab_size": 4096, "max_seq_len": 512,
        "positions": "learned", "tie_embeddings": True, "dropout": 0.1, "dtype": "bfloat16", "remat": "dots",
        "attention": "cudnn", "scan_layers": False, "loss_chunk_tokens": 4096,
        "parametrization": "mup", "mup_base_width": 128, "mup_base_head_dim": 16, "mlp": "swiglu", "n_kv_heads": 1,
    }
    assert model_config(config).head_dim == 32 and model_config(config).kv_groups == 3


@pytest.mark.parametrize("mlp,d_model,d_ff", [("gelu", 64, 256), ("swiglu", 32, 96), ("swiglu", 64, 192), ("swiglu", 256, 704),
                                              ("swiglu", 512, 1408), ("swiglu", 768, 2048), ("swiglu", 4096, 11008)])
def test_d_ff_zero_is_the_blocks_usual_width(mlp, d_model, d_ff):
    # SwiGLU: 8/3·d_model rounded up to a multiple of 128 from d_model 512 (4096 → Llama-7B's 11008), of 32 below.
    model = ModelConfig(d_model=d_model, n_layers=1, n_heads=1, d_ff=0, vocab_size=256, mlp=mlp)
    assert model.d_ff == d_ff and model.n_kv_heads == 1
    assert model == ModelConfig(d_model=d_model, n_layers=1, n_heads=1, d_ff=d_ff, vocab_size=256, mlp=mlp, n_kv_heads=1)


def test_model_config_defaults_are_the_lm_config_defaults():
    # Presets are counted with ModelConfig's defaults; they must be the model a default run trains
    # (dtype and attention as "auto" resolves them on a CPU).
    expected = ModelConfig(**model_shape("L4"), vocab_size=256)
    assert model_config(_config("L4"), platform="cpu") == expected == preset_model("L4", 256)


def test_model_config_refuses_a_key_the_model_would_ignore():
    config = _config("L2")
    config.model.n_experts = 8
    with pytest.raises(TypeError, match="n_experts"):
        model_config(config)


@pytest.mark.parametrize(
    "preset,overrides,expected",
    [
        # configs/lm.py's default (L4): the numbers recorded before ModelConfig existed.
        (None, {}, {"params": 853_120, "non_embedding_params": 787_584, "embedding_params": 32_768,
                    "head_params": 32_768, "flops_per_token": 6_494_976, "flops_per_token_causal_halved": 5_708_544}),
        ("L2", {"model.positions": "learned", "model.tie_embeddings": True, "data.seq_len": 512},
         {"params": 180_544, "non_embedding_params": 98_624, "embedding_params": 81_920,
          "head_params": 0, "flops_per_token": 1_476_480, "flops_per_token_causal_halved": 1_083_264}),
    ],
)
def test_run_stats_of_a_run_config(preset, overrides, expected):
    spec = "configs/lm.py" if preset is None else f"configs/lm.py:{preset}"
    config = load_config(spec, {key: str(value) for key, value in overrides.items()})
    assert run_stats(config) == {**expected, "flops_formula": FLOPS_FORMULA}


def test_llama_presets_are_the_same_ladder_with_swiglu_and_grouped_heads():
    for name in PRESETS:
        lm, llama = preset_model(name, 256), preset_model(name, 256, "llama")
        assert (llama.d_model, llama.n_layers, llama.n_heads, llama.mlp) == (lm.d_model, lm.n_layers, lm.n_heads, "swiglu")
        assert llama.n_heads // llama.n_kv_heads == next((g for g in (4, 2) if lm.n_heads % g == 0), 1)
    assert model_config(load_config("configs/llama.py:L8"), platform="cpu") == preset_model("L8", 256, "llama")


def test_presets_are_one_family_spanning_10k_to_1b():
    counts = [param_counts(preset_model(name, 256))["non_embedding_params"] for name in PRESETS]
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


def test_hidden_states_times_the_head_are_the_logits():
    config = _config("L2")
    model, variables = _init(config)
    params = nn.unbox(variables)
    tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, 256)
    hidden = jax.jit(lambda p, t: model.apply(p, t, return_hidden=True))(params, tokens)
    assert hidden.shape == (2, 16, config.model.d_model)
    head = params["params"]["lm_head"]["kernel"]  # untied by default
    np.testing.assert_allclose(hidden @ head, jax.jit(model.apply)(params, tokens), rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # compiles gradients twice per policy (test_accelerator keeps one policy in the fast tier)
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
