"""Coverage of fit's 95% intervals on the project's designs, by the calibration harness (issue 23's bar: 0.90–0.99 at K ≥ 200).

    nice -n 10 python3 tools/bench_calibration.py --studies 200 --bootstrap 200 --methods noise
    nice -n 10 python3 tools/bench_calibration.py --designs main --methods noise,residuals,points

Designs (`designs`):
- main: the main job's branch grid (experiments/demo_results: 3 sizes × 4 token counts, each
  size's 4 branches cooled down from one stable run), the 4.4×-compute run held out, allocation at
  1e15 FLOPs; noise σ = 0.012 (the expert review's: about one seed's spread), half of its
  variance shared by the branches of one stable run.
- isoflop: the isoFLOP study (experiments/isoflop_results, 14 runs over 3 budgets) fitted by
  Approach 2 (isoflop: a, b) and Approach 3 (chinchilla at 1e13 FLOPs); i.i.d. noise, σ from the
  true law's residuals.
- iid grid: a 4 × 4 N × D grid with i.i.d. noise σ = 0.012 and a held-out run at 8× the largest
  fitted compute, under a law with an interior E (`IID_LAW`).
- stress designs, where the truth has E at its bound 0 (the demo's fit): the same i.i.d. grid, and
  a synthetic isoFLOP grid (4 budgets × 7 sizes 0.25 decades apart about each true optimum, a run
  at 2× the largest N held out), fitted by Approach 3; and that grid without the held-out run
  fitted by Approach 2, whose sizes bracket every optimum evenly (its vertices nearly unbiased).
Every design's truth is its own Chinchilla fit unless a law is given. A method the fit refuses
for a law (residuals for isoflop) is skipped. Prints each coverage table, the wall time, the CPU
time per study and what K = 200 would take on 2 idle cores from it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from bigmodel.scaling import calibrate
from bigmodel.scaling.calibrate_design import load_design
from bigmodel.scaling.laws import chinchilla_loss, compute_optimal

REPO = Path(__file__).resolve().parent.parent
IID_LAW = {"E": 1.0, "A": 6.0, "B": 27.0, "alpha": 0.25, "beta": 0.22}
IID_SIZES, IID_TOKENS = (1e5, 2e5, 4e5, 8e5), (1e6, 2e6, 4e6, 8e6)
IID_HELD_OUT = (3.2e6, 1.6e7)  # 8× the compute of the largest fitted run (8e5 × 8e6)
DEMO_LAW = {"E": 1.2145e-15, "A": 5.4124, "B": 27.0194, "alpha": 0.24438, "beta": 0.22266}  # the main job's fit: E at its bound
ISOFLOP_BUDGETS = (1e12, 3e12, 1e13, 3e13)


def points_csv(path: Path, runs: list[tuple[float, float]], law: dict) -> Path:
    """Runs as a points CSV (each loss the law's; a simulation replaces it; C = 6ND)."""
    lines = ["params,tokens,loss,flops"] + [f"{n:g},{d:g},{float(chinchilla_loss(n, d, **law)):.6f},{6 * n * d:g}" for n, d in runs]
    path.write_text("\n".join(lines) + "\n")
    return path


def iid_grid() -> list[tuple[float, float]]:
    """The 4 × 4 grid, then the held-out run (the largest compute, so `--holdout largest` holds it out)."""
    return [(n, d) for n in IID_SIZES for d in IID_TOKENS] + [IID_HELD_OUT]


def isoflop_grid(law: dict, held_out: bool = True) -> list[tuple[float, float]]:
    """7 sizes 0.25 decades apart about the law's optimum at each budget (C = 6ND), then (with
    `held_out`) a run at 2× the largest N on the largest D: the held-out extrapolation."""
    optimum = compute_optimal(law["A"], law["B"], law["alpha"], law["beta"])
    runs = [(float(n), c / (6 * n)) for c in ISOFLOP_BUDGETS
            for n in optimum["G"] * (c / 6) ** optimum["a"] * 10 ** np.arange(-0.75, 0.76, 0.25)]
    largest_n = max(n for n, _ in runs)
    return runs + ([(2 * largest_n, max(d for _, d in runs))] if held_out else [])


def designs(directory: Path) -> list[dict]:
    """name, input, settings (without the method) and a given law, per benchmarked design."""
    held_out_iid = {"law": "chinchilla", "holdout": "largest", "noise_model": "iid", "noise_sd": 0.012}
    main = {"law": "chinchilla", "holdout": "largest", "budget": 1e15, "noise_model": "group", "shared_fraction": 0.5, "noise_sd": 0.012}
    return [
        {"name": "main (branch grid, half the noise shared per size)", "input": REPO / "experiments" / "demo_results", "settings": main},
        {"name": "isoflop, Approach 2", "input": REPO / "experiments" / "isoflop_results", "settings": {"law": "isoflop", "noise_model": "iid"}},
        {"name": "isoflop, Approach 3", "input": REPO / "experiments" / "isoflop_results",
         "settings": {"law": "chinchilla", "budget": 1e13, "noise_model": "iid"}},
        {"name": "iid 4 × 4 grid, held out at 8× compute", "input": points_csv(directory / "iid.csv", iid_grid(), IID_LAW),
         "law": IID_LAW, "settings": held_out_iid},
        {"name": "stress: iid 4 × 4 grid, true E at its bound", "input": points_csv(directory / "iid_e0.csv", iid_grid(), DEMO_LAW),
         "law": DEMO_LAW, "settings": held_out_iid},
        {"name": "stress: isoflop 4 × 7 grid, true E at its bound, Approach 3",
         "input": points_csv(directory / "isoflop_e0.csv", isoflop_grid(DEMO_LAW), DEMO_LAW), "law": DEMO_LAW, "settings": held_out_iid},
        {"name": "stress: isoflop 4 × 7 grid, true E at its bound, Approach 2",
         "input": points_csv(directory / "isoflop_e0_a2.csv", isoflop_grid(DEMO_LAW, held_out=False), DEMO_LAW), "law": DEMO_LAW,
         "settings": {"law": "isoflop", "noise_model": "iid", "noise_sd": 0.012}},
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--methods", default="noise", help="bootstrap methods, comma-separated (default: fit's default, noise)")
    parser.add_argument("--designs", default=None, help="comma-separated start of design names (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="directory for one JSON report per design and method")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        for design in designs(Path(temporary)):
            if args.designs and not any(design["name"].startswith(prefix) for prefix in args.designs.split(",")):
                continue
            for method in args.methods.split(","):
                settings = calibrate.Settings(**design["settings"], bootstrap=args.bootstrap, bootstrap_method=method)
                try:
                    calibrate.check_settings(settings, args.studies)
                except ValueError as error:
                    print(f"\n## {design['name']}, {method}: skipped ({error})")
                    continue
                started = time.perf_counter()
                report = calibrate.calibrate(load_design(design["input"]), settings, args.studies, seed=args.seed, law=design.get("law"))
                wall = time.perf_counter() - started
                noise = report["noise"]
                print(f"\n## {design['name']}, bootstrap_method={method}: K={args.studies}, R={args.bootstrap}, σ={noise['sd']:.4g} "
                      f"({noise['source']}), noise model {noise['model']}, shared fraction {noise['shared_fraction']}")
                print(calibrate.format_table(report))
                per_study = report["cpu_s_per_study"]
                print(f"wall {wall:.0f} s; {per_study:.2f} CPU s per study → K = 200 on 2 idle cores ≈ {200 * per_study / 2 / 60:.1f} min")
                if args.out:
                    Path(args.out).mkdir(parents=True, exist_ok=True)
                    slug = "-".join(design["name"].replace(",", "").replace("×", "x").split()[:4]) + "-" + design["settings"]["law"] + "-" + method
                    (Path(args.out) / f"{slug}.json").write_text(json.dumps({**report, "wall_s": wall}, indent=1))


if __name__ == "__main__":
    main()
