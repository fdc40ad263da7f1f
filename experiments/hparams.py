"""Hyperparameter scaling laws on kjv: the best peak learning rate and batch size at three compute
budgets, and power laws η_opt(C), B_opt(C) through them (DeepSeek LLM 2024, §3.1).

At each budget C (4e10, 1.26e11, 4e11 FLOPs: 10× in all) one model trains at every learning rate ×
batch size of a 5 × 4 grid, both 2× apart; a run's steps follow from its batch size, since
tokens = C / flops_per_token is fixed. Per budget, the optimum is the vertex of a quadratic in
(log η, log B) through the budget's best runs; the laws are lines through the vertices in log
space, with 95% bootstrap intervals (runs resampled within each budget):

  python -m bigmodel sweep experiments/hparams.py --workdir runs/hparams --dry-run    # the 60 runs (14.7 min estimated)
  python -m bigmodel sweep experiments/hparams.py --workdir runs/hparams --jobs 2     # then fit.json and plots/

Measured on 2026-11-23 (experiments/hparams_results/): about 65 min of wall time with --jobs 2,
the 2 cores shared with other work (load 9–14; 46 s of start-up and compile per run on average
against the estimate's 10 s).

Model: 2 layers, d_model 32 (25K non-embedding parameters) at every budget. It is the size the
demo's own runs put on the compute frontier from 6e10 to 1.4e12 FLOPs (experiments/demo_results:
at equal compute d32 beats d64 and d96), and the smallest of the family, nearest the demo fit's
N_opt (1.6K–8.7K at these budgets, below any shape here). One size means C grows through D only:
the laws found are η_opt and B_opt against training length at fixed N, a narrower question than
DeepSeek's, whose model grows with C.

Grid: small batches win at these budgets, where a run has only 130–10,000 steps. A pilot at lr 1e-2
found batch 4 (512 tokens) 0.1 nats better than 8 at 5e10 and 5e11 FLOPs; a first grid of 2–16
sequences had, at 4e10, best losses 2.037, 2.062, 2.191, 2.371 for batch 2, 4, 8, 16 (over the
lrs): the optimum at its smallest batch, not bracketed. So the batch sizes run from 1 sequence
(128 tokens) to 8. The lrs bracket the demo's rule (1.2e-2 for this size). Warmup is 10% of each run's steps (the
rule reads the plan's steps, which depend on its batch size), cosine decay to 10%; every run is
evaluated once at its end on the same 256 validation sequences (eval.batches = 256 / batch size).
Results, their reading and what a grid this small can resolve: docs/results.md.
"""

from bigmodel.scaling.sweep import IsoFlopGrid, RunPlan, Study, shape_of

BUDGETS = (4e10, 1.26e11, 4e11)  # training FLOPs per run, 10^0.5 apart
SIZE = shape_of(2, 32)
LEARNING_RATES = (2.5e-3, 5e-3, 1e-2, 2e-2, 4e-2)
BATCH_SIZES = (1, 2, 4, 8)  # sequences of 128 bytes: 128 to 1,024 tokens per step
EVAL_SEQUENCES = 256  # the same validation sequences for every batch size


def rules(plan: RunPlan) -> dict:
    return {
        "optim.warmup_steps": max(1, plan.steps // 10),
        "eval.batches": EVAL_SEQUENCES // plan.batch_size,
        "eval.every_steps": plan.steps,
        "checkpoint.every_steps": plan.steps,
    }


def get_study() -> Study:
    return Study(
        base_config="configs/lm.py:L2",
        overrides={"data.seq_len": 128, "train.log_every": 50},
        grid=IsoFlopGrid(BUDGETS, [SIZE], tokens_per_param_range=(1, 1000)),
        rules=rules,
        learning_rates=LEARNING_RATES,
        batch_sizes=BATCH_SIZES,
        analysis={"law": "hyperparams", "bootstrap": 1000},
    )
