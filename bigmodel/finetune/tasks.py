"""Classification tasks: where the labelled texts come from and how they split into train,
validation and test. Texts only: the run's own tokenizer turns them into tokens (`batches.py`).

`kjv_books`: a window of `task.verses` consecutive verses (default 1) of the built-in King James
Bible, labelled with its book's group (`BOOK_GROUPS`: 6 classes covering all 66 books in canonical
order). Splits are by chapter, so a test chapter is never seen in any form: chapter `i` (0-based,
Genesis 1 … Revelation 22) is test when `i % 20 == 19`, exactly the chapters the language model
held out for its own validation (`bigmodel/data/kjv.py`), so pretraining never read them either;
validation when `i % 20 == 9`; train otherwise. The classes stay as imbalanced as the Bible is
(Psalms alone is 8% of the verses; the prophets are the largest group), and the per-class table
shows it: no resampling.

`tfds:<name>[/<config>]`: any tfds text-classification dataset someone already prepared as
array_record (`tfds build <name> --file_format=array_record`), with a text feature
(`task.text_feature`) and a ClassLabel feature (`task.label_feature`); bigmodel never downloads.
Its `train` and `test` splits are used as they are; its `validation` split if it has one, else
every 10th train example (index % 10 == 9), which then leaves train.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bigmodel.config import ConfigError
from bigmodel.data.names import TFDS_PREFIX, check_tfds_name
from bigmodel.data.sources import as_text, tfds_builder

KJV_TASK = "kjv_books"
# The conventional division of the Protestant canon, every book exactly once (a test checks it
# against the corpus), in canonical order. Acts goes with the gospels (it is Luke's second
# volume), Revelation with the letters (it opens as letters to seven churches); Lamentations,
# though poetry, stands with Jeremiah among the prophets, where English Bibles place it.
BOOK_GROUPS = {
    "law": ("Genesis", "Exodus", "Leviticus", "Numbers", "Deuteronomy"),
    "history": ("Joshua", "Judges", "Ruth", "1 Samuel", "2 Samuel", "1 Kings", "2 Kings", "1 Chronicles",
                "2 Chronicles", "Ezra", "Nehemiah", "Esther"),
    "poetry": ("Job", "Psalms", "Proverbs", "Ecclesiastes", "Song of Solomon"),
    "prophets": ("Isaiah", "Jeremiah", "Lamentations", "Ezekiel", "Daniel", "Hosea", "Joel", "Amos", "Obadiah",
                 "Jonah", "Micah", "Nahum", "Habakkuk", "Zephaniah", "Haggai", "Zechariah", "Malachi"),
    "gospels": ("Matthew", "Mark", "Luke", "John", "Acts"),
    "letters": ("Romans", "1 Corinthians", "2 Corinthians", "Galatians", "Ephesians", "Philippians", "Colossians",
                "1 Thessalonians", "2 Thessalonians", "1 Timothy", "2 Timothy", "Titus", "Philemon", "Hebrews",
                "James", "1 Peter", "2 Peter", "1 John", "2 John", "3 John", "Jude", "Revelation"),
}
GROUP_OF_BOOK = {book: index for index, books in enumerate(BOOK_GROUPS.values()) for book in books}
CHAPTER_CYCLE = 20
TEST_CHAPTER, VALIDATION_CHAPTER = 19, 9  # chapter i's split is decided by i % CHAPTER_CYCLE
HELD_OUT_EVERY = 10  # tfds datasets without a validation split: every 10th train example


@dataclasses.dataclass(frozen=True)
class Split:
    texts: list[str]
    labels: np.ndarray  # int32, one per text

    def __len__(self) -> int:
        return len(self.texts)


@dataclasses.dataclass(frozen=True)
class TaskData:
    name: str
    class_names: tuple[str, ...]
    train: Split
    validation: Split
    test: Split
    source: str  # where each split came from, in words (recorded with the test metrics)


def check_task_name(name: str) -> None:
    if name != KJV_TASK and not (name.startswith(TFDS_PREFIX) and len(name) > len(TFDS_PREFIX)):
        raise ConfigError(f"--task {name!r} is unknown: use {KJV_TASK} (built in) or tfds:<name>[/<config>] of a prepared "
                          "tfds text-classification dataset")
    if name.startswith(TFDS_PREFIX):
        check_tfds_name(name.removeprefix(TFDS_PREFIX), f"--task {name}")


def load_task(task_config, data_dir: str, seed: int) -> TaskData:
    """The task's three splits; train capped at `task.max_train_examples` (0: all), the same
    seeded subset for every run of one seed (a pretrained run and its scratch baseline)."""
    check_task_name(task_config.name)
    if task_config.name == KJV_TASK:
        task = kjv_books(data_dir, task_config.verses)
    else:
        task = tfds_task(task_config.name, data_dir, task_config.text_feature, task_config.label_feature)
    for split_name in ("train", "validation", "test"):
        if not len(getattr(task, split_name)):
            raise ConfigError(f"--task {task.name} has no {split_name} examples: it needs train, validation and test data")
    return dataclasses.replace(task, train=subsample(task.train, task_config.max_train_examples, seed))


def subsample(split: Split, max_examples: int, seed: int) -> Split:
    """The first `max_examples` of a seeded permutation, kept in their original order."""
    if not max_examples or max_examples >= len(split):
        return split
    keep = np.sort(np.random.default_rng(seed).permutation(len(split))[:max_examples])
    return Split([split.texts[index] for index in keep], split.labels[keep])


# ----------------------------------------------------------------------------- kjv_books


def chapter_split(chapter_index: int) -> str:
    position = chapter_index % CHAPTER_CYCLE
    return "test" if position == TEST_CHAPTER else "validation" if position == VALIDATION_CHAPTER else "train"


def verse_windows(chapter_text: str, verses: int) -> list[str]:
    """Consecutive, non-overlapping windows of `verses` verses (a chapter's verses are its
    lines); a chapter's last window may be shorter."""
    lines = chapter_text.split("\n")
    return ["\n".join(lines[start : start + verses]) for start in range(0, len(lines), verses)]


def kjv_chapters(data_dir: str) -> list[dict]:
    """Every chapter of the kjv builder (both of its splits), in canonical order."""
    from bigmodel.data.kjv import prepare_kjv  # imports tfds: only when the data is read

    builder = prepare_kjv(data_dir)
    chapters = []
    for split in ("train", "validation"):
        source = builder.as_data_source(split=split)
        chapters += [{"book": as_text(record["book"]), "text": as_text(record["text"]), "index": int(record["chapter_index"])}
                     for record in (source[index] for index in range(len(source)))]
    return sorted(chapters, key=lambda chapter: chapter["index"])


def kjv_books(data_dir: str, verses: int) -> TaskData:
    texts = {"train": [], "validation": [], "test": []}
    labels = {split: [] for split in texts}
    for chapter in kjv_chapters(data_dir):
        split = chapter_split(chapter["index"])
        windows = verse_windows(chapter["text"], verses)
        texts[split] += windows
        labels[split] += [GROUP_OF_BOOK[chapter["book"]]] * len(windows)
    splits = {split: Split(texts[split], np.asarray(labels[split], np.int32)) for split in texts}
    source = (f"kjv, {verses} verse(s) per example; chapter i is test when i % {CHAPTER_CYCLE} == {TEST_CHAPTER} "
              f"(the language model's own held-out chapters), validation when i % {CHAPTER_CYCLE} == {VALIDATION_CHAPTER}, else train")
    return TaskData(KJV_TASK, tuple(BOOK_GROUPS), splits["train"], splits["validation"], splits["test"], source)


# ----------------------------------------------------------------------------- tfds:<name>


def class_names(builder, name: str, text_feature: str, label_feature: str) -> tuple[str, ...]:
    """The label feature's class names, after checking both features exist and fit the task."""
    import tensorflow_datasets as tfds

    features = builder.info.features
    for feature, key in ((text_feature, "text_feature"), (label_feature, "label_feature")):
        if feature not in features:
            raise ConfigError(f"--task tfds:{name} has no {feature!r} feature (it has {', '.join(features)}): "
                              f"set --config.task.{key} to one of them")
    if not isinstance(features[label_feature], tfds.features.ClassLabel):
        raise ConfigError(f"--task tfds:{name}: feature {label_feature!r} is {type(features[label_feature]).__name__}, not a "
                          "ClassLabel: set --config.task.label_feature to the class label")
    return tuple(features[label_feature].names)


def read_tfds_split(name: str, split: str, data_dir: str, text_feature: str, label_feature: str) -> Split:
    import tensorflow_datasets as tfds

    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as error:  # tfds raises several types here; all mean "not prepared as array_record"
        raise ConfigError(f"--task tfds:{name} split {split!r} cannot be read from {data_dir} ({type(error).__name__}): prepare it "
                          f"first with: tfds build {name} --file_format=array_record --data_dir={data_dir}") from None
    records = [source[index] for index in range(len(source))]
    return Split([as_text(record[text_feature]) for record in records],
                 np.asarray([int(record[label_feature]) for record in records], np.int32))


def tfds_task(task_name: str, data_dir: str, text_feature: str, label_feature: str) -> TaskData:
    name = task_name.removeprefix(TFDS_PREFIX)
    builder = tfds_builder(name, data_dir, f"--task tfds:{name}")
    names = class_names(builder, name, text_feature, label_feature)
    known = list(builder.info.splits.keys())  # empty when tfds knows no split names (tfds.testing.mock_data)
    if known and ("train" not in known or "test" not in known):
        raise ConfigError(f"--task {task_name} has splits {', '.join(known)}: it needs train and test")
    read = lambda split: read_tfds_split(name, split, data_dir, text_feature, label_feature)  # noqa: E731
    train = read("train")
    if not known or "validation" in known:
        validation, held_out = read("validation"), "its validation split"
    else:
        index = np.arange(len(train))
        is_held_out = index % HELD_OUT_EVERY == HELD_OUT_EVERY - 1
        validation = Split([train.texts[i] for i in index[is_held_out]], train.labels[is_held_out])
        train = Split([train.texts[i] for i in index[~is_held_out]], train.labels[~is_held_out])
        held_out = f"every {HELD_OUT_EVERY}th train example (no validation split)"
    source = f"tfds {name} from {data_dir}: train, test, and for validation {held_out}"
    return TaskData(task_name, names, train, validation, read("test"), source)
