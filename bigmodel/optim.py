"""optax AdamW with linear warmup, a constant/cosine/WSD schedule, clipping and a decay mask."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


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


def make_optimizer(optim_config, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    schedule = learning_rate_schedule(optim_config, total_steps)
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
