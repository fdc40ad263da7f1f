"""Parameter counts, FLOPs per token and MFU: one formula for logs, sweeps and fits.

Counting convention (docs/configs.md, "Counting"):
- `params`: every parameter, embeddings and LM head included.
- `non_embedding_params`: Kaplan's N: no token/position embeddings, no untied LM head.
- `flops_per_token`: PaLM App. B, 6·N + 12·L·d·T with N = non-embedding params plus the LM
  head matmul (d·V, whether or not it is tied: the multiply happens either way; Porian et al.
  2024 show that leaving it out bends small-scale exponents) and T = seq_len. Attention is
  counted in full (no halving for the causal mask) and recomputation is never counted.
  Llama's block changes N only (SwiGLU's third matrix, GQA's narrower k and v): the score and
  value matmuls stay n_heads·head_dim = d_model wide whatever n_kv_heads is.
"""

from __future__ import annotations

import re

import ml_collections

from bigmodel.model_config import ModelConfig, model_config

FLOPS_FORMULA = "6*(non_embedding_params + d_model*vocab_size) + 12*n_layers*d_model*seq_len (PaLM App. B)"

# Dense (no 2:4 sparsity) bf16 peak FLOP/s of one device, by whole device name. Override with
# `bench --peak_flops` or BIGMODEL_PEAK_FLOPS; CPUs and devices not listed have no entry on
# purpose: an invented peak makes MFU meaningless, so we report null instead ("unknown peak").
# Sources: NVIDIA datasheets quote bf16 "with sparsity", twice the dense figure: H100 1,979 TF
# SXM / 1,513 PCIe / 1,671 NVL; H200 1,979, H200 NVL 1,671; A100 (40 and 80 GB, SXM and PCIe)
# 624; L40S 733 (362.05 dense), L40 362.1 (181.05), L4 242 (121). Google Cloud TPU docs, per
# chip (one JAX device): v4 275, v5e 197, v5p 459, v6e 918 TF.
PEAK_FLOPS = {
    "H100 SXM": 989e12,
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H200": 989e12,
    "H200 NVL": 835e12,
    "A100 40GB": 312e12,
    "A100 80GB": 312e12,
    "L40S": 362e12,
    "L40": 181e12,
    "L4": 121e12,
    "TPU v4": 275e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v6e": 918e12,
}

# Each name of PEAK_FLOPS and the whole `device_kind` strings that are that device, as regexes
# matched against the entire kind (upper case, "NVIDIA " dropped, '-' and '_' read as spaces).
# Whole-string matches, never substrings: "L4" is not inside "L40S", and an H100 says which form
# factor it is (CUDA names the SXM card "H100 80GB HBM3", the others "H100 PCIe", "H100 NVL").
# JAX names TPU v5e "TPU v5 lite", v5p "TPU v5", v6e "TPU v6 lite".
DEVICE_KINDS = {
    "H100 SXM": r"H100 (SXM5?( \d+GB)?( HBM3)?|(\d+GB )?HBM3)",
    "H100 PCIe": r"H100 ((\d+GB )?PCIE|PCIE \d+GB)",
    "H100 NVL": r"H100 NVL( \d+GB)?",
    "H200": r"H200( SXM)?( \d+GB)?( HBM3E)?",
    "H200 NVL": r"H200 NVL( \d+GB)?",
    "A100 40GB": r"A100 ((SXM4|PCIE) )?40GB( PCIE)?",
    "A100 80GB": r"A100 ((SXM4|PCIE) )?80GB( PCIE)?",
    "L40S": r"L40S",
    "L40": r"L40",
    "L4": r"L4",
    "TPU v4": r"TPU V4",
    "TPU v5e": r"TPU V5( LITE|E)",
    "TPU v5p": r"TPU V5P?",
    "TPU v6e": r"TPU V6( LITE|E)",
}


def layer_params(model: ModelConfig) -> int:
    """One block: q and o projections (d_model × n_heads·head_dim each), k and v (d_model ×
    n_kv_heads·head_dim each), the MLP's matrices (two for GELU, three for SwiGLU) and two RMSNorm
    scales; no biases."""
    query_width, kv_width = model.n_heads * model.head_dim, model.n_kv_heads * model.head_dim
    mlp_matrices = 3 if model.mlp == "swiglu" else 2
    return 2 * model.d_model * (query_width + kv_width) + mlp_matrices * model.d_model * model.d_ff + 2 * model.d_model


def param_counts(model: ModelConfig) -> dict[str, int]:
    """Exact parameter counts of `bigmodel.model.Transformer` (a test checks them against init)."""
    token_embedding = model.vocab_size * model.d_model
    position_embedding = model.max_seq_len * model.d_model if model.positions == "learned" else 0
    head = 0 if model.tie_embeddings else model.d_model * model.vocab_size
    non_embedding = model.n_layers * layer_params(model) + model.d_model  # + final norm
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


def device_name(device_kind: str) -> str | None:
    """The PEAK_FLOPS name of a `jax.Device.device_kind` ("NVIDIA H100 PCIe" → "H100 PCIe"), or
    None for a device the table does not hold."""
    kind = re.sub(r"[\s_-]+", " ", device_kind).strip().upper()
    kind = kind.removeprefix("NVIDIA ")
    return next((name for name, pattern in DEVICE_KINDS.items() if re.fullmatch(pattern, kind)), None)


def device_peak_flops(device_kind: str) -> float | None:
    """Dense bf16 peak FLOP/s of one device from its `jax.Device.device_kind`, or None when the
    kind is not a whole device name of the table (unknown peak: MFU is then null)."""
    name = device_name(device_kind)
    return None if name is None else PEAK_FLOPS[name]


def mfu(flops_per_s: float, peak_flops_per_device: float | None, n_devices: int) -> float | None:
    """Model FLOPs utilisation (PaLM): achieved model FLOP/s over the devices' peak."""
    if not peak_flops_per_device:
        return None
    return flops_per_s / (peak_flops_per_device * n_devices)
