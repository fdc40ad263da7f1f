"""Learning-rate transfer across width: SP against muP (Yang et al. 2022, Tensor Programs V, Fig. 1).

The same sweep of 7 learning rates (factor 2 apart) at 4 widths of a 2-layer Transformer
(d_model 32, 64, 128, 256 at head_dim 32: 25K to 1.6M non-embedding parameters), once per
parametrization. Under muP (base width 64, where muP is SP exactly) the best learning rate
should stay put as the width grows; under SP it drifts down.

  python -m bigmodel sweep experiments/lr_transfer.py:sp --workdir runs/lr_transfer_sp --jobs 2
  python -m bigmodel sweep experiments/lr_transfer.py:mup --workdir runs/lr_transfer_mup --jobs 2
  python tools/plot_lr_transfer.py --sp runs/lr_transfer_sp --mup runs/lr_transfer_mup --out experiments/lr_transfer_results

Each run trains 150 steps of 8 × 128 bytes of kjv (154K bytes; warmup 15, cosine to 10%) and
is scored by its final eval loss on 8 validation batches. Time: `--dry-run` estimates 11 min per
parametrization on 2 cores; measured (2026-11-23, --jobs 2, the 2 cores shared with other jobs)
19 min for :sp and 46 min for :mup under heavier load.

Result (experiments/lr_transfer_results/): best lr at d_model 32/64/128/256 is 1e-2, 1e-2, 5e-3,
2.5e-3 under SP (2 grid steps, ∝ 1/width above 64) and 5e-3, 1e-2, 1e-2, 1e-2 under muP (1 step,
only below the base width).
"""

from bigmodel.scaling.sweep import SizeGrid, Study, shape_of

N_LAYERS = 2
WIDTHS = (32, 64, 128, 256)
BASE_WIDTH = 64  # muP equals SP here (model.mup_base_width)
LEARNING_RATES = tuple(1.25e-3 * 2**k for k in range(7))  # 1.25e-3 ... 8e-2
STEPS, BATCH_SIZE, SEQ_LEN = 150, 8, 128
PARAMETRIZATIONS = ("sp", "mup")


def get_study(parametrization: str = "mup") -> Study:
    """:sp or :mup (default), the same widths, learning rates, data and schedule."""
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(f"unknown parametrization {parametrization!r}: use experiments/lr_transfer.py:sp or :mup")
    return Study(
        base_config="configs/lm.py:L2",
        grid=SizeGrid([shape_of(N_LAYERS, width) for width in WIDTHS], tokens=STEPS * BATCH_SIZE * SEQ_LEN),
        learning_rates=LEARNING_RATES,
        overrides={
            "model.parametrization": parametrization, "model.mup_base_width": BASE_WIDTH,
            "train.batch_size": BATCH_SIZE, "data.seq_len": SEQ_LEN, "train.log_every": 25,
            "optim.warmup_steps": STEPS // 10, "optim.schedule": "cosine",
            "eval.batches": 8, "eval.every_steps": 100_000, "checkpoint.every_steps": 100_000,
        },
    )
