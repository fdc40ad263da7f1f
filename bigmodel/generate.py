"""`python -m bigmodel generate --workdir DIR --prompt TEXT ...`: sample text from a run's newest
checkpoint, restored onto the devices present now (as `eval` does), with a KV cache.

All prompts (--prompt, then each non-blank line of --prompts_file) run as one left-padded batch:
one prefill, then one jitted loop of decode steps (`bigmodel.decoding`). The text is printed when
the batch is done, not streamed: the loop runs inside jit with no host call per token, which is
what makes it fast. Plain output is each prompt followed by its continuation (prompts separated
by a `---` line) with the speeds on stderr; `--json` prints one object per prompt instead.

--stop S ends a continuation at the first S, which is left out of the text (its tokens stay in
`tokens`). The loop stops a row when its last tokens are S's tokens; the text is also cut at
the first S on the host, which catches S however the model happened to tokenize it.
"""

from __future__ import annotations

import argparse
import bisect
import json
import sys
from pathlib import Path

from bigmodel.config import ConfigError

GENERATE_HELP = "sample text from a run's newest checkpoint (KV cache, batched prompts, top-k/top-p)"
SEPARATOR = "---"  # between prompts in plain output


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    from bigmodel.cli import positive_int

    parser.add_argument("--workdir", required=True, help="a train run's directory; its newest readable checkpoint is used")
    parser.add_argument("--prompt", default=None, help="the text to continue")
    parser.add_argument("--prompts_file", default=None, metavar="F",
                        help="more prompts, one per non-blank line (after --prompt); all run as one batch")
    parser.add_argument("--max_tokens", type=positive_int, default=100,
                        help="new tokens per prompt at most (prompt tokens + max_tokens ≤ model.max_seq_len)")
    parser.add_argument("--temperature", type=float, default=1.0, help="0 is greedy (argmax); 1 samples the model's distribution")
    parser.add_argument("--top_k", type=int, default=0, help="sample among the k most likely tokens (0: all)")
    parser.add_argument("--top_p", type=float, default=1.0,
                        help="nucleus: sample among the fewest most likely tokens whose probabilities sum to ≥ p (1: all)")
    parser.add_argument("--seed", type=int, default=0, help="the same seed, prompts and settings give the same text")
    parser.add_argument("--stop", default=None, metavar="STR", help="end each continuation at the first STR (left out of the text)")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per prompt: text, tokens, finish_reason, prefill and decode tokens/s (of the whole batch)")


def read_prompts(prompt: str | None, prompts_file: str | None) -> list[str]:
    """--prompt, then the non-blank lines of --prompts_file; ConfigError if there are none."""
    if prompt is None and prompts_file is None:
        raise ConfigError("no prompt: pass --prompt TEXT or --prompts_file F")
    if prompt == "":
        raise ConfigError("--prompt is empty: give the text to continue")
    prompts = [] if prompt is None else [prompt]
    if prompts_file is not None:
        try:
            lines = Path(prompts_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"--prompts_file {prompts_file} cannot be read ({getattr(error, 'strerror', None) or error}): "
                              "pass a UTF-8 text file, one prompt per line") from None
        from_file = [line for line in lines if line.strip()]
        if not from_file:
            raise ConfigError(f"--prompts_file {prompts_file} has no prompt: write one prompt per line")
        prompts += from_file
    return prompts


def check_lengths(prompt_lengths: list[int], max_tokens: int, max_seq_len: int) -> None:
    """Every prompt is some tokens, and with max_tokens fits in the model's max_seq_len positions."""
    for number, length in enumerate(prompt_lengths, start=1):
        if length == 0:
            raise ConfigError(f"prompt {number} encodes to no tokens: give text the run's tokenizer can read")
        if length + max_tokens > max_seq_len:
            fix = (f"lower --max_tokens to {max_seq_len - length}" if length < max_seq_len
                   else f"shorten it below {max_seq_len} tokens")
            raise ConfigError(f"prompt {number} is {length} tokens, and with --max_tokens {max_tokens} it would pass the model's "
                              f"max_seq_len of {max_seq_len}: {fix}")


def run_tokenizer(config, workdir: Path):
    """The tokenizer the run trained with. A missing BPE model is an error, not retrained: a
    retrained one need not give the same ids the checkpoint learned."""
    from bigmodel.data import ByteTokenizer, SentencePieceTokenizer
    from bigmodel.data.pipeline import TOKENIZERS_DIR
    from bigmodel.data.sources import SYNTHETIC, dataset_slug, resolve_data_dir
    from bigmodel.data.tokenizers import sentencepiece_path

    data = config.data
    if data.dataset == SYNTHETIC:
        raise ConfigError(f"{workdir} was trained on synthetic random tokens: it has no tokenizer to read a prompt with")
    if data.tokenizer == "bytes":
        return ByteTokenizer()
    path = sentencepiece_path(Path(resolve_data_dir(data)) / TOKENIZERS_DIR, dataset_slug(data.dataset), data.vocab_size)
    if not path.exists():
        raise ConfigError(f"the run's tokenizer {path} is missing: run generate where the run was trained, or set data_dir in {workdir}/config.json")
    return SentencePieceTokenizer(path.read_bytes())


def cut_at_stop(text: str, stop: str | None) -> tuple[str, bool]:
    """(text before the first `stop`, whether it was found)."""
    at = text.find(stop) if stop else -1
    return (text, False) if at < 0 else (text[:at], True)


def tokens_through_stop(tokenizer, ids: list[int], stop: str) -> list[int]:
    """The shortest prefix of `ids` whose text contains `stop` (the text only grows with the prefix)."""
    return ids[: bisect.bisect_left(range(len(ids)), True, key=lambda n: stop in tokenizer.decode(ids[: n + 1])) + 1]


def rate(tokens: int, seconds: float) -> float | None:
    return round(tokens / seconds, 1) if tokens and seconds > 0 else None


def results(prompts: list[str], generated, tokenizer, stop: str | None) -> list[dict]:
    """One JSON-ready record per prompt; the speeds are the whole batch's."""
    records = []
    for prompt, ids in zip(prompts, generated.tokens):
        text, stopped = cut_at_stop(tokenizer.decode(ids), stop)
        records.append({
            "prompt": prompt,
            "text": text,
            "tokens": tokens_through_stop(tokenizer, ids, stop) if stopped else ids,
            "finish_reason": "stop" if stopped else "length",
        })
    speeds = {
        "batch_prompts": len(prompts),
        "prefill_tokens_per_s": rate(generated.prompt_tokens, generated.prefill_s),
        "decode_tokens_per_s": rate(generated.decode_tokens, generated.decode_s),
        "compile_s": round(generated.compile_s, 2),
    }
    return [{**record, **speeds} for record in records]


def print_results(records: list[dict], as_json: bool, generated) -> None:
    """JSON lines; or each prompt with its continuation, and the speeds on stderr."""
    import jax

    if as_json:
        for record in records:
            print(json.dumps(record))
        return
    print(f"\n{SEPARATOR}\n".join(record["prompt"] + record["text"] for record in records))
    speeds = [records[0][name] or "n/a" for name in ("prefill_tokens_per_s", "decode_tokens_per_s")]
    print(f"{generated.prompt_tokens} prompt tokens at {speeds[0]} tokens/s (prefill), {generated.decode_tokens} new tokens "
          f"at {speeds[1]} tokens/s (decode), compiled in {generated.compile_s:.1f} s, on {jax.device_count()} × "
          f"{jax.devices()[0].device_kind}", file=sys.stderr)


def generate_command(args: argparse.Namespace) -> int:
    """Check every input (no JAX work yet), restore the run, generate, print."""
    from bigmodel.sampling import Sampling, check_sampling

    sampling = Sampling(args.temperature, args.top_k, args.top_p)
    check_sampling(sampling)
    if args.stop == "":
        raise ConfigError("--stop is empty: give the string that ends a continuation, or leave --stop out")
    prompts = read_prompts(args.prompt, args.prompts_file)

    from bigmodel import checkpoint
    from bigmodel.decoding import generate
    from bigmodel.evaluate import open_run
    from bigmodel.train import build, restore_or_init

    workdir = Path(args.workdir)
    config, manager = open_run(workdir)
    tokenizer = run_tokenizer(config, workdir)
    encoded = [tokenizer.encode(prompt) for prompt in prompts]
    check_lengths([len(ids) for ids in encoded], args.max_tokens, config.model.max_seq_len)
    setup = build(config)
    try:
        state, _ = restore_or_init(setup, manager, move_unreadable=False)  # generate only reads
    except (checkpoint.NoReadableCheckpoint, checkpoint.ShapeMismatch) as error:
        raise ConfigError(str(error)) from None
    manager.close()
    stop_ids = tuple(tokenizer.encode(args.stop)) if args.stop else ()
    generated = generate(setup.model, state.params, encoded, args.max_tokens, sampling, args.seed, stop_ids,
                         setup.batch_sharding, setup.rules)
    print_results(results(prompts, generated, tokenizer, args.stop), args.json, generated)
    return 0
