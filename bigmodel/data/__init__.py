"""Data: tfds sources (the built-in `kjv`, the `markov` corpus of known entropy, any prepared
`tfds:<name>`), random `synthetic` tokens, tokenizers, the grain pipeline.

    from bigmodel.data import load_dataset
    train = load_dataset(config.data, split="train", seed=config.seed)
    tokens = train.batch(step, config.train.batch_size, jax.process_index(), jax.process_count())

The names below load on first use: grain imports JAX, and config validation imports
`bigmodel.data.names` and `bigmodel.data.markov_chain`, which must not.
"""

import importlib

HOMES = {
    "ByteTokenizer": "tokenizers",
    "LMDataset": "pipeline",
    "SentencePieceTokenizer": "tokenizers",
    "SyntheticDataset": "synthetic",
    "load_dataset": "pipeline",
    "resolve_data_dir": "sources",
}

__all__ = list(HOMES)


def __getattr__(name: str):
    if name not in HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{HOMES[name]}"), name)
    globals()[name] = value  # later lookups skip this function
    return value
