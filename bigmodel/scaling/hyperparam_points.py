"""The points of a hyperparameter fit (`hyperparams.py`): per finished run its compute C, peak
learning rate, batch size (sequences) and seq_len, and its final loss (validation where it ran).

They come from a sweep directory (runs.csv for C and the loss, each run's config.json for lr,
batch size and seq_len: the registry does not record them), from a CSV with columns
flops,learning_rate,batch_size,seq_len,loss, or from an earlier hyperparams fit.json, which keeps
every run's point so that a results folder without run folders refits. Every problem is one
ValueError line.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from bigmodel import files
from bigmodel.scaling import registry
from bigmodel.scaling.points import parse_number, read_table, require_columns

LAW = "hyperparams"  # the `law` of its fit.json
CSV_COLUMNS = ("flops", "learning_rate", "batch_size", "seq_len", "loss")


@dataclasses.dataclass(frozen=True)
class HyperparamPoints:
    """One entry per finished run."""

    flops: np.ndarray
    learning_rate: np.ndarray
    batch_size: np.ndarray  # sequences per step
    seq_len: np.ndarray
    loss: np.ndarray
    names: tuple[str, ...]
    loss_name: str

    @property
    def batch_tokens(self) -> np.ndarray:
        return self.batch_size * self.seq_len


def sweep_hyperparam_points(directory: Path) -> HyperparamPoints:
    """The done runs of a sweep (stable runs excluded, as in every fit), with each run's lr,
    batch size and seq_len from its config.json (the registry does not record them)."""
    rows, path = registry.read_registry(directory), directory / registry.REGISTRY_FILE
    table = {key: [] for key in ("flops", "learning_rate", "batch_size", "seq_len", "loss")}
    names, validation = [], []
    for line, row in rows:
        if row["status"] != registry.DONE or row["role"] in (registry.STABLE, registry.RUNG):
            continue
        config = files.read_json(directory / row["name"] / "config.json")
        if not isinstance(config, dict):
            raise ValueError(f"{directory / row['name']} has no readable config.json (the run's lr and batch size): "
                             f"fit a CSV with columns {','.join(CSV_COLUMNS)} instead")
        column = "final_eval_loss" if row["final_eval_loss"] != "" else "final_loss"
        table["flops"].append(parse_number(path, line, "flops", row["flops"]))
        table["loss"].append(parse_number(path, line, column, row[column]))
        table["learning_rate"].append(float(config["optim"]["lr"]))
        table["batch_size"].append(float(config["train"]["batch_size"]))
        table["seq_len"].append(float(config["data"]["seq_len"]))
        names.append(row["name"])
        validation.append(column == "final_eval_loss")
    if not names:
        raise ValueError(f"{path} has no finished runs (status {registry.DONE!r}): run or resume the sweep first")
    return HyperparamPoints(**{key: np.asarray(values, dtype=float) for key, values in table.items()}, names=tuple(names),
                            loss_name=registry.loss_name(np.array(validation)))


def csv_hyperparam_points(path: Path) -> HyperparamPoints:
    header, rows = read_table(path)
    require_columns(path, header, CSV_COLUMNS, f"a hyperparameter fit needs columns {','.join(CSV_COLUMNS)} (batch_size in sequences)")
    if not rows:
        raise ValueError(f"{path} has a header but no rows: add one row per run")
    table = {key: np.array([parse_number(path, line, key, row.get(key)) for line, row in rows]) for key in CSV_COLUMNS}
    names = tuple(row.get("name", "") for _, row in rows) if "name" in header else ()
    return HyperparamPoints(**table, names=names, loss_name="loss")


def fit_json_points(path: Path) -> HyperparamPoints:
    """The runs an earlier hyperparams fit.json carries: a results folder refits without run folders."""
    fit = files.read_json(path)
    if not isinstance(fit, dict) or fit.get("law") != LAW or not fit.get("points"):
        raise ValueError(f"{path} is not a hyperparams fit.json with points: pass a sweep directory or a CSV with columns {','.join(CSV_COLUMNS)}")
    table = {key: np.array([row[key] for row in fit["points"]], dtype=float) for key in CSV_COLUMNS}
    return HyperparamPoints(**table, names=tuple(row.get("name", "") for row in fit["points"]), loss_name=fit.get("loss_name", "loss"))


def load_hyperparam_points(path: str | Path) -> HyperparamPoints:
    """Points from a sweep directory, a CSV, or the points of an earlier fit.json."""
    path = Path(path)
    if path.is_dir():
        return sweep_hyperparam_points(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist: pass a sweep directory or a CSV with columns {','.join(CSV_COLUMNS)}")
    return fit_json_points(path) if path.suffix == ".json" else csv_hyperparam_points(path)
