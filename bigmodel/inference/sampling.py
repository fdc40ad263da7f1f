"""Next-token sampling: temperature, then a top-k mask, then a top-p (nucleus) mask, then a draw.

The order is Hugging Face generate's: logits / temperature, top-k, then top-p over what top-k
left (renormalised). Temperature 0 is greedy decoding (argmax; the masks cannot change it), and
so is any temperature below GREEDY_BELOW: greedy is the limit as T → 0, and dividing float32
logits by a T of 1e-38 or less overflows them to ±inf, which samples garbage (vLLM draws the line
at the same 1e-5).
Settings are Python numbers, fixed when the decode loop is traced: `lax.top_k` needs a static k,
and a CLI call samples with one setting anyway. A masked logit becomes -inf, which
`jax.random.categorical` never draws.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from bigmodel.exit_codes import ConfigError

GREEDY_BELOW = 1e-5  # a temperature under this decodes greedily (see the module's docstring)


@dataclasses.dataclass(frozen=True)
class Sampling:
    """temperature: 0 greedy, 1 the model's own distribution.  top_k: keep the k most likely
    tokens, 0 keeps all.  top_p: keep the fewest most likely tokens whose probabilities sum to
    at least p, 1 keeps all."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0


def check_sampling(sampling: Sampling) -> None:
    """ConfigError naming the first setting out of range; the message reads as CLI flags."""
    if not (math.isfinite(sampling.temperature) and sampling.temperature >= 0):
        raise ConfigError(f"--temperature must be a number ≥ 0 (0 is greedy), got {sampling.temperature}")
    if sampling.top_k < 0:
        raise ConfigError(f"--top_k must be ≥ 0 (0 keeps every token), got {sampling.top_k}")
    if not 0 < sampling.top_p <= 1:  # also refuses NaN
        raise ConfigError(f"--top_p must be in (0, 1] (1 keeps every token), got {sampling.top_p}")


def top_k_mask(logits: jax.Array, k: int) -> jax.Array:
    """logits [..., vocab] with all but the k largest of each row set to -inf. Ties with the k-th
    largest are kept (no arbitrary choice among equals); k = 0 or k ≥ vocab keeps everything."""
    if k == 0 or k >= logits.shape[-1]:
        return logits
    kth_largest = jax.lax.top_k(logits, k)[0][..., -1:]
    return jnp.where(logits >= kth_largest, logits, -jnp.inf)


def top_p_mask(logits: jax.Array, p: float) -> jax.Array:
    """logits [..., vocab] keeping, per row, the fewest most likely tokens whose probabilities
    sum to at least p: a token stays while the mass of the tokens above it is below p, so the
    most likely one always stays. Ties with the least likely kept token are kept; p = 1 keeps all."""
    if p >= 1:
        return logits
    descending = -jnp.sort(-logits, axis=-1)
    probabilities = jax.nn.softmax(descending, axis=-1)
    mass_above = jnp.cumsum(probabilities, axis=-1) - probabilities
    n_kept = jnp.sum(mass_above < p, axis=-1, keepdims=True)  # ≥ 1: the top token has 0 above it
    smallest_kept = jnp.take_along_axis(descending, n_kept - 1, axis=-1)
    return jnp.where(logits >= smallest_kept, logits, -jnp.inf)


def sample(key: jax.Array, logits: jax.Array, sampling: Sampling) -> jax.Array:
    """int32 [batch]: one token per row of float32 logits [batch, vocab]."""
    if sampling.temperature < GREEDY_BELOW:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits.astype(jnp.float32) / sampling.temperature
    logits = top_p_mask(top_k_mask(logits, sampling.top_k), sampling.top_p)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)
