"""The token cache: a split's documents tokenized once into a flat array beside the data.

`<data_dir>/bigmodel_tokens/<dataset>-<split>-<tokenizer>.npy` holds the tokens of the documents
joined by a blank line; its `.json` (the tokens and the UTF-8 bytes they encode) marks it
complete and is written last. Both are written under a file lock, so parallel jobs tokenize a
split once. Trained tokenizers are cached beside it in `bigmodel_tokenizers/` (tokenizers.py).
This module needs numpy only: `prepare` fills the cache without loading grain or JAX.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from bigmodel.files import atomic_file, file_lock, write_atomically
from bigmodel.data.names import dataset_slug

DOCUMENT_SEPARATOR = "\n\n"  # a blank line: documents are told apart without a special token
DOCUMENTS_PER_CHUNK = 4096  # tokenize this many documents per call: bounds memory on big splits
TOKENS_DIR = "bigmodel_tokens"
TOKENIZERS_DIR = "bigmodel_tokenizers"


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 halves the cache and the page cache for vocabularies up to 65,536."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.int32)


def tokenize_documents(tokenizer, documents: list[str]) -> tuple[np.ndarray, int]:
    """(tokens of the documents joined by DOCUMENT_SEPARATOR, UTF-8 bytes of that text).

    Tokenizers encode line by line, so chunks joined by the separator's tokens equal the tokens
    of the whole text.
    """
    dtype = token_dtype(tokenizer.vocab_size)
    separator = np.asarray(tokenizer.encode(DOCUMENT_SEPARATOR), dtype)
    pieces, num_bytes = [], 0
    for start in range(0, len(documents), DOCUMENTS_PER_CHUNK):
        text = DOCUMENT_SEPARATOR.join(documents[start : start + DOCUMENTS_PER_CHUNK])
        if start:
            pieces.append(separator)
            num_bytes += len(DOCUMENT_SEPARATOR.encode("utf-8"))
        pieces.append(np.asarray(tokenizer.encode(text), dtype))
        num_bytes += len(text.encode("utf-8"))
    return (np.concatenate(pieces) if pieces else np.zeros(0, dtype)), num_bytes


def token_cache_path(data_dir: str, dataset: str, split: str, tokenizer_name: str, vocab_size: int) -> Path:
    tokenizer_tag = "bytes" if tokenizer_name == "bytes" else f"{tokenizer_name}{vocab_size}"
    return Path(data_dir) / TOKENS_DIR / f"{dataset_slug(dataset)}-{split}-{tokenizer_tag}.npy"


def save_tokens(path: Path, tokens: np.ndarray, num_bytes: int) -> None:
    """The .npy first, then the .json that marks the cache complete (both renamed into place)."""
    with atomic_file(path) as file:  # streamed: a token cache can be larger than memory allows twice
        np.save(file, tokens)
    counts = {"num_tokens": int(tokens.size), "num_bytes": int(num_bytes)}
    write_atomically(path.with_suffix(".json"), json.dumps(counts).encode())


def load_or_tokenize(path: Path, tokenizer, read_documents: Callable[[], list[str]]) -> tuple[np.ndarray, int]:
    """(tokens memory-mapped from the cache, UTF-8 bytes they encode); tokenizes first if needed."""
    counts_path = path.with_suffix(".json")
    if not counts_path.exists():
        with file_lock(path.with_name(path.name + ".lock")):
            if not counts_path.exists():  # another process may have written it while we waited
                save_tokens(path, *tokenize_documents(tokenizer, [text for text in read_documents() if text]))
    counts = json.loads(counts_path.read_text())
    return np.load(path, mmap_mode="r"), counts["num_bytes"]
