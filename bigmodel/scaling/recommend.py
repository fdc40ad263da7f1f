"""What a Chinchilla fit recommends at a compute budget C it has not seen: the compute-optimal N
and D (with their bootstrap intervals), the preset-family shape nearest to N, the D that shape
needs to spend C, and the loss the law predicts for that run (mean and prediction intervals).

Everything is on the fit's own compute basis (`allocation.py`): the FLOPs per token the study's
runs spent (fit.json's `flops_per_token_line`, slope·N + intercept), or Chinchilla's C = 6ND where the fit
has none. A fit.json written before `flops_per_token_line` existed has the line only in its `compute_basis`
text (3 significant digits), which is read instead. A study (`ladder.py`) spends C at its own
config's real FLOPs per token of the chosen shape and sets the run's learning rate and batch by
its rules; `with_hyperparameters` adds those, or a fitted hyperparameter law's, and says which.

N is the non-embedding count everywhere (fit.json's `n_definition`). Plain numpy and no JAX.
"""

from __future__ import annotations

import math

import numpy as np

from bigmodel.presets import HEAD_DIM, preset_non_embedding_params, shape_for_params
from bigmodel.scaling.allocation import allocation_at, basis_line, describe_basis, flops_per_token
from bigmodel.scaling.intervals import percentile_interval
from bigmodel.scaling.prediction import predictions

ALLOCATION_KEYS = ("n_opt", "d_opt", "tokens_per_param", "loss_opt")


def check_budget(budget: float, flag: str = "--budget") -> float:
    """A compute budget in (0, ∞), or one ValueError line."""
    if not (isinstance(budget, (int, float)) and math.isfinite(budget) and budget > 0):
        raise ValueError(f"{flag} {budget!r} is not a compute budget: give a positive, finite number of training FLOPs, e.g. {flag} 1e15")
    return float(budget)


def check_fit(fit, path) -> dict:
    """A fit.json that can recommend (a Chinchilla law), or one ValueError line."""
    if not isinstance(fit, dict) or "law" not in fit:
        raise ValueError(f"{path} is not a fit.json: write one with python -m bigmodel fit DIR --law chinchilla --bootstrap 200 --out {path}")
    if fit["law"] != "chinchilla":
        raise ValueError(f"{path} holds a {fit['law']} law, not chinchilla: recommend needs L(N, D); "
                         "refit with python -m bigmodel fit DIR --law chinchilla --bootstrap 200")
    missing = [key for key in ("E", "A", "B", "alpha", "beta") if not isinstance(fit.get(key), (int, float))]
    if missing:
        raise ValueError(f"{path} lacks the law's {', '.join(missing)}: refit it with python -m bigmodel fit DIR --law chinchilla")
    return fit


def allocation_with_intervals(fit: dict, budget: float, line: dict | None) -> dict:
    """N_opt, D_opt, D/N and the optimal loss at C, each with the 2.5/97.5 percentiles of the
    bootstrap laws' own allocations (`ci`; none without two samples)."""
    result = allocation_at(fit, budget, line)
    if not all(math.isfinite(result[key]) and result[key] > 0 for key in ("n_opt", "d_opt")):
        raise ValueError("the fitted law allocates nothing at this budget (an exponent at or below 0): "
                         "no compute-optimal N follows; fit more sizes and token counts")
    samples = fit.get("samples") or []
    if len(samples) >= 2:
        table = [allocation_at({**fit, **sample}, budget, line) for sample in samples]
        result["ci"] = {key: percentile_interval(np.array([row[key] for row in table], dtype=float)) for key in ALLOCATION_KEYS}
    return result


def nearest_shape(non_embedding_params: float) -> dict:
    """The preset family's shape nearest N (`presets.shape_for_params`) with its own N."""
    shape = shape_for_params(non_embedding_params)
    return {"preset": f"L{shape['n_layers']}", **shape, "head_dim": HEAD_DIM,
            "non_embedding_params": int(preset_non_embedding_params(shape["n_layers"]))}


def predicted_run(fit: dict, non_embedding_params: float, tokens: float) -> dict:
    """The law's loss for one run at (N, D) with its mean and prediction intervals."""
    return predictions(fit, [(float(non_embedding_params), float(tokens))])[0]


def recommend(fit: dict, budget: float) -> dict:
    """The recommendation at C = `budget` on the fit's basis (module docstring)."""
    line = basis_line(fit)
    optimum = allocation_with_intervals(fit, budget, line)
    shape = nearest_shape(optimum["n_opt"])
    tokens = budget / flops_per_token(line, shape["non_embedding_params"])
    return {"budget": float(budget), "compute_basis": describe_basis(line), "optimum": optimum, "shape": shape,
            "run": {"non_embedding_params": shape["non_embedding_params"], "tokens": float(tokens),
                    "tokens_from": "C / the fit's FLOPs per token of the shape"},
            "prediction": predicted_run(fit, shape["non_embedding_params"], tokens)}


def with_run(recommendation: dict, fit: dict, tokens: float, flops: float, tokens_from: str) -> dict:
    """The recommendation for a run whose D a study decided (its real FLOPs per token), predicted anew."""
    n = recommendation["shape"]["non_embedding_params"]
    run = {"non_embedding_params": n, "tokens": float(tokens), "flops": float(flops), "tokens_from": tokens_from}
    return {**recommendation, "run": run, "prediction": predicted_run(fit, n, tokens)}


def with_hyperparameters(recommendation: dict, learning_rate: float | None, batch: dict | None, source: str) -> dict:
    """Add the run's learning rate and batch (`batch`: sequences and seq_len, or tokens) and where they came from."""
    return {**recommendation, "hyperparameters": {"learning_rate": learning_rate, "batch": batch, "source": source}}


def interval_text(values: dict, key: str, digits: str) -> str:
    text = f"{values[key]:{digits}}"
    if key in values.get("ci", {}):
        low, high = values["ci"][key]
        text += f" [{low:{digits}}, {high:{digits}}]"
    return text


def batch_text(batch: dict | None) -> str:
    if not batch:
        return "batch not set"
    if "sequences" in batch:
        return f"batch {batch['sequences']} sequences × {batch['seq_len']} tokens"
    return f"batch {batch['tokens']:.3g} tokens"


def describe(recommendation: dict) -> list[str]:
    """The lines `recommend` prints."""
    optimum, shape, run, prediction = (recommendation[key] for key in ("optimum", "shape", "run", "prediction"))
    intervals = "95% intervals from the fit's bootstrap laws" if "ci" in optimum else "no intervals: the fit has no bootstrap (fit --bootstrap 200)"
    lines = [f"at C = {recommendation['budget']:.3g} FLOPs, compute basis {recommendation['compute_basis']} ({intervals}):",
             f"  compute-optimal N = {interval_text(optimum, 'n_opt', '.3g')} non-embedding params, D = {interval_text(optimum, 'd_opt', '.3g')}"
             f" tokens ({interval_text(optimum, 'tokens_per_param', '.3g')} tokens/param), loss {interval_text(optimum, 'loss_opt', '.4f')}",
             f"  nearest preset {shape['preset']}: {shape['n_layers']} layers, d_model {shape['d_model']}, {shape['n_heads']} heads, "
             f"d_ff {shape['d_ff']}; N = {shape['non_embedding_params']:,}; D = {run['tokens']:.4g} tokens spends C ({run['tokens_from']})"]
    hyper = recommendation.get("hyperparameters")
    if hyper:
        lr = "learning rate not set" if hyper["learning_rate"] is None else f"learning rate {hyper['learning_rate']:.3g}"
        lines.append(f"  {lr}, {batch_text(hyper['batch'])}: {hyper['source']}")
    bands = []
    if "mean_interval" in prediction:
        bands.append("mean [{:.4f}, {:.4f}]".format(*prediction["mean_interval"]))
    if "prediction_interval" in prediction:
        bands.append("a run [{:.4f}, {:.4f}]".format(*prediction["prediction_interval"]))
    lines.append(f"  predicted loss of that run {prediction['predicted_loss']:.4f}" + (f" ({'; '.join(bands)})" if bands else ""))
    return lines
