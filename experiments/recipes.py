"""Two recipes, one answer: rotary (RoFormer) vs learned absolute positions, as a compute multiplier.

The same 2-layer widths as the main job (d_model 32, 64, 96: 25K → 222K non-embedding
parameters), each as one warmup-stable run and WSD cooldown branches to 0.1M, 0.2M, 0.4M and
0.8M bytes (`BranchGrid`), two seeds each, once with rotary positions (`:rope`) and once with a
learned position table (`:learned`); everything else (lr rule, batch, warmup, data order per
seed) is the same. Both tables are sized to the 128-byte context, so the learned table adds
128·d_model embedding parameters and nothing to N or to the FLOPs per token (bigmodel.flops
counts no position table): the compute basis is the same for both recipes.

  python -m bigmodel sweep experiments/recipes.py:learned --workdir runs/recipes/learned
  python -m bigmodel sweep experiments/recipes.py:rope --workdir runs/recipes/rope
  python -m bigmodel fit runs/recipes/learned --versus runs/recipes/rope --law chinchilla --budget 1e12 \
      --budget 1e13 --budget 1e14 --bootstrap 200 --margin 1.1x --out experiments/recipes_results/fit.json

fits Chinchilla's L(N, D) to both recipes with one shared entropy floor E and reports the compute
the learned-positions recipe needs to match rotary's compute-optimal loss at each budget, divided
by the budget (> 1: rotary is better), with its bootstrap interval and a verdict against the
declared 1.1× margin (1e12 FLOPs is inside the runs' compute, 3e10–1.4e12; 1e13 and 1e14 are
extrapolations). experiments/recipes_results/ holds both registries (learned/runs.csv,
rope/runs.csv), fit.json and fit_versus.png; docs/scaling/versus.md the result. From the
committed registries: `fit experiments/recipes_results/learned/runs.csv:'*' --versus
experiments/recipes_results/rope/runs.csv:'*' ...` (the :'*' selection keeps each branch's group).
"""

from bigmodel.scaling.sweep import BranchGrid, RunPlan, Study, shape_of

N_LAYERS = 2
SIZES = [shape_of(N_LAYERS, d_model) for d_model in (32, 64, 96)]
TOKENS = [100_000, 200_000, 400_000, 800_000]  # bytes: 49 to 391 steps of 16 sequences × 128 bytes
SEEDS = (0, 1)
RECIPES = {"rope": "rope", "learned": "learned"}


def learning_rate(non_embedding_params: int) -> float:
    """The main job's rule: 6e-3 at d_model 128, ∝ N^-1/4 (experiments/demo.py)."""
    return float(f"{6e-3 * (non_embedding_params / 393_600) ** (-1 / 4):.2g}")


def rules(plan: RunPlan) -> dict:
    return {"optim.lr": learning_rate(plan.non_embedding_params), "optim.warmup_steps": 20,
            "eval.every_steps": 100_000, "checkpoint.every_steps": 100_000}


def get_study(recipe: str = "rope") -> Study:
    """:rope (default) or :learned: the one setting the two recipes differ in."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}: use experiments/recipes.py:rope or experiments/recipes.py:learned")
    return Study(
        base_config="configs/lm.py:L2",
        overrides={"train.batch_size": 16, "data.seq_len": 128, "model.max_seq_len": 128,
                   "model.positions": RECIPES[recipe], "eval.batches": 16, "train.log_every": 20},
        grid=BranchGrid(SIZES, tokens=TOKENS, cooldown=0.2),
        rules=rules,
        seeds=SEEDS,
        analysis={"law": "chinchilla", "bootstrap": 200, "budget": 1e15},
    )
