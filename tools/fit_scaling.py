"""Fit a scaling law to a sweep directory or a CSV of points; print one line, write JSON.

  python tools/fit_scaling.py runs/demo --law power --holdout largest --bootstrap 200 --out fit.json
  python tools/fit_scaling.py points.csv --law chinchilla --budget 1e21 --out fit.json
  python tools/fit_scaling.py runs/isoflop --law isoflop --out fit.json

The same command as `python -m bigmodel fit` (`bigmodel.scaling.commands`). Laws: power
(L = E + A·X^-α, X = non-embedding params or flops), chinchilla (Hoffmann et al. Approach 3,
4,500 L-BFGS starts, about 10 s on 2 CPU cores), isoflop (parabola vertices per budget).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from bigmodel.scaling.commands import fit_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(fit_main())
