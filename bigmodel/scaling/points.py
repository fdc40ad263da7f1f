"""The points a scaling law is fitted to and plotted from, and how a user's CSV becomes them.

A point is one run: N (`non_embedding_params`, Kaplan's count, the one name for N everywhere
in bigmodel.scaling), D (`tokens`), C (`flops`, NaN where unknown) and its final `loss`.
Points come from a sweep's registry (`registry.load_points`) or from a CSV of the user's own
runs with columns `params,tokens,loss[,flops][,group]`: `csv_columns` is the one place that says
which CSV column gives which field. Lines starting with `#` are comments, so a file can carry
its attribution. Every problem is one `ValueError` line naming the file, line or column, and
the fix.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import sys
from pathlib import Path

import numpy as np

FIELDS = ("non_embedding_params", "tokens", "flops", "loss")
# Field → the CSV columns that may give it, first present wins. A points CSV's `params` is the
# N its author counted (Porian et al.'s files, say); a file that names non_embedding_params
# (a copy of a runs.csv) is read by that name, never by its total `params`.
CSV_COLUMN_CHOICES = {
    "non_embedding_params": ("non_embedding_params", "params"),
    "tokens": ("tokens",),
    "flops": ("flops",),
    "loss": ("loss",),
}
OPTIONAL_FIELDS = ("flops",)
GROUP_COLUMN = "group"  # optional: runs with the same non-empty value share training (one stable run)
CSV_HINT = "a points CSV needs columns params,tokens,loss and optionally flops and group"
# The unit of a loss, decided here only: a cross-entropy is in nats per token, and where a token
# is one byte (the bytes tokenizer: a run's eval_bpb = loss / ln 2 exactly) that is nats per
# byte, the unit the docs quote. Where the bytes per token are unknown (a CSV), per token.
TOKEN_UNIT, BYTE_UNIT = "nats/token", "nats/byte"


def loss_unit(bytes_per_token) -> str:
    """BYTE_UNIT when every run's tokens are single bytes, else TOKEN_UNIT."""
    ratios = np.asarray(bytes_per_token, dtype=float)
    return BYTE_UNIT if ratios.size and np.all(np.abs(ratios - 1.0) < 1e-6) else TOKEN_UNIT


@dataclasses.dataclass(frozen=True)
class Points:
    """One entry per run, as float arrays of equal length."""

    non_embedding_params: np.ndarray
    tokens: np.ndarray
    flops: np.ndarray  # NaN where the input has no FLOPs
    loss: np.ndarray
    loss_name: str  # what `loss` is: "validation loss", "training loss", or "loss" (a CSV does not say)
    names: tuple[str, ...] = ()  # run folders of a sweep; empty for a CSV
    # Per run, what it shares training with (the stable run a branch cooled down from; a CSV's
    # `group` column), "" for none; empty: every run on its own. The bootstrap draws one shared
    # noise term per group (`noise.py`).
    groups: tuple[str, ...] = ()
    loss_unit: str = TOKEN_UNIT  # `loss_unit`: nats/byte where the runs' tokens are bytes
    # Every parameter, embeddings and head included (a registry's `params`; a CSV's where it also
    # names non_embedding_params), NaN where unknown; empty: unknown for all (`counts.py`).
    total_params: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))

    def __post_init__(self):
        if len(self.total_params) != len(self.loss):
            object.__setattr__(self, "total_params", np.full(len(self.loss), np.nan))

    def __len__(self) -> int:
        return len(self.loss)

    def compute(self) -> np.ndarray:
        """Training compute C per point: the flops where every point has them, else 6·N·D.

        One basis for all points (never flops for some and 6ND for others), so a CSV without
        a flops column still orders its runs by compute, by Chinchilla's count.
        """
        if np.all(np.isfinite(self.flops)):
            return self.flops
        return 6.0 * self.non_embedding_params * self.tokens

    def compute_basis(self) -> str:
        """What `compute` counts, for every printed ratio of it: "flops" (the runs' own) or "6ND"."""
        return "flops" if np.all(np.isfinite(self.flops)) else "6ND"

    def select(self, mask: np.ndarray) -> Points:
        """The points where `mask` is true (names and groups too, where there are any)."""
        names = tuple(name for name, keep in zip(self.names, mask) if keep)
        groups = tuple(group for group, keep in zip(self.groups, mask) if keep)
        arrays = {name: getattr(self, name)[mask] for name in (*FIELDS, "total_params")}
        return dataclasses.replace(self, **arrays, names=names, groups=groups)


def join_points(first: Points, second: Points) -> Points:
    """`first`'s points followed by `second`'s (names and groups too where both have them)."""
    arrays = {name: np.concatenate([getattr(first, name), getattr(second, name)]) for name in FIELDS}
    names = first.names + second.names if first.names and second.names else ()
    groups = first.groups + second.groups if first.groups and second.groups else ()
    return dataclasses.replace(first, **arrays, names=names, groups=groups)


def check_points(name_to_values: dict[str, np.ndarray], minimum: int) -> None:
    """Equal lengths, positive finite values and at least `minimum` points, or one ValueError line."""
    lengths = sorted({len(values) for values in name_to_values.values()})
    if len(lengths) != 1:
        raise ValueError(f"{', '.join(name_to_values)} must have the same length, got lengths {lengths}")
    for name, values in name_to_values.items():
        if not np.all(np.isfinite(values) & (values > 0)):
            raise ValueError(f"{name} must be positive and finite everywhere: drop runs without a value")
    if lengths[0] < minimum:
        raise ValueError(f"need at least {minimum} points for this fit, got {lengths[0]}: run more sizes or budgets")


def read_table(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and (line number, row) pairs of a CSV, skipping blank and `#` comment lines. A last
    row with fewer fields than the header (a copy or a write cut short) is skipped with a warning
    naming its line; any other row of the wrong width is an error naming its line."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read {path}: {getattr(error, 'strerror', None) or error}") from None
    numbered = [(number, line) for number, line in enumerate(lines, start=1) if line.strip() and not line.lstrip().startswith("#")]
    if not numbered:
        raise ValueError(f"{path} is empty: write a header line params,tokens,loss[,flops] and one row per run")
    reader = csv.reader(line for _, line in numbered)
    header = [name.strip() for name in next(reader)]
    rows = []
    for (number, _), values in zip(numbered[1:], reader):
        if len(values) != len(header):
            if number == numbered[-1][0] and len(values) < len(header):  # the torn tail of a write cut short
                print(f"warning: {path} line {number} has {len(values)} of the header's {len(header)} fields "
                      "(cut short while being written?): skipped", file=sys.stderr)
                continue
            raise ValueError(f"{path} line {number} has {len(values)} fields where the header has {len(header)}: fix or delete that row")
        rows.append((number, dict(zip(header, (value.strip() for value in values)))))
    return header, rows


def require_columns(path: Path, header: list[str], required: tuple[str, ...], hint: str) -> None:
    missing = [name for name in required if name not in header]
    if missing:
        raise ValueError(f"{path} has no {', '.join(repr(name) for name in missing)} column (it has {', '.join(header) or 'none'}): {hint}")


def parse_number(path: Path, line: int, column: str, text: str | None) -> float:
    """A finite positive float from one cell, or a one-line error that points at the cell."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{path} line {line}: column {column!r} is {text!r}, not a positive number: fix or delete that row")
    return value


def parse_optional_number(path: Path, line: int, column: str, text: str | None) -> float:
    """Empty cell → NaN (the value is optional); anything else must parse."""
    return math.nan if text in (None, "") else parse_number(path, line, column, text)


def csv_columns(path: Path, header: list[str]) -> dict[str, str | None]:
    """Field of `Points` → the column of this CSV that gives it (None: an absent optional one)."""
    columns = {field: next((name for name in choices if name in header), None) for field, choices in CSV_COLUMN_CHOICES.items()}
    missing = [choices[-1] for field, choices in CSV_COLUMN_CHOICES.items() if columns[field] is None and field not in OPTIONAL_FIELDS]
    require_columns(path, header, tuple(missing), CSV_HINT)
    return columns


def points_from_csv(path: Path) -> Points:
    """A user's CSV of runs as `Points` (columns mapped by `csv_columns`)."""
    header, rows = read_table(path)
    columns = csv_columns(path, header)
    values = {field: [] for field in FIELDS}
    for line, row in rows:
        for field, column in columns.items():
            parse = parse_optional_number if field in OPTIONAL_FIELDS else parse_number
            values[field].append(parse(path, line, column, row.get(column)) if column else math.nan)
    if not rows:
        raise ValueError(f"{path} has a header but no rows: add one row per run")
    groups = tuple(row.get(GROUP_COLUMN, "") for _, row in rows) if GROUP_COLUMN in header else ()
    total = "params" if columns["non_embedding_params"] != "params" and "params" in header else None  # N is read from another column
    total_params = [parse_optional_number(path, line, total, row.get(total)) if total else math.nan for line, row in rows]
    return Points(**{field: np.asarray(column, dtype=float) for field, column in values.items()}, loss_name="loss", groups=groups,
                  total_params=np.asarray(total_params, dtype=float))
