"""Learning-rate schedules, the weight-decay mask, clipping."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bigmodel.config import load_config
from bigmodel.optim import learning_rate_schedule, make_optimizer, weight_decay_mask


def _optim(**overrides):
    return load_config("configs/lm.py:L2", {f"optim.{key}": str(value) for key, value in overrides.items()}).optim


def test_warmup_is_linear_from_zero_for_every_schedule():
    for schedule in ("constant", "cosine", "wsd"):
        lr = learning_rate_schedule(_optim(schedule=schedule, lr=1.0, warmup_steps=10), 100)
        np.testing.assert_allclose([lr(0), lr(5), lr(10)], [0.0, 0.5, 1.0], atol=1e-6)


def test_cosine_decays_to_min_lr_ratio():
    lr = learning_rate_schedule(_optim(schedule="cosine", lr=1.0, warmup_steps=10, min_lr_ratio=0.1), 110)
    assert float(lr(60)) == pytest.approx(0.55, abs=1e-6)  # halfway: (1 + 0.1) / 2
    assert float(lr(110)) == pytest.approx(0.1, abs=1e-6)


def test_wsd_holds_then_decays_over_the_last_fraction():
    lr = learning_rate_schedule(_optim(schedule="wsd", lr=1.0, warmup_steps=10, decay_fraction=0.2, min_lr_ratio=0.0), 100)
    assert [float(lr(step)) for step in (10, 50, 80)] == pytest.approx([1.0, 1.0, 1.0])
    assert float(lr(90)) == pytest.approx(0.5, abs=1e-6)
    assert float(lr(100)) == pytest.approx(0.0, abs=1e-6)


def test_constant_stays_at_peak():
    lr = learning_rate_schedule(_optim(schedule="constant", lr=0.3, warmup_steps=0), 100)
    assert [float(lr(step)) for step in (0, 50, 99)] == pytest.approx([0.3, 0.3, 0.3])


PARAMS = {
    "token_embedding": {"embedding": jnp.ones((4, 2))},
    "layers": {"mlp": {"up": {"kernel": jnp.ones((3, 2, 8))}}, "attention_norm": {"scale": jnp.ones((3, 2))}},
    "final_norm": {"scale": jnp.ones((2,))},
    "lm_head": {"kernel": jnp.ones((2, 4))},
}


def test_weight_decay_skips_norms_and_embeddings_unless_asked():
    mask = weight_decay_mask(PARAMS)
    assert mask["layers"]["mlp"]["up"]["kernel"] and mask["lm_head"]["kernel"]
    assert not mask["layers"]["attention_norm"]["scale"] and not mask["final_norm"]["scale"]
    assert not mask["token_embedding"]["embedding"]
    assert weight_decay_mask(PARAMS, decay_embeddings=True)["token_embedding"]["embedding"]


def test_decay_moves_only_masked_parameters_when_gradients_are_zero():
    optimizer, _ = make_optimizer(_optim(lr=0.1, warmup_steps=0, schedule="constant", weight_decay=0.5), 10)
    zeros = jax.tree.map(jnp.zeros_like, PARAMS)
    updates, _ = optimizer.update(zeros, optimizer.init(PARAMS), PARAMS)
    assert float(updates["lm_head"]["kernel"][0, 0]) == pytest.approx(-0.1 * 0.5)
    assert float(jnp.abs(updates["final_norm"]["scale"]).max()) == 0.0
    assert float(jnp.abs(updates["token_embedding"]["embedding"]).max()) == 0.0


def test_gradients_are_clipped_to_the_global_norm_before_adam():
    config = _optim(grad_clip=1.0, lr=0.1, warmup_steps=0, schedule="constant", weight_decay=0.0)
    optimizer, schedule = make_optimizer(config, 10)
    unclipped_adam = optax.adamw(schedule, b1=config.b1, b2=config.b2, weight_decay=0.0)
    steps = [jax.tree.map(lambda leaf: scale * jnp.ones_like(leaf), PARAMS) for scale in (100.0, 0.01)]
    state, reference_state = optimizer.init(PARAMS), unclipped_adam.init(PARAMS)
    for grads in steps:
        updates, state = optimizer.update(grads, state, PARAMS)
        factor = min(1.0, 1.0 / float(optax.tree.norm(grads)))
        expected, reference_state = unclipped_adam.update(jax.tree.map(lambda g: g * factor, grads), reference_state, PARAMS)
        for got, want in zip(jax.tree.leaves(updates), jax.tree.leaves(expected)):
            np.testing.assert_allclose(got, want, rtol=1e-5)
