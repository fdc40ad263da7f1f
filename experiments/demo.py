"""The main job: a compute-optimal study on the King James Bible, L(N, D) from cooldown branches.

Three widths of a 2-layer Transformer (d_model 32, 64, 96: 25K → 222K non-embedding
parameters) each train one warmup-stable run and four WSD cooldown branches off it (Hägele et
al. 2024; `BranchGrid`), which give each size its loss at 0.2M, 0.4M, 0.8M and 1.6M bytes for
about the cost of its longest run. Chinchilla's Approach 3, L(N, D) = E + A/N^α + B/D^β, is
fitted to those 12 points (the default noise bootstrap: the grid is a design, not a sample, and
a size's four branches share one stable run's noise; docs/scaling/uncertainty.md) and checked
against a held-out run with 4.4× the compute of the largest fitted one (its prediction interval,
and three baselines it must beat):
886K parameters (4× the largest fitted) on 2M bytes, itself a stable run plus one branch:

  python -m bigmodel sweep experiments/demo.py --workdir runs/demo            # about 10 min, 2 CPU cores
  python -m bigmodel sweep experiments/demo.py --workdir runs/demo --dry-run  # the table of runs

Writes runs/demo/runs.csv (one row per run; stable runs are marked and are not fit points),
runs/demo/fit.json (the law with intervals, a and b, N_opt, D_opt and D/N at 1e15 FLOPs, the
held-out prediction against the measurement and the naive guess's error) and runs/demo/plots/.
Rerunning skips finished runs. docs/results.md has this study's results.

Learning rate: 6e-3 at d_model 128, ∝ N^-1/4, the rule tuned for the earlier fixed-D demo (at
781 steps; see git history); warmup 40 steps for all (a branch shares its parent's).
"""

from bigmodel.scaling.sweep import BranchGrid, RunPlan, Study, shape_of

N_LAYERS = 2
FITTED = [shape_of(N_LAYERS, d_model) for d_model in (32, 64, 96)]  # head_dim 32, d_ff 4·d
TOKENS = [200_000, 400_000, 800_000, 1_600_000]  # bytes: 98 to 781 steps of 16 sequences × 128 bytes
HELD_OUT = shape_of(N_LAYERS, 192)
HELD_OUT_TOKENS = 2_000_000  # with 4× the parameters: 4.4× the largest fitted run's FLOPs
BUDGET = 1e15  # FLOPs (the runs' own per token) at which fit.json reports the compute-optimal N and D
# The whole kjv validation split (1,578 windows of 129 bytes: 98 batches of 16), evaluated once at
# each run's end: its first 16 batches scored 0.007-0.009 nats lower than the whole split, the
# size of the held-out prediction error; 98 forward batches cost ~3% of a run's training
# (tools/eval_subset_bias.py; docs/scaling/uncertainty.md, "The evaluation subset").
EVAL_BATCHES = 98


def learning_rate(non_embedding_params: int) -> float:
    return float(f"{6e-3 * (non_embedding_params / 393_600) ** (-1 / 4):.2g}")


def rules(plan: RunPlan) -> dict:
    """Per-size lr; one warmup for every stable run and branch; evaluate and checkpoint at the end."""
    return {"optim.lr": learning_rate(plan.non_embedding_params), "optim.warmup_steps": 40,
            "eval.every_steps": 100_000, "checkpoint.every_steps": 100_000}


def get_study() -> Study:
    return Study(
        base_config="configs/lm.py:L2",
        overrides={"train.batch_size": 16, "data.seq_len": 128, "eval.batches": EVAL_BATCHES, "train.log_every": 20},
        grid=[BranchGrid(FITTED, tokens=TOKENS, cooldown=0.2), BranchGrid([HELD_OUT], tokens=[HELD_OUT_TOKENS], cooldown=0.2)],
        rules=rules,
        analysis={"law": "chinchilla", "holdout": "largest", "bootstrap": 200, "budget": BUDGET},
    )
