"""`bigmodel generate`: the KV cache against the full forward pass, the sampling masks, stop
sequences, seeds, and the command end to end on the session's tiny L1 run (conftest's `tiny_run`).

Model-level tests use random-init parameters (no checkpoint needed); prompts of different lengths
share one left-padded batch, so each row's positions and padding mask are exercised.
"""

import functools
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigmodel.cli import main
from bigmodel.config import ConfigError, load_config
from bigmodel.inference import decoding
from bigmodel.data import ByteTokenizer
from bigmodel.inference.decoding import BatchShape, generate_tokens, left_pad
from bigmodel.inference.generate import StreamPrinter, stable_text
from bigmodel.model import Transformer, model_config
from bigmodel.inference.sampling import Sampling, check_sampling, sample, top_k_mask, top_p_mask

GREEDY = Sampling(temperature=0)
PROMPT_LENGTHS = (3, 9, 5)
MAX_TOKENS = 8  # one shape for every model-level test: the module-level jits compile once per setting


# Llama's block: SwiGLU, and 4 query heads sharing 2 key/value heads (the cache holds 2).
LLAMA_BLOCK = (("model.mlp", "swiglu"), ("model.n_heads", "4"), ("model.n_kv_heads", "2"), ("model.d_ff", "0"))


@functools.lru_cache
def random_model(positions: str, dtype: str, block: tuple = ()):
    """An L2 model and random parameters: N(0, 0.02) weights, norm scales 1. Drawn with numpy on
    the shapes `init` would give, because compiling `init` costs seconds (10 s unjitted)."""
    overrides = {"model.positions": positions, "model.dtype": dtype, **dict(block)}
    model = Transformer(model_config(load_config("configs/lm.py:L2", overrides)))
    shapes = nn.unbox(jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
    rng = np.random.default_rng(0)

    def draw(path, shape):
        is_scale = jax.tree_util.keystr(path).endswith("['scale']")
        return jnp.ones(shape.shape) if is_scale else jnp.asarray(rng.normal(0, 0.02, shape.shape), jnp.float32)

    return model, jax.tree_util.tree_map_with_path(draw, shapes)


def random_prompts(lengths=PROMPT_LENGTHS, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, length).tolist() for length in lengths]


@functools.lru_cache
def full_forward(model):
    return jax.jit(lambda params, tokens: model.apply({"params": params}, tokens))


def right_padded(rows):
    tokens = np.zeros((len(rows), max(map(len, rows))), np.int32)
    for index, row in enumerate(rows):
        tokens[index, : len(row)] = row
    return tokens  # causal: padding after a row changes none of its logits


# ----------------------------------------------------------------------------- the KV cache


# Both position kinds and both compute dtypes in two cases (each compiles prefill, decode and the full forward).
@pytest.mark.parametrize("positions,dtype,block", [("rope", "float32", ()), pytest.param("learned", "bfloat16", (), marks=pytest.mark.slow),
                                                   ("rope", "float32", LLAMA_BLOCK)])
def test_greedy_decoding_with_the_cache_is_the_full_forward_argmax_at_every_position(positions, dtype, block):
    model, params = random_model(positions, dtype, block)
    prompts = random_prompts()
    generated = generate_tokens(model, params, prompts, MAX_TOKENS, GREEDY, seed=0)
    assert [len(ids) for ids in generated.tokens] == [MAX_TOKENS] * 3 and generated.stopped == [False] * 3
    logits = np.asarray(full_forward(model)(params, right_padded([p + ids for p, ids in zip(prompts, generated.tokens)])))
    for row, (prompt, ids) in enumerate(zip(prompts, generated.tokens)):
        predicted = logits[row, len(prompt) - 1 : len(prompt) + len(ids) - 1].argmax(-1)
        assert predicted.tolist() == ids, f"row {row} (prompt of {len(prompt)} tokens)"
    if block:  # the cache holds the key/value heads only
        batch = left_pad(prompts)
        state = decoding.prefill.trace(model, params, batch.tokens, batch.start, jax.random.key(0), MAX_TOKENS, GREEDY, ()).out_info
        assert state.cache.keys.shape[:3] == (2, 3, 2)  # layers, rows, kv heads


def test_left_pad_fills_the_batch_shards_with_whole_rows():
    batch = left_pad([[5, 6, 7], [8]], row_multiple=4)
    assert batch.tokens.tolist() == [[5, 6, 7], [0, 0, 8], [0, 0, 8], [0, 0, 8]]
    assert batch.start.tolist() == [0, 2, 2, 2] and batch.n_prompts == 2


def test_a_stop_sequence_ends_its_row_and_leaves_the_others_alone():
    model, params = random_model("rope", "float32")
    prompts = random_prompts()
    free = generate_tokens(model, params, prompts, MAX_TOKENS, GREEDY, seed=0).tokens
    stop = tuple(free[0][3:5])
    stopped = generate_tokens(model, params, prompts, MAX_TOKENS, GREEDY, seed=0, stop_ids=stop)
    for row, ids in enumerate(free):
        ends = [end for end in range(2, len(ids) + 1) if tuple(ids[end - 2 : end]) == stop]
        expected = ids[: ends[0]] if ends else ids
        assert stopped.tokens[row] == expected and stopped.stopped[row] == bool(ends)
    assert stopped.stopped[0] and len(stopped.tokens[0]) <= 5


@pytest.mark.slow  # compiles sampling, whole and streamed
def test_the_same_seed_gives_the_same_tokens_and_another_seed_others():
    model, params = random_model("rope", "float32")
    prompts = random_prompts()
    first, again, other = (generate_tokens(model, params, prompts, MAX_TOKENS, Sampling(temperature=1.0), seed=seed).tokens for seed in (0, 0, 1))
    assert first == again
    assert first != other


def test_streaming_hands_over_growing_prefixes_and_ends_with_the_same_tokens(monkeypatch):
    model, params = random_model("rope", "float32")
    prompts = random_prompts()
    sampling = Sampling(temperature=1.0)
    whole = generate_tokens(model, params, prompts, MAX_TOKENS, sampling, seed=3)
    monkeypatch.setattr(decoding, "STREAM_TOKENS", 3)  # the step bound is an argument: no new compile
    chunks = []
    streamed = generate_tokens(model, params, prompts, MAX_TOKENS, sampling, seed=3, on_chunk=chunks.append)
    assert streamed.tokens == whole.tokens
    assert [[len(ids) for ids in chunk] for chunk in chunks] == [[1] * 3, [4] * 3, [7] * 3, [8] * 3]  # prefill, then 3 at a time
    assert all(ids == final[: len(ids)] for chunk in chunks for ids, final in zip(chunk, whole.tokens))


def test_a_padded_batch_shape_draws_the_same_greedy_tokens():
    model, params = random_model("rope", "float32")
    prompts = random_prompts()
    padded = generate_tokens(model, params, prompts, MAX_TOKENS, GREEDY, seed=0, shape=BatchShape(rows=4, slots=16, tokens=16),
                             ahead_of_time=False)  # a server's way: extra rows, slots and buffer; compiled on first use
    assert padded.tokens == generate_tokens(model, params, prompts, MAX_TOKENS, GREEDY, seed=0).tokens


SHARDED_ON_EIGHT_DEVICES = """
import jax, numpy as np
from bigmodel.config import load_config
from bigmodel.inference.decoding import generate_tokens
from bigmodel.inference.sampling import Sampling
from bigmodel.train import build

overrides = {"mesh.data": "2", "mesh.fsdp": "2", "mesh.tensor": "2", "model.n_heads": "4", "train.batch_size": "8"}
setup = build(load_config("configs/lm.py:L2", overrides))
rng = np.random.default_rng(0)  # drawn, not init: compiling init costs seconds
params = jax.tree.map(lambda shape, where: jax.device_put(rng.normal(0, 0.02, shape.shape).astype(np.float32), where),
                      setup.abstract_state.params, setup.state_shardings.params)  # over fsdp and tensor, as a restored run's
prompts = [list(range(7, 10)), list(range(20, 29)), list(range(40, 45))]
greedy = Sampling(temperature=0)
sharded = generate_tokens(setup.model, params, prompts, 8, greedy, 0, batch_sharding=setup.batch_sharding, rules=setup.rules)
one_device = generate_tokens(setup.model, jax.device_get(params), prompts, 8, greedy, 0)
print(jax.device_count(), sharded.tokens == one_device.tokens, sharded.tokens[0])
"""


@pytest.mark.slow  # 8 devices in a subprocess
def test_generation_sharded_over_eight_devices_equals_one_device():
    # Three prompts on a batch axis of data×fsdp = 4 devices: one padding row; heads split over tensor.
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", SHARDED_ON_EIGHT_DEVICES], capture_output=True, text=True, timeout=600,
                            env=env, cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[:2] == ["8", "True"], result.stdout


# ----------------------------------------------------------------------------- sampling


def test_top_k_keeps_exactly_the_k_largest_and_their_ties():
    logits = jnp.array([[1.0, 4.0, 3.0, 2.0, 0.0], [2.0, 2.0, 1.0, 2.0, 5.0]])
    kept = np.isfinite(np.asarray(top_k_mask(logits, 2)))
    assert kept.tolist() == [[False, True, True, False, False], [True, True, False, True, True]]  # ties at the 2nd kept
    np.testing.assert_array_equal(top_k_mask(logits, 2)[0, 1:3], logits[0, 1:3])  # kept logits unchanged
    assert top_k_mask(logits, 0) is logits and top_k_mask(logits, 5) is logits


def test_top_p_keeps_the_fewest_most_likely_tokens_reaching_p():
    logits = jnp.log(jnp.array([[0.1, 0.5, 0.05, 0.25, 0.1]]))
    def kept(p):
        return np.isfinite(np.asarray(top_p_mask(logits, p)))[0].tolist()
    assert kept(0.3) == [False, True, False, False, False]  # the top token alone (0.5 ≥ 0.3)
    assert kept(0.7) == [False, True, False, True, False]  # 0.5 + 0.25 = 0.75 ≥ 0.7
    assert kept(0.8) == [True, True, False, True, True]  # 0.75 < 0.8: the next, 0.1, and its tie
    assert kept(0.99) == [True] * 5
    assert top_p_mask(logits, 1.0) is logits


def test_sampling_draws_only_kept_tokens_and_greedy_is_argmax():
    logits = jnp.tile(jnp.array([[0.0, 3.0, 2.9, 1.0, -1.0]]), (256, 1))
    assert sample(jax.random.key(0), logits, GREEDY).tolist() == [1] * 256
    drawn = sample(jax.random.key(0), logits, Sampling(temperature=1.0, top_k=2))
    assert set(np.asarray(drawn).tolist()) == {1, 2}
    # Temperature 2, then the top 3 renormalised: 0.43, 0.41, 0.16; top_p 0.5 keeps the first two.
    drawn = sample(jax.random.key(0), logits, Sampling(temperature=2.0, top_k=3, top_p=0.5))
    assert set(np.asarray(drawn).tolist()) == {1, 2}
    drawn = sample(jax.random.key(0), logits, Sampling(temperature=2.0, top_k=3, top_p=0.4))
    assert set(np.asarray(drawn).tolist()) == {1}


@pytest.mark.parametrize("sampling,message", [
    (Sampling(temperature=-1), "--temperature must be a number ≥ 0"),
    (Sampling(temperature=math.nan), "--temperature must be a number ≥ 0"),
    (Sampling(top_k=-1), "--top_k must be ≥ 0"),
    (Sampling(top_p=0), "--top_p must be in (0, 1]"),
    (Sampling(top_p=1.5), "--top_p must be in (0, 1]"),
])
def test_sampling_settings_out_of_range_are_refused(sampling, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("]", r"\]")):
        check_sampling(sampling)


def test_stable_text_holds_back_what_more_tokens_could_change():
    assert stable_text("abc", None) == "abc"
    assert stable_text("ab\ufffd", None) == "ab"  # a character whose bytes have not all come
    assert stable_text("hello wo", "world") == "hello "  # "wo" may be the start of the stop string
    assert stable_text("hello world and more", "world") == "hello "  # the stop string came: final
    assert stable_text("hello w", "xyz") == "hello w"


def test_the_stream_printer_writes_the_final_text_once_without_partial_characters():
    tokenizer, out = ByteTokenizer(), io.StringIO()
    ids = tokenizer.encode("Amen. Selah — é")  # multi-byte characters, cut mid-character below
    printer = StreamPrinter("P: ", tokenizer, ".", out)
    for end in range(1, len(ids) + 1):
        printer([ids[:end]])
    printer.finish("Amen")
    assert out.getvalue() == "P: Amen\n"  # nothing from the stop string on

    out, seen = io.StringIO(), []
    printer = StreamPrinter("", tokenizer, None, out)
    for end in range(1, len(ids) + 1):
        printer([ids[:end]])
        seen.append(out.getvalue())
    printer.finish(tokenizer.decode(ids))
    assert out.getvalue() == "Amen. Selah — é\n" and not any("\ufffd" in text for text in seen)
    assert len(set(seen)) > 10  # it wrote as the ids came, not at the end


# ----------------------------------------------------------------------------- the command


def run_generate(capsys, workdir, *arguments):
    try:
        code = main(["generate", "--workdir", str(workdir), *arguments])
    except SystemExit as exit_info:  # argparse's usage errors leave through exit()
        code = exit_info.code
    out, err = capsys.readouterr()
    return code, out, err


def test_a_stopped_completion_keeps_only_the_tokens_of_its_text():
    from bigmodel.data import SentencePieceTokenizer
    from bigmodel.data.tokenizers import train_sentencepiece
    from bigmodel.inference.completions import completion

    byte = ByteTokenizer()
    assert completion("p", byte.encode("Amen. é And so"), byte, " And") == \
        {"prompt": "p", "text": "Amen. é", "tokens": byte.encode("Amen. é"), "finish_reason": "stop"}
    assert completion("p", byte.encode("And so"), byte, "And")["tokens"] == []  # stopped at once
    lines = ["In the beginning God created the heaven and the earth.", "And the earth was without form, and void."] * 50
    spm = SentencePieceTokenizer(train_sentencepiece(lines, 300))
    ids = spm.encode("the heaven and the earth")
    record = completion("p", ids, spm, "aven")  # "aven" starts inside a token ("ea"): that token goes with it
    assert record["text"] == "the he" and "the he".startswith(spm.decode(record["tokens"]))
    assert record["tokens"] == ids[: len(record["tokens"])] and spm.decode(ids[: len(record["tokens"]) + 1]) == "the hea"
    assert spm.decode(completion("p", ids, spm, " and")["tokens"]) == "the heaven"  # on a token boundary: exactly the text


def test_generate_prints_one_json_object_per_prompt_and_writes_nothing(tiny_run, tmp_path, capsys, fingerprint):
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("And God said\n\nIn the beginning\n")
    before = fingerprint(tiny_run)
    code, out, _ = run_generate(capsys, tiny_run, "--prompt", "Jesus wept", "--prompts_file", str(prompts_file),
                                "--max_tokens", "12", "--temperature", "0", "--json")
    assert code == 0 and fingerprint(tiny_run) == before
    records = [json.loads(line) for line in out.splitlines()]
    assert [record["prompt"] for record in records] == ["Jesus wept", "And God said", "In the beginning"]
    for record in records:
        assert len(record["tokens"]) == 12 and record["finish_reason"] == "length"
        assert record["text"] == bytes(record["tokens"]).decode("utf-8", errors="replace")  # the run's byte tokenizer
        assert record["prefill_tokens_per_s"] > 0 and record["decode_tokens_per_s"] > 0 and record["batch_prompts"] == 3

    text = records[0]["text"]
    stop = text[len(text) // 2]
    same_batch = ["--prompt", "Jesus wept", "--prompts_file", str(prompts_file), "--max_tokens", "12", "--temperature", "0"]
    code, out, _ = run_generate(capsys, tiny_run, *same_batch, "--stop", stop, "--json")
    stopped = json.loads(out.splitlines()[0])
    assert code == 0 and stopped["finish_reason"] == "stop" and stopped["text"] == text[: text.index(stop)]
    assert stopped["tokens"] == records[0]["tokens"][: len(stopped["tokens"])]
    assert bytes(stopped["tokens"]).decode() == stopped["text"]  # the stop string's tokens are left out too

    code, out, err = run_generate(capsys, tiny_run, *same_batch, "--seed", "3")
    assert code == 0 and out.startswith("Jesus wept" + text) and "\n---\nAnd God said" in out and "tokens/s (decode)" in err


def test_streamed_output_is_the_printed_output(tiny_run, capsys):
    # capsys is no terminal: --stream on forces the chunked loop that a terminal gets (stop strings: the printer's tests).
    same = ["--prompt", "Jesus wept", "--max_tokens", "20", "--temperature", "1", "--seed", "5"]
    code, plain, _ = run_generate(capsys, tiny_run, *same)
    code_streamed, streamed, err = run_generate(capsys, tiny_run, *same, "--stream", "on")
    assert code == code_streamed == 0 and streamed == plain and len(plain) > len("Jesus wept\n") and "tokens/s (decode)" in err


@pytest.mark.parametrize("arguments,message", [
    (["--prompt", ""], "--prompt is empty"),
    ([], "no prompt: pass --prompt TEXT or --prompts_file F"),
    (["--prompt", "a", "--max_tokens", "0"], "--max_tokens: expected a positive integer"),
    (["--prompt", "Jesus wept", "--max_tokens", "1015"], "prompt 1 is 10 tokens, and with --max_tokens 1015 it would pass the model's max_seq_len of 1024: lower --max_tokens to 1014"),
    (["--prompt", "a", "--top_p", "0"], "--top_p must be in (0, 1]"),
    (["--prompt", "a", "--top_p", "1.5"], "--top_p must be in (0, 1]"),
    (["--prompt", "a", "--top_k", "-1"], "--top_k must be ≥ 0"),
    (["--prompt", "a", "--temperature", "-0.5"], "--temperature must be a number ≥ 0"),
    (["--prompt", "a", "--stop", ""], "--stop is empty"),
    (["--prompts_file", "BLANK"], "has no prompt: write one prompt per line"),
    (["--prompts_file", "MISSING"], "cannot be read"),
    (["--prompt", "a", "--stream", "on", "--json"], "--stream on prints one prompt's plain text"),
], ids=["empty-prompt", "no-prompt", "max-tokens-0", "beyond-max-seq-len", "top-p-0", "top-p-1.5", "top-k", "temperature",
        "empty-stop", "blank-file", "missing-file", "stream-json"])
def test_bad_inputs_are_one_error_line_exit_2_and_write_nothing(tiny_run, tmp_path, capsys, fingerprint, arguments, message):
    (tmp_path / "BLANK").write_text("\n  \n")
    arguments = [str(tmp_path / a) if a in ("BLANK", "MISSING") else a for a in arguments]
    before = fingerprint(tiny_run)
    code, out, err = run_generate(capsys, tiny_run, *arguments)
    assert code == 2 and out == "" and fingerprint(tiny_run) == before
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_a_directory_without_a_checkpoint_is_refused(tiny_run, tmp_path, capsys):
    code, _, err = run_generate(capsys, tmp_path / "nowhere", "--prompt", "a")
    assert code == 2 and "has no config.json" in err
    (tmp_path / "untrained").mkdir()
    (tmp_path / "untrained" / "config.json").write_text((tiny_run / "config.json").read_text())
    code, _, err = run_generate(capsys, tmp_path / "untrained", "--prompt", "a")
    assert code == 2 and "has no checkpoint yet" in err and len(err.strip().splitlines()) == 1
    assert [path.name for path in (tmp_path / "untrained").iterdir()] == ["config.json"]
