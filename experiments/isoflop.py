"""IsoFLOP profiles (Chinchilla Approach 2): at each compute budget C, train every size whose
D = C / flops_per_token(N) leaves it 5–400 tokens per parameter; the loss minimum over N at each
budget traces the compute-optimal N_opt(C).

  python -m bigmodel sweep experiments/isoflop.py --workdir runs/isoflop --dry-run   # the runs
  python -m bigmodel sweep experiments/isoflop.py --workdir runs/isoflop             # ≈ TBD, 2-core CPU

FLOPs per token come from bigmodel.flops (6·N + 12·L·d·T, N with the LM head), never 6N, so a
run's FLOPs equal its budget up to the rounding of steps (shown by the dry run).
"""

from bigmodel.scaling.sweep import IsoFlopGrid, RunPlan, Study, half_step_sizes

BUDGETS = (1e12, 3e12, 1e13)  # FLOPs per run
SIZES = half_step_sizes(1e4, 1.6e6)  # 9 sizes, 2–4× apart: L1 (12K) … L5 (1.5M)


def learning_rate(non_embedding_params: int) -> float:
    """The demo's rule: 3e-3 at L4, ∝ N^-1/3, at most 1e-2."""
    return float(f"{min(1e-2, 3e-3 * (non_embedding_params / 787_584) ** (-1 / 3)):.2g}")


def rules(plan: RunPlan) -> dict:
    return {
        "optim.lr": learning_rate(plan.non_embedding_params),
        "optim.warmup_steps": max(1, plan.steps // 10),
        "eval.every_steps": plan.steps,
        "checkpoint.every_steps": plan.steps,
    }


def get_study() -> Study:
    return Study(
        base_config="configs/lm.py:L4",
        overrides={"train.batch_size": 16, "data.seq_len": 128, "eval.batches": 8, "train.log_every": 20},
        grid=IsoFlopGrid(BUDGETS, SIZES, tokens_per_param_range=(1, 300)),
        rules=rules,
        analysis={"law": "isoflop", "x": "params", "bootstrap": 100},
    )
