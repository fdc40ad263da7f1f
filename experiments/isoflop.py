"""IsoFLOP profiles (Chinchilla Approach 2): at each compute budget C, train every size whose
D = C / flops_per_token(N) leaves it 1–1,000 tokens per parameter; per budget, the minimum of a
parabola of loss in log N is the compute-optimal N_opt(C), and a line through the minima gives
N_opt ∝ C^a.

  python -m bigmodel sweep experiments/isoflop.py --workdir runs/isoflop --dry-run   # the 14 runs
  python -m bigmodel sweep experiments/isoflop.py --workdir runs/isoflop             # dry run ≈ 34 min, 2-core CPU

experiments/isoflop_results/ holds the 14 runs' registry, both fits (fit.json: Approach 2, this
study's analysis; fit_chinchilla.json: Approach 3 on the same runs) and their plots; docs/results.md
compares the two.

`:branches` reaches the same 14 (N, C) points with cooldown branches (Hägele et al. 2024): per
size one warmup-stable run to 80% of its largest budget's steps, and from it a 20% linear
cooldown to each budget, so a size's points cost about its largest run (results in
experiments/isoflop_results/branches/):

  python -m bigmodel sweep experiments/isoflop.py:branches --workdir runs/isoflop-branches

FLOPs per token come from bigmodel.flops (6·N + 12·L·d·T, N with the LM head), never 6N, so each
run's FLOPs equal its budget up to the rounding of steps (the dry run's FLOPs column). Sizes and
the lr rule are the demo's (experiments/demo.py explains why widths at a fixed depth on a CPU).
"""

from bigmodel.scaling.sweep import BranchGrid, IsoFlopGrid, RunPlan, Study, shape_of

BUDGETS = (1e12, 3e12, 1e13)  # training FLOPs per run
# 2 layers, d_model 32 … 256 (25K … 1.6M non-embedding params), and below them one 16-wide model
# with a single 16-dim head: the first run (2026-11-23) found every budget's optimum at or below
# its smallest size but 3e12's, so Approach 2 had one bracketed budget of three.
SIZES = [{"n_layers": 2, "d_model": 16, "n_heads": 1, "d_ff": 64}] + [shape_of(2, d_model) for d_model in range(32, 257, 32)]
TOKENS_PER_PARAM = (1, 1000)  # up to 1,000: the small optima here train on ~100–800 tokens per parameter


def learning_rate(non_embedding_params: int) -> float:
    """The demo's rule: 6e-3 at d_model 128, ∝ N^-1/4."""
    return float(f"{6e-3 * (non_embedding_params / 393_600) ** (-1 / 4):.2g}")


def rules(plan: RunPlan) -> dict:
    return {
        "optim.lr": learning_rate(plan.non_embedding_params),
        "optim.warmup_steps": max(1, plan.steps // 10),
        "eval.every_steps": plan.steps,
        "checkpoint.every_steps": plan.steps,
    }


def get_study(kind: str = "runs") -> Study:
    """:runs (default), one independent cosine run per point, or :branches, cooldown branches."""
    grids = {"runs": IsoFlopGrid(BUDGETS, SIZES, tokens_per_param_range=TOKENS_PER_PARAM),
             "branches": BranchGrid(SIZES, budgets=BUDGETS, tokens_per_param_range=TOKENS_PER_PARAM, cooldown=0.2)}
    if kind not in grids:
        raise ValueError(f"unknown study {kind!r}: use experiments/isoflop.py (runs) or experiments/isoflop.py:branches")
    return Study(
        base_config="configs/lm.py:L2",
        overrides={"train.batch_size": 16, "data.seq_len": 128, "eval.batches": 16, "train.log_every": 20},
        grid=grids[kind],
        rules=rules,
        analysis={"law": "isoflop", "bootstrap": 100},
    )
