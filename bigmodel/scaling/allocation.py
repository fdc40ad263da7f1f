"""The compute-optimal allocation on the study's own compute basis.

Chinchilla's closed form (`laws.compute_optimal`) spends C = 6·N·D, with N here the non-embedding
count. A small model's real FLOPs per token are far from 6N: the demo's 25K-parameter model
spends 12 N per token (embeddings, the LM head and attention), its 886K one 7.0 N. Allocating
under 6ND and comparing with an isoFLOP fit (which reads the runs' real FLOPs) compares two
bases: README once set Approach 3's 85 tokens per parameter against Approach 2's 68 "at 1e13
FLOPs", 62 against 68 on one basis.

So where every run has its FLOPs (the registry's flops column, a CSV's), `flops_per_token_line`
fits the study's FLOPs per token as a line in N (FLOPs/token = slope·N + intercept: the
parameters' 6N-like part and the per-token cost that does not grow with N), and
`numerical_optimum` minimises L(N, C / fpt(N)) over N on a fine grid: the allocation a run with
C FLOPs of this study's shapes would get. fit.json's `compute_basis` names it; `compute_basis=
"6ND"` keeps Chinchilla's closed form (and is what a study without FLOPs gets).
"""

from __future__ import annotations

import numpy as np

from bigmodel.scaling.laws import chinchilla_loss, compute_optimal

BASES = ("flops", "6ND")
GRID_DECADES, GRID_POINTS = 6.0, 6001  # N searched over ±3 decades of the 6ND optimum, 0.001 decades apart


def flops_per_token_line(non_embedding_params, tokens, flops) -> dict | None:
    """FLOPs per token = slope·N + intercept by least squares over the runs; None without every run's FLOPs."""
    params, tokens, flops = (np.asarray(v, dtype=float) for v in (non_embedding_params, tokens, flops))
    if not np.all(np.isfinite(flops)) or np.unique(params).size < 2:
        return None
    slope, intercept = np.polyfit(params, flops / tokens, 1)
    return {"slope": float(slope), "intercept": float(intercept)}


def describe_basis(line: dict | None) -> str:
    if line is None:
        return "6ND (C = 6·N·D, N non-embedding)"
    return f"flops (the runs' FLOPs per token = {line['slope']:.3g}·N + {line['intercept']:.3g}, N non-embedding)"


def numerical_optimum(law: dict, budget: float, line: dict, centre: float) -> dict:
    """N_opt, D_opt, D/N and the loss at C = `budget` FLOPs spent at fpt(N) = slope·N + intercept per token.

    `centre`: where to search (the 6ND optimum); NaN results where the law allocates nothing."""
    if not np.isfinite(centre) or centre <= 0:
        return {"n_opt": np.nan, "d_opt": np.nan, "tokens_per_param": np.nan, "loss_opt": np.nan}
    params = centre * np.logspace(-GRID_DECADES / 2, GRID_DECADES / 2, GRID_POINTS)
    tokens = budget / (line["slope"] * params + line["intercept"])
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        loss = chinchilla_loss(params, tokens, *(law[key] for key in ("E", "A", "B", "alpha", "beta")))
    best = int(np.nanargmin(loss)) if np.isfinite(loss).any() else 0
    return {"n_opt": float(params[best]), "d_opt": float(tokens[best]), "tokens_per_param": float(tokens[best] / params[best]),
            "loss_opt": float(loss[best])}


def allocation_at(law: dict, budget: float, line: dict | None) -> dict:
    """N_opt, D_opt, D/N and the loss at C = `budget` of a Chinchilla law (E, A, B, alpha, beta):
    on `line`'s FLOPs per token, or under C = 6ND where `line` is None. NaN where it allocates nothing."""
    optimum = compute_optimal(law["A"], law["B"], law["alpha"], law["beta"], budget)
    if "n_opt" not in optimum:
        return {"n_opt": np.nan, "d_opt": np.nan, "tokens_per_param": np.nan, "loss_opt": np.nan}
    if line is not None:
        return numerical_optimum(law, budget, line, optimum["n_opt"])
    with np.errstate(over="ignore", invalid="ignore"):
        loss = float(chinchilla_loss(optimum["n_opt"], optimum["d_opt"], *(law[key] for key in ("E", "A", "B", "alpha", "beta"))))
    return {key: optimum[key] for key in ("n_opt", "d_opt", "tokens_per_param")} | {"loss_opt": loss}


def flops_per_token(line: dict | None, non_embedding_params: float) -> float:
    """A run's FLOPs per token on the basis: slope·N + intercept, or 6N under C = 6ND."""
    return 6.0 * non_embedding_params if line is None else line["slope"] * non_embedding_params + line["intercept"]
