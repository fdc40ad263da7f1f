"""The server's model side: run a batch of jobs with the KV-cache decoder, in the model thread.

Every distinct batch shape and setting compiles its own prefill and decode programs (seconds
each on a CPU), so batches are padded to a few shapes (`batch_shape`): one prompt or a full
batch of rows, and powers of two of prompt slots and token buffer. jit keeps each compiled
program; startup compiles the shapes the default request uses (`warm_up`). Settings are part of
a program (sampling and the stop sequence are static in `bigmodel.inference.decoding`), so each new
setting compiles once; past MAX_PROGRAMS distinct ones the caches are dropped, which bounds the
memory a stream of odd settings can take (the compile time stays theirs to wait for).
"""

from __future__ import annotations

import dataclasses
import sys
import time

from bigmodel.inference.completions import completion, speeds
from bigmodel.inference.decoding import BatchShape, generate_tokens
from bigmodel.inference.sampling import Sampling
from bigmodel.inference.serve_queue import Job

MIN_SLOTS = 64  # prompt slots of the smallest shape: most prompts fit; a prefill of 64 costs little
MAX_PROGRAMS = 64  # distinct (shape, sampling, stop) compiled before jax's caches are dropped
DEFAULT_SAMPLING = Sampling()  # the API's defaults: temperature 1, all tokens


@dataclasses.dataclass(frozen=True)
class Limits:
    """Hard caps on one request (and the queue), from the serve flags."""

    max_tokens: int  # new tokens per prompt
    default_max_tokens: int  # when a request names none
    max_prompt_tokens: int
    max_prompt_bytes: int  # per prompt (and per stop string), UTF-8
    max_prompts: int  # per request
    max_body_bytes: int
    max_queue: int  # requests waiting, besides the batch being run
    max_batch: int  # prompts decoded together


def power_of_two_at_least(n: int, smallest: int, largest: int) -> int:
    """The least power of two ≥ n (at least `smallest`), capped at `largest` (itself a shape)."""
    bucket = smallest
    while bucket < n:
        bucket *= 2
    return max(min(bucket, largest), n)


def batch_shape(prompt_lengths: list[int], max_tokens: int, limits: Limits) -> BatchShape:
    """The padded shape a batch runs as: one row or `max_batch`; prompt slots and token buffer
    rounded up to powers of two, from the sizes a default request needs (a short prompt, the
    default max_tokens): those are the shapes `warm_up` compiles."""
    rows = 1 if len(prompt_lengths) == 1 else limits.max_batch
    slots = power_of_two_at_least(max(prompt_lengths), min(MIN_SLOTS, limits.max_prompt_tokens), limits.max_prompt_tokens)
    smallest_buffer = power_of_two_at_least(limits.default_max_tokens, 1, limits.max_tokens)  # the default request's
    tokens = power_of_two_at_least(max_tokens, smallest_buffer, limits.max_tokens)
    return BatchShape(rows, slots, tokens)


class Engine:
    """A restored run's model, parameters and tokenizer, and how to run jobs on them."""

    def __init__(self, setup, params, tokenizer, limits: Limits, log=print):
        self.setup, self.params, self.tokenizer, self.limits, self.log = setup, params, tokenizer, limits, log
        self.programs: set = set()  # (shape, sampling, stop_ids) compiled so far

    def _note_program(self, shape: BatchShape, sampling: Sampling, stop_ids: tuple) -> bool:
        """Whether this batch compiles new programs (logged; past MAX_PROGRAMS, caches dropped)."""
        import jax

        key = (shape, sampling, stop_ids)
        if key in self.programs:
            return False
        if len(self.programs) >= MAX_PROGRAMS:
            jax.clear_caches()
            self.programs.clear()
        self.programs.add(key)
        self.log(f"compiling for {shape.rows} rows × {shape.slots} prompt slots + {shape.tokens} tokens, {sampling}"
                 f"{', a stop sequence' if stop_ids else ''} (once)")
        return True

    def run_batch(self, jobs: list[Job]) -> list[dict]:
        """One decode for all the jobs' prompts (they share sampling and stop); each job gets its
        rows, cut at its own max_tokens, and the batch's speeds."""
        first = jobs[0]
        encoded = [ids for job in jobs for ids in job.encoded]
        max_tokens = max(job.max_tokens for job in jobs)
        shape = batch_shape([len(ids) for ids in encoded], max_tokens, self.limits)
        stop_ids = tuple(self.tokenizer.encode(first.stop)) if first.stop else ()
        compiled = self._note_program(shape, first.sampling, stop_ids)
        begin = time.perf_counter()
        generated = generate_tokens(self.setup.model, self.params, encoded, max_tokens, first.sampling, first.seed, stop_ids,
                                    self.setup.batch_sharding, self.setup.rules, shape=shape, ahead_of_time=False)
        compute_s = time.perf_counter() - begin
        batch = {**speeds(generated, len(encoded)), "batch_requests": len(jobs), "compute_s": round(compute_s, 4), "compiled": compiled}
        del batch["compile_s"]
        if compiled:  # the timings include compiling: no speed to speak of
            batch.update(prefill_tokens_per_s=None, decode_tokens_per_s=None)
        results, row = [], 0
        for job in jobs:
            rows = generated.tokens[row: row + len(job.prompts)]
            row += len(job.prompts)
            completions = [completion(prompt, ids[: job.max_tokens], self.tokenizer, job.stop) for prompt, ids in zip(job.prompts, rows)]
            results.append({"completions": completions, **batch, "queue_s": round(begin - job.queued_at, 4)})
        return results

    def warm_up(self) -> float:
        """Compile (and run once) the programs of a default request: one greedy prompt, a full
        greedy batch, one sampled prompt. Returns the seconds it took."""
        begin = time.perf_counter()
        one = self.tokenizer.encode("a") or [1]
        limits = self.limits
        for prompts, sampling in (([one], Sampling(temperature=0)), ([one] * limits.max_batch, Sampling(temperature=0)),
                                  ([one], DEFAULT_SAMPLING)):
            self.run_batch([Job(["a"] * len(prompts), prompts, limits.default_max_tokens, sampling, 0, None)])
        return time.perf_counter() - begin


def stderr_log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)
