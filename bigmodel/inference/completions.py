"""A decoded batch as text: each prompt's continuation cut before its stop string, the tokens of
that text, why it ended, and the batch's speeds. Pure Python: `generate` prints these records and the
server answers with them, so both say the same thing about the same tokens.
"""

from __future__ import annotations

import bisect


def cut_at_stop(text: str, stop: str | None) -> tuple[str, bool]:
    """(text before the first `stop`, whether it was found)."""
    at = text.find(stop) if stop else -1
    return (text, False) if at < 0 else (text[:at], True)


def tokens_through_stop(tokenizer, ids: list[int], stop: str) -> list[int]:
    """The shortest prefix of `ids` whose text contains `stop` (the text only grows with the prefix)."""
    return ids[: bisect.bisect_left(range(len(ids)), True, key=lambda n: stop in tokenizer.decode(ids[: n + 1])) + 1]


def tokens_before_stop(tokenizer, ids: list[int], stop: str, text: str) -> list[int]:
    """The longest prefix of `ids` whose text is a prefix of `text` (the continuation cut before
    `stop`): the tokens of `text`, less one that straddles the start of `stop` (a BPE token)."""
    length = len(tokens_through_stop(tokenizer, ids, stop)) - 1  # that prefix's text holds `stop`: too long
    while length and not text.startswith(tokenizer.decode(ids[:length])):
        length -= 1
    return ids[:length]


def rate(tokens: int, seconds: float) -> float | None:
    return round(tokens / seconds, 1) if tokens and seconds > 0 else None


def completion(prompt: str, ids: list[int], tokenizer, stop: str | None) -> dict:
    """One prompt's JSON-ready record: its text cut before `stop`, that text's tokens, and why it ended."""
    text, stopped = cut_at_stop(tokenizer.decode(ids), stop)
    return {"prompt": prompt, "text": text, "tokens": tokens_before_stop(tokenizer, ids, stop, text) if stopped else ids,
            "finish_reason": "stop" if stopped else "length"}


def speeds(generated, batch_prompts: int) -> dict:
    """The whole batch's speeds (every prompt's record carries them)."""
    return {"batch_prompts": batch_prompts,
            "prefill_tokens_per_s": rate(generated.prompt_tokens, generated.prefill_s),
            "decode_tokens_per_s": rate(generated.decode_tokens, generated.decode_s),
            "compile_s": round(generated.compile_s, 2)}
