"""Draw the scaling plots of a sweep directory or a CSV of points.

  python tools/plot_scaling.py runs/demo --out runs/demo/plots
  python tools/plot_scaling.py points.csv --out plots --fit fit.json

The same command as `python -m bigmodel plot` (`bigmodel.scaling.commands`). Writes PNG
(150 dpi) and SVG for each plot the data supports (loss_vs_params, loss_vs_compute, isoflop,
training_curves), draws the given fit as that law, and prints a note for each plot it skips.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from bigmodel.scaling.commands import plot_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(plot_main())
