"""`synthetic`: uniformly random tokens, for benchmarks that must not wait on data.

Row `r` of global batch `s` is drawn from a generator seeded by (seed, split, s, r): a pure
function of (seed, step) like the real pipeline, the same rows however many processes share the
batch, and nothing to download, tokenize or cache. Any `vocab_size` works (the tokenizer setting
is unused). Both splits exist, so evaluation runs; with no text behind the tokens there are no
bytes, so `bytes_per_token` is a nominal 1 and eval_bpb is bits per token. Uniform tokens cannot
be predicted: the loss should sit at ln(vocab_size) nats.
"""

from __future__ import annotations

import numpy as np

SPLIT_IDS = {"train": 0, "validation": 1}
NOMINAL_BYTES_PER_TOKEN = 1.0


class SyntheticDataset:
    """The `LMDataset` interface (`batch`, `bytes_per_token`) over random tokens."""

    def __init__(self, *, seq_len: int, seed: int, vocab_size: int, split: str):
        if split not in SPLIT_IDS:
            raise ValueError(f"synthetic has splits {', '.join(SPLIT_IDS)}, not {split!r}")
        self.seq_len = seq_len
        self.seed = seed
        self.vocab_size = vocab_size
        self.split = split
        self.tokenizer = None  # drawn, not tokenized
        self.bytes_per_token = NOMINAL_BYTES_PER_TOKEN

    def row(self, step: int, row: int) -> np.ndarray:
        """Row `row` of global batch `step`: int32 [seq_len + 1]."""
        generator = np.random.default_rng([self.seed, SPLIT_IDS[self.split], step, row])
        return generator.integers(0, self.vocab_size, self.seq_len + 1, dtype=np.int32)

    def batch(self, step: int, batch_size: int, process_index: int = 0, process_count: int = 1) -> np.ndarray:
        """int32 [batch_size // process_count, seq_len + 1]: this process's rows of global batch `step`."""
        if step < 0 or batch_size < 1 or not 0 <= process_index < process_count or batch_size % process_count:
            raise ValueError(f"need step >= 0, batch_size >= 1 divisible by process_count and 0 <= process_index < process_count, "
                             f"got {step}, {batch_size}, {process_index}, {process_count}")
        rows = batch_size // process_count
        first = process_index * rows
        return np.stack([self.row(step, row) for row in range(first, first + rows)])


def synthetic_dataset(data_config, split: str, seed: int) -> SyntheticDataset:
    return SyntheticDataset(seq_len=data_config.seq_len, seed=seed, vocab_size=data_config.vocab_size, split=split)
