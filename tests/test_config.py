"""Config loading, overrides and validation: every mistake is one line, exit 2, nothing written."""

import json
import subprocess
import sys

import pytest

from bigmodel.cli import main
from bigmodel.config import apply_overrides, from_json, load_config, resolve_mesh_shape, to_json

BAD_CONFIGS = [
    (["--config.model.nlayers=2"], "unknown config key config.model.nlayers"),
    (["--config.trian.steps=2"], "unknown config key config.trian.steps"),
    (["--config.train.steps=abc"], "config.train.steps expects int, got 'abc'"),
    (["--config.model.tie_embeddings=maybe"], "config.model.tie_embeddings expects bool"),
    (["--config.model.n_heads=3"], "d_model=64 is not divisible by n_heads=3"),
    (["--config.mesh.data=2"], "uses 2 devices but 1 are present"),
    (["--config.mesh.data=-1", "--config.mesh.fsdp=-1"], "at most one -1"),
    (["--config.mesh.dcn_data=2"], "config.mesh.dcn_data=2 does not divide the data axis mesh.data=1"),
    (["--config.data.seq_len=2048"], "seq_len=2048 is above the model's limit model.max_seq_len=1024"),
    (["--config.optim.schedule=linear"], "config.optim.schedule must be one of constant, cosine, wsd"),
    (["--config.train.steps=0"], "config.train.steps must be a positive integer"),
    (["--config.train.grad_accum=3"], "batch_size=32 is not divisible by grad_accum=3"),
    (["--config.optim.warmup_steps=-1"], "warmup_steps=-1 must be between 0 and train.steps=3000"),
    (["--config.data.vocab_size=1000"], "vocab_size must be 256 with the bytes tokenizer"),
    (["--config.data.dataset=wiki"], "config.data.dataset='wiki' is unknown"),
    (["--config.model.dropout=1.5"], "config.model.dropout must be in [0, 1)"),
    (["--config.model=3"], "config.model is a group"),
    (["--config.optim.lr=-1"], "config.optim.lr must be positive"),
    (["--config.model.positions=alibi"], "config.model.positions must be one of rope, learned"),
]


def _train(tmp_path, *args, spec="configs/lm.py:L2"):
    return main(["train", "--config", spec, "--workdir", str(tmp_path / "run"), *args])


@pytest.mark.parametrize("overrides,message", BAD_CONFIGS, ids=[args[0] for args, _ in BAD_CONFIGS])
def test_bad_config_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, overrides, message):
    assert _train(tmp_path, *overrides) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "spec,message", [("configs/lm.py:XL", "unknown preset 'XL'"), ("configs/nope.py:L2", "config file 'configs/nope.py' not found")]
)
def test_bad_config_file_or_preset(tmp_path, capsys, spec, message):
    assert _train(tmp_path, spec=spec) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_workdir_that_is_not_a_run_is_never_touched(tmp_path, capsys):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "notes.txt").write_text("mine")
    assert _train(tmp_path) == 2
    assert "is not a bigmodel run" in capsys.readouterr().err
    assert [path.name for path in workdir.iterdir()] == ["notes.txt"]


def test_workdir_of_another_run_is_refused(tmp_path, capsys):
    workdir = tmp_path / "run"
    workdir.mkdir()
    other = load_config("configs/lm.py:L3")
    (workdir / "config.json").write_text(to_json(other))
    assert _train(tmp_path) == 2
    err = capsys.readouterr().err
    assert "holds a run with a different config" in err and "model.d_model: 96 -> 64" in err
    assert json.loads((workdir / "config.json").read_text())["model"]["d_model"] == 96


def test_overrides_are_typed_and_leave_the_original_alone():
    base = load_config("configs/lm.py:L2")
    changed = apply_overrides(base, {"train.steps": "7", "optim.lr": "1e-2", "model.tie_embeddings": "true", "mesh.data": "-1"})
    assert (changed.train.steps, changed.optim.lr, changed.model.tie_embeddings) == (7, 0.01, True)
    assert base.train.steps == 3000


def test_config_json_round_trip():
    config = load_config("configs/lm.py:L2")
    assert from_json(to_json(config)).to_dict() == config.to_dict()


def test_mesh_fills_the_minus_one_axis():
    assert resolve_mesh_shape({"data": -1, "fsdp": 2, "tensor": 2}, 8) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert resolve_mesh_shape({"data": 1, "fsdp": -1, "tensor": 1}, 8) == {"data": 1, "fsdp": 8, "tensor": 1}


def test_presets_command_prints_every_preset(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "L1" in out and "L48" in out and "1,359,103,488" in out


@pytest.mark.parametrize("dataset", ["kjv", "markov/order=1,seed=3", "synthetic", "tfds:lm1b/plain_text"])
def test_validating_every_dataset_kind_imports_no_jax(dataset):
    # validate runs before anything starts (train, sweep --dry-run): it must not wait for JAX.
    script = (
        "import sys; from bigmodel.config import load_config, validate; "
        f"validate(load_config('configs/lm.py:L2', {{'data.dataset': {dataset!r}}}), 1); "
        "print(sorted(name for name in ('jax', 'grain', 'tensorflow_datasets') if name in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
