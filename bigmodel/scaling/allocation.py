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

import re

import numpy as np

from bigmodel.scaling.laws import chinchilla_loss, compute_optimal, optimal_frontier

BASES = ("flops", "6ND")
GRID_DECADES, GRID_POINTS = 6.0, 6001  # N searched over ±3 decades of the 6ND optimum, 0.001 decades apart


def flops_per_token_line(non_embedding_params, tokens, flops) -> dict | None:
    """FLOPs per token = slope·N + intercept by least squares over the runs; None without every run's FLOPs."""
    params, tokens, flops = (np.asarray(v, dtype=float) for v in (non_embedding_params, tokens, flops))
    if not np.all(np.isfinite(flops)) or np.unique(params).size < 2:
        return None
    slope, intercept = np.polyfit(params, flops / tokens, 1)
    return {"slope": float(slope), "intercept": float(intercept)}


def tokens_for(line: dict | None, non_embedding_params, compute) -> np.ndarray:
    """D a run of N parameters trains on with C FLOPs: C / fpt(N) on `line`, C / 6N without one."""
    params = np.asarray(non_embedding_params, dtype=float)
    per_token = 6.0 * params if line is None else line["slope"] * params + line["intercept"]
    return np.asarray(compute, dtype=float) / per_token


def run_compute(line: dict | None, non_embedding_params, tokens, flops=None) -> np.ndarray:
    """Each run's C on the basis `line` names: its own FLOPs where every run has them, else
    fpt(N)·D on the line; 6·N·D without a line (the basis the allocation was solved on)."""
    params, tokens = np.asarray(non_embedding_params, dtype=float), np.asarray(tokens, dtype=float)
    if line is None:
        return 6.0 * params * tokens
    if flops is not None and np.all(np.isfinite(np.asarray(flops, dtype=float))):
        return np.asarray(flops, dtype=float)
    return (line["slope"] * params + line["intercept"]) * tokens


def frontier_on_basis(law: dict, compute, line: dict | None, points: int = 1201) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N_opt, D_opt, L_opt) at each C (arrays like `compute`): the closed form under 6ND
    (`laws.optimal_frontier`), else `numerical_optimum`'s search at every C at once, on a
    coarser grid (`points` over the same ±3 decades: 0.005 decades apart) for the figures."""
    if line is None:
        return optimal_frontier(law, compute)
    compute = np.atleast_1d(np.asarray(compute, dtype=float))
    optimum = compute_optimal(law["A"], law["B"], law["alpha"], law["beta"])
    nan = np.full(compute.shape, np.nan)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        centre = optimum["G"] * (compute / 6.0) ** optimum["a"]
        if not np.all(np.isfinite(centre) & (centre > 0)):
            return nan, nan.copy(), nan.copy()
        params = centre[:, None] * np.logspace(-GRID_DECADES / 2, GRID_DECADES / 2, points)[None, :]
        tokens = tokens_for(line, params, compute[:, None])
        loss = chinchilla_loss(params, tokens, *(law[key] for key in ("E", "A", "B", "alpha", "beta")))
    loss = np.where(np.isfinite(loss) & (tokens > 0), loss, np.inf)
    best = np.argmin(loss, axis=1)
    rows = np.arange(len(compute))
    return params[rows, best], tokens[rows, best], loss[rows, best]


BASIS_TEXT = re.compile(r"FLOPs per token = (\S+)·N \+ ([^,]+),")  # `describe_basis`'s words, in fit.json files written before the line was kept


def basis_line(fit: dict) -> dict | None:
    """The FLOPs-per-token line a fit allocated on (fit.json `flops_per_token_line`, else read back
    from its `compute_basis` words to their 3 digits), None for 6ND."""
    line = fit.get("flops_per_token_line")
    if isinstance(line, dict) and {"slope", "intercept"} <= set(line):
        return {"slope": float(line["slope"]), "intercept": float(line["intercept"])}
    basis = str(fit.get("compute_basis", ""))
    match = BASIS_TEXT.search(basis)
    return {"slope": float(match.group(1)), "intercept": float(match.group(2))} if match and basis.startswith("flops") else None


def compute_axis_label(fit: dict) -> str:
    """What C is on a figure's axis, from the fit's basis (one count for runs and optimum)."""
    line = basis_line(fit)
    if line is None:
        return "training compute C = 6ND (FLOPs)"
    return f"training compute C (the runs' FLOPs: {line['slope']:.3g}·N + {line['intercept']:.3g} per token)"


def describe_basis(line: dict | None, counted: str = "non-embedding") -> str:
    """fit.json's `compute_basis`; `counted`: what N counts (`counts.py`)."""
    if line is None:
        return f"6ND (C = 6·N·D, N {counted})"
    return f"flops (the runs' FLOPs per token = {line['slope']:.3g}·N + {line['intercept']:.3g}, N {counted})"


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
