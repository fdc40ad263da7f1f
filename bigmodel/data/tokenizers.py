"""Tokenizers: UTF-8 bytes (vocab 256) and a sentencepiece BPE trained on the train split.

Both have `encode(str) -> list[int]`, `decode(list[int]) -> str` and `vocab_size`, and both
encode text line by line: `encode(a + "\\n" + b) == encode(a) + encode("\\n") + encode(b)`.
So a corpus can be tokenized in chunks cut at newlines and give the same tokens as in one go.

The BPE model is exact on any text: byte fallback covers characters it never saw, the newline is
its `<0x0A>` byte piece, and no whitespace normalisation is applied (`decode(encode(t)) == t`).
It is trained once per (dataset, vocab size) and cached as `<cache_dir>/<dataset>-spm<V>.model`,
under a file lock so parallel jobs train it once.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Callable, Iterable

import sentencepiece

from bigmodel.exit_codes import ConfigError
from bigmodel.files import file_lock, write_atomically

NEWLINE = "\n"
NEWLINE_PIECE = "<0x0A>"  # sentencepiece's byte-fallback piece for "\n"
TRAINING_SENTENCES = 2_000_000  # spm samples this many lines at most: bounds training time on big corpora


class ByteTokenizer:
    """Each UTF-8 byte is a token; decoding replaces an incomplete trailing character with U+FFFD."""

    name = "bytes"
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(int(token) for token in ids).decode("utf-8", errors="replace")


class SentencePieceTokenizer:
    """A sentencepiece model applied line by line; newlines are their own token."""

    name = "spm"

    def __init__(self, model_proto: bytes):
        self.processor = sentencepiece.SentencePieceProcessor(model_proto=model_proto)
        self.vocab_size = self.processor.get_piece_size()
        self.newline_id = self.processor.piece_to_id(NEWLINE_PIECE)
        if self.processor.id_to_piece(self.newline_id) != NEWLINE_PIECE:
            raise ValueError("the sentencepiece model has no <0x0A> piece: train it with byte_fallback=True")

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for index, line_ids in enumerate(self.processor.encode(text.split(NEWLINE))):
            if index:
                ids.append(self.newline_id)
            ids.extend(line_ids)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        lines, line = [], []
        for token in ids:
            if token == self.newline_id:
                lines.append(line)
                line = []
            else:
                line.append(int(token))
        lines.append(line)
        return NEWLINE.join(self.processor.decode(line_ids) for line_ids in lines)


def training_lines(texts: Iterable[str]) -> Iterable[str]:
    """The non-empty lines of `texts`: spm sees text the way `encode` will cut it."""
    for text in texts:
        yield from (line for line in text.split(NEWLINE) if line)


def train_sentencepiece(texts: Iterable[str], vocab_size: int) -> bytes:
    """A serialized BPE model with exactly `vocab_size` pieces (unk, 256 bytes, merges)."""
    model = io.BytesIO()
    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(training_lines(texts)),
            model_writer=model,
            model_type="bpe",
            vocab_size=vocab_size,
            byte_fallback=True,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            bos_id=-1,
            eos_id=-1,  # documents are separated by blank lines, not by special tokens
            input_sentence_size=TRAINING_SENTENCES,
            shuffle_input_sentence=True,
            num_threads=os.cpu_count() or 1,
            minloglevel=2,
        )
    except RuntimeError as error:
        reason = str(error).split("] ", 1)[-1]
        raise ConfigError(f"config.data.vocab_size={vocab_size} does not fit the spm tokenizer on this data: {reason}") from None
    return model.getvalue()


def sentencepiece_path(cache_dir: str | os.PathLike, dataset_slug: str, vocab_size: int) -> Path:
    return Path(cache_dir) / f"{dataset_slug}-spm{vocab_size}.model"


def load_or_train_sentencepiece(path: str | os.PathLike, vocab_size: int, training_texts: Callable[[], Iterable[str]]) -> SentencePieceTokenizer:
    """The model at `path`, trained on `training_texts()` and saved there first if missing."""
    path = Path(path)
    if not path.exists():
        with file_lock(path.with_name(path.name + ".lock")):
            if not path.exists():  # another process may have trained it while we waited
                write_atomically(path, train_sentencepiece(training_texts(), vocab_size))
    return SentencePieceTokenizer(path.read_bytes())


def make_tokenizer(name: str, vocab_size: int, cache_dir: str | os.PathLike, dataset_slug: str, training_texts: Callable[[], Iterable[str]]):
    """`bytes` or `spm`; `training_texts` is called only when a BPE model must be trained."""
    if name == "bytes":
        if vocab_size != ByteTokenizer.vocab_size:
            raise ConfigError(f"config.data.vocab_size must be 256 with the bytes tokenizer, got {vocab_size}")
        return ByteTokenizer()
    if name == "spm":
        return load_or_train_sentencepiece(sentencepiece_path(cache_dir, dataset_slug, vocab_size), vocab_size, training_texts)
    raise ConfigError(f"config.data.tokenizer={name!r} is unknown: use bytes or spm")
