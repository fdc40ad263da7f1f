"""Weights & Biases logging (`logging.wandb`), run offline and read back from W&B's own run files.

An offline run is W&B's record log (`run-<id>.wandb`: leveldb-log blocks of protobuf `Record`s,
the format `wandb sync` uploads); `wandb_records` reads it with wandb's own protobuf classes.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest

pytest.importorskip("wandb")

from bigmodel.cli import main  # noqa: E402
from bigmodel.metrics import read_metrics  # noqa: E402
from bigmodel.scaling import registry  # noqa: E402
from bigmodel.scaling.runner import run_analysis  # noqa: E402

BLOCK_BYTES, HEADER_BYTES = 32768, 7  # leveldb log blocks; a file header and each chunk header are 7 bytes
FULL, LAST = 1, 4  # chunk types that end a record


def wandb_records(path: Path) -> list:
    """Every `Record` of an offline run file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, position, pending = [], HEADER_BYTES, b""
    while position + HEADER_BYTES <= len(data):
        left_in_block = BLOCK_BYTES - position % BLOCK_BYTES
        _, length, kind = struct.unpack("<IHB", data[position:position + HEADER_BYTES])
        if left_in_block < HEADER_BYTES or (length == 0 and kind == 0):  # block padding
            position += left_in_block
            continue
        if position + HEADER_BYTES + length > len(data):  # a record still being written
            break
        pending += data[position + HEADER_BYTES:position + HEADER_BYTES + length]
        position += HEADER_BYTES + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def of_kind(records: list, kind: str) -> list:
    return [getattr(record, kind) for record in records if record.WhichOneof("record_type") == kind]


def history(records: list) -> dict[int, dict]:
    """step → the scalars logged at it (W&B's own `_step`, `_runtime`, ... left out)."""
    rows = {}
    for row in of_kind(records, "history"):
        values = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in row.item}
        rows.setdefault(values["_step"], {}).update({key: value for key, value in values.items() if not key.startswith("_")})
    return rows


def offline_runs(directory: Path, timeout_s: float = 60) -> list[Path]:
    """The offline run files under `directory`, once each is whole: W&B's service writes them
    on its own after `finish()` returns, and ends each with an `exit` record."""
    paths = sorted((directory / "wandb").glob("offline-run-*/run-*.wandb"))
    deadline = time.monotonic() + timeout_s
    while not all(of_kind(wandb_records(path), "exit") for path in paths) and time.monotonic() < deadline:
        time.sleep(0.2)
    return paths


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


@pytest.mark.slow  # a run stopped and resumed (its compiles shared with tiny_run's through the compilation cache)
def test_a_run_logs_its_scalars_config_and_summary_and_a_resume_continues_the_same_wandb_run(tmp_path, kjv_data_dir, offline):
    from conftest import TINY_RUN

    workdir = tmp_path / "run"
    settings = {**TINY_RUN, "data.data_dir": kjv_data_dir, "train.log_every": 2, "logging.wandb": "bigmodel-tests"}
    command = ["train", "--config", "configs/lm.py:L1", "--workdir", str(workdir), *[f"--config.{key}={value}" for key, value in settings.items()]]
    assert main([*command, "--stop_at_step", "4"]) == 0
    run_id = (workdir / "wandb_run_id").read_text().strip()
    assert main(command) == 0
    first, resumed = offline_runs(workdir)  # one offline run per process, both of the one W&B run id
    assert first.name == resumed.name == f"run-{run_id}.wandb"
    records = [wandb_records(first), wandb_records(resumed)]
    assert [run.run_id for part in records for run in of_kind(part, "run")] == [run_id, run_id]
    assert {run.project for part in records for run in of_kind(part, "run")} == {"bigmodel-tests"}
    logged = {**history(records[0]), **history(records[1])}
    expected = {record["step"]: record for record in read_metrics(workdir)}  # what TensorBoard got too
    assert sorted(history(records[0])) == [2, 4] and sorted(history(records[1])) == [6, 8]
    for step, record in expected.items():
        assert {key: logged[step][key] for key in record if key != "step"} == pytest.approx({key: value for key, value in record.items() if key != "step"})
    config = {item.key: json.loads(item.value_json) for run in of_kind(records[0], "run") for item in run.config.update}
    assert config["model"]["d_model"] == 32 and config["data"]["dataset"] == "kjv" and config["logging"]["wandb"] == "bigmodel-tests"
    summary = json.loads((workdir / "summary.json").read_text())
    summarized = {item.key: json.loads(item.value_json) for part in of_kind(records[1], "summary") for item in part.update if item.key}
    assert summarized["final_eval_loss"] == pytest.approx(summary["final_eval_loss"]) and summarized["params"] == summary["params"]


def test_a_sweep_logs_its_fit_and_plots_as_an_artifact(tmp_path, offline):
    sizes = [12_384, 49_344, 98_624, 221_664, 332_448]
    registry.write_registry(tmp_path, [
        {"name": f"run{index}", "status": "done", "params": 2 * size, "non_embedding_params": size, "tokens": 10**6,
         "flops": 6 * size * 10**6, "final_loss": "", "final_eval_loss": 1.0 + 5.0 * size**-0.25, "eval_bpb": "",
         "wall_time_s": 1.0, "error": ""} for index, size in enumerate(sizes)])
    assert run_analysis({"law": "power", "x": "non_embedding_params", "bootstrap": 0}, tmp_path, wandb_project="bigmodel-tests")
    (run_file,) = offline_runs(tmp_path)
    (artifact,) = of_kind(wandb_records(run_file), "artifact")
    assert (artifact.type, artifact.name) == ("scaling-fit", f"{tmp_path.name}-fit")
    paths = sorted(entry.path for entry in artifact.manifest.contents)
    plots = sorted(f"plots/{path.name}" for path in (tmp_path / "plots").iterdir())
    assert paths == sorted(["fit.json", *plots]) and any(path.endswith(".png") for path in paths)
