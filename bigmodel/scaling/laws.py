"""What a fitted scaling law says: its loss at (N, D, C), the compute-optimal allocation, and how
it is written as text (`law_text`, `estimate`: a fitted number with its interval).

Plain numpy, no fitting: `fit.py` and `hyperparams.py` find the numbers, `holdout.py`, the
summaries and the plots read and write them here. N is the non-embedding parameter count
(Kaplan) everywhere, D the training tokens, and the allocation uses Chinchilla's C = 6ND.
"""

from __future__ import annotations

import math

import numpy as np


def power_law(x, E, A, alpha) -> np.ndarray:
    """L = E + A·x^(−α)."""
    return E + A * np.asarray(x, dtype=float) ** -alpha


def chinchilla_loss(non_embedding_params, tokens, E, A, B, alpha, beta) -> np.ndarray:
    """L = E + A·N^(−α) + B·D^(−β)."""
    return E + A * np.asarray(non_embedding_params, dtype=float) ** -alpha + B * np.asarray(tokens, dtype=float) ** -beta


def law_loss(fit: dict, non_embedding_params, tokens, flops, parameters: dict | None = None) -> np.ndarray:
    """The loss a power or chinchilla fit predicts at (N, D, C).

    `parameters` (a bootstrap sample: E, A, alpha, ...) replace the fit's own numbers, so a band
    is the same function evaluated once per sample.
    """
    law = {**fit, **(parameters or {})}
    if fit["law"] == "chinchilla":
        return chinchilla_loss(non_embedding_params, tokens, *(law[key] for key in ("E", "A", "B", "alpha", "beta")))
    x = flops if fit.get("x") == "flops" else non_embedding_params
    return power_law(x, law["E"], law["A"], law["alpha"])


def compute_optimal(A: float, B: float, alpha: float, beta: float, budget: float | None = None) -> dict:
    """Allocation under C = 6ND: N_opt = G (C/6)^a, D_opt = G⁻¹ (C/6)^b, a = β/(α+β), b = α/(α+β)."""
    total = alpha + beta
    if total <= 0:  # a flat law: no allocation follows from it
        return {"a": math.nan, "b": math.nan, "G": math.nan}
    G = (alpha * A / (beta * B)) ** (1.0 / total) if alpha > 0 and beta > 0 else math.nan
    result = {"a": beta / total, "b": alpha / total, "G": G}
    if budget is not None:
        n_opt = G * (budget / 6.0) ** result["a"]
        d_opt = (budget / 6.0) ** result["b"] / G
        result.update(budget=float(budget), n_opt=n_opt, d_opt=d_opt, tokens_per_param=d_opt / n_opt)
    return {key: float(value) for key, value in result.items()}


def optimal_frontier(law: dict, compute) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N_opt, D_opt, L(N_opt, D_opt)) of a Chinchilla law at each budget C (arrays like `compute`).

    The fitted compute-optimal loss line: the lowest loss the law allows at C = 6ND. NaN where
    the law allocates nothing (an exponent ≤ 0).
    """
    compute = np.asarray(compute, dtype=float)
    optimum = compute_optimal(law["A"], law["B"], law["alpha"], law["beta"])
    with np.errstate(invalid="ignore", over="ignore"):
        n_opt = optimum["G"] * (compute / 6.0) ** optimum["a"]
        d_opt = (compute / 6.0) ** optimum["b"] / optimum["G"]
        loss = chinchilla_loss(n_opt, d_opt, law["E"], law["A"], law["B"], law["alpha"], law["beta"])
    return n_opt, d_opt, loss


def estimate(result: dict, key: str, digits: str) -> str:
    """`0.340 [0.331, 0.354]`: a fitted number and its 95% bootstrap interval where there is one,
    as every fit summary and figure writes it."""
    text = f"{result[key]:{digits}}"
    if key in result.get("at_bound", {}):  # not identified: no interval (scaling/intervals.py)
        return text + " (at its bound)"
    if key in (result.get("ci") or {}):
        low, high = result["ci"][key]
        text += f" [{low:{digits}}, {high:{digits}}]"
        if key in result.get("interval_flags", {}):  # reaches its bound: not a calibrated 95% interval (intervals.py)
            text += " (not calibrated)"
    return text


def law_text(fit: dict, variable: str = "N") -> str:
    """The fitted law as the summaries print it: `L = 1.2 + 35·N^-0.3100` (a power law in
    `variable`) or `L = 1.69 + 406/N^0.3400 + 411/D^0.2800` (Chinchilla). The figures write it in
    mathtext (`plot_style.law_label`)."""
    if fit["law"] == "chinchilla":
        return f"L = {fit['E']:.4g} + {fit['A']:.4g}/N^{fit['alpha']:.4f} + {fit['B']:.4g}/D^{fit['beta']:.4f}"
    return f"L = {fit['E']:.4g} + {fit['A']:.4g}·{variable}^-{fit['alpha']:.4f}"
