"""Approach 2's design bias, measured on a plug-in law and removed.

A parabola in log N is not the shape of an isoFLOP slice: the loss rises more steeply on one side
of the optimum than on the other. With many sizes spaced evenly about each optimum the error
cancels; with the 4–5 sizes per budget of a real study, placed where the optimum was guessed to
be, it does not. On experiments/isoflop_results' own design, fitted to its Approach 3 law's
noise-free losses, the parabola vertices give a = 0.627 and b = 0.499 against that law's 0.523
and 0.610: a bias of about 0.1, the width of the bootstrap interval, which then covered the true
a in only 0.53 of simulated studies (docs/scaling/calibration.md). No resampling repairs an
estimator's bias; it has to be estimated and removed.

The plug-in correction: take a law for the study's truth (the Approach 3 fit of the same runs),
compute its noise-free losses at the study's own runs, and apply Approach 2 to them, budget by
budget. At budget j the vertex n̂ⱼ of those losses differs from the plug-in law's own optimum N*ⱼ
(on the runs' FLOPs per token, `allocation.allocation_at`) by the design's bias at that budget,
log10(n̂ⱼ/N*ⱼ) (likewise for D). Each measured vertex is divided by its budget's ratio, and the
exponents are refitted through the corrected optima; the bootstrap replicates, which see the same
design, shift by the same amount (the exponents are linear in the log vertices). Where the data
follow the Chinchilla form, the corrected a is Approach 3's allocation slope plus Approach 2's
reading of where the runs depart from Approach 3's surface; where they do not, the correction is
as wrong as the plug-in's shape. On designs whose sizes bracket each optimum evenly the bias,
and so the correction, is near 0. fit.json keeps the uncorrected numbers (`uncorrected`) and the
correction itself (`design_bias`).
"""

from __future__ import annotations

import numpy as np

from bigmodel.scaling.allocation import allocation_at, flops_per_token_line
from bigmodel.scaling.isoflop import fit_isoflop, isoflop_exponents
from bigmodel.scaling.laws import chinchilla_loss

LAW_KEYS = ("E", "A", "B", "alpha", "beta")
PLUG_IN = "the Approach 3 (chinchilla) fit of the same runs"


def law_optima(law: dict, budgets, line: dict | None) -> list[dict]:
    """The law's compute-optimal N and D at each budget on `line`'s FLOPs per token (6ND without one)."""
    return [{"flops": float(budget), **allocation_at(law, float(budget), line)} for budget in budgets]


def allocation_slopes(law: dict, budgets, line: dict | None) -> dict:
    """a and b as the law has them over these budgets: the log–log slopes of its optima, what
    Approach 2's vertices estimate on the same budgets."""
    optima = law_optima(law, budgets, line)
    return {key: isoflop_exponents(optima)[key] for key in ("a", "b")}


def vertex_bias(law: dict, params, tokens, flops, budgets: list[dict]) -> list[dict] | str:
    """Per fitted budget, log10 of Approach 2's vertex over the law's optimum on the law's
    noise-free losses at these runs (`n_bias`, `d_bias`), or why it cannot be measured."""
    params, tokens, flops = (np.asarray(values, dtype=float) for values in (params, tokens, flops))
    loss = chinchilla_loss(params, tokens, *(law[key] for key in LAW_KEYS))
    if not np.all(np.isfinite(loss)) or np.any(loss <= 0):
        return "the plug-in law has no finite loss at every run"
    try:
        noise_free = {budget["flops"]: budget for budget in fit_isoflop(params, tokens, loss, flops)["budgets"]}
    except ValueError as error:
        return f"Approach 2 fails on the plug-in law's losses: {str(error).split(' (')[0]}"
    missing = [budget["flops"] for budget in budgets if budget["flops"] not in noise_free]
    if missing:
        return f"the plug-in law puts the optimum of C={missing[0]:.3g} outside its sizes"
    optima = law_optima(law, [budget["flops"] for budget in budgets], flops_per_token_line(params, tokens, flops))
    if not all(np.isfinite(optimum[key]) and optimum[key] > 0 for optimum in optima for key in ("n_opt", "d_opt")):
        return "the plug-in law allocates nothing at some budget (an exponent ≤ 0)"
    return [{"flops": budget["flops"], "n_bias": float(np.log10(noise_free[budget["flops"]]["n_opt"] / optimum["n_opt"])),
             "d_bias": float(np.log10(noise_free[budget["flops"]]["d_opt"] / optimum["d_opt"]))}
            for budget, optimum in zip(budgets, optima)]


def correct_design_bias(result: dict, law: dict, params, tokens, flops) -> dict:
    """`result` (a `fit_isoflop` result) with its design bias removed (module docstring) on the
    plug-in `law`, the uncorrected numbers under `uncorrected` and the correction under
    `design_bias`; unchanged but for `design_bias` {"applied": False, "why": ...} where the bias
    cannot be measured."""
    law = {key: float(law[key]) for key in LAW_KEYS}
    biases = vertex_bias(law, params, tokens, flops, result["budgets"])
    if isinstance(biases, str):
        return {**result, "design_bias": {"applied": False, "why": biases, "plug_in": PLUG_IN, "plug_in_law": law}}
    budgets = [{**budget, "n_opt_corrected": budget["n_opt"] / 10 ** bias["n_bias"], "d_opt_corrected": budget["d_opt"] / 10 ** bias["d_bias"],
                "n_bias": bias["n_bias"], "d_bias": bias["d_bias"]} for budget, bias in zip(result["budgets"], biases)]
    corrected = isoflop_exponents([{"flops": b["flops"], "n_opt": b["n_opt_corrected"], "d_opt": b["d_opt_corrected"]} for b in budgets])
    shift = {key: result[key] - corrected[key] for key in ("a", "b")}
    truth = allocation_slopes(law, [budget["flops"] for budget in budgets], flops_per_token_line(params, tokens, flops))
    out = {**result, **corrected, "budgets": budgets,
           "uncorrected": {key: result[key] for key in ("a", "b", "n_coefficient", "d_coefficient", "ci") if key in result},
           "design_bias": {"applied": True, "a": shift["a"], "b": shift["b"], "plug_in": PLUG_IN, "plug_in_law": law,
                           "plug_in_estimate": {key: truth[key] + shift[key] for key in ("a", "b")}, "plug_in_truth": truth}}
    if "samples" in result:
        out["samples"] = [{key: sample[key] - shift[key] for key in sample} for sample in result["samples"]]
        out["ci"] = {key: [low - shift[key], high - shift[key]] for key, (low, high) in result["ci"].items()}
    return out


def describe_design_bias(result: dict) -> str:
    """The summary's words for the correction, or '' where the result has none."""
    bias = result.get("design_bias")
    if not bias:
        return ""
    if not bias["applied"]:
        return f"design bias not removed: {bias['why']}"
    before = result["uncorrected"]
    return (f"the parabola vertices' design bias removed (a {-bias['a']:+.3f}, b {-bias['b']:+.3f}, measured on {PLUG_IN};"
            f" uncorrected a {before['a']:.3f}, b {before['b']:.3f})")
