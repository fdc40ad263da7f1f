"""Labelled texts → fixed-length token rows, and the batches a fine-tuning run reads.

Each text is encoded with the pretrained run's own tokenizer, cut to its first `seq_len` tokens
and right-padded with 0. Right padding is safe for a causal model: a real token never attends to
a later position, so padding changes no real token's hidden state, and pooling reads only the
first `length` positions (`classifier.pool`).

The training batch at step s is a pure function of (seed, s): epoch e is a permutation drawn from
(seed, e), and step s takes rows s·B … s·B+B−1 of the concatenated epochs. A resumed run reads
exactly the batches an uninterrupted one would have, with no iterator state to save.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterator

import numpy as np

from bigmodel.config import ConfigError


@dataclasses.dataclass(frozen=True)
class Encoded:
    tokens: np.ndarray  # [n, seq_len] int32, right-padded with 0
    lengths: np.ndarray  # [n] int32, 1 … seq_len: the real tokens of each row
    labels: np.ndarray  # [n] int32
    truncated: int  # texts longer than seq_len tokens (cut)

    def __len__(self) -> int:
        return len(self.labels)

    def rows(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.tokens[indices], self.lengths[indices], self.labels[indices]


def encode_split(split, tokenizer, seq_len: int, name: str) -> Encoded:
    """Every text of `split` as a row; a text that encodes to no tokens is an error (it could
    not be classified, and silently dropping it would change the test set)."""
    tokens = np.zeros((len(split), seq_len), np.int32)
    lengths = np.zeros(len(split), np.int32)
    truncated = 0
    for row, text in enumerate(split.texts):
        ids = tokenizer.encode(text)
        if not ids:
            raise ConfigError(f"{name} example {row} encodes to no tokens (text {text!r}): remove empty texts from the dataset")
        truncated += len(ids) > seq_len
        ids = ids[:seq_len]
        tokens[row, : len(ids)] = ids
        lengths[row] = len(ids)
    return Encoded(tokens, lengths, np.asarray(split.labels, np.int32), truncated)


def capped(data: Encoded, max_examples: int, seed: int) -> Encoded:
    """At most `max_examples` rows (0: all), drawn by a seeded permutation so that a cap on a
    split stored in order (kjv: Genesis first) still spans every class."""
    if not max_examples or max_examples >= len(data):
        return data
    keep = np.sort(np.random.default_rng(seed).permutation(len(data))[:max_examples])
    return Encoded(data.tokens[keep], data.lengths[keep], data.labels[keep], data.truncated)


@functools.lru_cache(maxsize=4)
def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def train_indices(step: int, batch_size: int, n: int, seed: int, process_index: int = 0, process_count: int = 1) -> np.ndarray:
    """Which examples this process's rows of the batch at `step` are (rows p·B/P … (p+1)·B/P − 1)."""
    rows = batch_size // process_count
    positions = step * batch_size + process_index * rows + np.arange(rows)
    epochs, offsets = np.divmod(positions, n)
    return np.asarray([epoch_order(seed, int(epoch), n)[offset] for epoch, offset in zip(epochs, offsets)])


def eval_batches(data: Encoded, batch_size: int) -> Iterator[tuple[tuple[np.ndarray, np.ndarray, np.ndarray], int]]:
    """(rows, real) for every example in order, `batch_size` at a time: the last batch is filled
    up with copies of row 0 (one compiled shape), of which only the first `real` rows count."""
    for start in range(0, len(data), batch_size):
        indices = np.arange(start, min(start + batch_size, len(data)))
        real = len(indices)
        yield data.rows(np.concatenate([indices, np.zeros(batch_size - real, np.int64)])), real
