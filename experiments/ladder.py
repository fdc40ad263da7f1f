"""A far forecast, checked: fit L(N, D) on tiny runs, then train the run the fit recommends at 35×
the largest fitted compute and score the forecast against its prediction interval.

Three sizes (1-layer d_model 32 and 64, and the 2-layer preset L2: 12K → 98K non-embedding
parameters) × three token counts (64K, 128K, 256K bytes: 125 to 500 steps of 8 sequences × 64
bytes) × two seeds, each a plain run with its own cosine schedule (warmup a tenth of its steps).
Chinchilla's Approach 3 with the noise bootstrap (σ from the seed pairs) is fitted to those 18
points; then the ladder's one rung, at 35× the largest fitted run's FLOPs, trains the recommended
shape of the preset family (`bigmodel recommend`) on the tokens that spend it, with the same rules,
and fit.json's `ladder` holds the forecast, the measurement, the baselines and the verdict:

  python -m bigmodel sweep experiments/ladder.py --workdir runs/ladder --dry-run  # the runs, the rung, est. 6.7 min
  nice -n 10 python -m bigmodel sweep experiments/ladder.py --workdir runs/ladder  # 33 min measured on 2 shared CPU cores

experiments/ladder_results/ has the registry, fit.json and two figures of the run that
docs/scaling/ladder.md reports (2026-12-07: the law recommended L1 on 48.9M bytes and forecast
1.095 [1.022, 1.196]; the run measured 1.453, outside the interval; the compute frontier's power
law came within 6.8%).
"""

from bigmodel.scaling.sweep import RunPlan, SizeGrid, Study, shape_of

FITTED = ["L1", shape_of(1, 64), "L2"]  # 12K, 49K, 98K non-embedding parameters
TOKENS = [65_536, 131_072, 262_144]  # bytes: 128, 256 and 512 steps of 8 × 64
LARGEST_FITTED_FLOPS = 2.07e11  # L2 on 262,144 tokens (`sweep --dry-run` prints it)
RUNG = 35 * LARGEST_FITTED_FLOPS


def learning_rate(non_embedding_params: int) -> float:
    """3e-3 at 100K non-embedding parameters, ∝ N^-1/4 (the demo's rule's exponent)."""
    return float(f"{3e-3 * (non_embedding_params / 100_000) ** (-1 / 4):.2g}")


def rules(plan: RunPlan) -> dict:
    """Per-size lr; warmup a tenth of each run; evaluate and checkpoint at the end only."""
    return {"optim.lr": learning_rate(plan.non_embedding_params), "optim.warmup_steps": max(10, plan.steps // 10),
            "eval.every_steps": 1_000_000, "checkpoint.every_steps": 1_000_000}


def get_study() -> Study:
    return Study(
        base_config="configs/lm.py:L1",
        overrides={"train.batch_size": 8, "data.seq_len": 64, "eval.batches": 32, "train.log_every": 50},
        grid=SizeGrid(FITTED, tokens=TOKENS),
        seeds=(0, 1),
        rules=rules,
        analysis={"law": "chinchilla", "bootstrap": 200},
        ladder=[RUNG],
    )
