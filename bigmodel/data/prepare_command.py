"""`python -m bigmodel prepare`: a user's text, JSONL or Parquet files → a dataset `tfds:NAME` trains on.

    python -m bigmodel prepare --name my_corpus --files 'corpus/**/*.jsonl' --data_dir data
    python -m bigmodel train --config configs/lm.py:L4 --workdir runs/mine \\
        --config.data.dataset=tfds:my_corpus --config.data.data_dir=data

One document per text file, per JSONL line or per Parquet row (`documents.py`), split into train
and validation by each document's hash and written as array_record (`prepare.py`). The splits are
then tokenized with `--tokenizer` (training a BPE first if asked) through the same caches
training uses, so the summary counts the tokens a run will see and the run starts without
tokenizing again. The summary (documents, bytes, tokens per split) is printed and written to
`<data_dir>/<NAME>/prepare.json`.

A bad document stops the prepare with one `error:` line naming its file and line, unless
--skip_bad, which counts and skips it. An existing NAME is replaced only with --force. The dataset
appears under its name only once whole (`prepare.Staging`). Exit codes: 0 done, 2 bad input,
74 storage failed.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from bigmodel import exit_codes, files
from bigmodel.exit_codes import ConfigError

PREPARE_HELP = "turn text, JSONL or Parquet files into a dataset that --config.data.dataset=tfds:NAME trains on"
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")  # a tfds dataset name
DEFAULT_BPE_VOCAB = 4096
SKIPPED_EXAMPLES = 5  # the first few skipped documents are named in the summary


def add_prepare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", required=True, help="the dataset's name: train with --config.data.dataset=tfds:NAME (lowercase letters, digits, _)")
    parser.add_argument("--files", required=True, metavar="GLOB", help="the input files, e.g. 'corpus/**/*.jsonl' (quoted; ** spans directories)")
    parser.add_argument("--format", choices=("auto", "text", "jsonl", "parquet"), default="auto",
                        help="auto: by each file's name (.jsonl/.json/.ndjson, .parquet/.pq, else text; .gz is read through gzip)")
    parser.add_argument("--text_field", default="text", help="the JSONL field or Parquet column that holds the text")
    parser.add_argument("--data_dir", default="", help="where the dataset goes (default: $TFDS_DATA_DIR or ~/.cache/bigmodel/tfds): pass the same as --config.data.data_dir")
    parser.add_argument("--validation_fraction", type=float, default=0.01, help="share of documents held out for validation, by hash (default 0.01)")
    parser.add_argument("--tokenizer", choices=("bytes", "spm", "bpe"), default="bytes", help="the tokenizer whose tokens the summary counts (and caches for training)")
    parser.add_argument("--vocab_size", type=int, default=None, help=f"vocabulary of spm or bpe (default {DEFAULT_BPE_VOCAB}); bytes is always 256: pass the same as --config.data.vocab_size")
    parser.add_argument("--skip_bad", action="store_true", help="skip undecodable or malformed documents (counted) instead of stopping at the first")
    parser.add_argument("--force", action="store_true", help="replace an existing dataset of this name")


def checked_vocab_size(tokenizer: str, vocab_size: int | None) -> int:
    if tokenizer == "bytes":
        if vocab_size not in (None, 256):
            raise ConfigError(f"--vocab_size {vocab_size} does not go with --tokenizer bytes (always 256): drop it or pick spm or bpe")
        return 256
    chosen = DEFAULT_BPE_VOCAB if vocab_size is None else vocab_size
    if chosen < 256:
        raise ConfigError(f"--vocab_size {chosen} is too small for {tokenizer}: it starts from the 256 bytes, so use 256 or more")
    return chosen


def check_name(name: str) -> None:
    """A tfds dataset name that tfds does not already own (tfds.builder would load its own class)."""
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"--name {name!r} is not a dataset name: use lowercase letters, digits and _, starting with a letter")
    import tensorflow_datasets as tfds

    try:
        tfds.builder_cls(name)
    except tfds.core.registered.DatasetNotFoundError:
        return
    raise ConfigError(f"--name {name!r} is a dataset tfds already knows: tfds:{name} would load tfds's own, so pick another name")


def check_arguments(args: argparse.Namespace, target: Path) -> int:
    """Everything that can be refused before a file is written; returns the vocabulary size."""
    if not 0.0 < args.validation_fraction < 1.0:
        raise ConfigError(f"--validation_fraction must be between 0 and 1 (exclusive), got {args.validation_fraction}")
    vocab_size = checked_vocab_size(args.tokenizer, args.vocab_size)
    check_name(args.name)
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{target} is a file: remove it or pick another --name")
    if target.exists() and not args.force:
        raise ConfigError(f"{target} already holds a dataset named {args.name!r}: pick another --name, or pass --force to replace it")
    return vocab_size


class Tally:
    """What the documents pass saw: the input bytes, and the documents skipped (empty or bad)."""

    def __init__(self, bar):
        self.bar, self.input_bytes, self.empty, self.bad = bar, 0, 0, []

    def advance(self, count: int) -> None:
        self.input_bytes += count
        self.bar.update(count)


def file_documents(path: Path, args: argparse.Namespace, tally: Tally):
    """The file's documents; a file that cannot be read (gone, no permission, a broken .gz) ends
    them with a `Bad` naming it."""
    from bigmodel.data.documents import Bad, documents

    items = documents(path, args.format, args.text_field, tally.advance)
    while True:
        try:
            yield next(items)
        except StopIteration:
            return
        except (OSError, EOFError) as error:
            yield Bad(str(path), f"cannot be read ({getattr(error, 'strerror', None) or error})")
            return


def write_documents(args: argparse.Namespace, paths: list[Path], writer, tally: Tally) -> None:
    """Every document of every file into `writer`; a `Bad` one stops here unless --skip_bad."""
    from bigmodel.data.documents import Bad

    for path in paths:
        for item in file_documents(path, args, tally):
            if isinstance(item, Bad):
                if not args.skip_bad:
                    raise ConfigError(f"{item}; or pass --skip_bad to skip such documents")
                tally.bad.append(str(item))
            elif item:
                writer.add(item)
            else:
                tally.empty += 1
        tally.bar.set_postfix(documents=f"{sum(writer.documents.values()):,}", refresh=False)


def count_tokens(staging, name: str, tokenizer_name: str, vocab_size: int) -> dict[str, int]:
    """Tokens per split, tokenized into the staging directory's caches (moved beside the data at the end)."""
    from bigmodel.data.names import TFDS_PREFIX, dataset_slug
    from bigmodel.data.token_cache import TOKENIZERS_DIR, load_or_tokenize, token_cache_path
    from bigmodel.data.prepare import SPLITS, staged_source
    from bigmodel.data.sources import read_texts
    from bigmodel.data.tokenizers import make_tokenizer

    dataset = TFDS_PREFIX + name
    tokenizer = make_tokenizer(tokenizer_name, vocab_size, staging.root / TOKENIZERS_DIR, dataset_slug(dataset),
                               training_texts=lambda: read_texts(staged_source(staging.version_dir, "train")))
    counts = {}
    for split in SPLITS:
        path = token_cache_path(str(staging.root), dataset, split, tokenizer_name, vocab_size)
        tokens, _ = load_or_tokenize(path, tokenizer, lambda split=split: read_texts(staged_source(staging.version_dir, split)))
        counts[split] = int(tokens.size)
    return counts


def publish(staging, data_dir: Path, name: str) -> None:
    """The dataset into place, its caches beside it. In this order, a kill between two steps
    leaves a dataset with its own caches or with none (rebuilt on first use), never another's."""
    from bigmodel.data.prepare import stale_caches
    from bigmodel.data.token_cache import TOKENIZERS_DIR, TOKENS_DIR

    for path in stale_caches(data_dir, name):  # the token cache's slug of tfds:NAME is NAME
        path.unlink(missing_ok=True)
    staging.publish(data_dir / name)
    for folder in (TOKENS_DIR, TOKENIZERS_DIR):
        for path in sorted((staging.root / folder).glob("*")):
            if not path.name.endswith(".lock"):
                (data_dir / folder).mkdir(parents=True, exist_ok=True)
                path.replace(data_dir / folder / path.name)


def summary_of(args, data_dir: Path, paths: list[Path], writer, tally: Tally, tokens: dict[str, int], vocab_size: int, seconds: float) -> dict:
    from bigmodel.data.prepare import SPLITS

    return {
        "name": args.name, "dataset": f"tfds:{args.name}", "data_dir": str(data_dir), "files": len(paths), "pattern": args.files, "format": args.format,
        "text_field": args.text_field, "validation_fraction": args.validation_fraction,
        "tokenizer": args.tokenizer, "vocab_size": vocab_size,
        "splits": {split: {"documents": writer.documents[split], "bytes": writer.text_bytes[split], "tokens": tokens[split]} for split in SPLITS},
        "empty_documents_skipped": tally.empty, "bad_documents_skipped": len(tally.bad), "bad_examples": tally.bad[:SKIPPED_EXAMPLES],
        "input_bytes": tally.input_bytes, "seconds": round(seconds, 3), "input_mb_per_s": round(tally.input_bytes / 1e6 / max(seconds, 1e-9), 3),
    }


def describe(summary: dict) -> str:
    data_dir = summary["data_dir"]
    lines = [f"prepared tfds:{summary['name']} in {data_dir} from {summary['files']} files "
             f"({summary['input_bytes'] / 1e6:,.1f} MB in {summary['seconds']:.1f} s, {summary['input_mb_per_s']:.2f} MB/s)"]
    for split, counts in summary["splits"].items():
        lines.append(f"  {split:<10} {counts['documents']:>10,} documents {counts['bytes']:>14,} bytes {counts['tokens']:>14,} tokens ({summary['tokenizer']})")
    if summary["bad_documents_skipped"] or summary["empty_documents_skipped"]:
        lines.append(f"  skipped {summary['bad_documents_skipped']:,} bad and {summary['empty_documents_skipped']:,} empty documents"
                     + (f"; first: {summary['bad_examples'][0]}" if summary["bad_examples"] else ""))
    lines.append(f"train on it with: --config.data.dataset=tfds:{summary['name']} --config.data.data_dir={data_dir}"
                 + ("" if summary["tokenizer"] == "bytes" else f" --config.data.tokenizer={summary['tokenizer']} --config.data.vocab_size={summary['vocab_size']}"))
    return "\n".join(lines)


def prepare(args: argparse.Namespace) -> dict:
    """Build the dataset; returns its summary. ConfigError for bad input (nothing left behind)."""
    from tqdm import tqdm

    from bigmodel.data.documents import find_files
    from bigmodel.data.prepare import SUMMARY_FILE, SplitWriter, Staging, write_metadata
    from bigmodel.data.sources import resolve_data_dir

    data_dir = Path(resolve_data_dir({"data_dir": args.data_dir}))
    target = data_dir / args.name
    paths = find_files(args.files)
    vocab_size = check_arguments(args, target)
    staging = Staging(data_dir, args.name)
    start = time.perf_counter()
    try:
        staging.claim()
        writer = SplitWriter(staging.version_dir, args.name, args.validation_fraction)
        total = sum(path.stat().st_size for path in paths)
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"prepare {args.name}", dynamic_ncols=True,
                  disable=not sys.stderr.isatty()) as bar:
            tally = Tally(bar)
            try:
                write_documents(args, paths, writer, tally)
            finally:
                writer.close()
        writer.check_both_splits()
        write_metadata(staging.version_dir, args.name, writer, f"Prepared by bigmodel from {len(paths)} files matching {args.files}.")
        tokens = count_tokens(staging, args.name, args.tokenizer, vocab_size)
        summary = summary_of(args, data_dir, paths, writer, tally, tokens, vocab_size, time.perf_counter() - start)
        files.write_json_atomic(staging.dataset_dir / SUMMARY_FILE, summary)
        publish(staging, data_dir, args.name)
    finally:
        staging.discard()
    return summary


def prepare_command(args: argparse.Namespace) -> int:
    try:
        summary = prepare(args)
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001 — only storage failures are handled; the rest re-raise
        reason = files.storage_failure(error)
        if reason is None:
            raise
        print(f"error: storage failed while preparing {args.name!r} ({reason}): free space or fix the storage, then rerun", file=sys.stderr)
        return exit_codes.STORAGE_ERROR
    print(describe(summary))
    return exit_codes.OK
