"""Model size presets: one ladder of shapes in two blocks, decoded in one place.

The rule: a preset `L<n>` has n_layers = n, d_model = 32·n (aspect ratio d_model/n_layers = 32),
head_dim = 32 (so n_heads = n) and d_ff = 4·d_model. Non-embedding parameters are then
≈ 12·n·d_model² = 12,288·n³, which walks from ~12K (L1) to ~1.4B (L48) in even log steps.
Any `L<n>` decodes; `PRESETS` lists the ladder that `bigmodel presets` prints and sweeps walk.
Counts come from each preset's real `ModelConfig` through `bigmodel.flops`, the one formula.

The `llama` family (configs/llama.py) is the same ladder of depths and widths with Llama's
block: SwiGLU with d_ff = 8/3·d_model rounded up (`model_config.default_d_ff`), and
grouped-query attention with 4 query heads per key/value head where 4 divides n_heads, else 2,
else 1 (L1, L3, L5: every head its own keys and values). Its non-embedding parameters are
≈ 10.5·n·d_model² where the groups are 4: 10-11% fewer than `lm`'s from L16 up.
"""

from __future__ import annotations

import math
import re

from bigmodel.flops import model_stats, param_counts
from bigmodel.model_config import ModelConfig, default_d_ff

ASPECT_RATIO = 32  # d_model / n_layers
HEAD_DIM = 32
FF_MULT = 4
# The default (byte) tokenizer's vocabulary, for counts that do not depend on the vocabulary.
BYTE_VOCAB_SIZE = 256

FAMILIES = ("lm", "llama")  # the GPT-style block (configs/lm.py) and Llama's (configs/llama.py)
LLAMA_KV_GROUPS = (4, 2)  # query heads per key/value head: the first that divides n_heads, else 1

PRESETS = ("L1", "L2", "L3", "L4", "L5", "L6", "L8", "L10", "L12", "L16", "L20", "L24", "L32", "L40", "L48")


def model_shape(preset: str) -> dict[str, int]:
    """`"L4"` → {"n_layers": 4, "d_model": 128, "n_heads": 4, "d_ff": 512}."""
    match = re.fullmatch(r"L(\d+)", preset)
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"unknown preset {preset!r}: use L<n_layers> such as L4 (see `bigmodel presets`)")
    n_layers = int(match.group(1))
    d_model = ASPECT_RATIO * n_layers
    return {"n_layers": n_layers, "d_model": d_model, "n_heads": d_model // HEAD_DIM, "d_ff": FF_MULT * d_model}


def llama_shape(preset: str) -> dict[str, int | str]:
    """`"L4"` → model_shape("L4") with Llama's block: {"n_layers": 4, "d_model": 128, "n_heads": 4,
    "d_ff": 352, "mlp": "swiglu", "n_kv_heads": 1}."""
    shape = model_shape(preset)
    group = next((group for group in LLAMA_KV_GROUPS if shape["n_heads"] % group == 0), 1)
    return shape | {"d_ff": default_d_ff("swiglu", shape["d_model"]), "mlp": "swiglu", "n_kv_heads": shape["n_heads"] // group}


def family_shape(preset: str, family: str = "lm") -> dict:
    """The preset's shape in `family` (FAMILIES)."""
    return llama_shape(preset) if family == "llama" else model_shape(preset)


def preset_model(preset: str, vocab_size: int, family: str = "lm") -> ModelConfig:
    """The preset's shape with `ModelConfig`'s defaults (those of configs/lm.py) for the rest."""
    return ModelConfig(**family_shape(preset, family), vocab_size=vocab_size)


def preset_non_embedding_params(n_layers: int) -> int:
    """Non-embedding parameters of `L<n_layers>`: the same for every vocabulary (they leave out
    the embeddings and the head), so the byte vocabulary serves."""
    return param_counts(preset_model(f"L{n_layers}", BYTE_VOCAB_SIZE))["non_embedding_params"]


def presets_table(vocab_size: int, seq_len: int, family: str = "lm") -> list[str]:
    """The lines `python -m bigmodel presets` prints: every preset's shape, counts and FLOPs/token."""
    models = {name: preset_model(name, vocab_size, family) for name in PRESETS}
    shared = models[PRESETS[0]]  # presets differ only in shape: one model states the rest
    head = "tied" if shared.tie_embeddings else "untied"
    is_llama = family == "llama"
    rule = "SwiGLU d_ff = 8/3*d_model rounded up, 4 (else 2, 1) query heads per kv head" if is_llama else f"d_ff = {FF_MULT}*d_model"
    kv_column = f"{'kv_heads':>8} " if is_llama else ""
    lines = [
        f"# vocab_size={vocab_size} seq_len={seq_len} {head} head, {shared.positions}; "
        f"d_model = {ASPECT_RATIO}*n_layers, head_dim {HEAD_DIM}, {rule}",
        f"{'preset':>6} {'d_model':>7} {'n_layers':>8} {'n_heads':>7} {kv_column}{'d_ff':>6} "
        f"{'params':>14} {'non_emb_params':>14} {'flops/token':>14}",
    ]
    for name, model in models.items():
        stats = model_stats(model, seq_len)
        kv_heads = f"{model.n_kv_heads:>8} " if is_llama else ""
        lines.append(
            f"{name:>6} {model.d_model:>7} {model.n_layers:>8} {model.n_heads:>7} {kv_heads}{model.d_ff:>6} "
            f"{stats['params']:>14,} {stats['non_embedding_params']:>14,} {stats['flops_per_token']:>14,}"
        )
    return lines


def shape_for_params(target_non_embedding_params: float) -> dict[str, int]:
    """The family member whose non-embedding parameter count is nearest the target in log space.

    The family has one size per depth (d_model = 32·n_layers), so targets snap to `L<n>`:
    N ≈ 12,288·n³ means neighbours differ by (1 + 1/n)³, e.g. 8× from L1 to L2 but 1.4× from L8 to L9.
    """
    if not target_non_embedding_params > 0:
        raise ValueError(f"target parameter count must be positive, got {target_non_embedding_params!r}")
    estimate = max(1, round((target_non_embedding_params / 12_288) ** (1 / 3)))
    candidates = range(max(1, estimate - 1), estimate + 2)
    distance = lambda n: abs(math.log(preset_non_embedding_params(n) / target_non_embedding_params))  # noqa: E731
    return model_shape(f"L{min(candidates, key=distance)}")
