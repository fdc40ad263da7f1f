"""The random source behind the `markov` dataset: its options, its chain, its exact entropy rate.

A k-th order Markov source over an alphabet of A printable ASCII bytes: the next byte depends on
the k bytes before it (the *context*), through a distribution drawn once per context from a
symmetric Dirichlet(α) — all from `seed`, so the same options always give the same source and
the same text. Its entropy rate is known exactly,

    H = Σ_c π(c) · H(next byte | c),

with π the stationary distribution of the chain over the A^k contexts, so a byte-level model's
loss (nats per token = nats per byte) has a true floor to be compared with.

This module is numpy only (no tfds): config validation and token-cache names use it without
importing tfds. The tfds builder that stores the text is `markov.py`.
"""

from __future__ import annotations

import dataclasses
import math
import string

import numpy as np

from bigmodel.exit_codes import ConfigError

MARKOV = "markov"
MARKOV_VERSION = "1.0.0"  # the sampling algorithm's version: a change of the text must bump it
# The first `alphabet_size` of these: lower-case words and punctuation first (32 by default),
# then the rest of printable ASCII. No newline: the pipeline separates documents with one.
ALPHABET = " abcdefghijklmnopqrstuvwxyz.,'?!"
ALPHABET += "".join(sorted(set(string.printable[:95]) - set(ALPHABET) - set(string.whitespace)))
MAX_TABLE_ENTRIES = 2**24  # A^(k+1) float64 probabilities: 128 MiB at most
STATIONARY_TOLERANCE = 1e-15  # L1 change per power-iteration step at which π counts as solved
MAX_POWER_ITERATIONS = 100_000
SAMPLE_CHUNK_STEPS = 4096  # positions drawn per block of uniforms: bounds memory on big corpora
SPLIT_STREAMS = {"train": 1, "validation": 2}  # rng stream 0 draws the table


@dataclasses.dataclass(frozen=True)
class MarkovOptions:
    """What defines a `markov` corpus. Defaults: 1,024 contexts over 32 bytes, H = 1.805 bits/byte,
    4 MiB of training text (kjv is 4.1 MB) in 256 documents of 16 KiB, 256 KiB of validation.

    Documents are independent stretches of the chain, drawn side by side, so building takes
    `document_bytes` sequential steps per split whatever its size (~0.3 s at 16 KiB). Longer
    documents cost more time but fewer boundaries: at each one the model sees a blank line and a
    fresh context drawn from π, about 20 bits it cannot predict at this order and length, which
    raise the best achievable loss above H by ~0.001 bits/byte at 16 KiB.
    """

    order: int = 2  # k: bytes of context
    alphabet_size: int = 32  # A: the first A bytes of ALPHABET
    concentration: float = 0.05  # α of the Dirichlet; smaller → peakier next-byte laws → lower H
    seed: int = 0
    train_bytes: int = 4 * 2**20
    validation_bytes: int = 2**18
    document_bytes: int = 2**14  # one record = one document = one line of this many bytes

    @property
    def num_contexts(self) -> int:
        return self.alphabet_size**self.order

    @property
    def alphabet(self) -> str:
        return ALPHABET[: self.alphabet_size]

    @property
    def config_name(self) -> str:
        """The tfds config name: every option, so two corpora never share a directory or cache."""
        return (f"order{self.order}-alphabet{self.alphabet_size}-concentration{self.concentration!r}-seed{self.seed}"
                f"-train{self.train_bytes}-validation{self.validation_bytes}-document{self.document_bytes}")


OPTION_TYPES = {field.name: type(field.default) for field in dataclasses.fields(MarkovOptions)}


def is_markov_name(dataset: str) -> bool:
    return dataset == MARKOV or dataset.startswith(MARKOV + "/")


def parse_option(dataset: str, item: str) -> tuple[str, int | float]:
    """`"order=3"` → ("order", 3), typed as the MarkovOptions field it sets."""
    key, sep, text = item.partition("=")
    if not sep or key not in OPTION_TYPES:
        raise ConfigError(f"config.data.dataset={dataset!r}: cannot read {item!r}: write markov/key=value,... with keys {', '.join(OPTION_TYPES)}")
    try:
        return key, OPTION_TYPES[key](text)
    except ValueError:
        raise ConfigError(f"config.data.dataset={dataset!r}: {key} expects {OPTION_TYPES[key].__name__}, got {text!r}") from None


def check_options(dataset: str, options: MarkovOptions) -> None:
    """One line naming the bad option and its range; see MarkovOptions for their meanings."""
    problem = ""
    if options.order < 0:
        problem = f"order must be >= 0, got {options.order}"
    elif not 2 <= options.alphabet_size <= len(ALPHABET):
        problem = f"alphabet_size must be between 2 and {len(ALPHABET)} (printable ASCII), got {options.alphabet_size}"
    elif not (math.isfinite(options.concentration) and options.concentration > 0):
        problem = f"concentration must be a positive number, got {options.concentration}"
    elif options.seed < 0:
        problem = f"seed must be >= 0, got {options.seed}"
    elif options.train_bytes < 1 or options.validation_bytes < 1:
        problem = f"train_bytes and validation_bytes must be positive, got {options.train_bytes}, {options.validation_bytes}"
    elif options.document_bytes <= options.order:
        problem = f"document_bytes must be above order={options.order}, got {options.document_bytes}"
    elif options.num_contexts * options.alphabet_size > MAX_TABLE_ENTRIES:
        problem = f"alphabet_size^(order+1) = {options.num_contexts * options.alphabet_size:,} probabilities is over {MAX_TABLE_ENTRIES:,}: lower order or alphabet_size"
    if problem:
        raise ConfigError(f"config.data.dataset={dataset!r}: {problem}")


def markov_options(dataset: str) -> MarkovOptions:
    """`markov` → the defaults; `markov/order=3,seed=1` → the defaults with those options set."""
    if not is_markov_name(dataset):
        raise ConfigError(f"config.data.dataset={dataset!r} is not a markov corpus: write markov or markov/key=value,...")
    items = [item for item in dataset.removeprefix(MARKOV).removeprefix("/").split(",") if item]
    settings = dict(parse_option(dataset, item) for item in items)
    if len(settings) < len(items):
        raise ConfigError(f"config.data.dataset={dataset!r} sets an option twice: give each once")
    options = MarkovOptions(**settings)
    check_options(dataset, options)
    return options


def draw_log_transitions(options: MarkovOptions) -> np.ndarray:
    """log P[c, y] for every context c (row, the k bytes as a base-A number) and next byte y.

    Each row is a Dirichlet(α) draw made as normalised Gamma(α) variates, taken in log space
    (Gamma(α) = Gamma(α+1)·U^(1/α)): numpy's own `dirichlet` rounds small components to exactly
    0 when α is small (it did at α = 0.05 here), and a zero would break the guarantee below.
    With every probability positive, any context reaches any other in k steps and a constant
    context can repeat itself, so the chain is irreducible and aperiodic: π exists and is unique.
    """
    rng = np.random.default_rng([options.seed, 0])
    shape = (options.num_contexts, options.alphabet_size)
    uniform = 1.0 - rng.random(shape)  # in (0, 1]: log never meets 0
    log_gamma = np.log(rng.standard_gamma(options.concentration + 1.0, shape)) + np.log(uniform) / options.concentration
    peak = log_gamma.max(axis=1, keepdims=True)
    return log_gamma - (peak + np.log(np.exp(log_gamma - peak).sum(axis=1, keepdims=True)))


def transitions_from_logs(log_transitions: np.ndarray) -> np.ndarray:
    """P from log P, kept above zero where exp underflows (such a probability is below 1e-307)."""
    return np.maximum(np.exp(log_transitions), np.finfo(np.float64).tiny)


def next_contexts(distribution: np.ndarray, transitions: np.ndarray) -> np.ndarray:
    """One step of the chain over contexts: mass at c = (x1..xk) moving by byte y lands at
    (x2..xk y); with contexts as base-A numbers, that is summing out x1, the leading digit."""
    flow = distribution[:, None] * transitions
    return flow.reshape(transitions.shape[1], -1).sum(axis=0)  # at k = 0: all mass to the one empty context


def stationary_distribution(transitions: np.ndarray) -> np.ndarray:
    """π with π·P = π over the contexts, by power iteration from uniform to float64 precision.

    The dense eigenproblem would need (A^k)² memory (8 GiB at k = 3, A = 32); one step here costs
    A^(k+1), and with every transition positive the chain mixes in tens of steps (≤ 160 at
    α ≥ 0.02, A = 32 measured).
    """
    distribution = np.full(transitions.shape[0], 1.0 / transitions.shape[0])
    for _ in range(MAX_POWER_ITERATIONS):
        stepped = next_contexts(distribution, transitions)
        stepped /= stepped.sum()
        change = np.abs(stepped - distribution).sum()
        distribution = stepped
        if change < STATIONARY_TOLERANCE:
            return distribution
    raise ConfigError(f"the markov chain did not settle in {MAX_POWER_ITERATIONS:,} steps (L1 change {change:.1e}): raise concentration")


def conditional_entropies(log_transitions: np.ndarray) -> np.ndarray:
    """H(next byte | c) in nats for every context; from logs, so underflowed terms add 0 exactly."""
    return -(np.exp(log_transitions) * log_transitions).sum(axis=1)


def entropy_rate(log_transitions: np.ndarray, distribution: np.ndarray) -> float:
    """H = Σ_c π(c) H(next | c), nats per byte: the lowest expected loss any predictor can reach."""
    return float(distribution @ conditional_entropies(log_transitions))


def marginal_entropy(transitions: np.ndarray, distribution: np.ndarray) -> float:
    """H(X) of one byte under π, nats: the loss of a predictor that ignores all context (the
    gap down to H is what a model can learn)."""
    byte_law = distribution @ transitions  # stationary: every position's byte has this law
    return float(-(byte_law * np.log(byte_law)).sum())


def entropy_summary(options: MarkovOptions, log_transitions: np.ndarray, distribution: np.ndarray) -> dict:
    """What the dataset's metadata records: the truth to compare losses with, and the options."""
    rate = entropy_rate(log_transitions, distribution)
    return {
        "entropy_rate_nats_per_byte": rate,
        "entropy_rate_bits_per_byte": rate / math.log(2),
        "marginal_entropy_bits_per_byte": marginal_entropy(transitions_from_logs(log_transitions), distribution) / math.log(2),
        "alphabet": options.alphabet,
        **dataclasses.asdict(options),
    }


def context_digits(contexts: np.ndarray, options: MarkovOptions) -> np.ndarray:
    """[k, n]: the k bytes (as alphabet indices, oldest first) of each base-A context number."""
    powers = options.alphabet_size ** np.arange(options.order - 1, -1, -1)
    return (contexts[None, :] // powers[:, None]) % options.alphabet_size


def sample_symbols(transitions: np.ndarray, distribution: np.ndarray, options: MarkovOptions, num_sequences: int, length: int, rng) -> np.ndarray:
    """uint8 [num_sequences, length] of alphabet indices, each sequence a stretch of the
    stationary chain: its first k bytes are a context drawn from π, so every position (not only
    late ones) has the stationary law and the whole text has entropy rate H. The sequences are
    drawn side by side: the loop runs over positions only."""
    cumulative = np.cumsum(transitions, axis=1)
    cumulative[:, -1] = 1.0  # a uniform in [0, 1) must always find its byte
    contexts = rng.choice(options.num_contexts, size=num_sequences, p=distribution)
    symbols = np.empty((length, num_sequences), np.uint8)
    symbols[: options.order] = context_digits(contexts, options)
    wrap = options.num_contexts // options.alphabet_size if options.order else 1  # drops the oldest byte
    for start in range(options.order, length, SAMPLE_CHUNK_STEPS):
        uniforms = rng.random((min(SAMPLE_CHUNK_STEPS, length - start), num_sequences))
        for offset, uniform in enumerate(uniforms):
            nexts = (cumulative[contexts] <= uniform[:, None]).sum(axis=1)
            symbols[start + offset] = nexts
            contexts = (contexts % wrap) * options.alphabet_size + nexts if options.order else contexts
    return symbols.T


def sample_documents(transitions: np.ndarray, distribution: np.ndarray, options: MarkovOptions, split: str) -> list[str]:
    """The split's text as documents of `document_bytes` (the last one shorter), independent
    stretches of the chain from the split's own rng stream: changing the validation size leaves
    the training text as it was."""
    total = {"train": options.train_bytes, "validation": options.validation_bytes}[split]
    num_documents = -(-total // options.document_bytes)
    rng = np.random.default_rng([options.seed, SPLIT_STREAMS[split]])
    symbols = sample_symbols(transitions, distribution, options, num_documents, options.document_bytes, rng)
    alphabet = np.frombuffer(options.alphabet.encode("ascii"), np.uint8)
    text = alphabet[symbols].tobytes()
    documents = [text[start : start + options.document_bytes].decode("ascii") for start in range(0, num_documents * options.document_bytes, options.document_bytes)]
    documents[-1] = documents[-1][: total - (num_documents - 1) * options.document_bytes]
    return documents
