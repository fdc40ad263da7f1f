"""What a fitted law says about a run it has not seen: the mean loss there, where that mean lies
(the mean interval) and where one new run there lands (the prediction interval).

The mean interval is the 2.5/97.5 percentiles of the bootstrap laws' predictions; where E's interval
reaches its bound 0, only its upper end (`mean_is_one_sided`: its low end reads 0). The prediction
interval adds one run's noise to each of them: a draw of log-normal noise with σ_total of the
fit's noise model (`noise.py`: a new run has its own per-run part and its own stable run's shared
part), widened to Student's t at the fit's residual degrees of freedom (`noise.sigma_inflation`),
as OLMo-core's `predict_loss_distribution(include_observation_noise=True)` adds the noise. A measured
run is judged against the prediction interval: even a perfect law misses one run by its noise.

`--predict N,D` (`parse_predict`) asks for both at any point.
"""

from __future__ import annotations

import math

import numpy as np

from bigmodel.scaling.laws import law_loss
from bigmodel.scaling.noise import sigma_inflation

PREDICTION_SEED = 20_231  # the noise draws are part of the result: the same fit gives the same interval
NOISE_DRAWS = 10_000  # noisy runs drawn in all, spread over the bootstrap laws


def sample_predictions(result: dict, non_embedding_params, tokens, flops) -> np.ndarray | None:
    """(samples, points): each bootstrap law's loss at the points; None without two samples."""
    samples = result.get("samples") or []
    if len(samples) < 2:
        return None
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return np.array([law_loss(result, non_embedding_params, tokens, flops, sample) for sample in samples])


def intervals_at(result: dict, non_embedding_params, tokens, flops) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
    """((points, 2) mean intervals, (points, 2) prediction intervals), or (None, None) without samples.

    The prediction interval needs the fit's noise model (`result["noise"]["sigma_total"]`)."""
    predictions = sample_predictions(result, non_embedding_params, tokens, flops)
    if predictions is None:
        return None, None
    mean = np.nanpercentile(predictions, [2.5, 97.5], axis=0).T
    if mean_is_one_sided(result):
        mean[:, 0] = 0.0
    sigma = (result.get("noise") or {}).get("sigma_total")
    if sigma is None or not math.isfinite(sigma):
        return mean, None
    sigma *= sigma_inflation(result["noise"].get("residual_dof", 0))
    draws = max(1, NOISE_DRAWS // len(predictions))  # several runs per bootstrap law: smooth tails at small K
    noise = np.random.default_rng(PREDICTION_SEED).normal(0.0, sigma, size=(draws, *predictions.shape))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        runs = (predictions[None] * np.exp(noise)).reshape(-1, predictions.shape[1])
    return mean, np.nanpercentile(runs, [2.5, 97.5], axis=0).T


def mean_is_one_sided(result: dict) -> bool:
    """Whether the mean interval keeps only its upper end (its low end 0): where E's interval
    reaches its bound 0 (`intervals.reaching_bound`), E may be 0, and a fit whose Ê then lands off
    the bound predicts too high far out, which its bootstrap, redrawn about that Ê, cannot show.
    Simulated with the true E at 0 (docs/scaling/uncertainty.md), every miss of the held-out mean
    interval 8× out was a fit with Ê off its bound and the true mean below the interval's low end;
    none was above its high end. The prediction interval keeps both ends (it covered 0.92 there)."""
    return "E" in result.get("interval_flags", {})


def parse_predict(texts) -> list[tuple[float, float]]:
    """`["1e9,2e10", ...]` → [(N, D), ...]; anything else is one ValueError line."""
    pairs = []
    for text in texts or ():
        parts = str(text).split(",")
        try:
            values = [float(part) for part in parts]
        except ValueError:
            values = []
        if len(values) != 2 or not all(math.isfinite(v) and v > 0 for v in values):
            raise ValueError(f"--predict {text!r} is not N,D: give two positive numbers, non-embedding params and tokens, e.g. --predict 1e9,2e10")
        pairs.append((values[0], values[1]))
    return pairs


def predictions(result: dict, pairs: list[tuple[float, float]]) -> list[dict]:
    """fit.json's `predictions`: the law's loss at each (N, D), its mean and prediction intervals."""
    if not pairs:
        return []
    params, tokens = (np.array(column, dtype=float) for column in zip(*pairs))
    flops = 6.0 * params * tokens  # a power law in C reads the 6ND compute of the point
    loss = law_loss(result, params, tokens, flops)
    mean, run = intervals_at(result, params, tokens, flops)
    rows = []
    for index, (n, d) in enumerate(pairs):
        row = {"non_embedding_params": n, "tokens": d, "predicted_loss": float(loss[index])}
        if mean is not None:
            row["mean_interval"] = [float(v) for v in mean[index]]
            if mean_is_one_sided(result):
                row["mean_interval_one_sided"] = True
        if run is not None:
            row["prediction_interval"] = [float(v) for v in run[index]]
        rows.append(row)
    return rows


def mean_words(row: dict) -> str:
    """`mean [2.29, 2.33]`, or `mean ≤ 2.33` where the interval is one-sided (`mean_is_one_sided`)."""
    low, high = row.get("mean_interval") or row["interval"]  # a held-out row of an older fit.json has only `interval`
    return f"mean ≤ {high:.4f}" if row.get("mean_interval_one_sided") else f"mean [{low:.4f}, {high:.4f}]"


def describe_predictions(rows: list[dict]) -> str:
    """`at N=1e+09, D=2e+10: L 2.310 (mean [2.29, 2.33]; a run [2.27, 2.35])` per row."""
    parts = []
    for row in rows:
        text = f"at N={row['non_embedding_params']:.3g}, D={row['tokens']:.3g}: L {row['predicted_loss']:.4f}"
        bands = [mean_words(row)] if "mean_interval" in row else []
        if "prediction_interval" in row:
            bands.append(f"a run [{row['prediction_interval'][0]:.4f}, {row['prediction_interval'][1]:.4f}]")
        parts.append(text + (f" ({'; '.join(bands)})" if bands else ""))
    return "predicted " + "; ".join(parts)
