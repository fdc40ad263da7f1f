"""What every command's arguments share: argparse types, the one-line usage error, and the
entry point of a command that also runs as a script under tools/.

The types are the project's rules for a value from a command line: a count is a whole number in
range, a number is finite, a seed fits the 32 bits JAX keeps, text is valid UTF-8 (what a
terminal passes as bytes that are not arrives as lone surrogates, which no encoder takes), and a
path is not empty (`Path("")` is the working directory) and is UTF-8 too. Each refuses with argparse's one
`error: argument --flag: ...` line, exit 2, before any work starts.

A leaf: it imports nothing of bigmodel but the exit codes, so any module may borrow from it
(config.py takes its seed rule) without importing the CLI that mounts the commands.
"""

from __future__ import annotations

import argparse
import math
import numbers
import sys
from collections.abc import Callable, Iterable

from bigmodel import exit_codes

MAX_SEED = 2**32 - 1  # jax.random.key keeps 32 bits of a seed: larger ones would repeat smaller ones
MAX_REPLICATES = 1_000_000  # bootstrap replicates: the Monte Carlo error of a 2.5% quantile is then ~0.003 SD


def _integer(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:  # also a number of more than 4,300 digits (Python's int-from-text limit)
        return None


def _finite(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1 (a step, a count of batches, of jobs)."""
    value = _integer(text)
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer ≥ 0 (warm-up steps, a process id)."""
    value = _integer(text)
    if value is None or value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 0, got {text!r}")
    return value


def int_in(low: int, high: int, why: str) -> Callable[[str], int]:
    """argparse type: an integer from `low` to `high`; `why` says what the bounds protect."""
    def checked(text: str) -> int:
        value = _integer(text)
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer from {low} to {high:,} ({why}), got {text!r}")
        return value

    checked.__name__ = f"int_in_{low}_{high}"
    return checked


def bootstrap_replicates(low: int) -> Callable[[str], int]:
    """argparse type: a number of bootstrap replicates from `low` to MAX_REPLICATES."""
    return int_in(low, MAX_REPLICATES, "a million pins a 95% interval's ends to ~0.3% of an SD; more only runs out of memory")


def seed(text: str) -> int:
    """argparse type: a seed in [0, 2^32 − 1], the same rule serve applies to a request's seed."""
    value = _integer(text)
    if value is None or not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a seed from 0 to {MAX_SEED} (JAX keeps 32 bits of it), got {text!r}")
    return value


def positive_number(text: str) -> float:
    """argparse type: a finite number > 0 (FLOPs, a budget, a width)."""
    value = _finite(text)
    if value is None or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def _undecodable_at(text: str) -> int | None:
    """The 1-based position of the first character that stands for a byte that is not UTF-8, or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return error.start + 1
    return None


def utf8_text(text: str) -> str:
    """argparse type: text that encodes as UTF-8 (a prompt, a stop string the tokenizer will encode)."""
    position = _undecodable_at(text)
    if position is not None:
        raise argparse.ArgumentTypeError(f"is not valid UTF-8 (character {position} is an undecodable byte): "
                                         "pass the text in UTF-8, as a terminal set to a UTF-8 locale does")
    return text


def path_text(text: str) -> str:
    """argparse type: a non-empty path (an empty one would silently mean the working directory) in
    UTF-8 (Orbax's and tensorstore's C++ cannot take other bytes: a run would fail at its first save)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: pass a path")
    position = _undecodable_at(text)
    if position is not None:
        raise argparse.ArgumentTypeError(f"is not valid UTF-8 (character {position} is an undecodable byte): "
                                         "use a path whose name is UTF-8")
    return text


def one_of(choices: Iterable[str]) -> Callable[[str], str]:
    """argparse type: one of `choices`, checked up front while the flag's --help stays the one written."""
    allowed = tuple(choices)

    def checked(text: str) -> str:
        if text not in allowed:
            raise argparse.ArgumentTypeError(f"unknown value {text!r}: use one of {', '.join(allowed)}")
        return text

    checked.__name__ = "one_of"
    return checked


def is_seed(value) -> bool:
    """A seed as a value (config.seed, a Study's seeds): a whole number (numpy's too, not a bool) in [0, MAX_SEED]."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and 0 <= value <= MAX_SEED


def is_positive_number(value) -> bool:
    """A value (not text) that is a finite real number > 0 (numpy's too, not a bool): a Study's tokens, budgets, learning rates."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse with the project's error shape: one `error:` line naming the fix, exit 2."""

    def error(self, message: str):
        self.exit(exit_codes.BAD_INPUT, f"error: {message}: see `{self.prog} --help`\n")


def bad_input(error: Exception) -> int:
    """The one `error:` line for a bad input, and its exit code."""
    text = f"{error.strerror}: {error.filename}" if isinstance(error, OSError) and error.strerror else str(error)
    print(f"error: {text}", file=sys.stderr)
    return exit_codes.BAD_INPUT


def tool_main(prog: str, description: str, add_arguments, command, argv: list[str] | None) -> int:
    """A command run as the script `prog` (tools/fit_scaling.py, ...): the same arguments, errors and exit codes."""
    parser = OneLineErrorParser(prog=prog, description=description)
    add_arguments(parser)
    return command(parser.parse_args(argv))
