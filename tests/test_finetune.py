"""`bigmodel finetune`: the metrics against values worked out by hand, the kjv_books task and its
splits, pooling under padding, and the command end to end on the session's tiny L1 run (conftest):
test metrics consistent with their confusion matrix, the parent run never written, a stopped run
resuming to the same parameters and metrics, a frozen backbone left bit-identical, early stopping,
a tfds dataset through `tfds.testing.mock_data`, and bad inputs refused with one line.
"""

import json
import warnings
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigmodel.cli import main
from bigmodel.finetune import classification_metrics
from bigmodel.finetune.batches import train_indices
from bigmodel.finetune.tasks import BOOK_GROUPS, chapter_split, kjv_books, verse_windows

# ----------------------------------------------------------------------------- metrics by hand


def test_metrics_match_values_worked_out_by_hand():
    # 3 classes, 10 examples. Confusion (rows true, columns predicted):
    #   a: [2, 1, 0]   b: [0, 3, 1]   c: [1, 0, 2]
    labels = [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    predictions = [0, 0, 1, 1, 1, 1, 2, 2, 2, 0]
    confusion = classification_metrics.confusion_matrix(labels, predictions, 3)
    assert confusion.tolist() == [[2, 1, 0], [0, 3, 1], [1, 0, 2]]
    report = classification_metrics.classification_report(confusion, ("a", "b", "c"))
    # precision = diagonal / column sum: a 2/3, b 3/4, c 2/3; recall = diagonal / row sum: a 2/3, b 3/4, c 2/3
    precision = [2 / 3, 3 / 4, 2 / 3]
    assert [row["precision"] for row in report["per_class"]] == pytest.approx(precision)
    assert [row["recall"] for row in report["per_class"]] == pytest.approx(precision)
    assert [row["f1"] for row in report["per_class"]] == pytest.approx(precision)  # F1 of p = r is p
    assert [row["support"] for row in report["per_class"]] == [3, 4, 3]
    assert report["accuracy"] == pytest.approx(7 / 10)
    assert report["macro"]["f1"] == pytest.approx((2 / 3 + 3 / 4 + 2 / 3) / 3)  # 0.69444
    assert report["micro"] == pytest.approx({"precision": 0.7, "recall": 0.7, "f1": 0.7})


def test_a_class_never_predicted_and_a_class_never_present_score_zero_not_nan():
    # true:      a a a b b    (c never occurs)      predicted: a a c a a   (b never predicted)
    report = classification_metrics.classification_report(classification_metrics.confusion_matrix([0, 0, 0, 1, 1], [0, 0, 2, 0, 0], 3), ("a", "b", "c"))
    a, b, c = report["per_class"]
    assert (a["precision"], a["recall"]) == pytest.approx((2 / 4, 2 / 3))
    assert a["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))  # 4/7
    assert (b["precision"], b["recall"], b["f1"]) == (0.0, 0.0, 0.0)  # never predicted
    assert (c["precision"], c["recall"], c["f1"], c["support"], c["predicted"]) == (0.0, 0.0, 0.0, 0, 1)
    assert report["macro"]["precision"] == pytest.approx(0.5 / 3) and report["macro"]["f1"] == pytest.approx(4 / 7 / 3)
    assert report["accuracy"] == pytest.approx(0.4)
    table = classification_metrics.format_table(report)
    assert table.splitlines()[1].split() == ["a", "0.500", "0.667", "0.571", "3", "60.0%"]
    with pytest.raises(ValueError, match="must lie in 0 … 2"):
        classification_metrics.confusion_matrix([0, 3], [0, 0], 3)


# ----------------------------------------------------------------------------- the kjv_books task


def test_book_groups_cover_every_book_of_the_corpus_once_in_canonical_order():
    from bigmodel.data.kjv import locate_kjv_jsonl, read_verses

    books = list(dict.fromkeys(verse["book"] for verse in read_verses(locate_kjv_jsonl())))
    grouped = [book for group in BOOK_GROUPS.values() for book in group]
    assert len(books) == 66 and grouped == books
    assert [len(group) for group in BOOK_GROUPS.values()] == [5, 12, 5, 17, 5, 22]


def test_kjv_books_splits_by_whole_chapters_and_tests_on_the_language_models_held_out_chapters(kjv_data_dir):
    from bigmodel.data.kjv import is_validation_chapter

    assert [chapter_split(index) for index in (0, 9, 19, 29, 39)] == ["train", "validation", "test", "validation", "test"]
    assert all(chapter_split(index) == "test" for index in range(1189) if is_validation_chapter(index))
    assert verse_windows("v1\nv2\nv3\nv4\nv5", 2) == ["v1\nv2", "v3\nv4", "v5"]
    task = kjv_books(kjv_data_dir, verses=1)
    assert task.class_names == tuple(BOOK_GROUPS)
    assert len(task.train) + len(task.validation) + len(task.test) == 31103  # every verse once
    assert len(task.test) == 1573 and len(task.validation) == 1484
    from bigmodel.data.kjv import prepare_kjv
    from bigmodel.data.sources import as_text

    held_out = prepare_kjv(kjv_data_dir).as_data_source(split="validation")  # the language model's held-out chapters
    assert task.test.texts == [verse for index in range(len(held_out)) for verse in as_text(held_out[index]["text"]).split("\n")]
    counts = np.bincount(task.test.labels, minlength=6)
    assert counts.min() > 0 and counts.max() / counts.min() > 2.5  # the imbalance stays visible
    assert task.test.texts[0].startswith("And Abraham journeyed from thence toward the south country")
    assert task.test.labels[0] == 0  # Genesis 20:1 (chapter index 19): law


# ----------------------------------------------------------------------------- batches and pooling


def test_each_epoch_visits_every_example_once_in_an_order_fixed_by_seed_and_step():
    n, batch = 10, 4
    first_epochs = np.concatenate([train_indices(step, batch, n, seed=3) for step in range(5)])  # 20 rows: two epochs
    assert sorted(first_epochs[:10]) == list(range(10)) and sorted(first_epochs[10:20]) == list(range(10))
    assert np.array_equal(train_indices(2, batch, n, seed=3), train_indices(2, batch, n, seed=3))
    assert not np.array_equal(first_epochs[:10], np.concatenate([train_indices(step, batch, n, seed=4) for step in range(5)])[:10])
    halves = [train_indices(2, batch, n, seed=3, process_index=index, process_count=2) for index in range(2)]
    assert np.array_equal(np.concatenate(halves), train_indices(2, batch, n, seed=3))


def test_pooling_reads_only_the_real_tokens_so_padding_changes_no_logit():
    from bigmodel.config import load_config
    from bigmodel.finetune.classifier import Classifier, pool
    from bigmodel.model import model_config

    hidden = jnp.arange(8, dtype=jnp.float32).reshape(2, 4, 1)  # rows 0..3 and 4..7
    np.testing.assert_allclose(pool(hidden, jnp.asarray([3, 4]), "last"), [[2.0], [7.0]])
    np.testing.assert_allclose(pool(hidden, jnp.asarray([3, 4]), "mean"), [[1.0], [5.5]])
    backbone = model_config(load_config("configs/lm.py:L1", {"model.d_model": "32", "model.n_heads": "2", "model.d_ff": "64"}))
    tokens = np.random.default_rng(0).integers(1, 256, (2, 12)).astype(np.int32)
    lengths = np.asarray([5, 12], np.int32)
    padded = [np.where(np.arange(12) < lengths[:, None], tokens, fill) for fill in (0, 7)]
    params = nn.unbox(jax.jit(Classifier(backbone, n_classes=3).init)(jax.random.key(0), tokens, lengths)["params"])  # pooling has no parameters
    params["head"]["kernel"] = jax.random.normal(jax.random.key(1), params["head"]["kernel"].shape)  # a zero head hides everything
    for pooling in ("last", "mean"):
        apply = jax.jit(Classifier(backbone, n_classes=3, pooling=pooling).apply)
        logits = np.asarray(apply({"params": params}, np.concatenate([tokens, *padded]), np.tile(lengths, 3))).reshape(3, 2, 3)
        np.testing.assert_allclose(logits[1:], logits[[0, 0]], rtol=1e-6, atol=1e-6, err_msg=pooling)
        alone = apply({"params": params}, tokens[:1, :5], lengths[:1])  # the first text with no padding at all
        np.testing.assert_allclose(alone, logits[0, :1], rtol=1e-5, atol=1e-6, err_msg=pooling)
        assert not np.allclose(logits[0, 0], logits[0, 1])  # the two texts do differ


# ----------------------------------------------------------------------------- end to end


FINETUNE = {"train.steps": 12, "train.batch_size": 8, "train.log_every": 4, "task.seq_len": 48, "task.verses": 3,
            "eval.every_steps": 4, "eval.max_examples": 48, "eval.batch_size": 64, "checkpoint.every_steps": 4,
            "optim.warmup_steps": 2, "optim.lr": 3e-3}


def finetune(run, workdir, *arguments, task="kjv_books", **settings):
    overrides = [f"--config.{key}={value}" for key, value in {**FINETUNE, **settings}.items()]
    return main(["finetune", "--from", str(run), "--task", task, "--workdir", str(workdir), *overrides, *arguments])


def saved_tree(workdir: Path) -> dict:
    """The newest checkpoint of a run as nested dicts of arrays (read without a target)."""
    import orbax.checkpoint as ocp

    directory = Path(workdir) / "checkpoints"
    step = max(int(path.name) for path in directory.iterdir() if path.name.isdigit())
    with warnings.catch_warnings():  # "sharding info not provided": the saved one is this machine's
        warnings.simplefilter("ignore", UserWarning)
        return ocp.PyTreeCheckpointer().restore(directory / str(step) / "default")


def leaves_equal(first, second) -> bool:
    return jax.tree.structure(first) == jax.tree.structure(second) and all(
        np.array_equal(a, b) for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second)))


@pytest.fixture(scope="module")
def finetuned(tiny_run, tmp_path_factory, fingerprint):
    before = fingerprint(tiny_run)
    workdir = tmp_path_factory.mktemp("finetune") / "books"
    assert finetune(tiny_run, workdir) == 0
    assert fingerprint(tiny_run) == before  # the parent run is only read
    return workdir


def test_test_metrics_agree_with_their_own_confusion_matrix(finetuned):
    results = json.loads((finetuned / "test_metrics.json").read_text())
    confusion = np.asarray(results["confusion_matrix"])
    assert confusion.shape == (6, 6) and results["class_names"] == list(BOOK_GROUPS)
    assert confusion.sum() == results["test_examples"] == results["examples"]["test"] == 543  # 1,573 verses in windows of 3 within chapters
    assert results["accuracy"] == pytest.approx(np.trace(confusion) / confusion.sum())
    for index, row in enumerate(results["per_class"]):
        assert row["support"] == confusion[index].sum() and row["predicted"] == confusion[:, index].sum()
        if row["predicted"]:
            assert row["precision"] == pytest.approx(confusion[index, index] / confusion[:, index].sum())
        assert row["recall"] == pytest.approx(confusion[index, index] / confusion[index].sum())
    assert results["macro"]["f1"] == pytest.approx(np.mean([row["f1"] for row in results["per_class"]]))
    assert results["micro"]["f1"] == pytest.approx(results["accuracy"])
    assert (results["init"], results["steps"], results["stopped_early"]) == ("pretrained", 12, False)
    assert results["backbone_step"] == 8 and results["best_step"] in (4, 8, 12)
    assert (finetuned / "confusion_matrix.png").stat().st_size > 10_000
    evals = [record for record in map(json.loads, (finetuned / "metrics.jsonl").read_text().splitlines()) if "eval_accuracy" in record]
    assert [record["step"] for record in evals] == [4, 8, 12]
    best = max(evals, key=lambda record: record["eval_macro_f1"])  # the first of equals: only a strict gain moves the best
    assert results["best_step"] == best["step"] and results["validation_macro_f1"] == pytest.approx(best["eval_macro_f1"])


@pytest.mark.slow  # two more fine-tunes, one stopped and resumed
def test_a_stopped_run_resumes_to_the_same_parameters_and_metrics(tiny_run, finetuned, tmp_path, capsys):
    workdir = tmp_path / "books"
    assert finetune(tiny_run, workdir, "--stop_at_step", "6") == 0
    assert not (workdir / "test_metrics.json").exists() and saved_tree(workdir)["train"]["step"] == 6
    assert finetune(tiny_run, workdir) == 0
    resumed, uninterrupted = (json.loads((path / "test_metrics.json").read_text()) for path in (workdir, finetuned))
    assert resumed == uninterrupted
    assert leaves_equal(saved_tree(workdir), saved_tree(finetuned))  # params, Adam moments, best params, counters
    capsys.readouterr()
    assert finetune(tiny_run, workdir) == 0
    assert "already finished" in capsys.readouterr().out


@pytest.fixture(scope="module")
def frozen_imdb(tiny_run, tmp_path_factory):
    """A frozen backbone under a head for a tfds dataset (tfds.testing.mock_data's imdb_reviews:
    random words, 2 classes, the same 24 examples in every split). One run for both tests: a run
    costs its compiles."""
    import tensorflow_datasets as tfds

    workdir = tmp_path_factory.mktemp("finetune") / "imdb"
    with tfds.testing.mock_data(num_examples=24):
        assert finetune(tiny_run, workdir, task="tfds:imdb_reviews", **{
            "task.data_dir": str(workdir.parent / "tfds"), "backbone.freeze": "true", "train.steps": 4, "eval.every_steps": 4}) == 0
    return workdir


def test_a_prepared_tfds_classification_dataset_is_a_task(frozen_imdb):
    results = json.loads((frozen_imdb / "test_metrics.json").read_text())
    assert results["class_names"] == ["neg", "pos"] and results["test_examples"] == 24
    assert np.asarray(results["confusion_matrix"]).sum() == 24 and results["examples"]["train"] == 24
    assert results["task"] == "tfds:imdb_reviews" and "its validation split" in results["source"]


def test_a_frozen_backbone_stays_bit_identical_to_the_pretrained_parameters(tiny_run, frozen_imdb):
    pretrained = saved_tree(tiny_run)["params"]
    del pretrained["lm_head"]  # the classifier has no LM head
    tree = saved_tree(frozen_imdb)
    for params in (tree["train"]["params"], tree["best_params"]):
        assert leaves_equal(params["backbone"], pretrained)
        assert np.abs(params["head"]["kernel"]).max() > 0  # while the head did train
    assert json.loads((frozen_imdb / "test_metrics.json").read_text())["frozen_backbone"] is True
    adam_moments = jax.tree.leaves(tree["train"]["opt_state"])
    head_size = sum(leaf.size for leaf in jax.tree.leaves(tree["train"]["params"]["head"]))
    assert sum(leaf.size for leaf in adam_moments if leaf.ndim) == 2 * head_size  # no moments for a frozen backbone


@pytest.mark.slow  # another fine-tune, evaluated every 2 steps
def test_early_stopping_ends_a_run_that_stops_improving_and_keeps_its_best_step(tiny_run, tmp_path):
    # A learning rate too small to move the validation loss in float32: every evaluation after
    # the first ties it, and only a strictly better one counts.
    workdir = tmp_path / "scratch"
    assert finetune(tiny_run, workdir, "--scratch", **{"optim.lr": 1e-12, "eval.metric": "loss", "eval.every_steps": 2,
                                                       "eval.patience": 2}) == 0
    results = json.loads((workdir / "test_metrics.json").read_text())
    assert (results["init"], results["steps"], results["best_step"], results["stopped_early"]) == ("scratch", 6, 2, True)
    assert results["validation_loss"] == pytest.approx(np.log(6), rel=1e-6)  # a zero head: uniform over 6 classes
    assert saved_tree(workdir)["train"]["step"] == 6  # the early stop's own checkpoint
    assert not leaves_equal(saved_tree(workdir)["best_params"]["backbone"], saved_tree(tiny_run)["params"])


def _config_only_run(directory: Path) -> Path:
    from bigmodel.config import load_config, to_json

    directory.mkdir(parents=True)
    (directory / "config.json").write_text(to_json(load_config("configs/lm.py:L1")))
    return directory


@pytest.mark.parametrize("case,message", [
    ("missing_from", "is not a bigmodel train run"),
    ("unknown_task", "--task 'kjv_verses' is unknown: use kjv_books"),
    ("train_workdir", "holds a bigmodel train run, not a fine-tuning run"),
    ("not_a_run", "exists and is not a bigmodel run"),
    ("no_checkpoint", "has no checkpoint yet: train it first, or pass --scratch"),
    ("bad_pooling", "config.classifier.pooling must be one of last, mean, got 'max'"),
    ("unknown_key", "unknown config key config.train.epochs"),
    ("flag_key", "config.task.name is set by --task"),
])
def test_bad_inputs_are_one_error_line_exit_2_and_write_nothing(tiny_run, tmp_path, capsys, fingerprint, case, message):
    workdir, run, task, extra = tmp_path / "out", tiny_run, "kjv_books", []
    if case == "missing_from":
        run = tmp_path / "no_such_run"
    elif case == "unknown_task":
        task = "kjv_verses"
    elif case == "train_workdir":
        workdir = _config_only_run(tmp_path / "other_train_run")
    elif case == "not_a_run":
        workdir.mkdir()
        (workdir / "notes.txt").write_text("mine")
    elif case == "no_checkpoint":
        run = _config_only_run(tmp_path / "untrained")
    elif case == "bad_pooling":
        extra = ["--config.classifier.pooling=max"]
    elif case == "unknown_key":
        extra = ["--config.train.epochs=3"]
    elif case == "flag_key":
        extra = ["--config.task.name=kjv_books"]
    before = fingerprint(tmp_path), fingerprint(tiny_run)
    capsys.readouterr()
    assert main(["finetune", "--from", str(run), "--task", task, "--workdir", str(workdir), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert (fingerprint(tmp_path), fingerprint(tiny_run)) == before


def test_downstream_vs_size_reads_finished_fine_tunes_into_a_table_and_a_figure(tiny_run, finetuned, tmp_path, load_tool, fingerprint):
    """tools/downstream_vs_size.py over a one-run sweep whose fine-tune is already done: it reads
    the result rather than training again, and its table holds the run's own test metrics."""
    import csv

    from bigmodel.scaling.registry import COLUMNS, write_registry

    sweep, out = tmp_path / "sweep", tmp_path / "downstream"
    sweep.mkdir()
    (sweep / "tiny").symlink_to(tiny_run)
    out.mkdir()
    (out / "tiny").symlink_to(finetuned)
    row = {**dict.fromkeys(COLUMNS, ""), "name": "tiny", "status": "done", "params": 1, "non_embedding_params": 12345,
           "tokens": 4096, "flops": 1, "final_loss": 4.0, "final_eval_loss": 4.0}
    write_registry(sweep, [row, {**row, "name": "stable-tiny", "role": "stable"}])  # stable runs are left out
    tool = load_tool("downstream_vs_size")
    before = fingerprint(finetuned)
    assert tool.main([str(sweep), "--task", "kjv_books", "--out", str(out)]) == 0
    assert fingerprint(finetuned) == before  # read, not run again
    [table_row] = list(csv.DictReader(open(out / "downstream.csv")))
    results = json.loads((finetuned / "test_metrics.json").read_text())
    assert (table_row["name"], table_row["non_embedding_params"], table_row["pretrain_tokens"]) == ("tiny", "12345", "4096")
    assert float(table_row["test_accuracy"]) == pytest.approx(results["accuracy"])
    assert float(table_row["test_macro_f1"]) == pytest.approx(results["macro"]["f1"])
    assert float(table_row["majority_share"]) == pytest.approx(144 / 543)  # history, the largest group of the test set
    assert (out / "downstream_vs_size.png").stat().st_size > 10_000
