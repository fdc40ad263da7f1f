"""Quick coverage check of fit's bootstrap intervals by simulation (docs/scaling/uncertainty.md).

    python tools/bootstrap_coverage.py main --studies 60 --replicates 100 --method noise
    python tools/bootstrap_coverage.py iid  --studies 60 --replicates 100
    python tools/bootstrap_coverage.py isoflop --studies 60 --replicates 100          # Approach 3 on an isoFLOP grid
    python tools/bootstrap_coverage.py isoflop --approach 2 --studies 100 --replicates 200

Each study draws log-normal noise (σ = 0.012; on `main`, half of its variance shared by a size's
four branches, as they share one stable run) about a true law (the demo's fit: E ≈ 0, A 5.41,
B 27.0, α 0.244, β 0.223; `--true_E` replaces E), fits it with fit.py's own pieces (L-BFGS from a
coarser start grid than fit's 4,500, batched over the studies, then the bootstrap of
`noise.bootstrap_targets` from each study's best end points) and records whether each 95%
percentile interval holds the truth: α, β, a, the held-out run's mean loss, and one noisy run
there (the prediction interval). Prints coverage ± its binomial standard error and the median
width. The calibration harness (`python -m bigmodel calibrate`) is the full measure; this is the
quick one the bootstrap was developed against.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from bigmodel.scaling import fit, lbfgs, noise
from bigmodel.scaling.isoflop import fit_isoflop
from bigmodel.scaling.laws import chinchilla_loss, compute_optimal
from bigmodel.scaling.prediction import intervals_at

DEMO_LAW = {"E": 1.2145e-15, "A": 5.4124, "B": 27.0194, "alpha": 0.24438, "beta": 0.22266}
SIGMA = 0.012
START_GRID = {"e": np.array([-1.0, 0.0, 1.0]), "a": np.array([0.0, 10.0, 20.0]), "b": np.array([0.0, 10.0, 20.0]),
              "alpha": np.array([0.0, 0.5, 1.0]), "beta": np.array([0.0, 0.5, 1.0])}
POLISH, BOOTSTRAP_STARTS = 8, 4


def design(name: str, law: dict):
    """(N, D, group per point, shared share of the variance, held-out (N, D))."""
    if name == "main":  # experiments/demo.py: 3 sizes × 4 token counts, branches of one stable run per size
        params, tokens = (v.ravel() for v in np.meshgrid([24736, 98624, 221664.0], [200704, 399360, 800768, 1599488.0], indexing="ij"))
        return params, tokens, np.repeat(np.arange(3), 4), 0.5, (885696.0, 2000896.0)
    if name == "iid":  # a 4 × 4 grid of independent runs, held out at 8× the largest fitted compute
        params, tokens = (v.ravel() for v in np.meshgrid([24736, 55000, 120000, 250000.0], [200704, 400000, 800000, 1600000.0], indexing="ij"))
        return params, tokens, np.arange(16), 0.0, (1e6, 3.2e6)
    optimum = compute_optimal(law["A"], law["B"], law["alpha"], law["beta"])  # isoflop: 4 budgets × 7 sizes 0.25 dex apart
    rows = [(n, c / (6 * n)) for c in (1e12, 3e12, 1e13, 3e13)
            for n in optimum["G"] * (c / 6) ** optimum["a"] * 10 ** np.arange(-0.75, 0.76, 0.25)]
    params, tokens = np.array(rows).T
    return params, tokens, np.arange(params.size), 0.0, (2 * params.max(), tokens.max())


def batched_fits(features, log_losses):
    """Per study: the best fit (grid, then polish, as fit._fit_lse) and its distinct best end points."""
    studies, starts = len(log_losses), fit._grid_starts(START_GRID)
    thetas, values = lbfgs.minimise(np.tile(starts, (studies, 1)), np.ones((studies * len(starts), log_losses.shape[1])), features,
                                    np.repeat(log_losses, len(starts), axis=0), iterations=fit.GRID_ITERATIONS, dtype="float32")
    thetas, values = thetas.reshape(studies, len(starts), -1), values.reshape(studies, len(starts))
    candidates = [fit._distinct_best(thetas[k], values[k], POLISH) for k in range(studies)]
    padded = np.stack([np.concatenate([c, np.repeat(c[:1], POLISH - len(c), axis=0)]) for c in candidates])
    thetas, values = lbfgs.minimise(padded.reshape(studies * POLISH, -1), np.ones((studies * POLISH, log_losses.shape[1])), features,
                                    np.repeat(log_losses, POLISH, axis=0), iterations=fit.POLISH_ITERATIONS)
    thetas, values = thetas.reshape(studies, POLISH, -1), values.reshape(studies, POLISH)
    return thetas[np.arange(studies), np.argmin(values, axis=1)], [fit._distinct_best(thetas[k], values[k], BOOTSTRAP_STARTS) for k in range(studies)]


def law_of(theta) -> dict:
    with np.errstate(over="ignore"):  # a runaway replicate's A = inf: its predictions are inf, not a crash
        E, A, B = (float(v) for v in np.exp(theta[:3]))
    return {"law": "chinchilla", "E": E, "A": A, "B": B, "alpha": float(theta[3]), "beta": float(theta[4])}


def approach3(name: str, studies: int, replicates: int, method: str, law: dict, seed: int) -> dict:
    params, tokens, groups, share, held = design(name, law)
    features, rng = np.log(np.stack([params, tokens])), np.random.default_rng(seed)
    shared = rng.normal(0, SIGMA * math.sqrt(share), (studies, groups.max() + 1))[:, groups]
    log_losses = np.log(chinchilla_loss(params, tokens, **law)) + rng.normal(0, SIGMA * math.sqrt(1 - share), (studies, params.size)) + shared
    best, end_points = batched_fits(features, log_losses)
    labels = [str(g) for g in groups] if share > 0 else None
    starts, targets, models = [], [], []
    for k in range(studies):
        drawn, model = noise.bootstrap_targets(method, best[k], features, log_losses[k], replicates, np.random.default_rng(seed + 1 + k), labels)
        first = np.concatenate([end_points[k], np.repeat(end_points[k][:1], BOOTSTRAP_STARTS - len(end_points[k]), axis=0)])
        starts.append(np.tile(first, (replicates, 1)))
        targets.append(np.repeat(drawn, BOOTSTRAP_STARTS, axis=0))
        models.append(model)
    thetas, values = lbfgs.minimise(np.concatenate(starts), np.ones((studies * replicates * BOOTSTRAP_STARTS, params.size)), features,
                                    np.concatenate(targets), iterations=fit.BOOTSTRAP_ITERATIONS)
    thetas = thetas.reshape(studies, replicates, BOOTSTRAP_STARTS, -1)
    thetas = thetas[np.arange(studies)[:, None], np.arange(replicates), np.argmin(values.reshape(studies, replicates, -1), axis=2)]
    truth_mean = float(chinchilla_loss(*held, **law))
    truth = {"alpha": law["alpha"], "beta": law["beta"], "a": law["beta"] / (law["alpha"] + law["beta"]), "held-out mean": truth_mean}
    covered = {key: [] for key in (*truth, "held-out run")}
    widths = {key: [] for key in covered}
    for k in range(studies):
        samples = [law_of(t) for t in thetas[k]]
        for key in ("alpha", "beta"):
            values = np.array([s[key] for s in samples])
            low, high = np.percentile(values, [2.5, 97.5])
            covered[key].append(low <= truth[key] <= high)
            widths[key].append(high - low)
        a = np.array([s["beta"] / (s["alpha"] + s["beta"]) for s in samples])
        low, high = np.percentile(a, [2.5, 97.5])
        covered["a"].append(low <= truth["a"] <= high)
        widths["a"].append(high - low)
        result = {**law_of(best[k]), "samples": samples, "noise": models[k].to_json()}
        mean, run = intervals_at(result, np.array([held[0]]), np.array([held[1]]), np.array([np.nan]))
        measured = truth_mean * math.exp(rng.normal(0, SIGMA))  # a new size: its own stable run and its own noise
        for key, band, target in (("held-out mean", mean[0], truth_mean), ("held-out run", run[0], measured)):
            covered[key].append(band[0] <= target <= band[1])
            widths[key].append((band[1] - band[0]) / truth_mean)
    return {"covered": covered, "widths": widths, "sigma_run": float(np.median([m.sigma_run for m in models])),
            "sigma_shared": float(np.median([m.sigma_shared for m in models]))}


def approach2(studies: int, replicates: int, method: str, law: dict, seed: int) -> dict:
    params, tokens, _, _, _ = design("isoflop", law)
    rng, truth = np.random.default_rng(seed), law["beta"] / (law["alpha"] + law["beta"])
    mean = chinchilla_loss(params, tokens, **law)
    covered, widths, dropped = [], [], 0
    for k in range(studies):
        result = fit_isoflop(params, tokens, mean * np.exp(rng.normal(0, SIGMA, params.size)), 6 * params * tokens,
                             bootstrap=replicates, seed=seed + 1 + k, bootstrap_method=method)
        dropped += result.get("bootstrap_dropped", 0)
        low, high = result["ci"]["a"] if "ci" in result else (np.nan, np.nan)
        covered.append(bool(low <= truth <= high))
        widths.append(high - low)
    return {"covered": {"a": covered}, "widths": {"a": widths}, "dropped": dropped / (studies * replicates)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("design", choices=("main", "iid", "isoflop"))
    parser.add_argument("--approach", type=int, default=3, choices=(2, 3), help="isoflop design: fit by Approach 2 or 3")
    parser.add_argument("--studies", type=int, default=60)
    parser.add_argument("--replicates", type=int, default=100)
    parser.add_argument("--method", default="noise", help="noise, wild or residuals (Approach 3); noise or points (Approach 2)")
    parser.add_argument("--true_E", type=float, default=DEMO_LAW["E"], help="the true law's E (the demo's fit: ~0, at its bound)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    law, started = {**DEMO_LAW, "E": args.true_E}, time.time()
    if args.approach == 2:
        found = approach2(args.studies, args.replicates, args.method, law, args.seed)
    else:
        found = approach3(args.design, args.studies, args.replicates, args.method, law, args.seed)
    print(f"{args.design} (approach {args.approach}), method {args.method}, {args.studies} studies × {args.replicates} replicates, "
          f"true E {args.true_E:.3g}: {time.time() - started:.0f} s")
    if "sigma_run" in found:
        print(f"  noise model: median σ_run {found['sigma_run']:.4f}, σ_shared {found['sigma_shared']:.4f} (truth σ {SIGMA})")
    if "dropped" in found:
        print(f"  replicates dropped: {found['dropped']:.3f}")
    for key, hits in found["covered"].items():
        share = float(np.mean(hits))
        print(f"  {key:14s} coverage {share:.3f} ± {math.sqrt(share * (1 - share) / len(hits)):.3f}   median width {np.nanmedian(found['widths'][key]):.4g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
