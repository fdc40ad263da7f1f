"""`python -m bigmodel generate --workdir DIR --prompt TEXT ...`: sample text from a run's newest
checkpoint, restored onto the devices present now (`bigmodel.restore`), with a KV cache.

All prompts (--prompt, then each non-blank line of --prompts_file) run as one left-padded batch:
one prefill, then a jitted loop of decode steps (`bigmodel.inference.decoding`). Plain output is each
prompt followed by its continuation (prompts separated by a `---` line) with the speeds on
stderr; `--json` prints one object per prompt instead. One prompt on a terminal is streamed: the
loop runs STREAM_TOKENS steps per call (still inside jit, no host call per token) and each
chunk's text is printed as it comes; the output is the same as without streaming.

--stop S ends a continuation at the first S, which is left out of the text and of `tokens`. The
loop stops a row when its last tokens are S's tokens; the text is also cut at the first S on the
host, which catches S however the model happened to tokenize it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bigmodel.arguments import path_text, positive_int, seed, utf8_text
from bigmodel.inference.completions import completion, cut_at_stop, speeds
from bigmodel.config import ConfigError

GENERATE_HELP = "sample text from a run's newest checkpoint (KV cache, batched prompts, top-k/top-p)"
SEPARATOR = "---"  # between prompts in plain output


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", type=path_text, required=True, help="a train run's directory; its newest readable checkpoint is used")
    parser.add_argument("--prompt", type=utf8_text, default=None, help="the text to continue")
    parser.add_argument("--prompts_file", type=path_text, default=None, metavar="F",
                        help="more prompts, one per non-blank line (after --prompt); all run as one batch")
    parser.add_argument("--max_tokens", type=positive_int, default=100,
                        help="new tokens per prompt at most (prompt tokens + max_tokens ≤ model.max_seq_len)")
    parser.add_argument("--temperature", type=float, default=1.0, help="0 is greedy (argmax); 1 samples the model's distribution")
    parser.add_argument("--top_k", type=int, default=0, help="sample among the k most likely tokens (0: all)")
    parser.add_argument("--top_p", type=float, default=1.0,
                        help="nucleus: sample among the fewest most likely tokens whose probabilities sum to ≥ p (1: all)")
    parser.add_argument("--seed", type=seed, default=0, help="the same seed, prompts and settings give the same text")
    parser.add_argument("--stop", type=utf8_text, default=None, metavar="STR", help="end each continuation at the first STR (left out of the text)")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per prompt: text, tokens, finish_reason, prefill and decode tokens/s (of the whole batch)")
    parser.add_argument("--stream", choices=("auto", "on", "off"), default="auto",
                        help="print the text as it is decoded: auto = when stdout is a terminal, one prompt and no --json")


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


def results(prompts: list[str], generated, tokenizer, stop: str | None) -> list[dict]:
    """One JSON-ready record per prompt; the speeds are the whole batch's."""
    batch = speeds(generated, len(prompts))
    return [{**completion(prompt, ids, tokenizer, stop), **batch} for prompt, ids in zip(prompts, generated.tokens)]


def print_speeds(records: list[dict], generated) -> None:
    import jax

    rates = [records[0][name] or "n/a" for name in ("prefill_tokens_per_s", "decode_tokens_per_s")]
    print(f"{generated.prompt_tokens} prompt tokens at {rates[0]} tokens/s (prefill), {generated.decode_tokens} new tokens "
          f"at {rates[1]} tokens/s (decode), compiled in {generated.compile_s:.1f} s, on {jax.device_count()} × "
          f"{jax.devices()[0].device_kind}", file=sys.stderr)


def print_results(records: list[dict], as_json: bool, generated) -> None:
    """JSON lines; or each prompt with its continuation, and the speeds on stderr."""
    if as_json:
        for record in records:
            print(json.dumps(record))
        return
    print(f"\n{SEPARATOR}\n".join(record["prompt"] + record["text"] for record in records))
    print_speeds(records, generated)


# ----------------------------------------------------------------------------- streaming


def stable_text(text: str, stop: str | None) -> str:
    """The part of a growing continuation's text that more tokens cannot change: all of it up
    to `stop` once `stop` is in it; otherwise without a trailing U+FFFD (a character whose
    bytes have not all come) and without an ending that could be the start of `stop`."""
    text, stopped = cut_at_stop(text, stop)
    if stopped:
        return text
    text = text.rstrip("\ufffd")
    for length in range(min(len(stop or ""), len(text)), 0, -1):
        if stop.startswith(text[-length:]):
            return text[:-length]
    return text


class StreamPrinter:
    """Writes one prompt and its continuation to `out` as the decode loop hands over ids: each
    time, the new stable text. `finish` writes the rest and the newline, so the stream is the
    same text that `print_results` prints for that prompt."""

    def __init__(self, prompt: str, tokenizer, stop: str | None, out):
        self.tokenizer, self.stop, self.out, self.printed = tokenizer, stop, out, ""
        self._write(prompt)

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def __call__(self, ids_per_prompt: list[list[int]]) -> None:
        text = stable_text(self.tokenizer.decode(ids_per_prompt[0]), self.stop)
        if text.startswith(self.printed) and len(text) > len(self.printed):
            self._write(text[len(self.printed):])
            self.printed = text

    def finish(self, final_text: str) -> None:
        self._write(final_text[len(self.printed):] + "\n")


def wants_streaming(mode: str, as_json: bool, n_prompts: int, is_terminal: bool) -> bool:
    """--stream auto streams one prompt's plain text to a terminal; `on` insists (ConfigError
    where it cannot: JSON is one object per prompt, and several prompts decode at once)."""
    if mode == "on" and (as_json or n_prompts > 1):
        raise ConfigError("--stream on prints one prompt's plain text: drop --json, pass one prompt, or use --stream auto")
    return mode == "on" or (mode == "auto" and is_terminal and not as_json and n_prompts == 1)


def generate_command(args: argparse.Namespace) -> int:
    """Check every input (no JAX work yet), restore the run, generate, print."""
    from bigmodel.inference.sampling import Sampling, check_sampling

    sampling = Sampling(args.temperature, args.top_k, args.top_p)
    check_sampling(sampling)
    if args.stop == "":
        raise ConfigError("--stop is empty: give the string that ends a continuation, or leave --stop out")
    prompts = read_prompts(args.prompt, args.prompts_file)
    stream = wants_streaming(args.stream, args.json, len(prompts), sys.stdout.isatty())

    from bigmodel.inference.decoding import generate_tokens
    from bigmodel.restore import open_for_use, restore_params

    config, manager, tokenizer = open_for_use(Path(args.workdir))
    encoded = [tokenizer.encode(prompt) for prompt in prompts]
    try:
        check_lengths([len(ids) for ids in encoded], args.max_tokens, config.model.max_seq_len)
    except ConfigError:
        manager.close()
        raise
    setup, params, _ = restore_params(config, manager)
    stop_ids = tuple(tokenizer.encode(args.stop)) if args.stop else ()
    printer = StreamPrinter(prompts[0], tokenizer, args.stop, sys.stdout) if stream else None
    generated = generate_tokens(setup.model, params, encoded, args.max_tokens, sampling, args.seed, stop_ids,
                                setup.batch_sharding, setup.rules, on_chunk=printer)
    records = results(prompts, generated, tokenizer, args.stop)
    if printer is None:
        print_results(records, args.json, generated)
    else:
        printer.finish(records[0]["text"])
        print_speeds(records, generated)
    return 0
