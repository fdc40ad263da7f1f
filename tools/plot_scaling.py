"""Draw the scaling plots of a sweep directory or a CSV of points.

  python tools/plot_scaling.py runs/demo --out runs/demo/plots
  python tools/plot_scaling.py points.csv --out plots --fit fit.json

Writes PNG (150 dpi) and SVG for each plot the data supports (loss_vs_params, loss_vs_compute,
isoflop, training_curves) and prints a note for each it skips. A few seconds for a small sweep
(most of it the bootstrap fit when the sweep has no fit.json).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from bigmodel.config import ConfigError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="sweep directory (with runs.csv) or CSV with params,tokens,loss[,flops]")
    parser.add_argument("--out", required=True, help="directory for the PNG and SVG files")
    parser.add_argument("--fit", default=None, help="fit.json to draw (default: the sweep's fit.json, else fit here)")
    args = parser.parse_args(argv)
    from bigmodel.scaling.plot import plot_all

    try:
        paths = plot_all(args.input, args.out, fit=args.fit, note=lambda text: print(f"note: {text}"))
    except (ConfigError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in paths:
        if path.suffix == ".png":
            print(f"wrote {path} (+ .svg)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
