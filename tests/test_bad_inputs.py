"""Every malformed input gets one `error:` line, exit code 2, and leaves every file as it was.

`ROWS` is the table the docs' reliability page shows (docs/reliability.md, "Bad input"; a test
checks that the page lists each row with its message); `python tests/test_bad_inputs.py` prints it
as markdown.
Each row builds its inputs in a temporary directory and returns the command's arguments.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parent.parent
TRAIN = ["train", "--config", "configs/lm.py:L2"]


@dataclasses.dataclass(frozen=True)
class Row:
    case: str  # what the user did wrong (the docs table's first column)
    message: str  # a fragment of the one error line (the docs table's second column)
    arguments: Callable[[Path, str], list[str]]  # (tmp_path, tfds data dir) → `python -m bigmodel` arguments
    environment: dict[str, str] = dataclasses.field(default_factory=dict)  # variables set for the command


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _run_dir(tmp_path: Path, config_text: str | None = None, overrides: dict | None = None) -> Path:
    """A workdir holding a run's config.json (no checkpoint)."""
    from bigmodel.config import load_config, to_json

    workdir = tmp_path / "run"
    text = config_text if config_text is not None else to_json(load_config("configs/lm.py:L2", overrides or {}))
    _write(workdir / "config.json", text)
    return workdir


def _trained_run(tmp_path: Path, data_dir: str) -> Path:
    """A real 2-step run (one checkpoint), then its config.json edited to another width."""
    from bigmodel.cli import main

    workdir = tmp_path / "run"
    tiny = ["--config.train.steps=2", "--config.train.batch_size=2", "--config.data.seq_len=16", "--config.eval.batches=1",
            f"--config.data.data_dir={data_dir}"]
    assert main([*TRAIN, "--workdir", str(workdir), *tiny]) == 0
    config = workdir / "config.json"
    config.write_text(config.read_text().replace('"d_model": 64', '"d_model": 32'))
    return workdir


def _held_workdir(tmp_path: Path) -> Path:
    from bigmodel import files

    workdir = tmp_path / "busy"
    workdir.mkdir()
    _held_workdir.lock = files.exclusive_workdir(workdir, "train")  # kept open for the row's command
    return workdir


def _taken_port(tmp_path: Path) -> str:
    """A loopback port another socket listens on, for as long as the row's command runs."""
    import socket

    _taken_port.sock = socket.create_server(("127.0.0.1", 0))  # kept open for the row's command
    return str(_taken_port.sock.getsockname()[1])
def _live_run_without_checkpoint(tmp_path: Path) -> Path:
    """A run whose trainer holds its lock and has not checkpointed yet (this process plays the trainer)."""
    from bigmodel import files

    workdir = _run_dir(tmp_path)
    _held_workdir.lock = files.exclusive_workdir(workdir, "train")  # kept open for the row's command
    return workdir


def _experiment(tmp_path: Path, text: str) -> str:
    return str(_write(tmp_path / "study.py", text))


def _points(tmp_path: Path, text: str) -> str:
    return str(_write(tmp_path / "points.csv", text))


PREPARE = ["prepare", "--name", "mine", "--files"]


def _inputs(tmp_path: Path, contents: dict[str, bytes]) -> str:
    """Input files for prepare; returns the glob that matches them."""
    for name, data in contents.items():
        _write(tmp_path / "in" / name, "").write_bytes(data)
    return str(tmp_path / "in" / "*")


def _parquet(tmp_path: Path) -> str:
    import pyarrow
    import pyarrow.parquet

    (tmp_path / "in").mkdir()
    pyarrow.parquet.write_table(pyarrow.table({"body": ["a", "b"]}), tmp_path / "in" / "d.parquet")
    return str(tmp_path / "in" / "*.parquet")


def _prepared(tmp_path: Path) -> str:
    """A dataset `mine` prepared already; returns the glob of its inputs."""
    from bigmodel.cli import main

    pattern = _inputs(tmp_path, {"a.txt": b"first\n", "b.txt": b"second\n"})
    assert main([*PREPARE, pattern, "--data_dir", str(tmp_path / "data")]) == 0
    return pattern

def _study(tmp_path: Path, grid: str = "SizeGrid(['L1'], tokens=4096)", **fields: str) -> str:
    """An experiment file whose study trains L1 on `grid` (source text), with `fields` (source text) added."""
    extra = "".join(f", {key}={value}" for key, value in fields.items())
    return _experiment(tmp_path, "import math\nfrom bigmodel.scaling.sweep import IsoFlopGrid, SizeGrid, Study\n\n"
                                 f"def get_study():\n    return Study(base_config='configs/lm.py:L1', grid={grid}{extra})\n")


def _dry_run(tmp_path: Path, study: str) -> list[str]:
    return ["sweep", study, "--workdir", str(tmp_path / "s"), "--dry-run"]


NOT_UTF8 = "In \udcff"  # how Python hands over a command-line byte that is not UTF-8 (here 0xff)
GENERATE = ["generate", "--prompt", "In the"]

REGISTRY_HEADER = "name,status,params,non_embedding_params,tokens,flops,final_loss,final_eval_loss,eval_bpb,wall_time_s,error\n"
REGISTRY_ROWS = "".join(f"r{i},done,{2 * n:g},{n:g},{20 * n:g},{120 * n * n:g},{2 + 10 * n ** -0.3:.4f},{2 + 10 * n ** -0.3:.4f},3.0,1.0,\n"
                        for i, n in enumerate((1e5, 2e5, 4e5, 8e5, 1.6e6)))


def _sweep(tmp_path: Path, registry_text: str = REGISTRY_HEADER + REGISTRY_ROWS, **run_files: str) -> Path:
    """A sweep directory: runs.csv and, for each `name="metrics.jsonl text"`, that run's metrics."""
    _write(tmp_path / "sweep" / "runs.csv", registry_text)
    for name, text in run_files.items():
        _write(tmp_path / "sweep" / name / "metrics.jsonl", text)
    return tmp_path / "sweep"


def _torn_mid_registry(tmp_path: Path) -> Path:
    return _sweep(tmp_path, REGISTRY_HEADER + "r9,done,10,5\n" + REGISTRY_ROWS)
def _versus_sweep(tmp_path: Path, name: str, dataset: str) -> str:
    """A sweep directory of 6 finished runs (2 sizes × 3 token counts), each with a config.json on `dataset`."""
    from bigmodel.scaling.registry import COLUMNS, write_registry

    directory, rows = tmp_path / name, []
    for n in (1e5, 4e5):
        for d in (1e6, 2e6, 4e6):
            run = f"N{n:g}-D{d:g}"
            _write(directory / run / "config.json", f'{{"data": {{"dataset": "{dataset}", "tokenizer": "bytes", "vocab_size": 256, "seq_len": 128}}}}')
            loss = 2 + 10 * n ** -0.3 + 20 * d ** -0.3
            rows.append({**dict.fromkeys(COLUMNS, ""), "name": run, "status": "done", "params": n, "non_embedding_params": n,
                         "tokens": d, "flops": 6 * n * d, "final_loss": loss, "final_eval_loss": loss})
    write_registry(directory, rows)
    return str(directory)


def _calibrate_versus(tmp_path: Path, *flags: str) -> list[str]:
    """`calibrate A --versus B` on two CSVs of the same points, with `flags`."""
    return ["calibrate", _points(tmp_path, GOOD_POINTS), "--versus", _points(tmp_path, GOOD_POINTS), "--out", str(tmp_path / "c.json"), *flags]


def _versus(tmp_path: Path, *flags: str) -> list[str]:
    """`fit A --versus B` on two CSVs of the same points, with `flags`."""
    return ["fit", _points(tmp_path, GOOD_POINTS), "--versus", _points(tmp_path, GOOD_POINTS), "--out", str(tmp_path / "fit.json"), *flags]


GOOD_POINTS = "params,tokens,loss\n" + "".join(f"{n},{20 * n},{2 + 10 * n ** -0.3:.4f}\n" for n in (1e5, 2e5, 4e5, 8e5, 1.6e6))

ROWS = [
    # configs and overrides
    Row("config file does not exist", "config file 'configs/nope.py' not found", lambda t, d: ["train", "--config", "configs/nope.py", "--workdir", str(t / "r")]),
    Row("unknown preset", "unknown preset 'XL'", lambda t, d: ["train", "--config", "configs/lm.py:XL", "--workdir", str(t / "r")]),
    Row("config file with a syntax error", "line 2: ", lambda t, d: ["train", "--config", str(_write(t / "c.py", "def get_config(arg):\n    return {\n")), "--workdir", str(t / "r")]),
    Row("config file without get_config", "defines no get_config(arg)", lambda t, d: ["train", "--config", str(_write(t / "c.py", "x = 1\n")), "--workdir", str(t / "r")]),
    Row("get_config raises", "get_config('') failed: KeyError", lambda t, d: ["train", "--config", str(_write(t / "c.py", "def get_config():\n    return {}['model']\n")), "--workdir", str(t / "r")]),
    Row("misspelt key", "unknown config key config.model.nlayers", lambda t, d: [*TRAIN, "--workdir", str(t / "r"), "--config.model.nlayers=2"]),
    Row("value of the wrong type", "config.train.steps expects int, got 'abc'", lambda t, d: [*TRAIN, "--workdir", str(t / "r"), "--config.train.steps=abc"]),
    Row("a whole group overridden", "config.model is a group", lambda t, d: [*TRAIN, "--workdir", str(t / "r"), "--config.model=3"]),
    Row("override without a value", "cannot read override '--config.train.steps'", lambda t, d: [*TRAIN, "--workdir", str(t / "r"), "--config.train.steps"]),
    Row("heads that do not divide d_model", "d_model=64 is not divisible by n_heads=3", lambda t, d: [*TRAIN, "--workdir", str(t / "r"), "--config.model.n_heads=3"]),
    Row("mesh larger than the devices", "uses 2 devices but 1 are present", lambda t, d: [*TRAIN, "--workdir", str(t / "r"), "--config.mesh.data=2"]),
    Row("muP with a tied LM head", "parametrization=mup needs an untied LM head", lambda t, d: [*TRAIN, "--workdir", str(t / "r"), "--config.model.parametrization=mup", "--config.model.tie_embeddings=true"]),
    Row("muP with head_dim growing with width and no base head_dim", "head_dim grows with width here, so set model.mup_base_head_dim",
        lambda t, d: [*TRAIN, "--workdir", str(t / "r"), "--config.model.parametrization=mup", "--config.model.d_model=256"]),
    Row("negative warmup", "warmup_steps=-1 must be between 0 and train.steps", lambda t, d: [*TRAIN, "--workdir", str(t / "r"), "--config.optim.warmup_steps=-1"]),
    Row("tfds dataset that does not exist", "tfds has no dataset 'no_such_dataset'", lambda t, d: [*TRAIN, "--workdir", str(t / "r"), "--config.data.dataset=tfds:no_such_dataset", f"--config.data.data_dir={d}"]),
    Row("unknown dataset name", "config.data.dataset='wiki' is unknown", lambda t, d: [*TRAIN, "--workdir", str(t / "r"), "--config.data.dataset=wiki"]),
    # workdirs
    Row("--workdir is a file", "is a file: pass a directory", lambda t, d: [*TRAIN, "--workdir", str(_write(t / "notes.txt", "mine"))]),
    Row("--workdir holds someone else's files", "is not a bigmodel run", lambda t, d: [*TRAIN, "--workdir", str(_write(t / "mine" / "notes.txt", "x").parent)]),
    Row("--workdir holds another run", "holds a run with a different config (model.d_model: 96 -> 64", lambda t, d: [*TRAIN, "--workdir", str(_run_dir(t, overrides={"model.d_model": "96"}))]),
    Row("train.steps changed mid-run (cosine)", "train.steps: 3000 -> 6000", lambda t, d: [*TRAIN, "--workdir", str(_run_dir(t, overrides={"optim.schedule": "cosine"})), "--config.optim.schedule=cosine", "--config.train.steps=6000"]),
    Row("run's config.json is not JSON", "config.json is not valid JSON", lambda t, d: [*TRAIN, "--workdir", str(_run_dir(t, config_text="{oops"))]),
    Row("--workdir in use by a live trainer", "in use by another bigmodel train", lambda t, d: [*TRAIN, "--workdir", str(_held_workdir(t)), f"--config.data.data_dir={d}"]),
    Row("--workdir cannot be created", "cannot write to --workdir", lambda t, d: [*TRAIN, "--workdir", "/proc/bigmodel-run", f"--config.data.data_dir={d}"]),
    # eval and checkpoints
    Row("eval of a directory that is not a run", "has no config.json", lambda t, d: ["eval", "--workdir", str(t)]),
    Row("eval of a run with no checkpoint", "has no checkpoint yet", lambda t, d: ["eval", "--workdir", str(_run_dir(t))]),
    Row("eval of a checkpoint from another model shape", "was written by another model shape (params.final_norm.scale: saved (64,), this config (32,))", lambda t, d: ["eval", "--workdir", str(_trained_run(t, d))]),
    Row("eval with a corrupted config.json", "config.json is not valid JSON", lambda t, d: ["eval", "--workdir", str(_run_dir(t, config_text="[1, 2"))]),
    # command-line flags
    Row("required flag missing", "the following arguments are required: --workdir", lambda t, d: ["train", "--config", "configs/lm.py:L2"]),
    Row("misspelt flag", "unrecognized arguments: --wrkdir", lambda t, d: [*TRAIN, "--workdir", str(t / "r"), "--wrkdir", "x"]),
    Row("unknown command", "invalid choice: 'trian'", lambda t, d: ["trian"]),
    Row("overrides given to eval", "overrides apply to train, bench, plan, finetune only", lambda t, d: ["eval", "--workdir", str(t), "--config.train.steps=5"]),
    Row("--stop_at_step 0", "argument --stop_at_step: expected a positive integer, got '0'", lambda t, d: [*TRAIN, "--workdir", str(t / "r"), "--stop_at_step", "0"]),
    Row("eval --batches -1", "argument --batches: expected a positive integer, got '-1'", lambda t, d: ["eval", "--workdir", str(t), "--batches", "-1"]),
    Row("sweep --jobs 0", "argument --jobs: expected a positive integer, got '0'", lambda t, d: ["sweep", "experiments/demo.py", "--workdir", str(t / "s"), "--jobs", "0"]),
    Row("sweep --retries -1", "--retries must be 0 or more, got -1", lambda t, d: ["sweep", "experiments/demo.py", "--workdir", str(t / "s"), "--retries", "-1"]),
    Row("a Slurm flag without --backend slurm", "--partition applies to --backend slurm only", lambda t, d: ["sweep", "experiments/demo.py", "--workdir", str(t / "s"), "--partition", "gpu"]),
    Row("--slurm-option for what has its own flag", "--slurm-option 'time=10': use --time-limit instead", lambda t, d: ["sweep", "experiments/demo.py", "--workdir", str(t / "s"), "--backend", "slurm", "--slurm-option", "time=10"]),
    # experiment files
    Row("experiment file does not exist", "experiment file 'experiments/nope.py' not found", lambda t, d: ["sweep", "experiments/nope.py", "--workdir", str(t / "s")]),
    Row("experiment file with a syntax error", "failed to load: SyntaxError", lambda t, d: ["sweep", _experiment(t, "def get_study(:\n"), "--workdir", str(t / "s")]),
    Row("experiment file without get_study", "defines no get_study()", lambda t, d: ["sweep", _experiment(t, "x = 1\n"), "--workdir", str(t / "s")]),
    Row("get_study returns something else", "get_study() returned dict, expected bigmodel.scaling.sweep.Study", lambda t, d: ["sweep", _experiment(t, "def get_study():\n    return {}\n"), "--workdir", str(t / "s")]),
    # points for fit and plot
    Row("fit: CSV file does not exist", "does not exist", lambda t, d: ["fit", str(t / "none.csv"), "--law", "power", "--out", str(t / "fit.json")]),
    Row("fit: empty CSV", "is empty", lambda t, d: ["fit", _points(t, ""), "--law", "power", "--out", str(t / "fit.json")]),
    Row("fit: CSV without a loss column", "has no 'loss' column", lambda t, d: ["fit", _points(t, "params,tokens\n1,2\n"), "--law", "power", "--out", str(t / "fit.json")]),
    Row("fit: NaN in a cell", "column 'loss' is 'nan', not a positive number", lambda t, d: ["fit", _points(t, GOOD_POINTS + "1e7,2e8,nan\n"), "--law", "power", "--out", str(t / "fit.json")]),
    Row("fit: negative parameter count", "column 'params' is '-5', not a positive number", lambda t, d: ["fit", _points(t, GOOD_POINTS + "-5,2e8,3.1\n"), "--law", "power", "--out", str(t / "fit.json")]),
    Row("fit: a single point", "need at least 3 points", lambda t, d: ["fit", _points(t, "params,tokens,loss\n1e5,2e6,3.2\n"), "--law", "power", "--out", str(t / "fit.json")]),
    Row("fit: isoflop law without a flops column", "every row needs a flops value", lambda t, d: ["fit", _points(t, GOOD_POINTS), "--law", "isoflop", "--out", str(t / "fit.json")]),
    Row("fit: unknown law", "unknown law 'kaplan'", lambda t, d: ["fit", _points(t, GOOD_POINTS), "--law", "kaplan", "--out", str(t / "fit.json")]),
    Row("fit: --predict that is not N,D", "--predict '1e9' is not N,D", lambda t, d: ["fit", _points(t, GOOD_POINTS), "--law", "chinchilla", "--predict", "1e9", "--out", str(t / "fit.json")]),
    Row("fit: unknown compute basis", "unknown compute basis 'kaplan'", lambda t, d: ["fit", _points(t, GOOD_POINTS), "--law", "chinchilla", "--budget", "1e15", "--compute_basis", "kaplan", "--out", str(t / "fit.json")]),
    Row("fit: --out is a directory", "is a directory: pass the path of the JSON file to write", lambda t, d: ["fit", _points(t, GOOD_POINTS), "--law", "power", "--out", str(t)]),
    # calibrate: a design and its simulation
    Row("calibrate: a design with one size", "the design has 1 distinct sizes", lambda t, d: ["calibrate", _points(t, "params,tokens,loss\n1e5,1e6,3\n1e5,2e6,2.9\n"), "--out", str(t / "c.json")]),
    Row("calibrate: --studies 0", "--studies must be a positive number", lambda t, d: ["calibrate", _points(t, GOOD_POINTS), "--studies", "0"]),
    Row("calibrate: unknown noise model", "unknown noise model 'gauss'", lambda t, d: ["calibrate", _points(t, GOOD_POINTS), "--noise", "gauss"]),
    Row("calibrate: negative --noise_sd", "--noise_sd must be 0 or more", lambda t, d: ["calibrate", _points(t, GOOD_POINTS), "--noise_sd", "-0.01"]),
    Row("calibrate: --shared_fraction 1", "--shared_fraction must be in [0, 1)", lambda t, d: ["calibrate", _points(t, GOOD_POINTS), "--shared_fraction", "1"]),
    Row("calibrate: --truth not five numbers", "give five numbers E,A,B,alpha,beta", lambda t, d: ["calibrate", _points(t, GOOD_POINTS), "--truth", "1,2,3"]),
    Row("calibrate: --vary without numbers", "write sizes=3,4,6 or seeds=1,2,4", lambda t, d: ["calibrate", _points(t, GOOD_POINTS), "--vary", "sizes"]),
    Row("plot: sweep directory without runs.csv", "has no runs.csv", lambda t, d: ["plot", str(_write(t / "sweep" / "x.txt", "").parent), "--out", str(t / "plots")]),
    Row("status: directory without runs.csv", "has no runs.csv: pass the --workdir of a sweep", lambda t, d: ["status", str(_write(t / "sweep" / "x.txt", "").parent)]),
    Row("status: --watch 0", "--watch takes a positive number of seconds", lambda t, d: ["status", str(t), "--watch", "0"]),
    Row("fit: unknown --count", "unknown --count 'kaplan'", lambda t, d: ["fit", _points(t, GOOD_POINTS), "--law", "chinchilla", "--count", "kaplan", "--out", str(t / "fit.json")]),
    Row("fit: --count total on a CSV without total params", "--count total needs each run's total parameter count",
        lambda t, d: ["fit", _points(t, GOOD_POINTS), "--law", "power", "--count", "total", "--out", str(t / "fit.json")]),
    # serve: flags and the port, refused before the run is read
    Row("serve: the port is taken", "is in use: pick another --port, or stop what holds it", lambda t, d: ["serve", "--workdir", str(t / "run"), "--port", _taken_port(t)]),
    Row("serve: --host not of this machine", "--host 203.0.113.7 is not an address of this machine", lambda t, d: ["serve", "--workdir", str(t / "run"), "--host", "203.0.113.7", "--port", "0"]),
    Row("serve: --port out of range", "--port 70000 is not a TCP port", lambda t, d: ["serve", "--workdir", str(t / "run"), "--port", "70000"]),
    Row("serve: --request_timeout_s 0", "--request_timeout_s must be a positive number of seconds, got 0.0", lambda t, d: ["serve", "--workdir", str(t / "run"), "--request_timeout_s", "0"]),
    Row("serve: --keep_alive_s nan", "--keep_alive_s must be a positive number of seconds, got nan", lambda t, d: ["serve", "--workdir", str(t / "run"), "--keep_alive_s", "nan"]),
    Row("serve: --keep_alive_s over --request_timeout_s", "--keep_alive_s 30 is over --request_timeout_s 10", lambda t, d: ["serve", "--workdir", str(t / "run"), "--keep_alive_s", "30"]),
    Row("serve: --max_pending_connections 0", "argument --max_pending_connections: expected a positive integer, got '0'", lambda t, d: ["serve", "--workdir", str(t / "run"), "--max_pending_connections", "0"]),
    Row("serve: --shutdown_grace_s -1", "--shutdown_grace_s must be ≥ 0, got -1.0", lambda t, d: ["serve", "--workdir", str(t / "run"), "--shutdown_grace_s", "-1"]),
    Row("serve: --max_prompts over --max_batch", "--max_prompts 9 is over --max_batch 8", lambda t, d: ["serve", "--workdir", str(t / "run"), "--max_prompts", "9", "--max_batch", "8"]),
    # prepare: a user's files into a dataset
    Row("prepare: --files matching nothing", "matches no files", lambda t, d: [*PREPARE, str(t / "none" / "*.txt"), "--data_dir", str(t / "data")]),
    Row("prepare: a text file that is not UTF-8", "bad.txt:2: byte 0xe9 is not UTF-8 text",
        lambda t, d: [*PREPARE, _inputs(t, {"good.txt": b"fine\n", "bad.txt": b"line one\ncaf\xe9\n"}), "--data_dir", str(t / "data")]),
    Row("prepare: a JSONL line that is not JSON", "c.jsonl:2: not JSON",
        lambda t, d: [*PREPARE, _inputs(t, {"c.jsonl": b'{"text": "a"}\n{"text": oops}\n'}), "--data_dir", str(t / "data")]),
    Row("prepare: a JSONL line without the text field", "c.jsonl:1: no 'text' field: pass --text_field",
        lambda t, d: [*PREPARE, _inputs(t, {"c.jsonl": b'{"body": "a"}\n'}), "--data_dir", str(t / "data")]),
    Row("prepare: a Parquet file without the text column", "no column 'text' (it has body)",
        lambda t, d: [*PREPARE, _parquet(t), "--data_dir", str(t / "data")]),
    Row("prepare: a dataset of that name exists", "already holds a dataset named 'mine': pick another --name, or pass --force",
        lambda t, d: [*PREPARE, _prepared(t), "--data_dir", str(t / "data")]),
    Row("prepare: a name tfds already uses", "is a dataset tfds already knows",
        lambda t, d: ["prepare", "--name", "mnist", "--files", _inputs(t, {"a.txt": b"a\n", "b.txt": b"b\n"}), "--data_dir", str(t / "data")]),
    Row("prepare: --validation_fraction out of range", "--validation_fraction must be between 0 and 1",
        lambda t, d: [*PREPARE, _inputs(t, {"a.txt": b"a\n"}), "--data_dir", str(t / "data"), "--validation_fraction", "1"]),
    Row("bpe tokenizer with a vocabulary under 256", "too small for the bpe tokenizer",
        lambda t, d: [*TRAIN, "--workdir", str(t / "r"), "--config.data.tokenizer=bpe", "--config.data.vocab_size=128"]),
    Row("logging.wandb not a W&B project name", "is not a W&B project name",
        lambda t, d: [*TRAIN, "--workdir", str(t / "r"), "--config.logging.wandb=team/project"]),
    # recommend and the ladder
    Row("recommend: fit.json does not exist", "does not exist: pass the fit.json", lambda t, d: ["recommend", str(t / "none.json"), "--budget", "1e15"]),
    Row("recommend: a file that is not a fit.json", "is not a fit.json", lambda t, d: ["recommend", str(_write(t / "fit.json", "{oops")), "--budget", "1e15"]),
    Row("recommend: a fit without a chinchilla law", "holds a hyperparams law, not chinchilla", lambda t, d: ["recommend", "experiments/hparams_results/fit.json", "--budget", "1e15"]),
    Row("recommend: --budget 0", "--budget 0.0 is not a compute budget", lambda t, d: ["recommend", "experiments/demo_results/fit.json", "--budget", "0"]),
    Row("recommend: --budget inf", "--budget inf is not a compute budget", lambda t, d: ["recommend", "experiments/demo_results/fit.json", "--budget", "inf"]),
    Row("sweep: a ladder rung below the fitted compute", "ladder rung 1e+12 FLOPs is below the fitted compute", lambda t, d: ["sweep", "experiments/demo.py", "--workdir", str(t / "s"), "--ladder", "1e12"]),
    Row("sweep --ladder that is not numbers", "--ladder 'big' is not a list of compute budgets", lambda t, d: ["sweep", "experiments/demo.py", "--workdir", str(t / "s"), "--ladder", "big"]),
    Row("sweep: a ladder without a fit to score it", "a ladder scores the fit's forecasts", lambda t, d: ["sweep", "experiments/branches.py", "--workdir", str(t / "s"), "--ladder", "1e16", "--dry-run"]),
    # values nobody checked: every flag up front, every Study field at dry-run (refused before any JAX work)
    Row("generate --seed 2^32", "argument --seed: expected a seed from 0 to 4294967295", lambda t, d: [*GENERATE, "--workdir", str(t), "--seed", str(2**32)]),
    Row("generate --seed 2^70", "argument --seed: expected a seed from 0 to 4294967295", lambda t, d: [*GENERATE, "--workdir", str(t), "--seed", str(2**70)]),
    Row("generate --seed -1", "argument --seed: expected a seed from 0 to 4294967295 (JAX keeps 32 bits of it), got '-1'", lambda t, d: [*GENERATE, "--workdir", str(t), "--seed", "-1"]),
    Row("generate --prompt that is not UTF-8", "argument --prompt: is not valid UTF-8 (character 4", lambda t, d: ["generate", "--workdir", str(t), "--prompt", NOT_UTF8]),
    Row("generate --stop that is not UTF-8", "argument --stop: is not valid UTF-8", lambda t, d: [*GENERATE, "--workdir", str(t), "--stop", NOT_UTF8]),
    Row("generate --workdir ''", "argument --workdir: is empty: pass a path", lambda t, d: [*GENERATE, "--workdir", ""]),
    Row("bench --peak_flops -1", "argument --peak_flops: expected a finite number > 0, got '-1'", lambda t, d: ["bench", "--config", "configs/lm.py:L1", "--peak_flops", "-1"]),
    Row("bench --peak_flops inf", "argument --peak_flops: expected a finite number > 0, got 'inf'", lambda t, d: ["bench", "--config", "configs/lm.py:L1", "--peak_flops", "inf"]),
    Row("bench --warmup -1", "argument --warmup: expected an integer ≥ 0, got '-1'", lambda t, d: ["bench", "--config", "configs/lm.py:L1", "--warmup", "-1"]),
    Row("presets --vocab_size 0", "argument --vocab_size: expected a positive integer, got '0'", lambda t, d: ["presets", "--vocab_size", "0"]),
    Row("presets --seq_len -1", "argument --seq_len: expected a positive integer, got '-1'", lambda t, d: ["presets", "--seq_len", "-1"]),
    Row("plan --devices 65536", "argument --devices: expected an integer from 1 to 4,096", lambda t, d: ["plan", "--config", "configs/lm.py:L1", "--devices", "65536"]),
    Row("plan --target that is unknown", "argument --target: unknown value 'tpu9': use one of h100-80gb", lambda t, d: ["plan", "--config", "configs/lm.py:L1", "--target", "tpu9"]),
    Row("fit --budget -1", "argument --budget: expected a finite number > 0, got '-1'", lambda t, d: ["fit", _points(t, GOOD_POINTS), "--law", "chinchilla", "--budget", "-1", "--out", str(t / "fit.json")]),
    Row("fit --budget 0", "argument --budget: expected a finite number > 0, got '0'", lambda t, d: ["fit", _points(t, GOOD_POINTS), "--law", "chinchilla", "--budget", "0", "--out", str(t / "fit.json")]),
    Row("fit --budget nan", "argument --budget: expected a finite number > 0, got 'nan'", lambda t, d: ["fit", _points(t, GOOD_POINTS), "--law", "chinchilla", "--budget", "nan", "--out", str(t / "fit.json")]),
    Row("fit --budget inf", "argument --budget: expected a finite number > 0, got 'inf'", lambda t, d: ["fit", _points(t, GOOD_POINTS), "--law", "chinchilla", "--budget", "inf", "--out", str(t / "fit.json")]),
    Row("fit --seed -1", "argument --seed: expected a seed from 0 to 4294967295 (JAX keeps 32 bits of it), got '-1'", lambda t, d: ["fit", _points(t, GOOD_POINTS), "--law", "power", "--seed", "-1", "--out", str(t / "fit.json")]),
    Row("fit --out ''", "argument --out: is empty: pass a path", lambda t, d: ["fit", _points(t, GOOD_POINTS), "--law", "power", "--out", ""]),
    Row("calibrate --budget nan", "argument --budget: expected a finite number > 0, got 'nan'", lambda t, d: ["calibrate", _points(t, GOOD_POINTS), "--budget", "nan"]),
    Row("calibrate --processes 0", "argument --processes: expected an integer from 1 to 256", lambda t, d: ["calibrate", _points(t, GOOD_POINTS), "--processes", "0"]),
    Row("calibrate --noise_sd inf", "--noise_sd must be 0 or more (σ of log loss), got inf", lambda t, d: ["calibrate", _points(t, GOOD_POINTS), "--noise_sd", "inf"]),
    Row("calibrate --truth with nan", "give five numbers E,A,B,alpha,beta", lambda t, d: ["calibrate", _points(t, GOOD_POINTS), "--truth", "nan,400,410,0.34,0.28"]),
    Row("calibrate --target_width -1", "argument --target_width: expected a finite number > 0, got '-1'", lambda t, d: ["calibrate", _points(t, GOOD_POINTS), "--vary", "seeds=1,2", "--target_width", "-1"]),
    Row("compare --seed 2^32", "argument --seed: expected a seed from 0 to 4294967295", lambda t, d: ["compare", str(t / "a"), str(t / "b"), "--seed", str(2**32)]),
    Row("status --watch nan", "--watch takes a positive number of seconds, from 0.1 (watch(1)'s floor) to 86,400 (a day), got nan", lambda t, d: ["status", str(t), "--watch", "nan"]),
    Row("status --watch inf", "--watch takes a positive number of seconds, from 0.1 (watch(1)'s floor) to 86,400 (a day), got inf", lambda t, d: ["status", str(t), "--watch", "inf"]),
    Row("sweep --workdir ''", "argument --workdir: is empty: pass a path", lambda t, d: ["sweep", "experiments/demo.py", "--workdir", ""]),
    Row("train --workdir ''", "argument --workdir: is empty: pass a path", lambda t, d: [*TRAIN, "--workdir", ""]),
    Row("eval --workdir ''", "argument --workdir: is empty: pass a path", lambda t, d: ["eval", "--workdir", ""]),
    Row("export --out ''", "argument --out: is empty: pass a path", lambda t, d: ["export", "--workdir", str(t), "--out", ""]),
    Row("config.seed -1", "config.seed must be a whole number from 0 to 4294967295", lambda t, d: [*TRAIN, "--workdir", str(t / "r"), "--config.seed=-1"]),
    Row("config.seed 2^32", "config.seed must be a whole number from 0 to 4294967295", lambda t, d: [*TRAIN, "--workdir", str(t / "r"), f"--config.seed={2**32}"]),
    Row("infinite learning rate", "config.optim.lr must be positive and finite, got inf", lambda t, d: [*TRAIN, "--workdir", str(t / "r"), "--config.optim.lr=inf"]),
    Row("NaN weight decay", "config.optim.weight_decay must be finite and >= 0", lambda t, d: [*TRAIN, "--workdir", str(t / "r"), "--config.optim.weight_decay=nan"]),
    Row("get_config calls sys.exit(0)", "get_config('') called sys.exit(0): return a ConfigDict", lambda t, d: ["train", "--config", str(_write(t / "c.py", "import sys\ndef get_config():\n    sys.exit(0)\n")), "--workdir", str(t / "r")]),
    Row("tfds name with bad characters", "'k j v' is not a tfds dataset name", lambda t, d: [*TRAIN, "--workdir", str(t / "r"), "--config.data.dataset=tfds:k j v"]),
    Row("tfds config that does not exist", "tfds cannot open 'imdb_reviews/nope' (BuilderConfig nope not found", lambda t, d: [*TRAIN, "--workdir", str(t / "r"), "--config.data.dataset=tfds:imdb_reviews/nope", f"--config.data.data_dir={d}"]),
    Row("finetune --task with bad characters", "--task tfds:../x: '../x' is not a tfds dataset name", lambda t, d: ["finetune", "--from", str(t / "run"), "--task", "tfds:../x", "--workdir", str(t / "ft")]),
    Row("finetune config.seed -1", "config.seed must be a whole number from 0 to 4294967295", lambda t, d: ["finetune", "--from", str(t / "run"), "--task", "kjv_books", "--workdir", str(t / "ft"), "--config.seed=-1"]),
    Row("Study analysis with an unknown law", "the study's analysis {'law': 'kaplan'}: unknown law 'kaplan'", lambda t, d: _dry_run(t, _study(t, analysis="{'law': 'kaplan'}"))),
    Row("Study analysis with an unknown option", "got an unexpected keyword argument 'bootstrapp'", lambda t, d: ["sweep", _study(t, analysis="{'law': 'power', 'bootstrapp': 200}"), "--workdir", str(t / "s")]),
    Row("Study analysis with a negative budget", "budget must be a finite number of FLOPs > 0, got -1", lambda t, d: _dry_run(t, _study(t, analysis="{'law': 'chinchilla', 'budget': -1}"))),
    Row("Study analysis that is not a dict", "the study's analysis must be a dict", lambda t, d: _dry_run(t, _study(t, analysis="'power'"))),
    Row("SizeGrid(tokens=-5)", "SizeGrid tokens=-5: -5 is not a finite number > 0", lambda t, d: _dry_run(t, _study(t, grid="SizeGrid(['L1'], tokens=-5)"))),
    Row("SizeGrid tokens_per_param NaN", "SizeGrid tokens_per_param=nan: nan is not a finite number > 0", lambda t, d: _dry_run(t, _study(t, grid="SizeGrid(['L1'], tokens_per_param=math.nan)"))),
    Row("IsoFlopGrid budget inf", "IsoFlopGrid budgets=[1000000000000.0, inf]: inf is not a finite number > 0", lambda t, d: _dry_run(t, _study(t, grid="IsoFlopGrid([1e12, math.inf], ['L1'])"))),
    Row("IsoFlopGrid range low above high", "IsoFlopGrid tokens_per_param_range=(100, 1) must be (low, high) with 0 < low <= high", lambda t, d: _dry_run(t, _study(t, grid="IsoFlopGrid([1e12], ['L1'], tokens_per_param_range=(100, 1))"))),
    Row("Study learning rate 0", "Study learning_rates=[0.01, 0]: 0 is not a finite number > 0", lambda t, d: _dry_run(t, _study(t, learning_rates="[0.01, 0]"))),
    Row("Study learning rate NaN", "Study learning_rates=[nan]: nan is not a finite number > 0", lambda t, d: _dry_run(t, _study(t, learning_rates="[math.nan]"))),
    Row("Study learning_rates=[]", "Study learning_rates=[] sweeps nothing", lambda t, d: _dry_run(t, _study(t, learning_rates="[]"))),
    Row("Study seed -1", "Study seeds=[-1] must be a list of whole numbers from 0 to 4294967295", lambda t, d: _dry_run(t, _study(t, seeds="[-1]"))),
    Row("get_study() calls sys.exit(0)", "get_study() called sys.exit(0): return a Study", lambda t, d: ["sweep", _experiment(t, "import sys\ndef get_study():\n    sys.exit(0)\n"), "--workdir", str(t / "s")]),
    Row("experiment file calls sys.exit on import", "called sys.exit(3) while loading", lambda t, d: ["sweep", _experiment(t, "import sys\nsys.exit(3)\n"), "--workdir", str(t / "s")]),
    Row("--num_processes without --coordinator", "--num_processes and --process_id apply with --coordinator HOST:PORT", lambda t, d: [*TRAIN, "--workdir", str(t / "r"), "--num_processes", "2", "--process_id", "1"]),
    Row("--coordinator without a port", "--coordinator 'localhost' is not HOST:PORT", lambda t, d: [*TRAIN, "--workdir", str(t / "r"), "--coordinator", "localhost", "--num_processes", "2", "--process_id", "0"]),
    Row("--process_id not below --num_processes", "--process_id 2 must be below --num_processes 2", lambda t, d: [*TRAIN, "--workdir", str(t / "r"), "--coordinator", "127.0.0.1:1234", "--num_processes", "2", "--process_id", "2"]),
    Row("fit --bootstrap 10^11", "argument --bootstrap: expected an integer from 0 to 1,000,000", lambda t, d: ["fit", _points(t, GOOD_POINTS), "--law", "power", "--bootstrap", str(10**11), "--out", str(t / "fit.json")]),
    Row("compare --bootstrap 10^12", "argument --bootstrap: expected an integer from 1 to 1,000,000", lambda t, d: ["compare", str(t / "a"), str(t / "b"), "--bootstrap", str(10**12)]),
    Row("bench --profile is a file", "is a file: pass a directory for the trace", lambda t, d: ["bench", "--config", "configs/lm.py:L1", "--profile", str(_write(t / "trace", "mine"))]),
    Row("status --watch 1e-9", "--watch takes a positive number of seconds, from 0.1", lambda t, d: ["status", str(t), "--watch", "1e-9"]),
    Row("XLA_PYTHON_CLIENT_MEM_FRACTION that is not a share", "XLA_PYTHON_CLIENT_MEM_FRACTION='abc' must be a share of each GPU in (0, 1]",
        lambda t, d: ["plan", "--config", "configs/lm.py:L1"], environment={"XLA_PYTHON_CLIENT_MEM_FRACTION": "abc"}),
    Row("BIGMODEL_PEAK_FLOPS that is not a number", "BIGMODEL_PEAK_FLOPS='fast' must be a finite number of FLOP/s > 0",
        lambda t, d: ["bench", "--config", "configs/lm.py:L1"], environment={"BIGMODEL_PEAK_FLOPS": "fast"}),
    Row("calibrate --studies 10^30", "--studies must be a positive number of simulated studies, at most 100,000", lambda t, d: ["calibrate", _points(t, GOOD_POINTS), "--studies", str(10**30)]),
    Row("calibrate --vary seeds=10^8", "--vary seeds needs whole numbers from 1 to 1,000", lambda t, d: ["calibrate", _points(t, GOOD_POINTS), "--vary", f"seeds={10**8}"]),
    Row("train --workdir that is not UTF-8", "argument --workdir: is not valid UTF-8 (character", lambda t, d: [*TRAIN, "--workdir", str(t / NOT_UTF8)]),
    Row("Study analysis with a billion bootstrap replicates", "bootstrap must be 0 or a number of replicates up to 1,000,000", lambda t, d: _dry_run(t, _study(t, analysis="{'bootstrap': 10**9}"))),
    Row("key/value heads that do not divide the heads", "n_kv_heads=3 does not divide n_heads=2", lambda t, d: [*TRAIN, "--workdir", str(t / "r"), "--config.model.n_kv_heads=3"]),
    Row("unknown MLP", "config.model.mlp must be one of gelu, swiglu, got 'relu'", lambda t, d: [*TRAIN, "--workdir", str(t / "r"), "--config.model.mlp=relu"]),
    Row("export --format hf onto a file", "is a file: --format hf writes a directory", lambda t, d: ["export", "--workdir", str(t), "--format", "hf", "--out", str(_write(t / "model.bin", "x"))]),
    # half-written files (a torn LAST row or line is skipped with a warning instead: tests/test_registry.py)
    Row("fit: a runs.csv row cut short before the last", "line 2 has 4 fields where the header has 11: fix or delete that row",
        lambda t, d: ["fit", str(_torn_mid_registry(t)), "--law", "power", "--out", str(t / "fit.json")]),
    Row("compare: a runs.csv row cut short before the last", "line 2 has 4 fields where the header has 11",
        lambda t, d: ["compare", f"{_torn_mid_registry(t)}/runs.csv:r[0-2]", f"{t}/sweep/runs.csv:r[3-4]"]),
    Row("plot: the sweep's fit.json cut short", "fit.json is not a whole JSON object (cut short?)",
        lambda t, d: ["plot", str(_write(_sweep(t) / "fit.json", '{"law": "power", "E": 1.').parent), "--out", str(t / "plots")]),
    Row("plot --fit: a fit.json cut short", "fit.json is not a whole JSON object (cut short?)",
        lambda t, d: ["plot", str(_sweep(t)), "--fit", str(_write(t / "fit.json", '{"law": "pow')), "--out", str(t / "plots")]),
    Row("status: a metrics.jsonl line without a step before the last", "metrics.jsonl line 2 is not a record bigmodel writes",
        lambda t, d: ["status", str(_sweep(t, r0='{"step": 1, "loss": 3}\n{"loss": 2}\n{"step": 2, "loss": 1}\n'))]),
    Row("finetune: --workdir is a file", "is a file: pass a directory (new or a fine-tuning run to resume)",
        lambda t, d: ["finetune", "--from", str(t / "run"), "--task", "kjv_books", "--workdir", str(_write(t / "notes.txt", "mine"))]),
    Row("eval of a run still training, before its first checkpoint", "has no checkpoint yet: the run is still training (pid",
        lambda t, d: ["eval", "--workdir", str(_live_run_without_checkpoint(t))]),
    Row("fit --versus: A and B measured on different data", "A and B were not measured on the same data",
        lambda t, d: ["fit", _versus_sweep(t, "a", "kjv"), "--versus", _versus_sweep(t, "b", "markov"), "--law", "chinchilla", "--budget", "1e13", "--out", str(t / "fit.json")]),
    Row("fit --versus with a law that cannot be compared", "--versus compares laws of compute", lambda t, d: _versus(t, "--law", "isoflop", "--budget", "1e13")),
    Row("fit --versus: a budget outside (0, inf)", "argument --budget: expected a finite number > 0, got '0'", lambda t, d: _versus(t, "--law", "chinchilla", "--budget", "0")),
    Row("fit --versus without a budget", "--versus needs at least one --budget", lambda t, d: _versus(t, "--law", "chinchilla")),
    Row("fit --versus: a margin that is neither 1.1x nor 0.01nats", "--margin '10%' is neither a compute multiplier nor a loss gap",
        lambda t, d: _versus(t, "--law", "chinchilla", "--budget", "1e13", "--bootstrap", "10", "--margin", "10%")),
    Row("fit: --margin without --versus", "compare two recipes: add --versus B", lambda t, d: ["fit", _points(t, GOOD_POINTS), "--law", "chinchilla", "--margin", "1.1x", "--out", str(t / "fit.json")]),
    Row("calibrate --versus: --studies 0", "--studies must be a positive number of simulated studies",
        lambda t, d: _calibrate_versus(t, "--budget", "1e13", "--studies", "0")),
    Row("calibrate --versus with a law that cannot be compared", "calibrate --versus measures laws of compute",
        lambda t, d: _calibrate_versus(t, "--law", "isoflop", "--budget", "1e13")),
    Row("calibrate --versus without a budget", "--versus needs at least one --budget", lambda t, d: _calibrate_versus(t)),
    Row("calibrate --versus with --truth", "--truth calibrate one law: drop it with --versus",
        lambda t, d: _calibrate_versus(t, "--budget", "1e13", "--truth", "1,6,27,0.25,0.22")),
    Row("calibrate: two budgets without --versus", "one law takes one budget",
        lambda t, d: ["calibrate", _points(t, GOOD_POINTS), "--budget", "1e13", "--budget", "1e14"]),
]


def tree_snapshot(root: Path) -> dict[str, str]:
    """Every file under root → a hash of its bytes (lock files aside: their holder's pid changes)."""
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file() and path.name != ".lock"}


@pytest.mark.parametrize("row", ROWS, ids=[row.case for row in ROWS])
def test_bad_input_is_one_error_line_exit_2_and_changes_nothing(row, tmp_path, kjv_data_dir, capsys, monkeypatch):
    from bigmodel.cli import main

    monkeypatch.chdir(REPO)
    for name, value in row.environment.items():
        monkeypatch.setenv(name, value)
    arguments = row.arguments(tmp_path, kjv_data_dir)
    capsys.readouterr()  # what building the inputs printed is not the command's output
    before = tree_snapshot(tmp_path)
    try:
        code = main(arguments)
    except SystemExit as exit_info:  # argparse exits by itself
        code = exit_info.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    lines = [line for line in err.splitlines() if not line.startswith("WARNING:absl")]  # tfds' own logging
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert row.message in lines[0]
    assert tree_snapshot(tmp_path) == before


def test_the_docs_list_every_row_with_its_message():
    page = (REPO / "docs" / "reliability.md").read_text()
    missing = [row.case for row in ROWS if f"| {row.case} | `{row.message}` |" not in page]
    assert not missing, f"docs/reliability.md's bad-input table lacks: {missing}; print it with python tests/test_bad_inputs.py"


def test_the_table_has_at_least_thirty_rows():
    assert len(ROWS) >= 30 and len({row.case for row in ROWS}) == len(ROWS)


if __name__ == "__main__":
    sys.stdout.write("| what is wrong | the error line contains |\n|---|---|\n")
    sys.stdout.write("".join(f"| {row.case} | `{row.message}` |\n" for row in ROWS))
