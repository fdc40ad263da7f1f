"""The `markov` corpus: its exact entropy rate against samples, its stationary law, seeding, the
tfds build read through the pipeline, the metadata round trip, and config validation."""

import math
from pathlib import Path

import numpy as np
import pytest

from bigmodel.config import ConfigError, load_config, validate
from bigmodel.data import load_dataset
from bigmodel.data.markov_chain import (
    MarkovOptions,
    draw_log_transitions,
    entropy_rate,
    entropy_summary,
    markov_options,
    next_contexts,
    sample_documents,
    sample_symbols,
    stationary_distribution,
    transitions_from_logs,
)

CONFIG_FILE = Path(__file__).resolve().parent.parent / "configs" / "lm.py"
SMALL = "markov/seed=3,train_bytes=65536,validation_bytes=16384,document_bytes=4096"


def solved(options: MarkovOptions):
    """(log P, P, π) of a corpus's chain."""
    log_transitions = draw_log_transitions(options)
    transitions = transitions_from_logs(log_transitions)
    return log_transitions, transitions, stationary_distribution(transitions)


def contexts_and_nexts(symbols: np.ndarray, order: int, alphabet_size: int) -> tuple[np.ndarray, np.ndarray]:
    """For rows of alphabet indices: every position t >= order's context (base-A number of the
    `order` bytes before it, oldest first) and its byte, flattened."""
    symbols = np.atleast_2d(symbols).astype(np.int64)
    contexts = np.zeros_like(symbols[:, order:])
    for lag in range(order, 0, -1):
        contexts = contexts * alphabet_size + symbols[:, order - lag : symbols.shape[1] - lag]
    return contexts.ravel(), symbols[:, order:].ravel()


def dense_transition_matrix(transitions: np.ndarray) -> np.ndarray:
    """[A^k, A^k]: the chain over contexts written out, built independently of `next_contexts`."""
    num_contexts, alphabet_size = transitions.shape
    matrix = np.zeros((num_contexts, num_contexts))
    for context in range(num_contexts):
        for symbol in range(alphabet_size):
            matrix[context, (context * alphabet_size + symbol) % num_contexts] += transitions[context, symbol]
    return matrix


@pytest.mark.parametrize("order, alphabet_size, concentration", [(0, 5, 0.5), (1, 6, 0.1), (2, 4, 0.05), (3, 3, 1.0)])
def test_stationary_distribution_is_stationary_and_is_the_eigenvector(order, alphabet_size, concentration):
    options = MarkovOptions(order=order, alphabet_size=alphabet_size, concentration=concentration, seed=7)
    _, transitions, distribution = solved(options)
    assert transitions.min() > 0 and np.allclose(transitions.sum(axis=1), 1.0)
    assert distribution.min() > 0 and distribution.sum() == pytest.approx(1.0, abs=1e-14)
    assert np.abs(next_contexts(distribution, transitions) - distribution).sum() < 1e-13
    matrix = dense_transition_matrix(transitions)
    assert np.abs(distribution @ matrix - distribution).sum() < 1e-13  # π P = π with P written out
    eigenvalues, eigenvectors = np.linalg.eig(matrix.T)
    leading = np.real(eigenvectors[:, np.argmin(np.abs(eigenvalues - 1.0))])
    np.testing.assert_allclose(distribution, leading / leading.sum(), atol=1e-12)


def test_default_chain_is_positive_so_irreducible_and_solved():
    log_transitions, transitions, distribution = solved(MarkovOptions())
    assert transitions.shape == (1024, 32) and transitions.min() > 0  # numpy's dirichlet gives zeros at α=0.05
    assert np.abs(next_contexts(distribution, transitions) - distribution).sum() < 1e-13
    # docs/training.md's number. If it moves, the default text changed: bump MARKOV_VERSION (cache names).
    assert entropy_rate(log_transitions, distribution) == pytest.approx(1.2511948, abs=1e-6)


def test_entropy_rate_matches_the_empirical_conditional_entropy_of_a_long_sample():
    """The plug-in H(next | context) of ~1M sampled bytes (Miller–Madow corrected: it is biased
    low by (cells − contexts)/2N) and the sample's log-loss under the true chain both equal H."""
    options = MarkovOptions(order=2, alphabet_size=8, concentration=0.3, seed=11)
    log_transitions, transitions, distribution = solved(options)
    truth = entropy_rate(log_transitions, distribution)
    symbols = sample_symbols(transitions, distribution, options, 64, 16384, np.random.default_rng(5))
    contexts, nexts = contexts_and_nexts(symbols, options.order, options.alphabet_size)
    losses = -log_transitions[contexts, nexts]
    sequence_means = losses.reshape(64, -1).mean(axis=1)  # the 64 sequences are independent draws
    standard_error = sequence_means.std(ddof=1) / math.sqrt(64)  # ≈ 9e-4 nats
    assert losses.mean() == pytest.approx(truth, abs=4 * standard_error)
    counts = np.bincount(contexts * options.alphabet_size + nexts, minlength=transitions.size).reshape(transitions.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        plug_in = -np.nansum(counts * np.log(counts / counts.sum(axis=1, keepdims=True))) / counts.sum()
    miller_madow = ((counts > 0).sum() - (counts.sum(axis=1) > 0).sum()) / (2 * counts.sum())
    assert plug_in + miller_madow == pytest.approx(truth, abs=4 * standard_error)
    # Every position, the first k included, has the stationary law: context frequencies match π.
    np.testing.assert_allclose(np.bincount(contexts, minlength=distribution.size) / contexts.size, distribution, atol=3e-3)


def test_same_seed_same_text_other_seed_other_text_and_splits_independent():
    options = MarkovOptions(seed=1, train_bytes=20_000, validation_bytes=5_000, document_bytes=1000)

    def text(options, split):
        _, transitions, distribution = solved(options)
        return sample_documents(transitions, distribution, options, split)

    train = text(options, "train")
    assert len(train) == 20 and {len(document) for document in train} == {1000}
    assert set("".join(train)) == set(options.alphabet)
    assert train == text(options, "train")
    assert train != text(MarkovOptions(seed=2, train_bytes=20_000, validation_bytes=5_000, document_bytes=1000), "train")
    assert text(options, "validation") != train[:5]
    # Each split draws from its own stream: resizing validation leaves the training text as it was.
    assert text(MarkovOptions(seed=1, train_bytes=20_000, validation_bytes=7_500, document_bytes=1000), "train") == train
    assert [len(document) for document in text(MarkovOptions(seed=1, train_bytes=2_500, document_bytes=1000), "train")] == [1000, 1000, 500]


@pytest.fixture(scope="module")
def markov_data_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("tfds"))


def data_config(data_dir, dataset=SMALL, **overrides):
    config = load_config(f"{CONFIG_FILE}:L1").data
    config.update({"dataset": dataset, "data_dir": data_dir, "seq_len": 64, **overrides})
    return config


def test_builder_prepares_and_the_pipeline_yields_alphabet_bytes(markov_data_dir):
    from bigmodel.data.markov import prepare_markov

    builder = prepare_markov(markov_data_dir, SMALL)
    assert {name: split.num_examples for name, split in builder.info.splits.items()} == {"train": 16, "validation": 4}
    options = markov_options(SMALL)
    alphabet = set(options.alphabet.encode("ascii"))
    for split, num_bytes in (("train", 65536), ("validation", 16384)):
        dataset = load_dataset(data_config(markov_data_dir), split, seed=0)
        # Documents joined by a blank line, as kjv's chapters: the only bytes outside the alphabet.
        assert dataset.tokens.size == num_bytes + 2 * (num_bytes // 4096 - 1)
        assert dataset.bytes_per_token == 1.0
        batch = dataset.batch(3, 8)
        assert batch.shape == (8, 65) and set(np.unique(batch)) <= alphabet | {ord("\n")}
        assert set(np.unique(dataset.tokens)) == alphabet | {ord("\n")}
    # Another spelling of the same options reads the same corpus and the same token cache.
    same = load_dataset(data_config(markov_data_dir, dataset=SMALL.replace("seed=3,", "") + ",seed=3"), "train", seed=0)
    assert np.array_equal(same.batch(3, 8), load_dataset(data_config(markov_data_dir), "train", seed=0).batch(3, 8))


def test_metadata_round_trips_and_matches_the_stored_text(markov_data_dir):
    from bigmodel.data.markov import Markov, markov_entropy_rate, prepare_markov

    options = markov_options(SMALL)
    builder = prepare_markov(markov_data_dir, SMALL)
    assert (Path(builder.data_dir) / "metadata.json").exists()
    log_transitions, _, distribution = solved(options)
    expected = entropy_summary(options, log_transitions, distribution)
    fresh = Markov(options=options, data_dir=markov_data_dir)  # reads dataset_info + metadata.json from disk
    assert fresh.is_prepared() and dict(fresh.info.metadata.items()) == expected
    recorded = markov_entropy_rate(markov_data_dir, SMALL)
    assert recorded == expected and recorded["seed"] == 3 and recorded["alphabet"] == options.alphabet
    assert recorded["entropy_rate_bits_per_byte"] == pytest.approx(recorded["entropy_rate_nats_per_byte"] / math.log(2))
    assert recorded["entropy_rate_bits_per_byte"] < recorded["marginal_entropy_bits_per_byte"] < math.log2(options.alphabet_size) + 1e-9
    # The stored validation text is a draw of the recorded chain: its log-loss under it is H.
    index = np.full(256, -1)
    index[list(options.alphabet.encode("ascii"))] = np.arange(options.alphabet_size)
    source = builder.as_data_source(split="validation")
    rows = np.stack([index[np.frombuffer(source[i]["text"], np.uint8)] for i in range(len(source))])
    contexts, nexts = contexts_and_nexts(rows, options.order, options.alphabet_size)
    losses = -log_transitions[contexts, nexts]
    assert losses.mean() == pytest.approx(recorded["entropy_rate_nats_per_byte"], abs=4 * losses.std() / math.sqrt(losses.size))


@pytest.mark.parametrize("dataset", ["markov", "markov/order=3,seed=1", "markov/concentration=1,alphabet_size=95,order=1"])
def test_markov_names_validate(dataset):
    config = load_config(f"{CONFIG_FILE}:L1", {"data.dataset": dataset})
    validate(config, n_devices=1, platform="cpu")


@pytest.mark.parametrize("dataset, message", [
    ("markov/rank=2", "with keys order, alphabet_size"),
    ("markov/order=two", "order expects int"),
    ("markov/order=1,order=2", "sets an option twice"),
    ("markov/alphabet_size=200", "alphabet_size must be between 2 and 95"),
    ("markov/concentration=0", "concentration must be a positive number"),
    ("markov/order=5", "lower order or alphabet_size"),
    ("markov/document_bytes=2", "document_bytes must be above order=2"),
    ("markovian", r"is unknown: use kjv, synthetic or tfds:<name>\[/<config>\] of a prepared tfds text dataset, or markov"),
])
def test_bad_markov_names_are_one_line_errors(dataset, message):
    config = load_config(f"{CONFIG_FILE}:L1", {"data.dataset": dataset})
    with pytest.raises(ConfigError, match=message) as error:
        validate(config, n_devices=1, platform="cpu")
    assert "\n" not in str(error.value)


def test_spm_needs_documents_short_enough_to_train_on():
    config = load_config(f"{CONFIG_FILE}:L1", {"data.dataset": "markov", "data.tokenizer": "spm", "data.vocab_size": 512})
    with pytest.raises(ConfigError, match="add document_bytes=4096"):
        validate(config, n_devices=1, platform="cpu")
    validate(load_config(f"{CONFIG_FILE}:L1", {"data.dataset": "markov/document_bytes=4096", "data.tokenizer": "spm", "data.vocab_size": 512}), n_devices=1, platform="cpu")


def test_the_pipeline_refuses_bad_markov_names_before_building(tmp_path):
    with pytest.raises(ConfigError, match="concentration expects float"):
        load_dataset(data_config(str(tmp_path), dataset="markov/concentration=high"), "train", seed=0)
    assert not (tmp_path / "markov").exists()
