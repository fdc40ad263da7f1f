"""optax AdamW with linear warmup, a constant/cosine/WSD schedule, clipping and a decay mask;
under muP, per-group learning rates (`bigmodel.mup`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from bigmodel import mup
from bigmodel.model_config import ModelConfig


def learning_rate_schedule(optim_config, total_steps: int) -> optax.Schedule:
    """Linear warmup to `lr`, then constant, cosine, or WSD (warmup-stable-decay) to lr·min_lr_ratio."""
    peak, warmup = optim_config.lr, optim_config.warmup_steps
    final = peak * optim_config.min_lr_ratio
    after_warmup = max(total_steps - warmup, 1)
    if optim_config.schedule == "constant":
        body = optax.constant_schedule(peak)
    elif optim_config.schedule == "cosine":
        body = optax.cosine_decay_schedule(peak, after_warmup, alpha=optim_config.min_lr_ratio)
    else:  # wsd: hold the peak, then decay over the last decay_fraction of all steps
        decay_steps = wsd_decay_steps(total_steps, optim_config.decay_fraction)
        stable_steps = max(after_warmup - decay_steps, 0)
        decay = cooldown(peak, final, decay_steps, optim_config.get("decay_shape", "linear"))
        body = optax.join_schedules([optax.constant_schedule(peak), decay], [stable_steps])
    if warmup == 0:
        return body
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), body], [warmup])


def wsd_decay_steps(total_steps: int, decay_fraction: float) -> int:
    """Steps of a WSD run's cooldown; it starts at step total_steps - this (a branch's init_step)."""
    return max(int(round(total_steps * decay_fraction)), 1)


def cooldown(peak: float, final: float, steps: int, shape: str) -> optax.Schedule:
    """peak → final over `steps`: "linear", or "1-sqrt" (Hägele et al. 2024: η = peak·(1 − √(t/steps))
    down to the floor), which they find matches a cosine run's loss with a shorter cooldown."""
    if shape == "linear":
        return optax.linear_schedule(peak, final, steps)
    return lambda count: final + (peak - final) * (1.0 - jnp.sqrt(jnp.clip(count / steps, 0.0, 1.0)))


def weight_decay_mask(params, decay_embeddings: bool = False):
    """True where AdamW should decay: matrices, not norm scales; embeddings only when asked."""

    def decays(path, leaf) -> bool:
        names = [getattr(key, "key", str(key)) for key in path]
        if "scale" in names or "bias" in names:
            return False
        if "token_embedding" in names or "position_embedding" in names:
            return decay_embeddings
        return leaf.ndim >= 2

    return jax.tree_util.tree_map_with_path(decays, params)


def _key_names(path) -> list[str]:
    return [getattr(key, "key", str(key)) for key in path]


def scale_by_parameter_group(model: ModelConfig) -> optax.GradientTransformation:
    """Multiplies each parameter's update by its muP learning-rate multiplier (1/m for hidden
    matrices, 1 elsewhere: `mup.learning_rate_multiplier`). Stateless: the factors follow from
    each parameter's path, so the optimizer state is Adam's and nothing more."""

    def update(updates, state, params=None):
        del params
        scaled = jax.tree_util.tree_map_with_path(
            lambda path, update: update * mup.learning_rate_multiplier(_key_names(path), model), updates)
        return scaled, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def mup_adamw(optim_config, schedule: optax.Schedule, model: ModelConfig) -> optax.GradientTransformation:
    """optax.adamw's chain with the per-group multipliers between Adam and the weight decay: the
    decay is not scaled by them, so every matrix decays by lr(t)·weight_decay per step at every
    width (`bigmodel.mup`). At the base width every multiplier is 1 and this is optax.adamw."""
    return optax.chain(
        optax.scale_by_adam(b1=optim_config.b1, b2=optim_config.b2),
        scale_by_parameter_group(model),
        optax.add_decayed_weights(optim_config.weight_decay, lambda params: weight_decay_mask(params, optim_config.decay_embeddings)),
        optax.scale_by_learning_rate(schedule),
    )


def make_optimizer(optim_config, total_steps: int, model: ModelConfig | None = None) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW (clipped first when grad_clip > 0) on the schedule, and the schedule. `model` (the
    run's ModelConfig) matters only under muP; without it, or under SP, this is plain optax.adamw."""
    schedule = learning_rate_schedule(optim_config, total_steps)
    if model is not None and mup.is_mup(model):
        adamw = mup_adamw(optim_config, schedule, model)
    else:
        adamw = optax.adamw(
            schedule,
            b1=optim_config.b1,
            b2=optim_config.b2,
            weight_decay=optim_config.weight_decay,
            mask=lambda params: weight_decay_mask(params, optim_config.decay_embeddings),
        )
    if optim_config.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(optim_config.grad_clip), adamw), schedule
    return adamw, schedule
