"""Is B's final eval loss different from A's? B − A with a 95% interval, a p-value and the
minimal detectable difference at this many seeds.

  python tools/compare_runs.py experiments/branches_results/cosine_runs.csv:'L2-d96-tok1.6M-*' \
      experiments/branches_results/branches_runs.csv:'L2-d96-tok1.6M-*'   # 2 seeds a side: Welch
  python tools/compare_runs.py runs/l2 runs/l2s1                           # one run a side: paired bootstrap
  python tools/compare_runs.py 'runs/seeds/L2-*-lr3e-3-*' 'runs/seeds/L2-*-lr6e-3-*' --json

The same command as `python -m bigmodel compare` (`bigmodel.scaling.compare`; the group syntax
is in `bigmodel.scaling.run_groups`).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from bigmodel.scaling.compare import compare_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(compare_main())
