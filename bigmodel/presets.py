"""Model size presets: one family, decoded in one place.

The rule: a preset `L<n>` has n_layers = n, d_model = 32·n (aspect ratio d_model/n_layers = 32),
head_dim = 32 (so n_heads = n) and d_ff = 4·d_model. Non-embedding parameters are then
≈ 12·n·d_model² = 12,288·n³, which walks from ~12K (L1) to ~1.4B (L48) in even log steps.
Any `L<n>` decodes; `PRESETS` lists the ladder that `bigmodel presets` prints and sweeps walk.
Counts come from each preset's real `ModelConfig` through `bigmodel.flops`, the one formula.
"""

from __future__ import annotations

import math
import re

from bigmodel.flops import model_stats, param_counts
from bigmodel.model_config import ModelConfig

ASPECT_RATIO = 32  # d_model / n_layers
HEAD_DIM = 32
FF_MULT = 4
# The default (byte) tokenizer's vocabulary, for counts that do not depend on the vocabulary.
BYTE_VOCAB_SIZE = 256

PRESETS = ("L1", "L2", "L3", "L4", "L5", "L6", "L8", "L10", "L12", "L16", "L20", "L24", "L32", "L40", "L48")


def model_shape(preset: str) -> dict[str, int]:
    """`"L4"` → {"n_layers": 4, "d_model": 128, "n_heads": 4, "d_ff": 512}."""
    match = re.fullmatch(r"L(\d+)", preset)
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"unknown preset {preset!r}: use L<n_layers> such as L4 (see `bigmodel presets`)")
    n_layers = int(match.group(1))
    d_model = ASPECT_RATIO * n_layers
    return {"n_layers": n_layers, "d_model": d_model, "n_heads": d_model // HEAD_DIM, "d_ff": FF_MULT * d_model}


def preset_model(preset: str, vocab_size: int) -> ModelConfig:
    """The preset's shape with `ModelConfig`'s defaults (those of configs/lm.py) for the rest."""
    return ModelConfig(**model_shape(preset), vocab_size=vocab_size)


def preset_non_embedding_params(n_layers: int) -> int:
    """Non-embedding parameters of `L<n_layers>`: the same for every vocabulary (they leave out
    the embeddings and the head), so the byte vocabulary serves."""
    return param_counts(preset_model(f"L{n_layers}", BYTE_VOCAB_SIZE))["non_embedding_params"]


def presets_table(vocab_size: int, seq_len: int) -> list[str]:
    """The lines `python -m bigmodel presets` prints: every preset's shape, counts and FLOPs/token."""
    models = {name: preset_model(name, vocab_size) for name in PRESETS}
    shared = models[PRESETS[0]]  # presets differ only in shape: one model states the rest
    head = "tied" if shared.tie_embeddings else "untied"
    lines = [
        f"# vocab_size={vocab_size} seq_len={seq_len} {head} head, {shared.positions}; "
        f"d_model = {ASPECT_RATIO}*n_layers, head_dim {HEAD_DIM}, d_ff = {FF_MULT}*d_model",
        f"{'preset':>6} {'d_model':>7} {'n_layers':>8} {'n_heads':>7} {'d_ff':>6} "
        f"{'params':>14} {'non_emb_params':>14} {'flops/token':>14}",
    ]
    for name, model in models.items():
        stats = model_stats(model, seq_len)
        lines.append(
            f"{name:>6} {model.d_model:>7} {model.n_layers:>8} {model.n_heads:>7} {model.d_ff:>6} "
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
