"""Accelerator settings, checked without an accelerator: what "auto" resolves to per platform,
which explicit combinations validate refuses, the chunked loss, remat policies, unrolled layers,
bf16 compute, the GPT presets and a run on synthetic data."""

import dataclasses
import json
import math
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from bigmodel.cli import main
from bigmodel.config import ConfigError, load_config, validate
from bigmodel.flops import param_counts
from bigmodel.model import REMAT_POLICIES, Transformer, model_config
from bigmodel.model_config import AUTO_ATTENTION, REMAT_NAMES, ModelConfig, resolve_compute

H100 = "NVIDIA H100 80GB HBM3"
A100 = "NVIDIA A100-SXM4-80GB"
GPT_PRESETS = ("124m", "350m", "760m", "1.3b", "2.7b", "6.7b")


def _config(spec="configs/lm.py:L2", **overrides):
    return load_config(spec, {key: str(value) for key, value in overrides.items()})


def _settings(dtype="auto", attention="auto", d_model=768, n_heads=12):
    return {"dtype": dtype, "attention": attention, "d_model": d_model, "n_heads": n_heads}


# ----------------------------------------------------------------------------- resolve_compute


@pytest.mark.parametrize(
    "settings,platform,device_kind,expected",
    [
        (_settings(), "cpu", "cpu", ("float32", AUTO_ATTENTION["cpu"])),
        (_settings(), "gpu", H100, ("bfloat16", "cudnn")),
        (_settings(), "cuda", A100, ("bfloat16", "cudnn")),
        (_settings(), "tpu", "TPU v5 lite", ("bfloat16", "xla")),
        (_settings(dtype="float32"), "gpu", H100, ("float32", "xla")),  # cuDNN attention is 16-bit only
        (_settings(d_model=144, n_heads=4), "gpu", H100, ("bfloat16", "xla")),  # head_dim 36: not a multiple of 8
        (_settings(d_model=768, n_heads=4), "gpu", H100, ("bfloat16", "cudnn")),  # head_dim 192: Hopper takes ≤ 256
        (_settings(d_model=768, n_heads=4), "gpu", A100, ("bfloat16", "xla")),  # Ampere trains ≤ 128
        (_settings(), "gpu", "Tesla V100-SXM2-16GB", ("bfloat16", "xla")),  # pre-Ampere: no flash kernel
        (_settings(), "gpu", "AMD Instinct MI300X", ("bfloat16", "xla")),  # ROCm: no cuDNN
        (_settings(dtype="float16", attention="xla"), "gpu", H100, ("float16", "xla")),  # explicit stays
        (_settings(dtype="bfloat16", attention="cudnn"), "cpu", "cpu", ("bfloat16", "cudnn")),  # validate refuses it
    ],
)
def test_resolve_compute_per_platform(settings, platform, device_kind, expected):
    assert resolve_compute(settings, platform, device_kind) == expected


def test_model_config_records_the_resolution_and_config_keeps_auto():
    config = _config("configs/gpt.py:124m")
    assert (config.model.dtype, config.model.attention) == ("auto", "auto")
    on_gpu = model_config(config, platform="gpu", device_kind=H100)
    assert (on_gpu.dtype, on_gpu.attention) == ("bfloat16", "cudnn")
    here = model_config(config)  # the devices JAX sees: this CPU
    assert (here.dtype, here.attention) == ("float32", AUTO_ATTENTION["cpu"])
    assert config.model.dtype == "auto"


# ----------------------------------------------------------------------------- validate

IMPOSSIBLE = [
    ({"model.attention": "cudnn", "model.dtype": "float32"}, "gpu", H100,
     "config.model.attention=cudnn (cuDNN flash attention) needs a 16-bit compute dtype (bfloat16 or float16), but the dtype is float32"),
    ({"model.attention": "cudnn"}, "cpu", "cpu", "config.model.attention=cudnn (cuDNN flash attention) needs an NVIDIA GPU, but the platform is cpu"),
    ({"model.attention": "cudnn", "model.dtype": "bfloat16"}, "tpu", "TPU v4", "needs an NVIDIA GPU, but the platform is tpu"),
    ({"model.attention": "cudnn", "model.d_model": 144, "model.n_heads": 4}, "gpu", H100,
     "needs head_dim (d_model/n_heads) a multiple of 8 and at most 256 on 'NVIDIA H100 80GB HBM3', got 36"),
    ({"model.attention": "cudnn", "model.d_model": 768, "model.n_heads": 4}, "gpu", A100,
     "needs head_dim (d_model/n_heads) a multiple of 8 and at most 128 on 'NVIDIA A100-SXM4-80GB', got 192"),
    ({"model.attention": "cudnn"}, "gpu", "Tesla T4", "needs an NVIDIA GPU of the Ampere generation or newer, but the device is 'Tesla T4'"),
    ({"model.dtype": "float64"}, "cpu", "cpu", "config.model.dtype must be one of auto, float32, bfloat16, float16, got 'float64'"),
    ({"model.attention": "flash"}, "cpu", "cpu", "config.model.attention must be one of auto, xla, heads_major, cudnn, xla_recompute, got 'flash'"),
    ({"model.remat": "minimal"}, "cpu", "cpu",
     "config.model.remat must be one of none, full, dots, save_qkv_proj, save_dot_with_context_except_mlp, got 'minimal'"),
    ({"model.loss_chunk_tokens": -1}, "cpu", "cpu", "config.model.loss_chunk_tokens must be 0 (off) or a positive number of tokens, got -1"),
]


@pytest.mark.parametrize("overrides,platform,device_kind,message", IMPOSSIBLE, ids=[str(row[0]) + row[1] for row in IMPOSSIBLE])
def test_validate_refuses_each_combination_that_cannot_run(overrides, platform, device_kind, message):
    with pytest.raises(ConfigError) as error:
        validate(_config(**overrides), 1, platform=platform, device_kind=device_kind)
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("dtype,device_kind", [("auto", H100), ("bfloat16", A100), ("float16", "NVIDIA L4")])
def test_validate_accepts_cudnn_where_it_runs(dtype, device_kind):
    validate(_config(**{"model.attention": "cudnn", "model.dtype": dtype}), 1, platform="gpu", device_kind=device_kind)


def test_cudnn_on_this_cpu_is_one_error_line_from_the_cli(tmp_path, capsys):
    # validate looks the platform up itself: here the CPU, where cuDNN cannot run.
    workdir = tmp_path / "run"
    code = main(["train", "--config", "configs/lm.py:L2", "--workdir", str(workdir), "--config.model.attention=cudnn"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: config.model.attention=cudnn") and "platform is cpu" in err
    assert len(err.splitlines()) == 1 and not workdir.exists()


def test_config_validation_and_gpt_presets_do_not_import_jax():
    script = (
        "import sys; from bigmodel.config import load_config, validate; "
        "validate(load_config('configs/gpt.py:124m'), 1, platform='gpu', device_kind='NVIDIA H100'); "
        "validate(load_config('configs/lm.py:L2'), 1); assert 'jax' not in sys.modules, 'jax imported'"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# ----------------------------------------------------------------------------- numerics

BASE = ModelConfig(d_model=64, n_layers=2, n_heads=2, d_ff=256, vocab_size=300, max_seq_len=64)


def _batch(batch=4, seq_len=16, vocab_size=300):
    return jax.random.randint(jax.random.key(1), (batch, seq_len + 1), 0, vocab_size)


def _params(model: ModelConfig, tokens):
    return nn.unbox(jax.jit(Transformer(model).init)(jax.random.key(0), tokens[:, :-1]))


def _loss_and_grads(model: ModelConfig, params, tokens):
    apply = Transformer(model).apply
    return jax.jit(jax.value_and_grad(lambda p: apply(p, tokens[:, :-1], targets=tokens[:, 1:])))(params)


def _assert_same(expected, actual, rtol=1e-6, grad_rtol=1e-5, grad_atol=1e-7):
    """Equal losses and gradients up to float32 rounding (sums taken in another order)."""
    (expected_loss, expected_grads), (actual_loss, actual_grads) = expected, actual
    np.testing.assert_allclose(actual_loss, expected_loss, rtol=rtol)
    assert jax.tree.structure(expected_grads) == jax.tree.structure(actual_grads)
    for left, right in zip(jax.tree.leaves(expected_grads), jax.tree.leaves(actual_grads)):
        np.testing.assert_allclose(right, left, rtol=grad_rtol, atol=grad_atol)


@pytest.mark.parametrize(
    "chunk_tokens,tie_embeddings",  # whole positions per chunk; a padded last chunk; one chunk (the fast tier's: cheapest)
    [pytest.param(16, False, marks=pytest.mark.slow), pytest.param(12, True, marks=pytest.mark.slow), (1000, False)],
)
def test_chunked_loss_equals_the_full_loss_and_its_gradients(chunk_tokens, tie_embeddings):
    model = dataclasses.replace(BASE, tie_embeddings=tie_embeddings)
    tokens = _batch()
    params = _params(model, tokens)
    full = _loss_and_grads(model, params, tokens)
    np.testing.assert_allclose(  # the model's loss is the mean cross-entropy of its logits
        full[0], jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(Transformer(model).apply(params, tokens[:, :-1])),
                                               tokens[:, 1:, None], axis=-1)), rtol=1e-6)
    chunked = _loss_and_grads(dataclasses.replace(model, loss_chunk_tokens=chunk_tokens), params, tokens)
    _assert_same(full, chunked)


# The fast tier keeps the cheapest policy to compile; the others are marked slow.
@pytest.mark.parametrize("remat", [name if name == "save_dot_with_context_except_mlp" else pytest.param(name, marks=pytest.mark.slow)
                                   for name in REMAT_NAMES if name != "none"])
def test_remat_policies_give_the_loss_and_gradients_of_none(remat):
    tokens = _batch()
    params = _params(BASE, tokens)
    _assert_same(_loss_and_grads(BASE, params, tokens), _loss_and_grads(dataclasses.replace(BASE, remat=remat), params, tokens))


@pytest.mark.slow  # trains on 8 devices in a subprocess
def test_chunked_loss_on_a_sharded_mesh_trains_as_one_device_unchunked(tmp_path):
    """Chunks keep the batch sharding and the vocabulary split over `tensor`: same losses."""
    from bigmodel import sharding
    from bigmodel.data import load_dataset
    from bigmodel.train import build, make_train_step

    settings = {"data.dataset": "synthetic", "data.seq_len": 32, "train.batch_size": 8, "train.steps": 3, "train.log_every": 1,
                "optim.warmup_steps": 1, "eval.batches": 1, "model.tie_embeddings": "true"}
    # One device, unchunked: the trainer's own step on the trainer's batches, in this process
    # (a second CLI run would spend its time starting Python and JAX).
    config = _config(**settings)
    setup = build(config)
    assert setup.mesh.devices.size == 1 and config.model.loss_chunk_tokens == 0
    data, step = load_dataset(config.data, "train", config.seed), make_train_step(setup)
    state, single = setup.init_state(jax.random.key(config.seed)), []
    for index in range(config.train.steps):
        state, metrics = step(state, sharding.global_batch(data.batch(index, config.train.batch_size), setup.batch_sharding))
        single.append(float(metrics["loss"]))

    # 100 // 8 rows = 12 positions a chunk: 3 chunks of the 32 positions, the last padded by 4.
    workdir = tmp_path / "run8"
    sharded = {**settings, "model.loss_chunk_tokens": 100, "mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2}
    command = [sys.executable, "-m", "bigmodel", "train", "--config", "configs/lm.py:L2", "--workdir", str(workdir),
               *[f"--config.{key}={value}" for key, value in sharded.items()]]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((workdir / "summary.json").read_text())["device_count"] == 8
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    np.testing.assert_allclose([record["loss"] for record in records if "loss" in record], single, rtol=1e-5)


def test_every_remat_name_has_a_policy():
    assert set(REMAT_POLICIES) == set(REMAT_NAMES) - {"none"}


def test_unrolled_layers_use_the_same_parameters_and_compute_the_same():
    tokens = _batch()
    unrolled = dataclasses.replace(BASE, scan_layers=False)
    params = _params(BASE, tokens)
    shapes = lambda tree: jax.tree.map(lambda leaf: leaf.shape, tree)  # noqa: E731
    assert shapes(_params(unrolled, tokens)) == shapes(params)  # checkpoints load either way
    _assert_same(_loss_and_grads(BASE, params, tokens), _loss_and_grads(unrolled, params, tokens))

    def lowered(model):
        apply = Transformer(model).apply
        return jax.jit(jax.grad(lambda p: apply(p, tokens[:, :-1], targets=tokens[:, 1:]))).lower(params).as_text()

    assert "while" in lowered(BASE) and "while" not in lowered(unrolled)  # really unrolled, forward and backward


def test_heads_major_attention_equals_the_xla_path():
    tokens = _batch()
    params = _params(BASE, tokens)
    heads_major, xla = (dataclasses.replace(BASE, attention=name) for name in ("heads_major", "xla"))
    _assert_same(_loss_and_grads(xla, params, tokens), _loss_and_grads(heads_major, params, tokens))


@pytest.mark.slow  # compiles both attention paths' gradients
def test_xla_recompute_attention_equals_the_xla_path_and_keeps_less_alive():
    tokens = _batch()
    params = _params(BASE, tokens)
    recompute, xla = (dataclasses.replace(BASE, attention=name) for name in ("xla_recompute", "xla"))
    _assert_same(_loss_and_grads(xla, params, tokens), _loss_and_grads(recompute, params, tokens))

    def temp_bytes(config):
        apply = Transformer(config).apply
        grad = jax.jit(jax.grad(lambda p: apply(p, tokens[:, :-1], targets=tokens[:, 1:])))
        return grad.lower(params).compile().memory_analysis().temp_size_in_bytes

    assert temp_bytes(recompute) < temp_bytes(xla)  # the T×T probabilities are not kept per layer


def test_the_head_backward_multiplies_in_the_compute_dtype():
    from bigmodel.model import head_logits

    hidden = jnp.ones((8, 16), jnp.bfloat16)
    weight = jnp.ones((16, 32), jnp.float32)  # parameters stay float32

    def loss(hidden, weight):
        return jnp.sum(jax.nn.log_softmax(head_logits(hidden, weight, jnp.bfloat16)))

    jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(hidden, weight)
    dots = [eqn for eqn in jaxpr.jaxpr.eqns if eqn.primitive.name == "dot_general"]
    dots += [inner for eqn in jaxpr.jaxpr.eqns for sub in jax.extend.core.jaxprs_in_params(eqn.params)
             for inner in sub.eqns if inner.primitive.name == "dot_general"]
    assert len(dots) == 3  # the forward and the two backward matmuls
    assert all(var.aval.dtype == jnp.bfloat16 for dot in dots for var in dot.invars)  # no float32 (TF32) matmul
    hidden_grad, weight_grad = jax.grad(loss, argnums=(0, 1))(hidden, weight)
    assert (hidden_grad.dtype, weight_grad.dtype) == (jnp.bfloat16, jnp.float32)


@pytest.mark.slow  # trains twice, in two dtypes
def test_bfloat16_trains_on_cpu_close_to_float32():
    from bigmodel.train import build, make_train_step

    batch = np.asarray(_batch(batch=8, seq_len=32, vocab_size=256), np.int32)
    losses = {}
    for dtype in ("float32", "bfloat16"):
        config = _config(**{"model.dtype": dtype, "data.seq_len": 32, "train.batch_size": 8, "train.steps": 4, "optim.warmup_steps": 1})
        setup = build(config)
        state, step = setup.init_state(jax.random.key(0)), make_train_step(setup)
        losses[dtype] = []
        for _ in range(4):
            state, metrics = step(state, jnp.asarray(batch))
            losses[dtype].append(float(metrics["loss"]))
        assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(state.params))  # params stay float32
    assert losses["bfloat16"][0] == pytest.approx(losses["float32"][0], abs=0.02)
    assert losses["bfloat16"][-1] < losses["bfloat16"][0] - 0.05  # it learns (the same batch, 4 steps)
    assert losses["bfloat16"] != losses["float32"]  # the dtype really changed the arithmetic


def test_logits_are_float32_and_the_head_runs_in_the_compute_dtype():
    model = dataclasses.replace(BASE, dtype="bfloat16", tie_embeddings=True)
    tokens = _batch()
    params = _params(model, tokens)
    assert Transformer(model).apply(params, tokens[:, :-1]).dtype == jnp.float32
    text = jax.jit(lambda p: Transformer(model).apply(p, tokens[:, :-1])).lower(params).as_text()
    head = [line for line in text.splitlines() if "dot_general" in line and "x300xf32" in line]
    assert head and all("bf16" in line for line in head)  # bf16 operands, float32 result


# ----------------------------------------------------------------------------- presets and synthetic data


def test_gpt_presets_are_gpt_shapes_with_a_padded_vocabulary():
    counts = {}
    for name in GPT_PRESETS:
        config = _config(f"configs/gpt.py:{name}")
        model = model_config(config, platform="gpu", device_kind=H100)
        assert model.head_dim in (64, 128) and model.d_ff == 4 * model.d_model
        assert (config.data.seq_len, model.vocab_size % 128, model.tie_embeddings) == (1024, 0, True)
        assert (model.dtype, model.attention) == ("bfloat16", "cudnn")
        validate(config, 8, platform="gpu", device_kind=H100)
        counts[name] = param_counts(model)["params"]
    # GPT-2 small is 124,439,808 with biases and LayerNorm shifts; RMSNorm without biases is 0.05% less.
    assert counts["124m"] == 124_373_760
    nominal = {"124m": 124e6, "350m": 350e6, "760m": 760e6, "1.3b": 1.3e9, "2.7b": 2.7e9, "6.7b": 6.7e9}
    for name, count in counts.items():
        assert abs(count / nominal[name] - 1) < 0.03, (name, count)


def test_gpt_124m_counts_what_flax_initialises():
    model = model_config(_config("configs/gpt.py:124m"), platform="cpu")
    shapes = jax.eval_shape(Transformer(model).init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
    assert sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(nn.unbox(shapes))) == 124_373_760


def test_a_run_on_synthetic_data_trains_evaluates_and_records_the_resolved_compute(tmp_path, capsys):
    workdir = tmp_path / "run"
    overrides = {"data.dataset": "synthetic", "data.seq_len": 32, "train.batch_size": 4, "train.steps": 4, "train.log_every": 2,
                 "optim.warmup_steps": 1, "eval.every_steps": 2, "eval.batches": 2, "checkpoint.every_steps": 4}
    args = [f"--config.{key}={value}" for key, value in overrides.items()]
    assert main(["train", "--config", "configs/lm.py:L1", "--workdir", str(workdir), *args]) == 0
    summary = json.loads((workdir / "summary.json").read_text())
    assert (summary["dtype"], summary["attention"]) == ("float32", AUTO_ATTENTION["cpu"])
    saved = json.loads((workdir / "config.json").read_text())
    assert (saved["model"]["dtype"], saved["model"]["attention"]) == ("auto", "auto")  # may resume elsewhere
    assert summary["final_eval_loss"] == pytest.approx(math.log(256), abs=0.3)  # random tokens: ln(vocab)
    assert summary["eval_bpb"] == pytest.approx(summary["final_eval_loss"] / math.log(2))  # nominal 1 byte/token
