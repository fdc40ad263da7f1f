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


def _experiment(tmp_path: Path, text: str) -> str:
    return str(_write(tmp_path / "study.py", text))


def _points(tmp_path: Path, text: str) -> str:
    return str(_write(tmp_path / "points.csv", text))


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
    Row("fit --versus: A and B measured on different data", "A and B were not measured on the same data",
        lambda t, d: ["fit", _versus_sweep(t, "a", "kjv"), "--versus", _versus_sweep(t, "b", "markov"), "--law", "chinchilla", "--budget", "1e13", "--out", str(t / "fit.json")]),
    Row("fit --versus with a law that cannot be compared", "--versus compares laws of compute", lambda t, d: _versus(t, "--law", "isoflop", "--budget", "1e13")),
    Row("fit --versus: a budget outside (0, inf)", "--budget 0 is not a compute: give FLOPs in (0, inf)", lambda t, d: _versus(t, "--law", "chinchilla", "--budget", "0")),
    Row("fit --versus without a budget", "--versus needs at least one --budget", lambda t, d: _versus(t, "--law", "chinchilla")),
    Row("fit --versus: a margin that is neither 1.1x nor 0.01nats", "--margin '10%' is neither a compute multiplier nor a loss gap",
        lambda t, d: _versus(t, "--law", "chinchilla", "--budget", "1e13", "--bootstrap", "10", "--margin", "10%")),
    Row("fit: --margin without --versus", "compare two recipes: add --versus B", lambda t, d: ["fit", _points(t, GOOD_POINTS), "--law", "chinchilla", "--margin", "1.1x", "--out", str(t / "fit.json")]),
]


def tree_snapshot(root: Path) -> dict[str, str]:
    """Every file under root → a hash of its bytes (lock files aside: their holder's pid changes)."""
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file() and path.name != ".lock"}


@pytest.mark.parametrize("row", ROWS, ids=[row.case for row in ROWS])
def test_bad_input_is_one_error_line_exit_2_and_changes_nothing(row, tmp_path, kjv_data_dir, capsys, monkeypatch):
    from bigmodel.cli import main

    monkeypatch.chdir(REPO)
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
