"""A run as a Hugging Face model directory: config.json, model.safetensors and tokenizer files
that `transformers` loads with `AutoModelForCausalLM` and `AutoTokenizer`, no custom code.

bigmodel's block is pre-norm RMSNorm (eps 1e-6, a scale, no bias), rotary positions on split
halves (transformers' `rotate_half`, base 10,000), no biases anywhere, and an untied or tied head:
- `mlp="swiglu"` (any n_kv_heads) is exactly `LlamaForCausalLM`.
- `mlp="gelu"` is exactly `ArceeForCausalLM` (transformers ≥ 4.53: Llama with a non-gated MLP,
  up → act → down) with `hidden_act="gelu_pytorch_tanh"`, flax's default tanh GELU.
- Learned positions have no counterpart: the one transformers architecture with learned
  positions and this MLP, GPT-2, has LayerNorm (mean-centred, with biases) where bigmodel has
  RMSNorm, so `positions="learned"` (configs/gpt.py) is refused.
muP's two forward factors are folded into weights: the attention scale √h_b/h into q_proj
(transformers scales by 1/√h), the readout multiplier 1/m into lm_head (untied under muP).

The byte tokenizer becomes a byte-level BPE with no merges whose id of each byte is the byte:
the same ids for any text, and decoding replaces broken UTF-8 as bigmodel does. A sentencepiece
tokenizer is refused for now: bigmodel encodes it line by line, which no HF tokenizer does alike.

Pure numpy and JSON on the parameter tree (`flat` names as `export.flat_tensors` gives them);
`bigmodel.inference.export` restores the run and writes the directory.
"""

from __future__ import annotations

import json
import math

import numpy as np

from bigmodel import mup
from bigmodel.config import ConfigError
from bigmodel.model_config import ModelConfig

RMS_NORM_EPS = 1e-6  # flax.linen.RMSNorm's default, which bigmodel's norms use
ROPE_THETA = 10_000.0  # bigmodel.attention.rotary
ARCHITECTURES = {"swiglu": ("LlamaForCausalLM", "llama", "silu"), "gelu": ("ArceeForCausalLM", "arcee", "gelu_pytorch_tanh")}


def hf_problem(model: ModelConfig, tokenizer_name: str) -> str | None:
    """Why this run has no exact transformers twin, as an error line; None when it has one."""
    if model.positions != "rope":
        return ("--format hf needs rotary positions, but the run has model.positions=learned: no transformers architecture "
                "has learned positions with RMSNorm and no biases (GPT-2's LayerNorm centres and has biases); export it "
                "without --format hf")
    if tokenizer_name != "bytes":
        return (f"--format hf writes the bytes tokenizer only, but the run's is {tokenizer_name} (encoded line by line, which no "
                "Hugging Face tokenizer does alike); export it without --format hf")
    return None


def hf_config(model: ModelConfig, dtype: str) -> dict:
    """config.json: the architecture that computes what `model` computes (module docstring)."""
    architecture, model_type, activation = ARCHITECTURES[model.mlp]
    return {
        "architectures": [architecture], "model_type": model_type, "vocab_size": model.vocab_size,
        "hidden_size": model.d_model, "intermediate_size": model.d_ff, "num_hidden_layers": model.n_layers,
        "num_attention_heads": model.n_heads, "num_key_value_heads": model.n_kv_heads, "head_dim": model.head_dim,
        "hidden_act": activation, "max_position_embeddings": model.max_seq_len, "rms_norm_eps": RMS_NORM_EPS,
        # rope_theta for transformers 4, rope_parameters for 5 (each reads its own, ignores the other)
        "rope_theta": ROPE_THETA, "rope_parameters": {"rope_type": "default", "rope_theta": ROPE_THETA},
        "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0, "tie_word_embeddings": model.tie_embeddings,
        "initializer_range": 0.02, "use_cache": True, "torch_dtype": dtype, "dtype": dtype,
        # no special tokens: bigmodel's byte vocabulary has none (Llama's defaults 1 and 2 are bytes here)
        "bos_token_id": None, "eos_token_id": None, "pad_token_id": None,
    }


def generation_config() -> dict:
    return {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None}


def hf_tensors(flat: dict, model: ModelConfig) -> dict:
    """transformers' weights ([out, in] matrices, one tensor per layer) from bigmodel's flat
    parameter tree (kernels [in, ...out], layers stacked on the first axis)."""
    d_model, head_dim = model.d_model, model.head_dim
    # q's 1/√h is transformers' own; muP's √h_b/h is folded in (SP: a factor of exactly 1, skipped).
    attention_scale = mup.attention_scale(model)
    query_factor = None if attention_scale is None else attention_scale * math.sqrt(head_dim)
    readout = mup.readout_multiplier(model)
    tensors = {"model.embed_tokens.weight": flat["token_embedding/embedding"], "model.norm.weight": flat["final_norm/scale"]}
    if not model.tie_embeddings:
        head = flat["lm_head/kernel"].T
        tensors["lm_head.weight"] = head if readout is None else head * readout
    projections = {"query": "q_proj", "key": "k_proj", "value": "v_proj"}
    mlp_matrices = ("gate", "up", "down") if model.mlp == "swiglu" else ("up", "down")
    for layer in range(model.n_layers):
        prefix = f"model.layers.{layer}."

        def stacked(name: str):
            return flat[f"layers/{name}"][layer]

        tensors[prefix + "input_layernorm.weight"] = stacked("attention_norm/scale")
        tensors[prefix + "post_attention_layernorm.weight"] = stacked("mlp_norm/scale")
        for ours, theirs in projections.items():
            kernel = stacked(f"attention/{ours}/kernel")  # [d_model, heads, head_dim]
            weight = kernel.reshape(d_model, -1).T
            tensors[prefix + f"self_attn.{theirs}.weight"] = weight * query_factor if ours == "query" and query_factor else weight
        tensors[prefix + "self_attn.o_proj.weight"] = stacked("attention/out/kernel").reshape(-1, d_model).T  # [heads, head_dim, d_model]
        for name in mlp_matrices:
            tensors[prefix + f"mlp.{name}_proj.weight"] = stacked(f"mlp/{name}/kernel").T
    # Contiguous: safetensors writes an array's memory as it lies, so a transposed view would be
    # read back untransposed.
    return {name: np.ascontiguousarray(tensor) for name, tensor in tensors.items()}


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: each byte as a printable character (tokenizers' ByteLevel)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    characters, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            characters[byte] = chr(byte)
        else:
            characters[byte] = chr(256 + extra)
            extra += 1
    return characters


def byte_tokenizer_files(max_seq_len: int) -> dict[str, dict]:
    """tokenizer.json and tokenizer_config.json of bigmodel's byte tokenizer: a byte-level BPE
    without merges, so every byte is one token whose id is the byte's value."""
    vocab = {character: byte for byte, character in byte_to_unicode().items()}
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
        "pre_tokenizer": byte_level, "post_processor": None, "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False, "vocab": vocab, "merges": []},
    }
    # clean_up_tokenization_spaces would turn " ." into "." on decode: bigmodel's decode is exact.
    tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_seq_len,
                        "clean_up_tokenization_spaces": False, "add_bos_token": False, "add_eos_token": False}
    return {"tokenizer.json": tokenizer, "tokenizer_config.json": tokenizer_config}


def hf_files(model: ModelConfig, dtype: str) -> dict[str, str]:
    """Every JSON file of the directory, as text."""
    files = {"config.json": hf_config(model, dtype), "generation_config.json": generation_config(),
             **byte_tokenizer_files(model.max_seq_len)}
    return {name: json.dumps(content, indent=2, ensure_ascii=False) + "\n" for name, content in files.items()}


def check_exportable(model: ModelConfig, tokenizer_name: str) -> None:
    problem = hf_problem(model, tokenizer_name)
    if problem:
        raise ConfigError(problem)
