"""Data: tfds sources (the built-in `kjv`, the `markov` corpus of known entropy, any prepared
`tfds:<name>`), random `synthetic` tokens, tokenizers, the grain pipeline.

    from bigmodel.data import load_dataset
    train = load_dataset(config.data, split="train", seed=config.seed)
    tokens = train.batch(step, config.train.batch_size, jax.process_index(), jax.process_count())
"""

from bigmodel.data.pipeline import LMDataset, load_dataset
from bigmodel.data.sources import resolve_data_dir
from bigmodel.data.synthetic import SyntheticDataset
from bigmodel.data.tokenizers import ByteTokenizer, SentencePieceTokenizer

__all__ = ["ByteTokenizer", "LMDataset", "SentencePieceTokenizer", "SyntheticDataset", "load_dataset", "resolve_data_dir"]
