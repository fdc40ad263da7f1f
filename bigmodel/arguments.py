"""What every command's arguments share: argparse types, the one-line usage error, and the
entry point of a command that also runs as a script under tools/.

A leaf: it imports nothing of bigmodel but the exit codes, so any command module may borrow
from it without importing the CLI that mounts the command.
"""

from __future__ import annotations

import argparse
import sys

from bigmodel import exit_codes


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1 (a step, a count of batches, of jobs)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


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
