"""muP (bigmodel/mup.py): the coordinate check, SP left exactly as it was, muP equal to SP at the
base width, the per-group learning rates and weight decay on real optax updates, the attention
scale, and the config checks."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bigmodel import mup
from bigmodel.config import ConfigError, from_json, load_config, to_json, validate
from bigmodel.model import Mlp, Transformer, causal_attention, model_config
from bigmodel.model_config import ModelConfig
from bigmodel.optim import make_optimizer, weight_decay_mask

REPO_ROOT = Path(__file__).resolve().parents[1]
MUP_SLOPE_TOLERANCE = 0.25  # |slope| under muP: at most 0.16 over seeds 0-2 here, while SP's are 0.73 to 2.3


def _config(**overrides):
    return load_config("configs/lm.py:L2", {key: str(value) for key, value in overrides.items()})


# ----------------------------------------------------------------------------- coordinate check


@pytest.fixture(scope="module")
def coord_check(tmp_path_factory, kjv_data_dir) -> dict:
    """tools/coord_check.py at widths 64, 128, 256 (base 64), 5 steps of Adam at lr 1e-2. XLA's
    backend optimisation is off in this subprocess: it compiles 6 models, and at -O0 a model (a
    1-layer one, measured) cost 5.7 s of CPU here instead of 14.5 s, its few small steps included."""
    out = tmp_path_factory.mktemp("coord_check")
    command = [sys.executable, str(REPO_ROOT / "tools" / "coord_check.py"), "--out", str(out), "--widths", "64,128,256",
               "--steps", "5", "--batch_size", "8", "--seq_len", "64", "--data_dir", kjv_data_dir]
    environment = {**os.environ, "XLA_FLAGS": "--xla_backend_optimization_level=0", "JAX_PLATFORMS": "cpu"}
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment, cwd=REPO_ROOT)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert (out / "coord_check.png").stat().st_size > 10_000
    return json.loads((out / "coord_check.json").read_text())


@pytest.mark.slow  # tools/coord_check.py: six models trained in a subprocess
def test_mup_activations_do_not_grow_with_width(coord_check):
    slopes = coord_check["slopes"]["mup"]
    after = {name: values[-1] for name, values in slopes.items()}
    assert all(abs(slope) < MUP_SLOPE_TOLERANCE for slope in after.values()), after
    # At init the logits shrink as 1/√width (readout variance 1/fan_in²): muP's, not a flat line.
    assert slopes["logits"][0] == pytest.approx(-0.5, abs=0.1)


@pytest.mark.slow  # tools/coord_check.py: six models trained in a subprocess
def test_sp_logits_and_residual_branches_grow_with_width(coord_check):
    after = {name: values[-1] for name, values in coord_check["slopes"]["sp"].items()}
    assert after["logits"] > 0.5, after
    assert after["attention_out"] > 1.0 and after["mlp_out"] > 1.0, after
    assert abs(after["embedding"]) < MUP_SLOPE_TOLERANCE  # the embedding is width-stable in both


@pytest.mark.slow  # tools/coord_check.py: six models trained in a subprocess
def test_coord_check_records_every_step_and_width(coord_check):
    rms = coord_check["rms"]["mup"]["logits"]
    assert len(rms) == 3 and all(len(per_step) == 6 for per_step in rms)
    assert coord_check["widths"] == [64, 128, 256] and coord_check["base_width"] == 64


# ----------------------------------------------------------------------------- SP unchanged, muP = SP at the base


# Computed by `three_steps` with the code before muP existed (bigmodel 1547492): the initial loss
# and the loss after each of two AdamW steps.
SP_LOSSES_BEFORE_MUP = [5.565386772155762, 5.008039474487305, 4.766589164733887]


def three_steps(config) -> dict:
    """L2 on 4 fixed random rows of 32 tokens: init, then 3 AdamW steps (constant lr, no warmup)."""
    model = Transformer(model_config(config, platform="cpu"))
    optimizer, _ = make_optimizer(config.optim, 10, model.config)
    tokens = jnp.asarray(np.random.RandomState(0).randint(0, 256, size=(4, 33)), jnp.int32)
    params = nn.unbox(jax.jit(model.init)(jax.random.key(0), tokens[:, :-1])["params"])

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(lambda p: model.apply({"params": p}, tokens[:, :-1], targets=tokens[:, 1:]))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, grads, updates

    record = {"init": params, "losses": []}
    opt_state = optimizer.init(params)
    for index in range(3):
        params, opt_state, loss, grads, updates = step(params, opt_state)
        record["losses"].append(float(loss))
        if index == 0:
            record["grads"], record["updates"] = grads, updates
    return record


@pytest.fixture(scope="module")
def sp_and_base_mup():
    base = {"optim.warmup_steps": 0, "optim.schedule": "constant"}
    return three_steps(_config(**base)), three_steps(_config(**base, **{"model.parametrization": "mup", "model.mup_base_width": 64}))


@pytest.mark.slow  # three L2 steps in SP and in muP
def test_sp_is_what_it_was_before_mup(sp_and_base_mup):
    sp, _ = sp_and_base_mup
    np.testing.assert_allclose(sp["losses"][0], SP_LOSSES_BEFORE_MUP[0], rtol=1e-6)
    np.testing.assert_allclose(sp["losses"], SP_LOSSES_BEFORE_MUP, rtol=1e-4)  # Adam's first steps amplify rounding


def test_a_config_saved_before_mup_is_sp_with_the_same_optimizer():
    saved = json.loads(to_json(_config()))
    for key in ("parametrization", "mup_base_width", "mup_base_head_dim"):
        del saved["model"][key]
    old = model_config(from_json(json.dumps(saved)), platform="cpu")
    assert old == model_config(_config(), platform="cpu") and old.parametrization == "sp"
    # With the model passed (train.py now) or not (before), SP's optimizer is optax.adamw: the same
    # state tree (old checkpoints restore) and bit-identical updates.
    optim = _config(**{"optim.warmup_steps": 0}).optim
    with_model, schedule = make_optimizer(optim, 10, old)
    without, _ = make_optimizer(optim, 10)
    reference = optax.chain(optax.clip_by_global_norm(optim.grad_clip), optax.adamw(
        schedule, b1=optim.b1, b2=optim.b2, weight_decay=optim.weight_decay, mask=weight_decay_mask))
    assert jax.tree.structure(with_model.init(PARAMS)) == jax.tree.structure(reference.init(PARAMS))
    grads = jax.tree.map(lambda leaf: 0.3 * jnp.ones_like(leaf), PARAMS)
    first, _ = with_model.update(grads, with_model.init(PARAMS), PARAMS)
    second, _ = without.update(grads, without.init(PARAMS), PARAMS)
    for got, want in zip(jax.tree.leaves(first), jax.tree.leaves(second)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.slow  # three L2 steps in SP and in muP
def test_mup_at_the_base_width_is_sp(sp_and_base_mup):
    sp, base_mup = sp_and_base_mup
    for name in ("init", "grads", "updates"):
        for got, want in zip(jax.tree.leaves(base_mup[name]), jax.tree.leaves(sp[name])):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(base_mup["losses"], sp["losses"], rtol=1e-6)


def test_mup_hidden_init_std_shrinks_as_one_over_sqrt_width():
    config = ModelConfig(d_model=256, n_layers=2, n_heads=8, d_ff=1024, vocab_size=256, parametrization="mup", mup_base_width=64)
    params = nn.unbox(Mlp(config).init(jax.random.key(0), jnp.zeros((2, 8, 256)))["params"])
    # SP: 0.02 (up) and 0.02/√(2·n_layers) = 0.01 (down); width 4× the base: both / √4.
    assert float(jnp.std(params["up"]["kernel"])) == pytest.approx(0.01, rel=0.02)
    assert float(jnp.std(params["down"]["kernel"])) == pytest.approx(0.005, rel=0.02)


def test_swiglus_gate_is_a_hidden_matrix_under_mup():
    config = ModelConfig(d_model=256, n_layers=2, n_heads=8, n_kv_heads=2, d_ff=1024, mlp="swiglu", vocab_size=256,
                         parametrization="mup", mup_base_width=64)
    params = nn.unbox(Mlp(config).init(jax.random.key(0), jnp.zeros((2, 8, 256)))["params"])
    assert float(jnp.std(params["gate"]["kernel"])) == pytest.approx(0.01, rel=0.02)  # SP's 0.02 / √4, as up
    assert mup.learning_rate_multiplier(("layers", "mlp", "gate", "kernel"), config) == 0.25


# ----------------------------------------------------------------------------- per-group lr and weight decay


PARAMS = {
    "token_embedding": {"embedding": jnp.full((4, 8), 0.5)},
    "layers": {"mlp": {"up": {"kernel": jnp.full((2, 8, 32), 0.5)}}, "attention_norm": {"scale": jnp.ones((2, 8))}},
    "final_norm": {"scale": jnp.ones((8,))},
    "lm_head": {"kernel": jnp.full((8, 4), 0.5)},
}
WIDE = ModelConfig(d_model=256, n_layers=2, n_heads=8, d_ff=1024, vocab_size=256, parametrization="mup", mup_base_width=64)


def _optimizers(weight_decay: float):
    optim = _config(**{"optim.warmup_steps": 0, "optim.schedule": "constant", "optim.lr": 0.1, "optim.weight_decay": weight_decay,
                       "optim.grad_clip": 0.0}).optim
    return make_optimizer(optim, 10, WIDE)[0], make_optimizer(optim, 10)[0]


def test_mup_divides_hidden_updates_by_the_width_multiplier_only():
    mup_adamw, sp_adamw = _optimizers(weight_decay=0.0)
    grads = jax.tree.map(lambda leaf: jnp.linspace(-1.0, 1.0, leaf.size).reshape(leaf.shape), PARAMS)
    mup_state, sp_state = mup_adamw.init(PARAMS), sp_adamw.init(PARAMS)
    for _ in range(2):
        mup_updates, mup_state = mup_adamw.update(grads, mup_state, PARAMS)
        sp_updates, sp_state = sp_adamw.update(grads, sp_state, PARAMS)
    np.testing.assert_allclose(mup_updates["layers"]["mlp"]["up"]["kernel"], sp_updates["layers"]["mlp"]["up"]["kernel"] / 4, rtol=1e-6)
    for path in (("token_embedding", "embedding"), ("lm_head", "kernel"), ("final_norm", "scale"), ("layers", "attention_norm", "scale")):
        got, want = mup_updates, sp_updates
        for key in path:
            got, want = got[key], want[key]
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=str(path))
    # Adam's moments are the same: the multiplier acts on the update, not on what Adam tracks.
    mup_adam, sp_adam = mup_state[0], sp_state[0]
    for got, want in zip(jax.tree.leaves((mup_adam.mu, mup_adam.nu)), jax.tree.leaves((sp_adam.mu, sp_adam.nu))):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_mup_weight_decay_per_step_does_not_depend_on_width():
    mup_adamw, sp_adamw = _optimizers(weight_decay=0.5)
    zeros = jax.tree.map(jnp.zeros_like, PARAMS)
    mup_updates, _ = mup_adamw.update(zeros, mup_adamw.init(PARAMS), PARAMS)
    sp_updates, _ = sp_adamw.update(zeros, sp_adamw.init(PARAMS), PARAMS)
    # lr · wd · param = 0.1 · 0.5 · 0.5 for every decayed matrix, hidden (lr/4 for Adam) included.
    for updates in (mup_updates, sp_updates):
        assert float(updates["layers"]["mlp"]["up"]["kernel"][0, 0, 0]) == pytest.approx(-0.025)
        assert float(updates["lm_head"]["kernel"][0, 0]) == pytest.approx(-0.025)
        assert float(jnp.abs(updates["token_embedding"]["embedding"]).max()) == 0.0  # embeddings: not decayed by default


def test_the_table():
    base = dict(n_layers=2, d_ff=1024, vocab_size=256, parametrization="mup", mup_base_width=64)
    wide = ModelConfig(d_model=256, n_heads=8, **base)  # width 4× the base at head_dim 32
    assert mup.width_multiplier(wide) == 4.0 and mup.readout_multiplier(wide) == 0.25
    assert mup.hidden_init_std(0.02, wide) == pytest.approx(0.01)
    assert mup.learning_rate_multiplier(["layers", "attention", "out", "kernel"], wide) == 0.25
    for names in (["lm_head", "kernel"], ["token_embedding", "embedding"], ["layers", "mlp_norm", "scale"], ["final_norm", "scale"]):
        assert mup.learning_rate_multiplier(names, wide) == 1.0, names
    # Fixed head_dim (mup_base_head_dim 0): 1/√32 at every width, as SP.
    assert mup.attention_scale(wide) == 32 ** -0.5
    # Fixed n_heads: head_dim 128 against a base of 32 is 1/head_dim·√32, a quarter of the base's 1/√32 (SP: half).
    fixed_heads = ModelConfig(d_model=256, n_heads=2, mup_base_head_dim=32, **base)
    assert mup.attention_scale(fixed_heads) == pytest.approx(32 ** -0.5 / 4)
    sp = ModelConfig(d_model=256, n_heads=8, n_layers=2, d_ff=1024, vocab_size=256, mup_base_width=64)
    assert mup.width_multiplier(sp) == 1.0 and mup.readout_multiplier(sp) is None and mup.attention_scale(sp) is None
    assert mup.learning_rate_multiplier(["layers", "attention", "out", "kernel"], sp) == 1.0


def test_attention_scale_reaches_every_implementation():
    query, key, value = jax.random.normal(jax.random.key(1), (3, 2, 6, 2, 8))

    @jax.jit
    def attentions():
        scaled = {name: causal_attention(query, key, value, name, 0.05) for name in ("heads_major", "xla", "xla_recompute")}
        # the default scale 1/√8 on q·0.05·√8 is the same attention as scale 0.05 on q
        return scaled, causal_attention(query * 0.05 * math.sqrt(8), key, value, "xla"), causal_attention(query, key, value, "heads_major")

    scaled, expected, default = attentions()
    for name, output in scaled.items():
        np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-6, err_msg=name)
        assert not np.allclose(output, default, atol=1e-3)


# ----------------------------------------------------------------------------- the lr-transfer summary


def test_lr_transfer_summary_finds_the_best_rate_its_vertex_and_the_drift(load_tool):
    plot_lr_transfer = load_tool("plot_lr_transfer")
    rates = [1e-3 * 2**k for k in range(5)]
    # loss = 2 + (log2(lr / 3e-3))²/10: a parabola in log lr with its vertex at 3e-3, between grid points
    parabola = {rate: 2 + math.log2(rate / 3e-3) ** 2 / 10 for rate in rates}
    assert plot_lr_transfer.vertex_learning_rate(parabola) == pytest.approx(3e-3, rel=1e-6)
    assert plot_lr_transfer.vertex_learning_rate({rate: -rate for rate in rates}) is None  # best at the edge
    table = {32: {"losses": parabola, "diverged": []},
             256: {"losses": {rate: 2 + math.log2(rate / 1.2e-2) ** 2 / 10 for rate in rates[:4]}, "diverged": [rates[4]]}}
    summary = plot_lr_transfer.summarise(table, rates)
    assert summary["widths"]["32"]["best_lr"] == 4e-3 and summary["widths"]["256"]["best_lr"] == 8e-3
    assert summary["widths"]["256"]["diverged"] == [rates[4]] and summary["drift_grid_steps"] == 1


# ----------------------------------------------------------------------------- config


def test_mup_with_a_tied_head_is_one_error_line():
    config = _config(**{"model.parametrization": "mup", "model.tie_embeddings": True})
    with pytest.raises(ConfigError, match="parametrization=mup needs an untied LM head.*tie_embeddings=false"):
        validate(config, n_devices=1)


@pytest.mark.parametrize("d_model, n_heads, base_width, refused", [
    (256, 2, 64, True),  # n_heads fixed: head_dim 128 cannot be the base's (a base of 64 has no whole head of 128)
    (96, 2, 64, True),  # head_dim 48 does not divide the base width
    (256, 8, 64, False),  # head_dim 32 at every width: 0 reads the base as this model's, as shape_of scales
    (32, 1, 64, False),  # narrower than the base at head_dim 32 (lr_transfer's d32)
    (64, 2, 64, False),  # the base itself
])
def test_an_implicit_base_head_dim_that_cannot_be_the_base_is_refused(d_model, n_heads, base_width, refused):
    overrides = {"model.parametrization": "mup", "model.d_model": d_model, "model.n_heads": n_heads, "model.mup_base_width": base_width}
    if refused:
        with pytest.raises(ConfigError, match=r"mup_base_head_dim=0 .* head_dim grows with width here, so set model.mup_base_head_dim to the base model's head_dim"):
            validate(_config(**overrides), n_devices=1)
        validate(_config(**overrides, **{"model.mup_base_head_dim": base_width // n_heads}), n_devices=1)  # the fix passes
    else:
        validate(_config(**overrides), n_devices=1)
    validate(_config(**{**overrides, "model.parametrization": "sp"}), n_devices=1)  # SP has no base to name


def test_the_refusal_names_the_fixed_heads_base():
    problem = mup.implicit_base_head_dim_problem(256, 2, 64, 0)
    assert problem.endswith("set model.mup_base_head_dim to the base model's head_dim (32 if n_heads stays 2 at every width)")
    assert "\n" not in problem and mup.implicit_base_head_dim_problem(256, 2, 64, 32) is None
    assert mup.implicit_base_head_dim_problem(150, 3, 64, 0).endswith("to the base model's head_dim")  # 64/3: no whole guess


@pytest.mark.parametrize("key,value,message", [
    ("model.parametrization", "ntk", "must be one of sp, mup, got 'ntk'"),
    ("model.mup_base_width", 0, "mup_base_width must be a positive integer"),
    ("model.mup_base_head_dim", -1, "mup_base_head_dim must be 0"),
])
def test_bad_mup_settings_are_refused(key, value, message):
    with pytest.raises(ConfigError, match=message):
        validate(_config(**{key: value}), n_devices=1)
    validate(_config(**{"model.parametrization": "mup"}), n_devices=1)  # the good one passes
