"""The main job: loss against model size on the King James Bible, and the power law it follows.

Six sizes of one family (L1 … L6: 12K → 2.7M non-embedding parameters, 216×) each train on the
same 1.6M bytes (Kaplan et al. 2020: L(N) at fixed data), then a power law
L(N) = E + A·N^-α is fitted to the five smallest and checked against the largest:

  python -m bigmodel sweep experiments/demo.py --workdir runs/demo            # ≈ TBD min, 2-core CPU
  python -m bigmodel sweep experiments/demo.py --workdir runs/demo --dry-run  # the table of runs

Writes runs/demo/runs.csv (one row per run), runs/demo/fit.json (the law, with the held-out
prediction against the measurement) and runs/demo/plots/. Rerunning skips finished runs.
"""

from bigmodel.scaling.sweep import RunPlan, SizeGrid, Study, half_step_sizes

SIZES = half_step_sizes(1e4, 8e5)  # 7 sizes: L1 (12K) … L4 (788K), 64×
TOKENS = 1_600_000  # bytes of text per run: 781 steps of 16 × 128


def learning_rate(non_embedding_params: int) -> float:
    """Smaller models take larger steps: 3e-3 at L4 (the base config's tuned value), ∝ N^-1/3,
    capped where the smallest models stop improving."""
    return float(f"{min(1e-2, 3e-3 * (non_embedding_params / 787_584) ** (-1 / 3)):.2g}")


def rules(plan: RunPlan) -> dict:
    """Per-size lr; warm-up a tenth of the run; evaluate and checkpoint only at the end."""
    return {
        "optim.lr": learning_rate(plan.non_embedding_params),
        "optim.warmup_steps": max(1, plan.steps // 10),
        "eval.every_steps": plan.steps,
        "checkpoint.every_steps": plan.steps,
    }


def get_study() -> Study:
    return Study(
        base_config="configs/lm.py:L4",
        overrides={"train.batch_size": 16, "data.seq_len": 128, "eval.batches": 16, "train.log_every": 20},
        grid=SizeGrid(SIZES, tokens=TOKENS),
        rules=rules,
        analysis={"law": "power", "x": "non_embedding_params", "holdout": "largest", "bootstrap": 200},
    )
