"""The maximal update parametrization (muP; Yang et al. 2022, Tensor Programs V) as one table.

`model.parametrization = "mup"` rescales four things by the width multiplier
m = d_model / `model.mup_base_width`, chosen so that at m = 1 the model and its optimizer are
standard parametrization (SP) exactly, and hyperparameters tuned there carry over:

| parameters                                     | init std    | Adam lr | forward        |
|------------------------------------------------|-------------|---------|----------------|
| hidden matrices (q, k, v, out, gate, up, down) | SP's / √m   | lr / m  |                |
| token and position embeddings                  | SP's (0.02) | lr      |                |
| LM head (readout)                              | SP's (0.02) | lr      | logits × 1/m   |
| RMSNorm scales                                 | 1           | lr      |                |
| attention                                      |             |         | q·k × √h_b / h |

Hidden init std ∝ 1/√fan_in (anchored at SP's 0.02 at the base width) and lr ∝ 1/fan_in keep
each hidden matrix's update ΔW·x at Θ(1) per coordinate as width grows (Adam normalises the
gradient, so an O(lr) step per entry summed over fan_in aligned coordinates grows ∝ fan_in·lr).
The readout multiplier 1/m with a constant-std, constant-lr matrix is Table 3's readout
(init variance 1/fan_in², Adam lr 1/fan_in) written as MuReadout does: logits start at
O(1/√width) and their updates stay O(1). Attention scores use 1/head_dim instead of
1/√head_dim (q and k become correlated during training), times √h_b so that head_dim = h_b,
the base model's head_dim, is SP's 1/√h_b. Every hidden dimension (d_ff, n_heads·head_dim,
n_kv_heads·head_dim) is taken to scale with d_model, as `shape_of` and the presets scale them.

Weight decay is the same per step at every width: the decay is added after the per-group lr
multiplier (`bigmodel.optim`), so a decayed matrix shrinks by lr(t)·weight_decay per step
whatever its group and width, as SP's AdamW does at the base width. Tied to each group's lr
instead (a plain per-group AdamW), the hidden matrices' decay would be m× weaker at m× the
width, and the weight decay tuned at the base would not be the one that holds wider.

This is muP as in Tensor Programs V and the practitioner's guide (Dey et al. 2024, Cerebras with
EleutherAI's nanoGPT-mup): transfer across width at a fixed depth, which is what the sweeps here
vary, with a base width at which it is SP, so learning rates already tuned under SP carry over.
u-μP (Blake et al. 2024) unit-scales every op for low-precision (fp8) training: it rewrites
every op and the meaning of every hyperparameter, and has no width at which it equals SP.
CompleteP (Dey et al. 2025) adds depth (residual branches × 1/L) for transfer across depth;
these sweeps keep the depth fixed, so it would change nothing they measure.

Pure Python on `ModelConfig`, so the model, the optimizer and the tests read one table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from bigmodel.model_config import ModelConfig

PARAMETRIZATIONS = ("sp", "mup")


def is_mup(config: ModelConfig) -> bool:
    return config.parametrization == "mup"


def width_multiplier(config: ModelConfig) -> float:
    """m = d_model / mup_base_width under muP; 1 under SP."""
    return config.d_model / config.mup_base_width if is_mup(config) else 1.0


def hidden_init_std(sp_std: float, config: ModelConfig) -> float:
    """A hidden matrix's init std: SP's at the base width, ∝ 1/√fan_in around it. SP's value is
    returned untouched (not × 1.0) so SP's initialisation stays the same computation."""
    return sp_std / math.sqrt(width_multiplier(config)) if is_mup(config) else sp_std


def readout_multiplier(config: ModelConfig) -> float | None:
    """What the final hidden state is multiplied by before the LM head (logits × 1/m); None
    under SP, where nothing is multiplied."""
    return 1.0 / width_multiplier(config) if is_mup(config) else None


def base_head_dim(config: ModelConfig) -> int:
    """The base model's head_dim: `mup_base_head_dim`, or 0 for this model's own (widths scaled
    at a fixed head_dim, as `shape_of` does, where 1/h and 1/√h differ by a constant)."""
    return config.mup_base_head_dim or config.head_dim


def implicit_base_head_dim_problem(d_model: int, n_heads: int, base_width: int, base_head_dim: int) -> str | None:
    """Why `mup_base_head_dim` = 0 (the base model's head_dim read as this model's) cannot hold
    for this shape, or None. That reading means the base model, at d_model = `base_width`, had
    whole heads of this head_dim; when head_dim grows with width (n_heads fixed) it does not
    divide the base width, and 0 would silently give SP's 1/√h attention where muP's is √h_b/h.
    (A head_dim that grows yet still divides the base width cannot be told from a fixed one by
    one config: the docs say to set the base whenever head_dim is not the same at every width.)"""
    head_dim = d_model // n_heads
    if base_head_dim or base_width % head_dim == 0:
        return None
    guess = f" ({base_width // n_heads} if n_heads stays {n_heads} at every width)" if base_width % n_heads == 0 else ""
    return (f"config.model.mup_base_head_dim=0 reads the base model's head_dim as this model's {head_dim}, but a base of "
            f"d_model {base_width} (mup_base_width) cannot hold whole heads of {head_dim}: head_dim grows with width here, "
            f"so set model.mup_base_head_dim to the base model's head_dim{guess}")


def attention_scale(config: ModelConfig) -> float | None:
    """The factor on q·k: √h_b / h under muP; None under SP (the attention functions' own 1/√h)."""
    if not is_mup(config):
        return None
    return config.head_dim ** -0.5 * math.sqrt(base_head_dim(config) / config.head_dim)


def is_hidden(names: Sequence[str]) -> bool:
    """Whether a parameter at this path (its key names) is a hidden matrix: a kernel inside the
    layer stack (attention q/k/v/out, MLP gate/up/down). Embeddings, the LM head and norm scales
    are not: their fan-in or fan-out stays finite as width grows. (A boxed parameter's path
    ends in its `.value`, so "kernel" is looked for anywhere in it.)"""
    return "layers" in names and "kernel" in names


def learning_rate_multiplier(names: Sequence[str], config: ModelConfig) -> float:
    """The factor on Adam's update of the parameter at `names`: 1/m for hidden matrices under
    muP, 1 otherwise."""
    return 1.0 / width_multiplier(config) if is_mup(config) and is_hidden(names) else 1.0
