"""`ModelConfig`: the typed, frozen description of one Transformer.

Its own module, free of JAX and Flax, so that parameter counts (`bigmodel.flops`) and the
presets table (`python -m bigmodel presets`) answer without loading JAX.
"""

from __future__ import annotations

import dataclasses

import ml_collections


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything `bigmodel.model.Transformer` and `bigmodel.flops` read about a model.

    The shape (d_model, n_layers, n_heads, d_ff) and vocab_size are required; the other fields
    default to the values `configs/lm.py` gives them (a test holds the two equal).

    d_model: residual width.  n_layers: blocks.  n_heads: attention heads (d_model / n_heads
        is the head dimension).  d_ff: hidden width of the MLP.
    vocab_size: tokenizer vocabulary; sizes the token embedding and the LM head.
    max_seq_len: longest sequence; sizes learned position embeddings (unused by rope).
    positions: "rope" (rotary, no parameters) or "learned".
    tie_embeddings: the LM head reuses the token embedding instead of its own matrix.
    dropout: rate on the embeddings and on both residual branches; 0 disables it.
    dtype: compute dtype ("float32", "bfloat16", "float16"); parameters are always float32.
    remat: recomputation in the backward pass: "none", "full" or "dots" (`model.REMAT_POLICIES`).
    attention: "xla" (any device) or "cudnn" (the fused kernel on NVIDIA GPUs, bf16/fp16).
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
    attention: str = "xla"

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


def model_config(config: ml_collections.ConfigDict) -> ModelConfig:
    """The `ModelConfig` of a run config: its `model` group plus the tokenizer's `data.vocab_size`.

    Every key of `config.model` must be a field: a key the model would silently ignore is a
    TypeError here rather than a run that differs from its config.json.
    """
    return ModelConfig(**config.model.to_dict(), vocab_size=config.data.vocab_size)
