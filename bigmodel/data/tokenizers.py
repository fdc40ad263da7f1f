"""Tokenizers: UTF-8 bytes (vocab 256), and two BPEs trained on the train split: sentencepiece
(`spm`) and Hugging Face `tokenizers`' byte-level BPE (`bpe`, GPT-2's scheme).

All three have `encode(str) -> list[int]`, `decode(list[int]) -> str` and `vocab_size`, and both
encode text line by line: `encode(a + "\\n" + b) == encode(a) + encode("\\n") + encode(b)`.
So a corpus can be tokenized in chunks cut at newlines and give the same tokens as in one go.

The BPE model is exact on any text: byte fallback covers characters it never saw, the newline is
its `<0x0A>` byte piece, and no whitespace normalisation is applied (`decode(encode(t)) == t`).
It is trained once per (dataset, vocab size) and cached as `<cache_dir>/<dataset>-spm<V>.model`,
under a file lock so parallel jobs train it once. The byte-level BPE is exact by construction
(its 256 base symbols are the bytes); it is cached as `<cache_dir>/<dataset>-bpe<V>.json`, the
`tokenizer.json` that `tokenizers.Tokenizer.from_file` (and so `transformers`) reads. It needs
the `tokenizers` package (`pip install 'bigmodel[bpe]'`), imported only when it is used.
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
BYTE_LEVEL_NEWLINE = "Ċ"  # the byte-level alphabet's symbol for "\n" (byte 10 shifted past the printable range)
BPE_EXTRA = "pip install 'bigmodel[bpe]' (the tokenizers package)"
TRAINING_SENTENCES = 2_000_000  # spm samples this many lines at most: bounds training time on big corpora


class ByteTokenizer:
    """Each UTF-8 byte is a token; decoding replaces an incomplete trailing character with U+FFFD."""

    name = "bytes"
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(int(token) for token in ids).decode("utf-8", errors="replace")


class LineByLine:
    """Encodes each line alone and joins the lines' ids with the newline's id, so newlines are
    their own token and a text cut at newlines encodes as the whole does. Subclasses give
    `newline_id`, `encode_lines(list[str]) -> list[list[int]]` and `decode_lines(list[list[int]]) -> list[str]`."""

    newline_id: int

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for index, line_ids in enumerate(self.encode_lines(text.split(NEWLINE))):
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
        return NEWLINE.join(self.decode_lines(lines))


class SentencePieceTokenizer(LineByLine):
    """A sentencepiece model applied line by line; newlines are their own token."""

    name = "spm"

    def __init__(self, model_proto: bytes):
        self.processor = sentencepiece.SentencePieceProcessor(model_proto=model_proto)
        self.vocab_size = self.processor.get_piece_size()
        self.newline_id = self.processor.piece_to_id(NEWLINE_PIECE)
        if self.processor.id_to_piece(self.newline_id) != NEWLINE_PIECE:
            raise ValueError("the sentencepiece model has no <0x0A> piece: train it with byte_fallback=True")

    def encode_lines(self, lines: list[str]) -> list[list[int]]:
        return self.processor.encode(lines)

    def decode_lines(self, lines: list[list[int]]) -> list[str]:
        return [self.processor.decode(line_ids) for line_ids in lines]


class ByteLevelBPETokenizer(LineByLine):
    """A Hugging Face byte-level BPE applied line by line; newlines are their own token."""

    name = "bpe"

    def __init__(self, tokenizer_json: str):
        from tokenizers import Tokenizer

        self.processor = Tokenizer.from_str(tokenizer_json)
        self.vocab_size = self.processor.get_vocab_size()
        self.newline_id = self.processor.token_to_id(BYTE_LEVEL_NEWLINE)
        if self.newline_id is None:
            raise ValueError("the BPE model has no byte-level newline symbol: train it with the byte-level alphabet")

    def to_json(self) -> str:
        return self.processor.to_str()

    def encode_lines(self, lines: list[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self.processor.encode_batch_fast(lines)]

    def decode_lines(self, lines: list[list[int]]) -> list[str]:
        return self.processor.decode_batch(lines, skip_special_tokens=False)


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


def train_byte_level_bpe(texts: Iterable[str], vocab_size: int) -> str:
    """tokenizer.json of a byte-level BPE with at most `vocab_size` symbols (256 bytes, then merges;
    fewer when the text has no more pairs to merge)."""
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError:
        raise ConfigError(f"config.data.tokenizer=bpe needs the tokenizers package: {BPE_EXTRA}") from None
    if vocab_size < 256:
        raise ConfigError(f"config.data.vocab_size={vocab_size} does not fit the bpe tokenizer: it starts from the 256 bytes, so use 256 or more")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-2's split of words, spaces and digits
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[], show_progress=False)
    tokenizer.train_from_iterator(training_lines(texts), trainer=trainer)
    return tokenizer.to_str()


TRAINED_KINDS = {  # name → (file suffix, train(texts, vocab) → bytes or str, load(bytes) → tokenizer)
    "spm": ("model", train_sentencepiece, SentencePieceTokenizer),
    "bpe": ("json", train_byte_level_bpe, lambda data: ByteLevelBPETokenizer(data.decode("utf-8"))),
}


def tokenizer_path(cache_dir: str | os.PathLike, dataset_slug: str, name: str, vocab_size: int) -> Path:
    """Where a trained tokenizer of `dataset_slug` is cached: `<slug>-spm<V>.model`, `<slug>-bpe<V>.json`."""
    return Path(cache_dir) / f"{dataset_slug}-{name}{vocab_size}.{TRAINED_KINDS[name][0]}"


def load_tokenizer_file(name: str, path: str | os.PathLike):
    """A trained tokenizer (`spm` or `bpe`) from its cached file."""
    try:
        return TRAINED_KINDS[name][2](Path(path).read_bytes())
    except ImportError:
        raise ConfigError(f"the run's tokenizer is a byte-level BPE: {BPE_EXTRA}") from None


def load_or_train(name: str, path: str | os.PathLike, vocab_size: int, training_texts: Callable[[], Iterable[str]]):
    """The `name` tokenizer at `path`, trained on `training_texts()` and saved there first if missing."""
    path = Path(path)
    if not path.exists():
        with file_lock(path.with_name(path.name + ".lock")):
            if not path.exists():  # another process may have trained it while we waited
                write_atomically(path, TRAINED_KINDS[name][1](training_texts(), vocab_size))
    return load_tokenizer_file(name, path)


def make_tokenizer(name: str, vocab_size: int, cache_dir: str | os.PathLike, dataset_slug: str, training_texts: Callable[[], Iterable[str]]):
    """`bytes`, `spm` or `bpe`; `training_texts` is called only when a BPE model must be trained."""
    if name == "bytes":
        if vocab_size != ByteTokenizer.vocab_size:
            raise ConfigError(f"config.data.vocab_size must be 256 with the bytes tokenizer, got {vocab_size}")
        return ByteTokenizer()
    if name in TRAINED_KINDS:
        return load_or_train(name, tokenizer_path(cache_dir, dataset_slug, name, vocab_size), vocab_size, training_texts)
    raise ConfigError(f"config.data.tokenizer={name!r} is unknown: use bytes, spm or bpe")
