"""Fit a scaling law to a sweep directory or a CSV of points; print one line, write JSON.

  python tools/fit_scaling.py runs/demo --law power --holdout largest --bootstrap 200 --out fit.json
  python tools/fit_scaling.py points.csv --law chinchilla --budget 1e21 --out fit.json
  python tools/fit_scaling.py runs/isoflop --law isoflop --out fit.json

Laws: power (L = E + A·X^-α, X = params or flops), chinchilla (Hoffmann et al. Approach 3,
4,500 L-BFGS starts, about 10 s on 2 CPU cores), isoflop (parabola vertices per budget).
The JSON keys are those of `bigmodel.scaling.fit`; a sweep's params are non-embedding params.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="sweep directory (with runs.csv) or CSV with params,tokens,loss[,flops]")
    parser.add_argument("--law", required=True, choices=("power", "chinchilla", "isoflop"))
    parser.add_argument("--x", default="params", choices=("params", "non_embedding_params", "flops"), help="power law's variable")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="K", help="refit K resamples: 95%% intervals and standard errors")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling")
    parser.add_argument("--budget", type=float, default=None, metavar="C", help="chinchilla: N_opt, D_opt at this many FLOPs")
    parser.add_argument("--holdout", default=None, choices=("largest",), help="fit without the largest model, then predict it")
    parser.add_argument("--out", required=True, help="path of the JSON to write")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from bigmodel.scaling.fit import fit_input

    try:
        result = fit_input(args.input, args.law, x=args.x, bootstrap=args.bootstrap, seed=args.seed,
                           budget=args.budget, holdout=args.holdout)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(result["summary"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
