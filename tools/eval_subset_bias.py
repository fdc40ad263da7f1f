"""How far a run's `eval.batches` subset of the validation split is from the whole split.

Every run evaluates on its first `eval.batches` fixed validation batches (the main job: 16 of the
kjv split's 95 at 16 × 128 bytes). This restores each run's newest checkpoint, evaluates it on
that subset and on every whole batch of the split (the windows left over fill less than a batch),
and prints one JSON line per run: both losses, their difference (subset − whole, nats per token)
and the seconds each evaluation took. docs/scaling/uncertainty.md has the numbers.

    python tools/eval_subset_bias.py RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def subset_and_whole(workdir: str) -> dict:
    from bigmodel.data import load_dataset
    from bigmodel.restore import open_run, restore_params
    from bigmodel.train import VALIDATION_SEED, make_eval_step, validation_loss

    config, manager = open_run(Path(workdir))
    setup, params, step = restore_params(config, manager)
    validation = load_dataset(config.data, "validation", seed=VALIDATION_SEED)
    eval_step = make_eval_step(setup)
    batch_size = config.train.batch_size // config.train.grad_accum
    whole = validation.num_windows // batch_size
    result = {"run": workdir, "step": step, "subset_batches": config.eval.batches, "whole_batches": whole}
    validation_loss(setup, eval_step, params, validation, 1)  # compile once, outside the timings
    for name, batches in (("subset", config.eval.batches), ("whole", whole)):
        start = time.perf_counter()
        result[f"{name}_loss"] = validation_loss(setup, eval_step, params, validation, batches)["eval_loss"]
        result[f"{name}_seconds"] = round(time.perf_counter() - start, 2)
    result["subset_minus_whole"] = result["subset_loss"] - result["whole_loss"]
    return result


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    for workdir in argv:
        print(json.dumps(subset_and_whole(workdir)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
