"""Coverage of `fit A --versus B`'s compute-multiplier intervals, and how their width falls with seeds.

    nice -n 10 python3 tools/bench_versus.py --studies 100 --bootstrap 200 --out runs/bench_versus

Designs:
- grid: two recipes on a 4 × 4 N × D grid at 2 seeds each, B's true loss at (N, D) equal to A's
  at (2N, 2D) (so A needs exactly 4× B's compute at every budget under C = 6ND), i.i.d. noise
  σ = 0.012 in log loss; budgets 1e12 and 1e13 FLOPs (inside and 2.5× past the runs' compute).
- recipes: the two-recipe study experiments/recipes.py (rotary vs learned positions, its committed
  registries), the truth its own joint fit, half of each run's noise variance shared by the
  branches of one stable run, σ from its seed replicates; budgets 1e12, 1e13, 1e14 FLOPs.
`--widths`: the grid design at 1, 2 and 4 seeds per point: the median width (in log) of the
multiplier interval at each, the scaling `versus_gate` assumes (∝ 1/√runs).
`--settle 50x`: does `to_settle` settle it? On the recipes design at `--settle_budget`, each study
is judged against the margin; where it is undecided, a fresh study with the seeds per point its
`to_settle` suggests is judged again: the share of those that decide (and decide right).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from bigmodel.scaling import calibrate_versus
from bigmodel.scaling.calibrate_design import load_design, synthetic_design
from bigmodel.scaling.laws import chinchilla_loss

REPO = Path(__file__).resolve().parent.parent
LAW = {"E": 1.0, "A": 6.0, "B": 27.0, "alpha": 0.25, "beta": 0.22}
SIZES, TOKENS, SEEDS = (1e5, 2e5, 4e5, 8e5), (1e6, 2e6, 4e6, 8e6), 2
GRID_BUDGETS, RECIPE_BUDGETS = (1e12, 1e13), (1e12, 1e13, 1e14)
SCALE = 2.0  # B at (N, D) = A at (2N, 2D)


def grid_laws() -> dict:
    """A's law and B's: the same law with A and B scaled by SCALE^-α and SCALE^-β."""
    b = {**LAW, "A": LAW["A"] * SCALE ** -LAW["alpha"], "B": LAW["B"] * SCALE ** -LAW["beta"]}
    return {"A": dict(LAW), "B": b}


def grid_csv(directory: Path, name: str, law: dict) -> Path:
    rows = ["params,tokens,loss,seed"] + [f"{n:g},{d:g},{float(chinchilla_loss(n, d, **law)):.6f},{seed}"
                                          for seed in range(SEEDS) for n in SIZES for d in TOKENS]
    path = directory / f"{name}.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def report_lines(name: str, report: dict, keys=("compute_multiplier",)) -> list[str]:
    lines = [f"\n## {name}: {report['studies']} studies, bootstrap {report['bootstrap']}, {report['cpu_s_per_study']:.1f} CPU s per study"]
    for row in report["coverage"]:
        if any(row["interval"].startswith(key) for key in keys) or "." in row["interval"].split()[0]:
            lines.append(f"{row['interval']:<34} {row['coverage']:.3f} ± {row['se']:.3f}  median width {row['median_width']:.4g}  truth {row['median_truth']:.4g}")
    return lines


def settle_lines(args, results: Path, out: Path | None) -> None:
    """The `--settle` check on the recipes design, printed (and written to OUT/settle.json)."""
    from bigmodel.scaling.versus_gate import parse_margin

    designs = {"A": load_design(results / "learned"), "B": load_design(results / "rope")}
    plan = calibrate_versus.prepare_versus(designs["A"], designs["B"], (args.settle_budget,), noise_model="group", shared_fraction=0.5,
                                           bootstrap=args.bootstrap)
    settle = calibrate_versus.SettlePlan(plan=plan, designs=designs, margin=parse_margin(args.settle))
    started = time.perf_counter()
    report = calibrate_versus.settle_report(settle, args.studies, processes=args.processes)
    print(f"\n## settle: margin {report['margin']}, {args.studies} studies, bootstrap {args.bootstrap}, {report['cpu_s_per_study']:.1f} CPU s per study")
    for row in report["budgets"]:
        print(f"at {row['budget']:.3g} (true multiplier {row['truth']:.4g}: {row['right_verdict']}): undecided in {row['undecided']} of "
              f"{row['studies']}; suggested seeds per point {row['suggested_seeds']}; of {row['tried']} resimulated at those seeds "
              f"{row['settled']} decided ({row['share_settled']:.2f} ± {row['se']:.2f}), {row['settled_right']} rightly")
    print(f"({time.perf_counter() - started:.0f} s wall)", flush=True)
    if out:
        (out / "settle.json").write_text(json.dumps(report, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=100)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--designs", default="grid,recipes")
    parser.add_argument("--widths", action="store_true", help="also the grid design's interval width at 1, 2, 4 seeds")
    parser.add_argument("--settle", default=None, metavar="MARGIN", help="also: does to_settle settle an undecided budget (recipes design)")
    parser.add_argument("--settle_budget", type=float, default=RECIPE_BUDGETS[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    laws = grid_laws()
    with tempfile.TemporaryDirectory() as temporary:
        designs = {side: load_design(grid_csv(Path(temporary), side, laws[side])) for side in ("A", "B")}
        plans = {}
        if "grid" in args.designs:
            plans["grid"] = calibrate_versus.prepare_versus(designs["A"], designs["B"], GRID_BUDGETS, laws=laws, noise_sd=0.012,
                                                            noise_model="iid", bootstrap=args.bootstrap)
        results = REPO / "experiments" / "recipes_results"
        if "recipes" in args.designs and (results / "learned" / "runs.csv").is_file():
            plans["recipes"] = calibrate_versus.prepare_versus(load_design(results / "learned"), load_design(results / "rope"), RECIPE_BUDGETS,
                                                               noise_model="group", shared_fraction=0.5, bootstrap=args.bootstrap)
        for name, plan in plans.items():
            started = time.perf_counter()
            report = calibrate_versus.calibrate_versus(plan, args.studies, processes=args.processes)
            print("\n".join(report_lines(name, report)) + f"\n({time.perf_counter() - started:.0f} s wall)", flush=True)
            if out:
                (out / f"{name}.json").write_text(json.dumps(report, indent=1))
        if args.settle:
            settle_lines(args, results, out)
        if args.widths:
            print("\n## grid: median width of log(compute multiplier) interval at 1e13 by seeds per point")
            base = np.ones(len(designs["A"].points), dtype=bool)
            for seeds in (1, 2, 4):
                changed = {side: synthetic_design(designs[side], base, seeds=seeds)[0] for side in ("A", "B")}
                plan = calibrate_versus.prepare_versus(changed["A"], changed["B"], (1e13,), laws=laws, noise_sd=0.012, noise_model="iid",
                                                       bootstrap=args.bootstrap)
                report = calibrate_versus.calibrate_versus(plan, args.studies, processes=args.processes)
                row = next(row for row in report["coverage"] if row["interval"] == "compute_multiplier at 1e+13")
                print(f"seeds {seeds}: coverage {row['coverage']:.3f} ± {row['se']:.3f}, median width {row['median_width']:.3g}×"
                      f" (truth {row['median_truth']:.3g}; log width ≈ {math.log1p(row['median_width'] / row['median_truth']):.3f})", flush=True)


if __name__ == "__main__":
    main()
