"""`bigmodel export` and `load_exported`: the session's tiny L1 run (conftest's `tiny_run`, checkpoints
at steps 4 and 8), exported to safetensors and rebuilt without its run directory; the rebuilt
model's logits against the restored checkpoint's.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("safetensors")

from bigmodel.cli import main  # noqa: E402
from bigmodel.config import ConfigError  # noqa: E402
from bigmodel.inference.export import describe_tokenizer, load_exported, tokenizer_from  # noqa: E402
from bigmodel.restore import open_for_use, restore_params  # noqa: E402
from bigmodel.model import Transformer  # noqa: E402

TOKENS = jnp.asarray(np.random.default_rng(0).integers(0, 256, (3, 40)), jnp.int32)


def run_logits(workdir, step=None):
    """Logits of the run's own model and checkpoint, as `generate` restores them."""
    config, manager, _ = open_for_use(workdir)
    setup, params, _ = restore_params(config, manager, step)
    return np.asarray(jax.jit(setup.model.apply)({"params": params}, TOKENS)), setup.model.config


def exported_logits(path):
    config, params, tokenizer = load_exported(path)
    return np.asarray(jax.jit(Transformer(config).apply)({"params": params}, TOKENS)), config, tokenizer


def export(capsys, *arguments):
    try:
        code = main(["export", *arguments])
    except SystemExit as exit_info:
        code = exit_info.code
    out, err = capsys.readouterr()
    return code, out, err


def test_a_float32_export_rebuilds_the_model_with_the_same_logits_bit_for_bit(tiny_run, tmp_path, capsys):
    out = tmp_path / "model.safetensors"
    code, printed, _ = export(capsys, "--workdir", str(tiny_run), "--out", str(out))
    report = json.loads(printed)
    assert code == 0 and report["step"] == 8 and report["params"] == 28_768 and report["bytes"] == out.stat().st_size
    logits, config, tokenizer = exported_logits(out)
    expected, expected_config = run_logits(tiny_run)
    assert config == expected_config
    np.testing.assert_array_equal(logits, expected)
    assert tokenizer.encode("Jesus wept") == list(b"Jesus wept") and [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]

    from safetensors import safe_open

    with safe_open(str(out), framework="np") as handle:
        names, metadata = set(handle.keys()), handle.metadata()
    assert {"layers/attention/query/kernel", "token_embedding/embedding", "lm_head/kernel", "final_norm/scale"} <= names
    assert json.loads(metadata["model"])["d_model"] == 32 and json.loads(metadata["run"])["step"] == 8


def test_an_earlier_step_and_a_bfloat16_export(tiny_run, tmp_path, capsys):
    code, printed, _ = export(capsys, "--workdir", str(tiny_run), "--out", str(tmp_path / "step4.safetensors"), "--step", "4")
    assert code == 0 and json.loads(printed)["step"] == 4
    np.testing.assert_array_equal(exported_logits(tmp_path / "step4.safetensors")[0], run_logits(tiny_run, step=4)[0])
    assert not np.array_equal(run_logits(tiny_run, step=4)[0], run_logits(tiny_run)[0])  # the step is not ignored

    code, _, _ = export(capsys, "--workdir", str(tiny_run), "--out", str(tmp_path / "bf16.safetensors"), "--dtype", "bfloat16")
    assert code == 0
    assert os.path.getsize(tmp_path / "bf16.safetensors") < 0.55 * os.path.getsize(tmp_path / "step4.safetensors")  # + the header
    logits, expected = exported_logits(tmp_path / "bf16.safetensors")[0], run_logits(tiny_run)[0]
    # Weights rounded to bf16 (8 bits of mantissa: relative error ≤ 2^-9) move logits by about 1%
    # of their spread: on the main job's d_model-96 run, max |Δ| 0.057 on a std of 6.2, 99% of argmaxes kept.
    assert np.max(np.abs(logits - expected)) < 0.02 * np.std(expected)
    assert np.mean(logits.argmax(-1) == expected.argmax(-1)) > 0.95


def test_an_existing_out_is_refused_unless_forced(tiny_run, tmp_path, capsys):
    out = tmp_path / "model.safetensors"
    out.write_bytes(b"precious")
    code, printed, err = export(capsys, "--workdir", str(tiny_run), "--out", str(out))
    assert code == 2 and printed == "" and err.startswith("error: ") and "exists: pass --force" in err and len(err.splitlines()) == 1
    assert out.read_bytes() == b"precious"
    code, _, _ = export(capsys, "--workdir", str(tiny_run), "--out", str(out), "--force")
    assert code == 0 and load_exported(out)[0].d_model == 32


@pytest.mark.parametrize("arguments,message", [
    (["--step", "5"], "has no checkpoint at step 5: pick one of [4, 8]"),
    (["--out", "TMP/nowhere/model.safetensors"], "does not exist: create it first"),
    (["--out", "TMP/EMPTY"], "is a directory: pass a file name"),
    (["--workdir", "TMP/EMPTY"], "has no config.json"),
])
def test_bad_inputs_are_one_error_line_and_write_nothing(tiny_run, tmp_path, capsys, arguments, message):
    (tmp_path / "EMPTY").mkdir()
    arguments = [argument.replace("TMP", str(tmp_path)) for argument in arguments]  # the last --out/--workdir counts
    code, printed, err = export(capsys, "--workdir", str(tiny_run), "--out", str(tmp_path / "model.safetensors"), *arguments)
    assert code == 2 and printed == "" and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "model.safetensors").exists() and [p.name for p in tmp_path.iterdir()] == ["EMPTY"]


def test_a_file_that_is_not_an_export_is_refused(tmp_path):
    from safetensors.numpy import save_file

    save_file({"w": np.zeros(3, np.float32)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ConfigError, match="is not a bigmodel export"):
        load_exported(tmp_path / "other.safetensors")


def test_a_sentencepiece_tokenizer_travels_inside_the_file():
    from bigmodel.data import SentencePieceTokenizer
    from bigmodel.data.tokenizers import train_sentencepiece

    lines = ["In the beginning God created the heaven and the earth.", "And the earth was without form, and void."] * 50
    tokenizer = SentencePieceTokenizer(train_sentencepiece(lines, 300))
    rebuilt = tokenizer_from(json.loads(json.dumps(describe_tokenizer(tokenizer))))
    text = "And God said, Let there be light: and there was light.\nÉ"
    assert rebuilt.encode(text) == tokenizer.encode(text) and rebuilt.decode(rebuilt.encode(text)) == text


def test_an_export_out_of_space_is_one_line_exit_74_and_leaves_nothing(tiny_run, tmp_path):
    """A real full disk for the file alone: RLIMIT_FSIZE makes the kernel refuse the write (EFBIG),
    as tools/chaos.py does where it may not mount a small tmpfs."""
    import subprocess
    import sys

    out = tmp_path / "out" / "model.safetensors"
    out.parent.mkdir()
    stale = out.parent / ".model.safetensors.tmp999999999"  # an export killed mid-write (that pid is not alive)
    stale.mkdir()
    (stale / ".tmpAbC123").write_bytes(b"x" * 1000)  # safetensors' own temporary file, inside the export's folder
    limit = "import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)); sys.argv[0] = 'bigmodel'; " \
            "runpy.run_module('bigmodel', run_name='__main__')"
    done = subprocess.run([sys.executable, "-c", limit, "export", "--workdir", str(tiny_run), "--out", str(out)], capture_output=True, text=True)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 74, done.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith(f"error: writing {out} failed (File too large)"), lines
    assert list(out.parent.iterdir()) == []  # neither its own partial file nor the killed export's


def test_the_next_write_removes_the_temporary_files_of_dead_writers_only(tmp_path):
    from bigmodel import files

    target = tmp_path / "eval.json"
    dead = tmp_path / ".eval.json.tmp999999999"  # no such process
    other = tmp_path / ".other.json.tmp999999999"
    for path in (dead, other):
        path.write_text("debris")
    alive = tmp_path / f".eval.json.tmp{os.getppid()}"  # a live process's write in progress
    alive.write_text("in progress")
    files.write_json_atomic(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert not dead.exists() and alive.exists() and other.exists()
