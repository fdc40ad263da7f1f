"""Fine-tuning: a pretrained run's Transformer as the backbone of a text classifier.

    python -m bigmodel finetune --from RUN --task kjv_books --workdir OUT [--scratch] [--config.key=value ...]

| module | one concern |
|---|---|
| `tasks.py` | labelled texts and their train/validation/test splits (kjv_books, tfds:<name>) |
| `batches.py` | texts → padded token rows; the batch at step s as a pure function of (seed, s) |
| `classifier.py` | backbone + pooling (last/mean) + dropout + head; the optimizer with a frozen backbone |
| `loop.py` | state, jitted steps, validation, early stopping, checkpoints |
| `classification_metrics.py` | accuracy, macro/micro P/R/F1, the per-class table, the confusion matrix (JSON + figure) |
| `settings.py` | configs/finetune.py + overrides + flags, checked once |
| `command.py` | the CLI command: checks, the --from run (via `bigmodel.restore`), run, test outputs |
"""
