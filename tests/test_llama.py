"""Llama's block (SwiGLU, grouped-query attention) end to end, and `export --format hf` of both
blocks read back by `transformers` (PyTorch, float32, CPU).

One 4-step `configs/llama.py:L2` run with 4 query heads on 2 key/value heads, trained once for
the module: stopped at step 2 and resumed; the GELU block is the session's `tiny_run` (L1).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigmodel.cli import main
from bigmodel.config import ConfigError, from_json, load_config, to_json, validate
from bigmodel.restore import open_for_use, restore_params
from bigmodel.sharding import logical_rules

REPO = Path(__file__).resolve().parent.parent
LLAMA = {"train.steps": 4, "train.batch_size": 8, "train.log_every": 1, "data.seq_len": 32, "optim.warmup_steps": 2, "optim.lr": 1e-2,
         "eval.every_steps": 4, "eval.batches": 1, "checkpoint.every_steps": 2, "model.n_heads": 4, "model.n_kv_heads": 2}
TOKENS = np.random.default_rng(0).integers(0, 256, (2, 24))
PROMPT = "And God said"


def train(workdir: Path, data_dir: str, *extra: str) -> int:
    settings = {**LLAMA, "data.data_dir": data_dir}
    return main(["train", "--config", "configs/llama.py:L2", "--workdir", str(workdir), *extra,
                 *[f"--config.{key}={value}" for key, value in settings.items()]])


def losses(workdir: Path) -> list[tuple]:
    """(step, train or eval loss) of every line of metrics.jsonl that has one."""
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [(record["step"], key, record[key]) for record in records for key in ("loss", "eval_loss") if key in record]


@pytest.fixture(scope="module")
def llama_run(tmp_path_factory, kjv_data_dir):
    """(a run trained straight through, the same run stopped at step 2 and resumed)."""
    root = tmp_path_factory.mktemp("llama")
    assert train(root / "straight", kjv_data_dir) == 0
    assert train(root / "resumed", kjv_data_dir, "--stop_at_step", "2") == 0
    assert max(step for step, _, _ in losses(root / "resumed")) == 2
    assert train(root / "resumed", kjv_data_dir) == 0
    return root / "straight", root / "resumed"


def test_a_llama_run_trains_and_resumes_to_the_same_losses(llama_run):
    straight, resumed = llama_run
    assert losses(resumed) == losses(straight) and (4, "eval_loss") in [row[:2] for row in losses(straight)]
    saved = json.loads((straight / "config.json").read_text())["model"]
    assert (saved["mlp"], saved["n_heads"], saved["n_kv_heads"], saved["d_ff"]) == ("swiglu", 4, 2, 192)
    summary = json.loads((straight / "summary.json").read_text())
    # 2 layers × (q, o 64×64; k, v 64×32; SwiGLU 3×64×192; two norms) + final norm; embeddings and head 2×256×64
    assert summary["non_embedding_params"] == 2 * (2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 192 + 2 * 64) + 64
    assert summary["params"] == summary["non_embedding_params"] + 2 * 256 * 64


def test_configs_saved_before_the_llama_keys_read_as_the_gpt_block_and_resume(tmp_path):
    from bigmodel import workdir

    config = load_config("configs/lm.py:L2")
    saved = json.loads(to_json(config))
    del saved["model"]["mlp"], saved["model"]["n_kv_heads"]
    old = from_json(json.dumps(saved))
    assert (old.model.mlp, old.model.n_kv_heads) == ("gelu", 0)
    assert dict(logical_rules(old))["kv_heads"] == dict(logical_rules(old))["heads"] == "tensor"  # split as heads
    (tmp_path / "config.json").write_text(json.dumps(saved))
    workdir.check(config, tmp_path)  # today's lm.py resumes such a run: no "different config"
    bare = load_config("configs/lm.py:L2")  # a config file of one's own, written before the keys
    del bare.model["mlp"], bare.model["n_kv_heads"]
    validate(bare, 1)
    with pytest.raises(ConfigError, match="model.mlp"):
        workdir.check(load_config("configs/lm.py:L2", {"model.mlp": "swiglu"}), tmp_path)


def copy_as_saved_before_the_llama_keys(run: Path, destination: Path) -> Path:
    """A copy of `run` whose config.json lacks the keys this block added, as runs trained before it."""
    shutil.copytree(run, destination)
    saved = json.loads((destination / "config.json").read_text())
    del saved["model"]["mlp"], saved["model"]["n_kv_heads"]
    (destination / "config.json").write_text(json.dumps(saved))
    return destination


def bigmodel_greedy_text(workdir: Path, capsys, max_tokens: int) -> str:
    assert main(["generate", "--workdir", str(workdir), "--prompt", PROMPT, "--max_tokens", str(max_tokens), "--temperature", "0",
                 "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["text"]


@pytest.mark.parametrize("block,architecture", [("llama", "LlamaForCausalLM"), ("gelu", "ArceeForCausalLM")])
def test_hf_export_is_the_same_model_in_transformers(block, architecture, llama_run, tiny_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a local directory: nothing to ask the Hub (read when transformers loads)
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    # The GELU run as a run trained before the Llama keys existed: it restores, and exports.
    run = llama_run[0] if block == "llama" else copy_as_saved_before_the_llama_keys(tiny_run, tmp_path / "old_run")
    out = tmp_path / "hf"
    assert main(["export", "--workdir", str(run), "--format", "hf", "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["architecture"] == architecture and report["format"] == "hf"
    assert sorted(path.name for path in out.iterdir()) == ["config.json", "generation_config.json", "model.safetensors",
                                                           "tokenizer.json", "tokenizer_config.json"]

    model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert type(model).__name__ == architecture
    text = "In the beginning, ‘God’ — créé ✓\n"
    assert tokenizer(text)["input_ids"] == list(text.encode()) and tokenizer.decode(list(text.encode())) == text

    config, manager, _ = open_for_use(run)
    setup, params, _ = restore_params(config, manager)
    ours = np.asarray(jax.jit(setup.model.apply)({"params": params}, jnp.asarray(TOKENS, jnp.int32)))
    with torch.no_grad():
        theirs = model(torch.tensor(TOKENS)).logits.numpy()
    np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=0)
    assert (theirs.argmax(-1) == ours.argmax(-1)).all()

    prompt_ids = torch.tensor([tokenizer(PROMPT)["input_ids"]])
    generated = model.generate(prompt_ids, max_new_tokens=12, do_sample=False)[0, prompt_ids.shape[1]:]
    assert tokenizer.decode(generated) == bigmodel_greedy_text(run, capsys, 12)


def test_random_weights_with_mup_factors_compute_the_same_in_transformers(tmp_path, monkeypatch):
    # Random weights of std 0.3 (not a run's near-init ones, whose attention is almost uniform):
    # every matrix's layout shows. muP's attention scale √h_b/h (h_b 16, h 32) and readout 1/m
    # (m = 64/32) have no config key in transformers: the export puts them in q_proj and lm_head.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from flax import traverse_util
    from safetensors.numpy import save_file

    from bigmodel.inference import hf_export
    from bigmodel.inference.decoding import generate_tokens
    from bigmodel.inference.sampling import Sampling
    from bigmodel.model import ModelConfig, Transformer

    model = ModelConfig(d_model=64, n_layers=1, n_heads=2, n_kv_heads=1, d_ff=0, mlp="swiglu", vocab_size=256,
                        parametrization="mup", mup_base_width=32, mup_base_head_dim=16)
    shapes = nn_unboxed_shapes(Transformer(model))
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda shape: rng.normal(1.0 if len(shape.shape) == 1 else 0.0, 0.3, shape.shape).astype(np.float32), shapes)
    save_file(hf_export.hf_tensors(traverse_util.flatten_dict(params, sep="/"), model), tmp_path / "model.safetensors",
              metadata={"format": "pt"})
    for name, text in hf_export.hf_files(model, "float32").items():
        (tmp_path / name).write_text(text)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    with torch.no_grad():
        their_logits = theirs(torch.tensor(TOKENS)).logits.numpy()
    ours = np.asarray(jax.jit(Transformer(model).apply)({"params": params}, jnp.asarray(TOKENS, jnp.int32)))
    np.testing.assert_allclose(their_logits, ours, atol=1e-4, rtol=0)
    assert np.std(ours) > 0.1  # not a flat distribution that anything would match
    # Greedy decoding with bigmodel's KV cache and with transformers' draws the same tokens.
    prompt = TOKENS[0, :5].tolist()
    ids = generate_tokens(Transformer(model), params, [prompt], 16, Sampling(temperature=0), seed=0).tokens[0]
    their_ids = theirs.generate(torch.tensor([prompt]), max_new_tokens=16, do_sample=False)[0, 5:].tolist()
    assert their_ids == ids and len(set(ids)) > 2


def nn_unboxed_shapes(module):
    import flax.linen as nn

    return nn.unbox(jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])


def test_hf_export_refuses_what_transformers_cannot_compute_alike(tiny_run, tmp_path, capsys):
    run = shutil.copytree(tiny_run, tmp_path / "learned")
    saved = json.loads((run / "config.json").read_text())
    saved["model"]["positions"] = "learned"
    (run / "config.json").write_text(json.dumps(saved))
    assert main(["export", "--workdir", str(run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert "needs rotary positions" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "hf").exists() and not list(tmp_path.glob(".hf*"))


def test_an_existing_hf_directory_is_replaced_only_with_force(tiny_run, tmp_path, capsys):
    out = tmp_path / "hf"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    arguments = ["export", "--workdir", str(tiny_run), "--format", "hf", "--out", str(out)]
    assert main(arguments) == 2 and "exists: pass --force" in capsys.readouterr().err
    assert main([*arguments, "--force"]) == 2 and "not a model directory" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    (out / "config.json").write_text("{}")
    assert main([*arguments, "--force"]) == 0 and json.loads((out / "config.json").read_text())["model_type"] == "arcee"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["hf"]


EIGHT_DEVICES = """
import jax
from bigmodel.config import load_config
from bigmodel.flops import run_stats
from bigmodel.memory import compiled_memory
from bigmodel.plan import compile_step

overrides = {"mesh.data": "2", "mesh.fsdp": "2", "mesh.tensor": "2", "model.n_heads": "4", "model.n_kv_heads": "2",
             "train.batch_size": "8", "data.seq_len": "32"}
config = load_config("configs/llama.py:L2", overrides)
compiled, setup = compile_step(config)  # what `plan` compiles: the train step, sharded over the mesh
plan = compiled_memory(compiled, setup, 8)
specs = setup.state_shardings.params["layers"]
print(jax.device_count(), run_stats(config)["params"], plan.params_bytes, plan.optimizer_bytes)
print(tuple(specs["attention"]["key"]["kernel"].spec), tuple(specs["mlp"]["gate"]["kernel"].spec), sep="|")
"""


@pytest.mark.slow  # 8 devices in a subprocess
def test_the_llama_block_shards_over_eight_devices_and_plan_counts_it():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", EIGHT_DEVICES], capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    counts, specs = result.stdout.strip().splitlines()[-2:]
    devices, params, params_bytes, optimizer_bytes = map(int, counts.split())
    assert devices == 8 and params == 131_392
    # Matrices split over fsdp (d_model) and tensor (heads, kv_heads, mlp, vocab): a quarter of
    # each on a device; only the norms' scales (0.3% of the parameters) are split over fsdp alone.
    assert 4 * params / 4 <= params_bytes < 1.01 * 4 * params / 4 and optimizer_bytes >= 2 * params_bytes
    # key/value heads over tensor, SwiGLU's gate over fsdp × tensor (layers stacked first)
    assert specs == "(None, 'fsdp', 'tensor', None)|(None, 'fsdp', 'tensor')"
