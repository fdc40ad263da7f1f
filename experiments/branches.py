"""Cooldown branches against full cosine runs (Hägele et al. 2024) on the King James Bible.

One 2-layer, 96-wide model (Chinchilla-style accounting aside, the demo's middle size) trained
to 0.4M, 0.8M and 1.6M bytes two ways, two seeds each:

  python -m bigmodel sweep experiments/branches.py --workdir runs/branches          # one stable run + 3 WSD branches per seed
  python -m bigmodel sweep experiments/branches.py:cosine --workdir runs/cosine     # 3 independent cosine runs per seed

The branches reuse one warmup-stable run per seed (a branch of T steps starts from its step
T − 0.2·T and cools down linearly), so they train 1.17× the longest run's steps instead of the
1.75× that three separate runs cost. The paper's claim, checked here: each branch's final eval
loss is within seed noise of the cosine run of the same length.
"""

from bigmodel.scaling.sweep import BranchGrid, RunPlan, SizeGrid, Study, shape_of

SIZE = shape_of(2, 96)
TOKENS = [400_000, 800_000, 1_600_000]  # 195, 390 and 781 steps of 16 × 128 bytes
WARMUP_STEPS = 40  # one warmup for all: a branch must share its parent's, and the cosine runs use the same
LEARNING_RATE = 7.7e-3  # the demo's rule at this size (6e-3 · (N / 393,600)^-1/4)


def rules(plan: RunPlan) -> dict:
    return {"optim.lr": LEARNING_RATE, "optim.warmup_steps": WARMUP_STEPS, "eval.every_steps": 100_000,
            "checkpoint.every_steps": 100_000}


OVERRIDES = {"train.batch_size": 16, "data.seq_len": 128, "eval.batches": 16, "train.log_every": 20}


def get_study(kind: str = "branches") -> Study:
    """:branches (default) or :cosine, the same model, tokens, seeds, lr and warmup."""
    grids = {"branches": BranchGrid([SIZE], tokens=TOKENS, cooldown=0.2), "cosine": SizeGrid([SIZE], tokens=TOKENS)}
    if kind not in grids:
        raise ValueError(f"unknown study {kind!r}: use experiments/branches.py (branches) or experiments/branches.py:cosine")
    return Study(base_config="configs/lm.py:L2", grid=grids[kind], rules=rules, seeds=(0, 1), overrides=OVERRIDES)
