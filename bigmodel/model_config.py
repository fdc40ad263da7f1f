"""`ModelConfig`: the typed, frozen description of one Transformer, and `resolve_compute`: what
`dtype="auto"` and `attention="auto"` mean on a given platform.

Its own module, free of JAX and Flax, so that parameter counts (`bigmodel.flops`), the presets
table (`python -m bigmodel presets`) and config validation answer without loading JAX.
"""

from __future__ import annotations

import dataclasses
import re

import ml_collections

AUTO = "auto"
DTYPES = ("float32", "bfloat16", "float16")
HALF_DTYPES = ("bfloat16", "float16")
# "xla": jax.nn.dot_product_attention's XLA path, any device, [batch, seq, heads, head_dim].
# "heads_major": the same arithmetic written as [batch, heads, seq, head_dim] einsums, in query
#   blocks that skip the fully masked keys; faster on XLA:CPU (docs/benchmarks.md), equal to "xla"
#   up to float rounding everywhere.
# "cudnn": cuDNN flash attention on NVIDIA GPUs (bf16/fp16): never materialises the T×T scores.
# TPUs use "xla": jax's Pallas splash kernel needs a shard_map around it per mesh, which the
# model (sharded by logical axis rules, not shard_map) does not have.
# "xla_recompute": the XLA path under jax.checkpoint, so the backward recomputes the scores and
#   only q, k, v and the output stay alive, as with a flash kernel: flash's memory at XLA's
#   speed. `plan --target` compiles it on a CPU to stand in for cuDNN.
ATTENTIONS = ("xla", "heads_major", "cudnn", "xla_recompute")
ACCELERATOR_PLATFORMS = ("gpu", "cuda", "rocm", "tpu")
GPU_PLATFORMS = ("gpu", "cuda")
# The fastest attention per platform when "auto" does not pick cuDNN (measured: docs/benchmarks.md).
AUTO_ATTENTION = {"cpu": "heads_major"}
# Recomputation policies (`bigmodel.model.REMAT_POLICIES` holds the functions; a test keeps the
# names equal). The names after "dots" are MaxText's.
REMAT_NAMES = ("none", "full", "dots", "save_qkv_proj", "save_dot_with_context_except_mlp")

# cuDNN flash attention trains on Ampere (SM80) and newer, with head_dim a multiple of 8 up to
# 128, or up to 256 from Hopper (SM90) on (jax `check_is_flash_attention`, cuDNN support matrix).
CUDNN_HEAD_DIM_MULTIPLE = 8
PRE_AMPERE = re.compile(r"TESLA|QUADRO|\b(V100|T4|P100|P40|P4|K80|GTX|TITAN V)\b")
HOPPER_OR_LATER = re.compile(r"\b(H100|H200|H800|H20|GH200|B100|B200|GB200|B300|GB300)\b")

# The MLP of a block: "gelu" (GPT's: up, tanh-GELU, down) or "swiglu" (Llama's: down(silu(gate·x) ⊙ up·x)).
MLPS = ("gelu", "swiglu")
# d_ff = 0 asks for the block's usual hidden width: 4·d_model for GELU; for SwiGLU 8/3·d_model (the
# same parameters as GELU's 4·d with two matrices), rounded up to a multiple of 128 (tensor-core
# tiles) from d_model 512 on, of 32 below, where 128 would add up to half the width again
# (d_model 64: 8/3·64 = 171 → 192, not 256).
GELU_FF_MULT = 4
SWIGLU_MULTIPLE, SMALL_SWIGLU_MULTIPLE, SMALL_WIDTH = 128, 32, 512


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything `bigmodel.model.Transformer` and `bigmodel.flops` read about a model.

    The shape (d_model, n_layers, n_heads, d_ff) and vocab_size are required; the other fields
    default to the values `configs/lm.py` resolves to on a CPU (a test holds the two equal).
    `dtype` and `attention` are always resolved here, never "auto" (see `resolve_compute`).

    d_model: residual width.  n_layers: blocks.  n_heads: attention heads (d_model / n_heads
        is the head dimension).  d_ff: hidden width of the MLP (0: the block's usual, `default_d_ff`).
    mlp: one of MLPS: "gelu" (GPT's two matrices) or "swiglu" (Llama's gate, up and down).
    n_kv_heads: key/value heads (grouped-query attention: each serves n_heads/n_kv_heads query
        heads; 1 is multi-query attention); 0 means n_heads, every head its own keys and values.
    vocab_size: tokenizer vocabulary; sizes the token embedding and the LM head.
    max_seq_len: longest sequence; sizes learned position embeddings (unused by rope).
    positions: "rope" (rotary, no parameters) or "learned".
    tie_embeddings: the LM head reuses the token embedding instead of its own matrix.
    dropout: rate on the embeddings and on both residual branches; 0 disables it.
    dtype: compute dtype ("float32", "bfloat16", "float16"); parameters, the loss and the
        softmax are always float32, the LM head accumulates in float32.
    remat: recomputation in the backward pass, one of REMAT_NAMES (`model.REMAT_POLICIES`).
    attention: one of ATTENTIONS.
    scan_layers: True compiles one block and loops over it (`nn.scan`); False unrolls the loop
        (longer compiles, sometimes faster steps on GPUs). Parameters are stacked either way.
    loss_chunk_tokens: 0 computes the LM head and loss over the whole micro-batch at once;
        k > 0 does it k tokens at a time (rounded to whole sequence positions of every row), so
        the float32 [tokens, vocab] logits never exist at once.
    parametrization: "sp" (standard) or "mup" (maximal update; `bigmodel.mup` has the table).
    mup_base_width: under muP, the d_model at which the model and optimizer equal SP's.
    mup_base_head_dim: under muP, the base model's head_dim (attention scale √h_b/h); 0: this
        model's own, right when widths grow at a fixed head_dim (`shape_of`, the presets).
    """

    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    vocab_size: int
    max_seq_len: int = 1024
    positions: str = "rope"
    tie_embeddings: bool = False
    dropout: float = 0.0
    dtype: str = "float32"
    remat: str = "none"
    attention: str = AUTO_ATTENTION["cpu"]
    scan_layers: bool = True
    loss_chunk_tokens: int = 0
    parametrization: str = "sp"
    mup_base_width: int = 64
    mup_base_head_dim: int = 0
    mlp: str = "gelu"
    n_kv_heads: int = 0

    def __post_init__(self):
        # The two "0 = the usual" fields resolved once, so every reader sees concrete widths (and
        # a config that spells the usual value out equals one that leaves it 0).
        if not self.d_ff:
            object.__setattr__(self, "d_ff", default_d_ff(self.mlp, self.d_model))
        if not self.n_kv_heads:
            object.__setattr__(self, "n_kv_heads", self.n_heads)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_groups(self) -> int:
        """Query heads per key/value head (1: multi-head attention)."""
        return self.n_heads // self.n_kv_heads


def default_d_ff(mlp: str, d_model: int) -> int:
    """The MLP hidden width `d_ff = 0` stands for (see MLPS above)."""
    if mlp != "swiglu":
        return GELU_FF_MULT * d_model
    multiple = SWIGLU_MULTIPLE if d_model >= SMALL_WIDTH else SMALL_SWIGLU_MULTIPLE
    return -(-8 * d_model // (3 * multiple)) * multiple


def current_platform() -> tuple[str, str]:
    """(jax.default_backend(), the first device's device_kind); imports JAX, so only on demand."""
    import jax

    return jax.default_backend(), jax.devices()[0].device_kind


def compute_dtype(dtype_setting: str, platform: str) -> str:
    """"auto" → bfloat16 on GPUs and TPUs (their matmul units are 16-bit), float32 elsewhere
    (bf16 is no faster on CPUs); an explicit dtype stays as it is."""
    if dtype_setting != AUTO:
        return dtype_setting
    return "bfloat16" if platform in ACCELERATOR_PLATFORMS else "float32"


def cudnn_head_dim_limit(device_kind: str) -> int:
    """The largest head_dim cuDNN flash attention trains with on this device; 0 where it has none
    (not NVIDIA, or older than Ampere). Unknown NVIDIA names get the Ampere limit."""
    kind = device_kind.upper()
    is_nvidia = "NVIDIA" in kind or "TESLA" in kind
    if not is_nvidia or PRE_AMPERE.search(kind):
        return 0
    return 256 if HOPPER_OR_LATER.search(kind) else 128


def cudnn_problem(dtype: str, head_dim: int, platform: str, device_kind: str) -> str | None:
    """Why cuDNN flash attention cannot run here, as the tail of an error line; None if it can."""
    if platform not in GPU_PLATFORMS:
        return f"needs an NVIDIA GPU, but the platform is {platform}"
    limit = cudnn_head_dim_limit(device_kind)
    if not limit:
        return f"needs an NVIDIA GPU of the Ampere generation or newer, but the device is {device_kind!r}"
    if dtype not in HALF_DTYPES:
        return f"needs a 16-bit compute dtype (bfloat16 or float16), but the dtype is {dtype}"
    if head_dim % CUDNN_HEAD_DIM_MULTIPLE or head_dim > limit:
        return (f"needs head_dim (d_model/n_heads) a multiple of {CUDNN_HEAD_DIM_MULTIPLE} and at most "
                f"{limit} on {device_kind!r}, got {head_dim}")
    return None


def resolve_compute(model_settings, platform: str, device_kind: str) -> tuple[str, str]:
    """(dtype, attention) that `model_settings` (config.model, or any mapping with dtype,
    attention, d_model and n_heads) runs with on `platform` (jax.default_backend()) and
    `device_kind` (jax.Device.device_kind).

    "auto" attention is cuDNN flash attention where it can run (NVIDIA GPU, 16-bit dtype,
    supported head_dim), else the fastest XLA formulation for the platform. Explicit settings
    pass through unchanged: `bigmodel.config.validate` refuses those that cannot run.
    """
    dtype = compute_dtype(model_settings["dtype"], platform)
    attention = model_settings["attention"]
    if attention == AUTO:
        head_dim = model_settings["d_model"] // model_settings["n_heads"]
        can_use_cudnn = cudnn_problem(dtype, head_dim, platform, device_kind) is None
        attention = "cudnn" if can_use_cudnn else AUTO_ATTENTION.get(platform, "xla")
    return dtype, attention


def model_config(config: ml_collections.ConfigDict, platform: str | None = None, device_kind: str = "") -> ModelConfig:
    """The `ModelConfig` of a run config on `platform`: its `model` group with dtype and
    attention resolved (`resolve_compute`), plus the tokenizer's `data.vocab_size`.

    `platform=None` means the devices JAX sees now (importing JAX). Every key of `config.model`
    must be a field: a key the model would silently ignore is a TypeError here rather than a run
    that differs from its config.json.
    """
    if platform is None:
        platform, device_kind = current_platform()
    dtype, attention = resolve_compute(config.model, platform, device_kind)
    settings = {**config.model.to_dict(), "dtype": dtype, "attention": attention}
    return ModelConfig(**settings, vocab_size=config.data.vocab_size)
