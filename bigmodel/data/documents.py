"""Documents from a user's files: one per text file, one per JSONL line, one per Parquet row.

Each reader yields, in file order, either a document's text or a `Bad` record naming where and
why a document could not be read (bytes that are not UTF-8, a JSONL line that is not a JSON
object or lacks the text field, a Parquet file without the column). What to do with a `Bad` is
the caller's choice (`prepare` stops on the first, or counts them under --skip_bad): the readers
never decide, so one reader serves both. `.gz` files are read through gzip (`notes.txt.gz`,
`shard.jsonl.gz`); the format comes from the name without it.

Readers also report the bytes they consumed (`Progress.advance`), so a progress bar can show the
input's throughput whatever the format.
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import json
from pathlib import Path
from typing import Callable, Iterator

from bigmodel.exit_codes import ConfigError

FORMATS = ("auto", "text", "jsonl", "parquet")
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")
PARQUET_BATCH_ROWS = 4096  # rows decoded at a time: bounds memory on files of any size
BYTE_ORDER_MARK = "\ufeff"


@dataclasses.dataclass(frozen=True)
class Bad:
    """A document that could not be read: `where` is `file:line` (or `file row N`), `why` the reason."""

    where: str
    why: str

    def __str__(self) -> str:
        return f"{self.where}: {self.why}"


Advance = Callable[[int], None]  # told how many more input bytes were consumed


def find_files(pattern: str) -> list[Path]:
    """The files (not directories) the glob matches, sorted: `**` spans directories."""
    if Path(pattern).expanduser().is_dir():
        raise ConfigError(f"--files {pattern!r} is a folder: pass a glob of its files, such as '{pattern.rstrip('/')}/**/*.txt'")
    matches = sorted(Path(path) for path in glob.glob(str(Path(pattern).expanduser()), recursive=True))
    files = [path for path in matches if path.is_file()]
    if not files:
        raise ConfigError(f"--files {pattern!r} matches no files: check the pattern (quote it so the shell leaves ** to bigmodel)")
    return files


def file_format(path: Path, chosen: str) -> str:
    """`chosen`, or with `auto` the format the name says: .jsonl/.json/.ndjson, .parquet/.pq, else text."""
    if chosen != "auto":
        return chosen
    name = path.name.removesuffix(".gz").lower()
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return "text"


def open_bytes(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def decode(data: bytes, where: Callable[[int], str]) -> str | Bad:
    """UTF-8 text (a leading byte-order mark dropped), or `Bad` at the first undecodable byte;
    `where(line)` names the place of a line number within `data`."""
    try:
        return data.decode("utf-8").removeprefix(BYTE_ORDER_MARK)
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        return Bad(where(line), f"byte {data[error.start]:#04x} is not UTF-8 text: convert the file to UTF-8")


def text_documents(path: Path, text_field: str, advance: Advance) -> Iterator[str | Bad]:
    """The whole file as one document."""
    del text_field  # a text file has no fields
    with open_bytes(path) as file:
        data = file.read()
    advance(path.stat().st_size)
    yield decode(data, lambda line: f"{path}:{line}")


def jsonl_document(line: bytes, where: str, text_field: str) -> str | Bad | None:
    """The text field of one JSONL line; None for a blank line."""
    text = decode(line, lambda _: where)
    if isinstance(text, Bad):
        return text
    if not text.strip():
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        return Bad(where, f"not JSON ({error.msg} at column {error.colno}): write one JSON object per line")
    if not isinstance(record, dict) or text_field not in record:
        return Bad(where, f"no {text_field!r} field: pass --text_field with the field that holds the text")
    value = record[text_field]
    if not isinstance(value, str):
        return Bad(where, f"field {text_field!r} is {type(value).__name__}, not a string")
    return value


def jsonl_documents(path: Path, text_field: str, advance: Advance) -> Iterator[str | Bad]:
    """One document per non-blank line."""
    with open_bytes(path) as file:
        raw = getattr(file, "fileobj", file)  # a .gz file's compressed stream: progress in bytes on disk
        reported = 0
        for number, line in enumerate(file, start=1):
            document = jsonl_document(line, f"{path}:{number}", text_field)
            if number % 4096 == 0:  # a call per line would cost more than the parse
                position = raw.tell()
                advance(position - reported)
                reported = position
            if document is not None:
                yield document
    advance(path.stat().st_size - reported)


def parquet_documents(path: Path, text_field: str, advance: Advance) -> Iterator[str | Bad]:
    """One document per row of the string column `text_field` (a null row is a Bad)."""
    import pyarrow
    import pyarrow.parquet

    try:
        parquet = pyarrow.parquet.ParquetFile(path)
    except (pyarrow.ArrowInvalid, OSError) as error:
        yield Bad(str(path), f"not a Parquet file ({error})")
        advance(path.stat().st_size)
        return
    schema = parquet.schema_arrow
    if text_field not in schema.names:
        yield Bad(str(path), f"no column {text_field!r} (it has {', '.join(schema.names)}): pass --text_field with the text column")
        advance(path.stat().st_size)
        return
    kind = schema.field(text_field).type
    if not (pyarrow.types.is_string(kind) or pyarrow.types.is_large_string(kind)):
        yield Bad(str(path), f"column {text_field!r} holds {kind}, not strings")
        advance(path.stat().st_size)
        return
    row, size, rows = 0, path.stat().st_size, max(parquet.metadata.num_rows, 1)
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[text_field]):
        for value in batch.column(0).to_pylist():
            row += 1
            yield Bad(f"{path} row {row}", f"column {text_field!r} is null") if value is None else value
        advance(size * batch.num_rows // rows)  # compressed bytes, shared out by rows


READERS = {"text": text_documents, "jsonl": jsonl_documents, "parquet": parquet_documents}


def documents(path: Path, chosen_format: str, text_field: str, advance: Advance) -> Iterator[str | Bad]:
    """The documents of one file, read as `chosen_format` (`auto`: by its name)."""
    return READERS[file_format(path, chosen_format)](path, text_field, advance)
