"""The language-model data pipeline: a split → one flat token array → shuffled windows → batches.

1. A split's documents are tokenized once, joined by a blank line, into a flat token array cached
   as `<data_dir>/bigmodel_tokens/<dataset>-<split>-<tokenizer>.npy` (+ a .json of counts),
   written under a file lock so parallel jobs tokenize once (token_cache.py).
2. The array is cut into `num_windows = (num_tokens - 1) // seq_len` windows of `seq_len + 1`
   tokens starting every `seq_len` tokens: inputs `window[:-1]` never overlap, and each token is a
   target exactly once per epoch (a window's last token is the next window's first input).
3. A grain `MapDataset` over window indices, shuffled with `seed`, repeated with a fresh shuffle
   each epoch and batched. It is random access, so the batch at step `s` is a pure function of
   (seed, s): there is no iterator state, and a resumed run sees exactly the batches an
   uninterrupted run would have seen.

Process `p` of `P` takes rows `[p·B/P, (p+1)·B/P)` of the global batch of `B` rows, which is the
grain batch of `B/P` windows at index `s·P + p`.
"""

from __future__ import annotations

from pathlib import Path

import grain
import numpy as np

from bigmodel.exit_codes import ConfigError
from bigmodel.data.names import SYNTHETIC, check_dataset_name, dataset_slug
from bigmodel.data.sources import read_split_texts, resolve_data_dir
from bigmodel.data.synthetic import SyntheticDataset, synthetic_dataset
from bigmodel.data.token_cache import TOKENIZERS_DIR, load_or_tokenize, token_cache_path
from bigmodel.data.tokenizers import make_tokenizer

def batches_in_one_pass(source, batch_size: int) -> int | None:
    """Whole batches of `batch_size` windows in one pass over a split (at least 1): past it the
    windows repeat. None for synthetic tokens, which are drawn fresh for every batch."""
    windows = getattr(source, "num_windows", None)
    return None if windows is None else max(1, windows // batch_size)


def check_batches(requested: int, source, batch_size: int) -> None:
    """`--batches N` reads at most one pass over the validation split: more would repeat its
    windows, costing time and adding no information (and a huge N would run for days)."""
    one_pass = batches_in_one_pass(source, batch_size)
    if one_pass is not None and requested > one_pass:
        raise ConfigError(f"--batches {requested} is more than one pass over the validation split ({one_pass} batches of {batch_size}): "
                          f"use at most {one_pass}")


class LMDataset:
    """Windows of `seq_len + 1` tokens of one split, batched as a pure function of (seed, step)."""

    def __init__(self, tokens: np.ndarray, *, seq_len: int, seed: int, vocab_size: int, tokenizer, bytes_per_token: float, name: str = ""):
        self.tokens = tokens
        self.seq_len = seq_len
        self.seed = seed
        self.vocab_size = vocab_size
        self.tokenizer = tokenizer
        self.bytes_per_token = bytes_per_token
        self.num_windows = (tokens.size - 1) // seq_len
        if self.num_windows < 1:
            raise ConfigError(f"{name or 'the split'} has {tokens.size} tokens, too few for one window of seq_len+1={seq_len + 1}: lower config.data.seq_len")
        self._window_offsets = np.arange(seq_len + 1)
        # Epoch e is a fresh permutation: repeat() folds the epoch number into the shuffle seed.
        self._window_order = grain.MapDataset.range(self.num_windows).shuffle(seed=seed).repeat()
        self._batched_orders: dict[int, grain.MapDataset] = {}

    def window(self, index: int) -> np.ndarray:
        """Window `index` in storage order (before shuffling), as int32."""
        start = index * self.seq_len
        return np.asarray(self.tokens[start : start + self.seq_len + 1], np.int32)

    def window_indices(self, step: int, batch_size: int, process_index: int = 0, process_count: int = 1) -> np.ndarray:
        """Which windows make up this process's rows of the batch at `step`."""
        if step < 0 or batch_size < 1 or not 0 <= process_index < process_count:
            raise ValueError(f"need step >= 0, batch_size >= 1 and 0 <= process_index < process_count, got {step}, {batch_size}, {process_index}, {process_count}")
        if batch_size % process_count:
            raise ValueError(f"batch_size={batch_size} is not divisible by process_count={process_count}: each process takes an equal slice")
        rows = batch_size // process_count
        if rows not in self._batched_orders:
            self._batched_orders[rows] = self._window_order.batch(rows)
        return np.asarray(self._batched_orders[rows][step * process_count + process_index])

    def batch(self, step: int, batch_size: int, process_index: int = 0, process_count: int = 1) -> np.ndarray:
        """int32 [batch_size // process_count, seq_len + 1]: this process's rows of global batch `step`."""
        windows = self.window_indices(step, batch_size, process_index, process_count)
        return np.asarray(self.tokens[windows[:, None] * self.seq_len + self._window_offsets], np.int32)


def load_dataset(data_config, split: str = "train", seed: int = 0) -> LMDataset | SyntheticDataset:
    """The `split` of `data_config.dataset`, tokenized (cached) and windowed to `data_config.seq_len`
    (or, for `synthetic`, random tokens drawn per (seed, step)).

    Builds kjv (or a markov corpus), trains the spm tokenizer and tokenizes the split on first use, each cached in the
    data dir (see `resolve_data_dir`); later calls only memory-map the cached tokens.
    """
    dataset = data_config.dataset
    check_dataset_name(dataset)
    if dataset == SYNTHETIC:
        return synthetic_dataset(data_config, split, seed)
    data_dir = resolve_data_dir(data_config)
    tokenizer = make_tokenizer(
        data_config.tokenizer,
        data_config.vocab_size,
        Path(data_dir) / TOKENIZERS_DIR,
        dataset_slug(dataset),
        training_texts=lambda: read_split_texts(dataset, "train", data_dir),
    )
    path = token_cache_path(data_dir, dataset, split, data_config.tokenizer, data_config.vocab_size)
    tokens, num_bytes = load_or_tokenize(path, tokenizer, lambda: read_split_texts(dataset, split, data_dir))
    return LMDataset(
        tokens,
        seq_len=data_config.seq_len,
        seed=seed,
        vocab_size=data_config.vocab_size,
        tokenizer=tokenizer,
        bytes_per_token=num_bytes / max(tokens.size, 1),
        name=f"{dataset} {split}",
    )
