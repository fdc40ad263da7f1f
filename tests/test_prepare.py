"""`prepare`: text, JSONL and Parquet files become a tfds dataset that `tfds:NAME` reads and trains on.

Every dataset here is read back through `bigmodel.data.sources.open_split`, the reader of any
`tfds:` dataset, never through the writer's own objects.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest

from bigmodel.cli import main
from bigmodel.exit_codes import ConfigError
from bigmodel.data.prepare import validation_share
from bigmodel.data.sources import open_split, read_texts


def write_inputs(folder: Path) -> dict[str, list[str]]:
    """Two text files, a JSONL and a Parquet file; returns the documents each holds."""
    import pyarrow
    import pyarrow.parquet

    folder.mkdir(parents=True, exist_ok=True)
    texts = {"a.txt": "The first file.\nIts second line, ünïcode 😀\n", "b.txt": "Another file, one line."}
    for name, text in texts.items():
        (folder / name).write_text(text)
    lines = [f"line {index}: {'word ' * index}" for index in range(40)]
    (folder / "c.jsonl").write_text("".join(json.dumps({"body": line, "id": index}) + "\n" for index, line in enumerate(lines)) + "\n")
    rows = [f"row {index} of the table" for index in range(30)]
    pyarrow.parquet.write_table(pyarrow.table({"body": rows, "n": list(range(30))}), folder / "d.parquet")
    packed = [f"compressed {index}" for index in range(5)]
    (folder / "e.jsonl.gz").write_bytes(gzip.compress("".join(json.dumps({"body": line}) + "\n" for line in packed).encode()))
    return {"text": list(texts.values()), "jsonl": lines + packed, "parquet": rows}


def prepare(*arguments: str) -> int:
    return main(["prepare", *arguments])


def split_texts(name: str, data_dir: Path) -> dict[str, list[str]]:
    return {split: read_texts(open_split(f"tfds:{name}", split, str(data_dir))) for split in ("train", "validation")}


def test_text_jsonl_and_parquet_files_become_a_tfds_dataset_split_by_hash(tmp_path, capsys):
    inputs = write_inputs(tmp_path / "in")
    data_dir = tmp_path / "data"
    assert prepare("--name", "mixed", "--files", str(tmp_path / "in" / "*"), "--text_field", "body",
                   "--data_dir", str(data_dir), "--validation_fraction", "0.2") == 0
    assert "train on it with: --config.data.dataset=tfds:mixed" in capsys.readouterr().out
    splits = split_texts("mixed", data_dir)
    everything = [text for documents in inputs.values() for text in documents]
    assert sorted(splits["train"] + splits["validation"]) == sorted(everything)  # each document once, text exact
    assert sorted(splits["validation"]) == sorted(text for text in everything if validation_share(text) < 0.2)
    assert 5 <= len(splits["validation"]) <= 25
    summary = json.loads((data_dir / "mixed" / "prepare.json").read_text())
    for split, texts in splits.items():
        counts = summary["splits"][split]
        assert counts["documents"] == len(texts) and counts["bytes"] == sum(len(text.encode()) for text in texts)
        assert counts["tokens"] == counts["bytes"] + 2 * (len(texts) - 1)  # bytes, and a blank line between documents
        cached = np.load(data_dir / "bigmodel_tokens" / f"mixed-{split}-bytes.npy")  # what training will read
        assert cached.size == counts["tokens"]
    assert not list(data_dir.glob(".*"))  # the staging directory is gone


def test_a_small_corpus_still_gets_one_validation_document(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(3):
        (folder / f"{index}.txt").write_text(f"document {index}\n")
    assert prepare("--name", "small", "--files", str(folder / "*.txt"), "--data_dir", str(tmp_path / "data")) == 0
    splits = split_texts("small", tmp_path / "data")
    lowest = min((f"document {index}\n" for index in range(3)), key=validation_share)
    assert splits["validation"] == [lowest] and len(splits["train"]) == 2


def test_an_existing_name_is_refused_unless_force_and_a_leftover_staging_is_removed(tmp_path, capsys):
    folder, data_dir = tmp_path / "in", tmp_path / "data"
    folder.mkdir()
    for index in range(4):
        (folder / f"{index}.txt").write_text(f"old {index}\n")
    assert prepare("--name", "corpus", "--files", str(folder / "*.txt"), "--data_dir", str(data_dir)) == 0
    before = sorted(path.read_bytes() for path in (data_dir / "corpus").rglob("*") if path.is_file())
    capsys.readouterr()
    assert prepare("--name", "corpus", "--files", str(folder / "*.txt"), "--data_dir", str(data_dir)) == 2
    assert "already holds a dataset named 'corpus'" in capsys.readouterr().err
    assert sorted(path.read_bytes() for path in (data_dir / "corpus").rglob("*") if path.is_file()) == before
    leftover = data_dir / ".corpus.preparing" / "corpus" / "1.0.0"  # as a prepare killed mid-write leaves it
    leftover.mkdir(parents=True)
    (leftover / "corpus-train.array_record-00000-of-00001").write_bytes(b"torn")
    for index in range(4):
        (folder / f"{index}.txt").write_text(f"new {index}\n")
    assert prepare("--name", "corpus", "--files", str(folder / "*.txt"), "--data_dir", str(data_dir), "--force") == 0
    splits = split_texts("corpus", data_dir)
    assert sorted(splits["train"] + splits["validation"]) == [f"new {index}\n" for index in range(4)]
    tokens = np.load(data_dir / "bigmodel_tokens" / "corpus-train-bytes.npy")  # the old dataset's cache was replaced
    assert bytes(tokens.astype(np.uint8)).decode().startswith("new")
    assert not (data_dir / ".corpus.preparing").exists()


def test_skip_bad_counts_what_it_skipped(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.txt").write_text("a good document\n")
    (folder / "latin1.txt").write_bytes("first line\ncaf\xe9\n".encode("latin-1"))
    (folder / "records.jsonl").write_text('{"text": "fine"}\nnot json\n{"other": 1}\n{"text": "also fine"}\n')
    arguments = ["--name", "rough", "--files", str(folder / "*"), "--data_dir", str(tmp_path / "data")]
    assert prepare(*arguments) == 2
    assert f"error: {folder / 'latin1.txt'}:2: byte 0xe9 is not UTF-8 text" in capsys.readouterr().err
    assert prepare(*arguments, "--skip_bad") == 0
    summary = json.loads((tmp_path / "data" / "rough" / "prepare.json").read_text())
    assert summary["bad_documents_skipped"] == 3
    assert summary["bad_examples"][1].startswith(f"{folder / 'records.jsonl'}:2: not JSON")
    assert sum(split["documents"] for split in summary["splits"].values()) == 3
    assert "skipped 3 bad and 0 empty documents" in capsys.readouterr().out


STDLIB = Path(sysconfig.get_paths()["stdlib"])


def test_python_standard_library_sources_with_a_byte_level_bpe(tmp_path):
    """A real corpus nobody here wrote: Python's own json and email packages (~80 files, ~0.7 MB)."""
    pattern = str(STDLIB / "[je][sm][oa]*" / "**" / "*.py")  # json/ and email/, subpackages included
    paths = sorted(path for path in STDLIB.glob("[je][sm][oa]*/**/*.py"))
    assert len(paths) > 30
    data_dir = tmp_path / "data"
    assert prepare("--name", "stdlib", "--files", pattern, "--data_dir", str(data_dir), "--validation_fraction", "0.1",
                   "--tokenizer", "bpe", "--vocab_size", "1024") == 0
    summary = json.loads((data_dir / "stdlib" / "prepare.json").read_text())
    expected = [text for text in (path.read_text(encoding="utf-8") for path in paths) if text]
    assert sum(split["documents"] for split in summary["splits"].values()) == len(expected)
    assert sum(split["bytes"] for split in summary["splits"].values()) == sum(len(text.encode()) for text in expected)
    from bigmodel.data.tokenizers import load_tokenizer_file

    tokenizer = load_tokenizer_file("bpe", data_dir / "bigmodel_tokenizers" / "stdlib-bpe1024.json")
    assert tokenizer.vocab_size == 1024
    source = (STDLIB / "json" / "decoder.py").read_text()
    assert tokenizer.decode(tokenizer.encode(source)) == source
    first, _, rest = source.partition("\n")
    assert tokenizer.encode(source) == tokenizer.encode(first) + [tokenizer.newline_id] + tokenizer.encode(rest)  # line by line
    from bigmodel.inference.export import describe_tokenizer, tokenizer_from

    assert tokenizer_from(json.loads(json.dumps(describe_tokenizer(tokenizer)))).encode(source) == tokenizer.encode(source)
    assert len(tokenizer.encode(source)) < len(source.encode()) / 2.5  # merges learned from Python code
    train = summary["splits"]["train"]
    assert train["bytes"] / train["tokens"] > 2.5


def test_a_prepare_killed_midway_leaves_no_dataset_and_the_next_one_finishes(tmp_path):
    """SIGKILL while the records are being written: no `tfds:NAME` to read, and a rerun succeeds."""
    corpus, data_dir = tmp_path / "corpus", tmp_path / "data"
    corpus.mkdir()
    for index in range(400):  # ~40 MB: seconds of work, however fast the machine
        (corpus / f"{index}.txt").write_text(f"document {index}\n" + "x" * 100_000)
    command = [sys.executable, "-m", "bigmodel", "prepare", "--name", "killed", "--files", str(corpus / "*.txt"), "--data_dir", str(data_dir)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    staged = data_dir / ".killed.preparing" / "killed" / "1.0.0" / "killed-train.array_record-00000-of-00001"
    deadline = time.monotonic() + 60
    while not (staged.exists() and staged.stat().st_size) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert not (data_dir / "killed").exists() and (data_dir / ".killed.preparing").exists()
    with pytest.raises(ConfigError, match="tfds has no dataset .killed."):
        open_split("tfds:killed", "train", str(data_dir))
    for path in corpus.glob("*.txt"):
        path.write_text(path.read_text()[:20])
    assert prepare("--name", "killed", "--files", str(corpus / "*.txt"), "--data_dir", str(data_dir)) == 0
    assert sum(len(texts) for texts in split_texts("killed", data_dir).values()) == 400
    assert not (data_dir / ".killed.preparing").exists()


@pytest.mark.slow  # an 8-step run (its compiles shared with tiny_run's through the compilation cache)
def test_a_run_trains_and_evaluates_on_a_prepared_dataset(tmp_path):
    from conftest import TINY_RUN

    data_dir = tmp_path / "data"
    assert prepare("--name", "pylib", "--files", str(STDLIB / "json" / "*.py"), "--data_dir", str(data_dir),
                   "--validation_fraction", "0.3") == 0
    settings = {**TINY_RUN, "data.data_dir": str(data_dir), "data.dataset": "tfds:pylib"}
    workdir = tmp_path / "run"
    assert main(["train", "--config", "configs/lm.py:L1", "--workdir", str(workdir),
                 *[f"--config.{key}={value}" for key, value in settings.items()]]) == 0
    summary = json.loads((workdir / "summary.json").read_text())  # evaluated at its last step on the validation split
    assert summary["final_eval_loss"] < np.log(256)  # learned something about Python source in 8 steps
    assert json.loads((workdir / "config.json").read_text())["data"]["dataset"] == "tfds:pylib"
