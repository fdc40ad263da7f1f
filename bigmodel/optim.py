"""optax AdamW with linear warmup, a constant/cosine/WSD schedule, clipping and a decay mask."""

from __future__ import annotations

import jax
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
    else:  # wsd: hold the peak, then decay linearly over the last decay_fraction of all steps
        decay_steps = max(int(round(total_steps * optim_config.decay_fraction)), 1)
        stable_steps = max(after_warmup - decay_steps, 0)
        body = optax.join_schedules(
            [optax.constant_schedule(peak), optax.linear_schedule(peak, final, decay_steps)], [stable_steps]
        )
    if warmup == 0:
        return body
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), body], [warmup])


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
