"""Which runs a side of `compare` names, and the final eval loss of each.

A group is one item or several joined by commas; each item is

  DIR               a run directory: the final_eval_loss of its summary.json
  'GLOB'            every run directory a shell pattern matches (quote it, so the shell leaves
                    it whole), e.g. 'runs/seeds/L2-*-s*'
  REGISTRY:NAMES    the `done` rows of a sweep's registry whose name matches the shell pattern
                    NAMES; REGISTRY is a sweep directory or any runs.csv-shaped file, e.g.
                    experiments/branches_results/cosine_runs.csv:'L2-d96-tok1.6M-*'

A registry row's run directory, when one sits beside the registry (a sweep's
`SWEEP/<name>/`), is kept too: `compare` needs it to evaluate single runs batch by batch.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import glob
import math
import sys
from pathlib import Path

from bigmodel import files
from bigmodel.scaling import registry
from bigmodel.scaling.points import parse_number, read_table, require_columns

# The data settings that fix the validation token stream (with the fixed VALIDATION_SEED and the
# eval batch size): two runs that agree on them were evaluated on the same text. data_dir only
# says where that text is cached.
DATA_KEYS = ("dataset", "tokenizer", "vocab_size", "seq_len")


@dataclasses.dataclass(frozen=True)
class RunLoss:
    label: str  # how the report names the run: its directory, or REGISTRY:name
    eval_loss: float  # final eval loss, nats/token (nats/byte where a token is a byte)
    workdir: Path | None  # the run directory, where there is one
    bytes_per_token: float = math.nan  # from its eval_bpb (`registry.run_bytes_per_token`); NaN where unknown


def select_runs(group: str, side: str) -> list[RunLoss]:
    """The runs of one side ("A" or "B"); a ValueError (one line) when an item names none."""
    runs: list[RunLoss] = []
    for item in group.split(","):
        if not item.strip():
            raise ValueError(f"{side} {group!r} has an empty item: join items with single commas")
        runs.extend(item_runs(item.strip()))
    seen: set[str] = set()
    for run in runs:
        if identity(run) in seen:
            raise ValueError(f"{side} names {run.label} twice: each run counts once")
        seen.add(identity(run))
    return runs


def identity(run: RunLoss) -> str:
    """What makes two names one run: its resolved directory (runs/x and ./runs/x are one), else its label."""
    return str(run.workdir.resolve()) if run.workdir is not None else run.label


def item_runs(item: str) -> list[RunLoss]:
    if ":" in item and not Path(item).exists():
        source, pattern = item.rsplit(":", 1)
        return registry_runs(Path(source), pattern)
    if glob.has_magic(item):
        matches = [Path(path) for path in sorted(glob.glob(item)) if is_run_directory(Path(path))]
        if not matches:
            raise ValueError(f"{item!r} matches no run directory (one with summary.json or config.json)")
        return [run_directory_loss(path) for path in matches]
    path = Path(item)
    if not path.exists():
        raise ValueError(f"{item} does not exist: pass a run directory, a quoted glob of them, or REGISTRY:NAME_PATTERN")
    if (path / registry.REGISTRY_FILE).is_file() or path.is_file():
        raise ValueError(f"{item} is a sweep registry, not a run: pick its runs with {item}:NAME_PATTERN, e.g. {item}:'L2-*-s*'")
    if not is_run_directory(path):
        raise ValueError(f"{item} is not a run directory (no summary.json or config.json)")
    return [run_directory_loss(path)]


def is_run_directory(path: Path) -> bool:
    return path.is_dir() and ((path / registry.SUMMARY_FILE).is_file() or (path / "config.json").is_file())


def run_directory_loss(path: Path) -> RunLoss:
    """A finished run's final eval loss, from the summary.json the trainer writes at its end."""
    summary = files.read_json(path / registry.SUMMARY_FILE)
    if summary is None:
        raise ValueError(f"{path} has no readable {registry.SUMMARY_FILE}: the run has not finished; resume it to its last step first")
    loss = summary.get("final_eval_loss")
    if not isinstance(loss, (int, float)) or not math.isfinite(loss) or loss <= 0:
        raise ValueError(f"{path / registry.SUMMARY_FILE} has no final_eval_loss ({loss!r}): the run never evaluated; "
                         f"run `python -m bigmodel eval --workdir {path}`")
    return RunLoss(str(path), float(loss), path, registry.run_bytes_per_token(summary))


def registry_runs(source: Path, pattern: str) -> list[RunLoss]:
    """The `done` rows of a registry whose name matches `pattern`; rows matching but not done
    are named on stderr (a failed seed left out silently would bias the group)."""
    path = source / registry.REGISTRY_FILE if source.is_dir() else source
    if not path.is_file():
        raise ValueError(f"{source} is neither a sweep directory with {registry.REGISTRY_FILE} nor a registry CSV")
    if not pattern:
        raise ValueError(f"{source}: gives no name pattern after ':': write {source}:'NAME_PATTERN'")
    header, rows = read_table(path)
    require_columns(path, header, ("name", "status", "final_eval_loss"), "pass a sweep directory or its runs.csv")
    matching = [(line, row) for line, row in rows if fnmatch.fnmatchcase(row["name"], pattern)]
    unfinished = [row["name"] for _, row in matching if row["status"] != registry.DONE]
    if unfinished:
        print(f"note: left out {len(unfinished)} run(s) of {source} matching {pattern!r} that are not done: {', '.join(unfinished)}", file=sys.stderr)
    runs = []
    for line, row in matching:
        if row["status"] == registry.DONE:
            loss = parse_number(path, line, "final_eval_loss", row["final_eval_loss"])
            workdir = path.parent / row["name"]
            runs.append(RunLoss(f"{source}:{row['name']}", loss, workdir if workdir.is_dir() else None, registry.run_bytes_per_token(row)))
    if not runs:
        names = ", ".join(row["name"] for _, row in rows[:3])
        raise ValueError(f"no finished run of {source} matches {pattern!r} (its names look like {names or 'nothing: it is empty'})")
    return runs


def validation_data(workdir: Path | None) -> dict | None:
    """The data settings a run was evaluated with (`DATA_KEYS`), or None without a config.json."""
    if workdir is None:
        return None
    saved = files.read_json(workdir / "config.json")
    data = (saved or {}).get("data")
    return {key: data.get(key) for key in DATA_KEYS} if isinstance(data, dict) else None


def check_same_validation_data(runs: list[RunLoss]) -> None:
    """A ValueError when two runs' configs say they were evaluated on different text (runs
    without a config.json cannot be checked, and pass)."""
    known = [(run, data) for run in runs if (data := validation_data(run.workdir)) is not None]
    for run, data in known[1:]:
        first, first_data = known[0]
        differing = [key for key in DATA_KEYS if data[key] != first_data[key]]
        if differing:
            key = differing[0]
            raise ValueError(f"{first.label} and {run.label} evaluate on different text (data.{key} {first_data[key]!r} vs {data[key]!r}): "
                             "their eval losses do not compare")
