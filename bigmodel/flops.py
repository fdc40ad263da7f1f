"""Parameter counts, FLOPs per token and MFU: one formula for logs, sweeps and fits.

Counting convention (README "Counting"):
- `params`: every parameter, embeddings and LM head included.
- `non_embedding_params`: Kaplan's N: no token/position embeddings, no untied LM head.
- `flops_per_token`: PaLM App. B, 6·N + 12·L·d·T with N = non-embedding params plus the LM
  head matmul (d·V, whether or not it is tied: the multiply happens either way; Porian et al.
  2024 show that leaving it out bends small-scale exponents) and T = seq_len. Attention is
  counted in full (no halving for the causal mask) and recomputation is never counted.
"""

from __future__ import annotations

import re

import ml_collections

from bigmodel.model_config import ModelConfig, model_config

FLOPS_FORMULA = "6*(non_embedding_params + d_model*vocab_size) + 12*n_layers*d_model*seq_len (PaLM App. B)"

# Dense peak FLOP/s per device for bf16 (fp32 where the device has no faster path). Override
# with `bench --peak_flops` or BIGMODEL_PEAK_FLOPS; CPUs have no entry on purpose: an invented
# peak makes MFU meaningless, so we report null instead.
PEAK_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,  # SXM; the PCIe card is 756e12
    "A100": 312e12,
    "L4": 121e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,
}


def layer_params(d_model: int, d_ff: int) -> int:
    """One block: q, k, v, o projections, a two-matrix MLP, two RMSNorm scales (no biases)."""
    return 4 * d_model * d_model + 2 * d_model * d_ff + 2 * d_model


def param_counts(model: ModelConfig) -> dict[str, int]:
    """Exact parameter counts of `bigmodel.model.Transformer` (a test checks them against init)."""
    token_embedding = model.vocab_size * model.d_model
    position_embedding = model.max_seq_len * model.d_model if model.positions == "learned" else 0
    head = 0 if model.tie_embeddings else model.d_model * model.vocab_size
    non_embedding = model.n_layers * layer_params(model.d_model, model.d_ff) + model.d_model  # + final norm
    return {
        "params": token_embedding + position_embedding + non_embedding + head,
        "non_embedding_params": non_embedding,
        "embedding_params": token_embedding + position_embedding,
        "head_params": head,
    }


def flops_per_token(*, non_embedding_params: int, d_model: int, n_layers: int, vocab_size: int, seq_len: int) -> int:
    """Training FLOPs per token (forward + backward), see the module docstring."""
    matmul_params = non_embedding_params + d_model * vocab_size
    return 6 * matmul_params + 12 * n_layers * d_model * seq_len


def model_stats(model: ModelConfig, seq_len: int) -> dict[str, int | str]:
    """Parameter counts, FLOPs/token at `seq_len` tokens of context, and the formula's name."""
    stats: dict[str, int | str] = param_counts(model)
    stats["flops_per_token"] = flops_per_token(
        non_embedding_params=stats["non_embedding_params"],
        d_model=model.d_model,
        n_layers=model.n_layers,
        vocab_size=model.vocab_size,
        seq_len=seq_len,
    )
    stats["flops_formula"] = FLOPS_FORMULA
    # MaxText and llm.c count attention once for a causal mask (half the score matrix): the same
    # model at 6·L·d·T, for MFU comparisons with them (labelled; never used for budgets or fits).
    stats["flops_per_token_causal_halved"] = stats["flops_per_token"] - 6 * model.n_layers * model.d_model * seq_len
    return stats


def run_stats(config: ml_collections.ConfigDict) -> dict[str, int | str]:
    """`model_stats` of a full run config: what logs, summaries, benches and sweeps record."""
    # Counts do not depend on the compute dtype or attention kernel: naming a platform resolves
    # "auto" without asking JAX, so sweeps plan without importing it.
    return model_stats(model_config(config, platform="cpu"), config.data.seq_len)


def device_peak_flops(device_kind: str) -> float | None:
    """Peak FLOP/s of one device from its `jax.Device.device_kind`, or None when unknown."""
    # Longest key first so "TPU v5 lite" wins over a shorter prefix.
    for name in sorted(PEAK_FLOPS, key=len, reverse=True):
        if re.search(re.escape(name), device_kind, flags=re.IGNORECASE):
            return PEAK_FLOPS[name]
    return None


def mfu(flops_per_s: float, peak_flops_per_device: float | None, n_devices: int) -> float | None:
    """Model FLOPs utilisation (PaLM): achieved model FLOP/s over the devices' peak."""
    if not peak_flops_per_device:
        return None
    return flops_per_s / (peak_flops_per_device * n_devices)
