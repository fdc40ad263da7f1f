"""The experiment language: what an experiment file imports to write a scaling study.

An experiment file (`experiments/*.py`) defines `get_study()` returning a `Study`: a base config
(`configs/lm.py:<preset>` plus overrides), a grid of model sizes (`SizeGrid` at a fixed token
budget or tokens-per-parameter ratio, `IsoFlopGrid` over compute budgets, or `BranchGrid` for
cooldown branches), optional seeds and learning rates, and per-run rules written as plain
functions in the experiment file (lr as a power of N, warmup as a share of steps, ...) that see
each run's `RunPlan`. `shape_of` and `sizes_between` name sizes off and on the preset ladder.

The study format lives in `study.py`; `expand(study)` (`expand.py`) turns it into `Run`s, each a
config spec plus string overrides, so `run.command(workdir)` re-runs it by hand exactly.
"""

from __future__ import annotations

from bigmodel.config import ConfigError
from bigmodel.presets import FF_MULT, HEAD_DIM, shape_for_params
from bigmodel.scaling.expand import expand, format_number, validate_runs
from bigmodel.scaling.study import BranchGrid, IsoFlopGrid, Run, RunPlan, SizeGrid, Study

__all__ = ["BranchGrid", "IsoFlopGrid", "Run", "RunPlan", "SizeGrid", "Study", "expand", "format_number", "shape_of",
           "sizes_between", "validate_runs"]


def sizes_between(min_non_embedding_params: float, max_non_embedding_params: float, count: int) -> list[dict[str, int]]:
    """`count` log-spaced targets snapped to the preset family, duplicates dropped (small sizes
    are 8× apart, so asking for many small sizes returns fewer)."""
    if not 0 < min_non_embedding_params <= max_non_embedding_params or count < 1:
        raise ConfigError("sizes_between needs 0 < min <= max and count >= 1")
    ratio = max_non_embedding_params / min_non_embedding_params
    targets = [min_non_embedding_params * ratio ** (i / max(count - 1, 1)) for i in range(count)]
    shapes = []
    for target in targets:
        shape = shape_for_params(target)
        if shape not in shapes:
            shapes.append(shape)
    return shapes


def shape_of(n_layers: int, d_model: int) -> dict[str, int]:
    """A shape off the preset ladder that keeps the family's head_dim (32) and d_ff (4·d_model)
    rules: for width sweeps at a fixed depth. d_model must be a multiple of 32."""
    return {"n_layers": n_layers, "d_model": d_model, "n_heads": d_model // HEAD_DIM, "d_ff": FF_MULT * d_model}
