"""Write a user's documents as a tfds text dataset (array_record) that `tfds:<name>` reads.

The layout is the one `tfds build --file_format=array_record` writes and `sources.tfds_split`
reads through `tfds.builder` / `tfds.data_source`:

    <data_dir>/<name>/1.0.0/dataset_info.json, features.json,
                            <name>-train.array_record-00000-of-00001, <name>-validation.array_record-...
    <data_dir>/<name>/prepare.json      what went in and how much: documents, bytes, tokens per split

Each record is a serialized example with one `text` feature, as tfds itself writes it. The
split is a pure function of each document's text: a document is validation when the BLAKE2b
hash of its UTF-8 bytes, read as a fraction of 2^64, is under the validation fraction. Equal
documents land in the same split, so a duplicated document never leaks across. When no hash
falls under the fraction (a small corpus), the document with the lowest hash is validation:
the split is never empty.

Everything is written under `<data_dir>/.<name>.preparing/` (`Staging`) and renamed into place
at the very end, so a prepare killed at any instant leaves nothing that looks like a dataset; the
next prepare of that name removes the leftover.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from bigmodel.exit_codes import ConfigError
from bigmodel.files import exclusive_workdir, WorkdirBusy

VERSION = "1.0.0"
SPLITS = ("train", "validation")
SUMMARY_FILE = "prepare.json"
HASH_RANGE = float(2**64)


def validation_share(text: str) -> float:
    """Where `text` falls in [0, 1): below the validation fraction means validation."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / HASH_RANGE


def record_path(version_dir: Path, name: str, split: str) -> Path:
    """tfds's file name for the only shard of a split (its default filename template)."""
    return version_dir / f"{name}-{split}.array_record-00000-of-00001"


class SplitWriter:
    """Appends serialized `{"text": ...}` examples to each split's array_record file, counting them.

    Holds back the train document with the lowest hash, so that `close` can make it the
    validation split's one document when no other document went there.
    """

    def __init__(self, version_dir: Path, name: str, validation_fraction: float):
        import tensorflow_datasets as tfds
        from array_record.python.array_record_module import ArrayRecordWriter

        self.features = tfds.features.FeaturesDict({"text": tfds.features.Text()})
        self._serializer = tfds.core.example_serializer.ExampleSerializer(self.features.get_serialized_info())
        # group_size:1 is what tfds writes: every record readable on its own (random access).
        self._writers = {split: ArrayRecordWriter(str(record_path(version_dir, name, split)), "group_size:1") for split in SPLITS}
        self.fraction = validation_fraction
        self.documents = dict.fromkeys(SPLITS, 0)
        self.text_bytes = dict.fromkeys(SPLITS, 0)  # UTF-8 bytes of the documents
        self.record_bytes = dict.fromkeys(SPLITS, 0)  # serialized, as tfds's split info counts them
        self._held: tuple[float, str] | None = None

    def _write(self, split: str, text: str) -> None:
        record = self._serializer.serialize_example(self.features.encode_example({"text": text}))
        self._writers[split].write(record)
        self.documents[split] += 1
        self.text_bytes[split] += len(text.encode("utf-8"))
        self.record_bytes[split] += len(record)

    def add(self, text: str) -> None:
        share = validation_share(text)
        if share < self.fraction:
            self._write("validation", text)
        elif self._held is None or share < self._held[0]:
            if self._held is not None:
                self._write("train", self._held[1])
            self._held = (share, text)
        else:
            self._write("train", text)

    def close(self) -> None:
        """Place the held document, then close the files."""
        if self._held is not None:
            self._write("validation" if self.documents["validation"] == 0 else "train", self._held[1])
            self._held = None
        for writer in self._writers.values():
            writer.close()

    def check_both_splits(self) -> None:
        """ConfigError unless there were documents enough for both splits."""
        total = sum(self.documents.values())
        if total < 2:
            raise ConfigError(f"the files hold {total} non-empty document{'s' * (total != 1)}: a dataset needs at least 2, one for each split")

    def split_infos(self) -> list:
        import tensorflow_datasets as tfds

        return [tfds.core.SplitInfo(name=split, shard_lengths=[self.documents[split]], num_bytes=self.record_bytes[split]) for split in SPLITS]


def write_metadata(version_dir: Path, name: str, writer: SplitWriter, description: str) -> None:
    """dataset_info.json and features.json, so `tfds.builder(name, data_dir=...)` finds the files."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core import naming

    template = naming.ShardedFileTemplate(data_dir=version_dir, dataset_name=name, filetype_suffix="array_record")
    tfds.folder_dataset.write_metadata(
        data_dir=version_dir, features=writer.features, split_infos=writer.split_infos(), filename_template=template,
        version=VERSION, check_data=False,  # its check reads through as_dataset, which needs TensorFlow
        description=description)


def staged_source(version_dir: Path, split: str):
    """A split of the staged dataset, read through tfds as training will read it."""
    import tensorflow_datasets as tfds

    return tfds.builder_from_directory(str(version_dir)).as_data_source(split=split)


class Staging:
    """`<data_dir>/.<name>.preparing/`: claimed with a lock (a second prepare of the same name is
    refused), emptied of any earlier attempt's leftovers, renamed into place by `publish`, and
    removed by `discard` when the prepare fails."""

    def __init__(self, data_dir: Path, name: str):
        self.data_dir, self.name = data_dir, name
        self.root = data_dir / f".{name}.preparing"
        self.dataset_dir = self.root / name
        self.version_dir = self.dataset_dir / VERSION
        self._lock = None

    def claim(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._lock = exclusive_workdir(self.root, "prepare")
        except WorkdirBusy:
            raise ConfigError(f"another prepare of {self.name!r} is writing {self.root}: wait for it to finish") from None
        for leftover in self.root.iterdir():  # a killed attempt's files: no live process owns them
            if leftover.name != ".lock":
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        self.version_dir.mkdir(parents=True)

    def publish(self, target: Path) -> None:
        """Move the dataset to `target`, replacing one there (--force) only once the new one is
        whole; the replaced one goes with the staging directory (`discard`)."""
        if target.exists():
            os.replace(target, self.root / "replaced")
        os.replace(self.dataset_dir, target)

    def discard(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def stale_caches(data_dir: Path, slug: str) -> list[Path]:
    """Token caches and tokenizers built from an earlier dataset of this name: wrong once it is replaced."""
    from bigmodel.data.token_cache import TOKENIZERS_DIR, TOKENS_DIR

    patterns = [(TOKENS_DIR, f"{slug}-{split}-*") for split in SPLITS] + [(TOKENIZERS_DIR, f"{slug}-{kind}*") for kind in ("spm", "bpe")]
    return sorted(path for folder, pattern in patterns for path in (data_dir / folder).glob(pattern))
