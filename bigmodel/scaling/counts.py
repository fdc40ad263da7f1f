"""What N counts in a scaling fit (`fit --count`): the same runs under another parameter count.

Where a law's exponents and its compute-optimal D/N land depends on what N counts (Porian et
al. 2024; nanochat saw its optimal tokens per parameter move 3× between conventions). bigmodel's
N is Kaplan's non-embedding count; the others it can compute from what a run records:

- `non_embedding` (default): `non_embedding_params`, without token/position embeddings and an
  untied LM head (flops.py's `param_counts`).
- `total`: `params`, every parameter: embeddings and the LM head included (Chinchilla's count).
  A sweep's runs.csv has it; a CSV needs both a `non_embedding_params` and a `params` column.
- `flops`: C / 6D, the count that makes C = 6ND exact for the run's own FLOPs: the non-embedding
  matmuls plus the head's (d·V) plus attention's 2·L·d·T per token (flops.py's formula).

fit.json's `n_definition` names the one a fit used (`non_embedding_params`, `total_params`,
`flops_params`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bigmodel.scaling.points import Points

COUNTS = {  # --count → fit.json n_definition, the words a summary or a figure uses
    "non_embedding": ("non_embedding_params", "non-embedding"),
    "total": ("total_params", "total"),
    "flops": ("flops_params", "C/6D"),
}
DEFAULT_COUNT = "non_embedding"
WORDS = dict(COUNTS.values())


def check_count(count: str) -> None:
    if count not in COUNTS:
        raise ValueError(f"unknown --count {count!r}: use one of {', '.join(COUNTS)} (what N counts)")


def n_definition(count: str) -> str:
    return COUNTS[count][0]


def count_words(definition: str | None) -> str:
    """`non-embedding`, `total` or `C/6D` for a fit.json `n_definition` (older fits: non-embedding)."""
    return WORDS.get(definition or "", "non-embedding")


def counted(points: Points, count: str, source) -> Points:
    """`points` with N (`non_embedding_params`, the field every fit reads) holding the `count`
    convention's number; a one-line ValueError naming `source` where its runs do not record it."""
    check_count(count)
    if count == "non_embedding":
        return points
    if count == "total":
        if not np.all(np.isfinite(points.total_params)):
            raise ValueError(f"{source}: --count total needs each run's total parameter count: a sweep's runs.csv has it "
                             "(params); a CSV needs both non_embedding_params and params columns")
        return dataclasses.replace(points, non_embedding_params=points.total_params)
    if not np.all(np.isfinite(points.flops)):
        raise ValueError(f"{source}: --count flops needs each run's FLOPs (a flops column) to count N as C/6D")
    return dataclasses.replace(points, non_embedding_params=points.flops / (6.0 * points.tokens))
