"""Does the fitted irreducible loss E find the truth? A compute-optimal study on `markov`, a
corpus whose entropy rate is known exactly (bigmodel/data/markov_chain.py).

The source is a first-order Markov chain over 32 bytes (`markov/order=1`): 32 contexts, each with
its own next-byte law, H = 1.594 bits/byte = 1.1052 nats/byte, the floor every model's loss
approaches as N and D grow. First order because a byte's law then depends on the byte itself,
which every model sees without attention: the loss falls smoothly with D. At the default order
2 these models first sit at the unigram plateau (~3.0 nats) and then learn the two-byte context
abruptly, between 0.4M and 0.8M bytes (measured): a phase change, not a power law in D. The design is the main job's (experiments/demo.py): three widths of a 2-layer
Transformer, each one warmup-stable run and WSD cooldown branches at 0.2M … 1.6M bytes, and
L(N, D) = E + A/N^α + B/D^β fitted with a residual bootstrap. fit.json then says where E lands
against H; the plots draw H as a line.

  python -m bigmodel sweep experiments/markov.py --workdir runs/markov   # ~10 min, 2-core CPU

Results: experiments/markov_results/ (runs.csv, fit.json, plots); docs/results.md.
"""

from bigmodel.scaling.sweep import BranchGrid, RunPlan, Study, shape_of

FITTED = [shape_of(2, d_model) for d_model in (32, 64, 96)]
TOKENS = [200_000, 400_000, 800_000, 1_600_000]  # bytes: 98 to 781 steps of 16 sequences × 128 bytes


def learning_rate(non_embedding_params: int) -> float:
    """The demo's rule (6e-3 at d_model 128, ∝ N^-1/4): the source is new, the models are not."""
    return float(f"{6e-3 * (non_embedding_params / 393_600) ** (-1 / 4):.2g}")


def rules(plan: RunPlan) -> dict:
    return {"optim.lr": learning_rate(plan.non_embedding_params), "optim.warmup_steps": 40,
            "eval.every_steps": 100_000, "checkpoint.every_steps": 100_000}


def get_study() -> Study:
    return Study(
        base_config="configs/lm.py:L2",
        overrides={"data.dataset": "markov/order=1", "train.batch_size": 16, "data.seq_len": 128, "eval.batches": 32,
                   "train.log_every": 20},
        grid=BranchGrid(FITTED, tokens=TOKENS, cooldown=0.2),
        rules=rules,
        analysis={"law": "chinchilla", "bootstrap": 200},
    )
