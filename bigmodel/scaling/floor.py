"""A known floor for the fitted E: the entropy rate of the `markov` corpus a sweep trained on.

On natural text the irreducible loss E of L = E + A/N^α + B/D^β can only be estimated; on a
Markov source it is known exactly (bigmodel/data/markov_chain.py), so a fit can be checked
against the truth. A sweep's runs record their data config in config.json; where every fitted
run trained byte-level on the same `markov` corpus, its entropy rate in nats per byte is the
floor their per-byte loss approaches. Anything else (kjv, a user's CSV, sentencepiece tokens,
whose loss is per token, not per byte) has no known floor.
"""

from __future__ import annotations

from pathlib import Path

from bigmodel import files
from bigmodel.data.markov_chain import is_markov_name


def run_data_configs(directory: Path, names: tuple[str, ...]) -> list[dict]:
    """The data group of each named run's config.json (runs without one are skipped)."""
    configs = (files.read_json(directory / name / "config.json") for name in names)
    return [config["data"] for config in configs if config and "data" in config]


def known_floor(directory: str | Path, names: tuple[str, ...]) -> dict | None:
    """{"dataset", "loss" (nats/byte), "bits_per_byte"} when every named run trained on the same
    byte-level markov corpus, else None."""
    data = run_data_configs(Path(directory), names)
    if not data or len(data) != len(names):
        return None
    first = data[0]
    same = all((entry["dataset"], entry["tokenizer"], entry.get("data_dir", "")) ==
               (first["dataset"], first["tokenizer"], first.get("data_dir", "")) for entry in data)
    if not same or not is_markov_name(first["dataset"]) or first["tokenizer"] != "bytes":
        return None
    from bigmodel.data.markov import markov_entropy_rate  # tfds: only for a markov sweep
    from bigmodel.data.sources import resolve_data_dir

    metadata = markov_entropy_rate(resolve_data_dir(first), first["dataset"])
    return {"dataset": first["dataset"], "loss": float(metadata["entropy_rate_nats_per_byte"]),
            "bits_per_byte": float(metadata["entropy_rate_bits_per_byte"])}


def compare_with_floor(fit: dict, floor: dict) -> dict:
    """The floor with the fit's E against it: E − floor and whether E's 95% interval covers it."""
    compared = dict(floor)
    if "E" in fit:
        compared["E"] = float(fit["E"])
        compared["E_minus_floor"] = float(fit["E"] - floor["loss"])
        if "E" in fit.get("ci", {}):
            low, high = fit["ci"]["E"]
            compared["covered_by_E_interval"] = bool(low <= floor["loss"] <= high)
    return compared


def describe_floor(compared: dict) -> str:
    """`E 1.262 vs the corpus's entropy rate 1.2512 nats/byte (+0.011; inside E's 95% interval)`."""
    if "E_minus_floor" not in compared:
        return f"the corpus's entropy rate is {compared['loss']:.4f} nats/byte"
    text = f"E {compared['E']:.4g} vs the corpus's entropy rate {compared['loss']:.4f} nats/byte"
    text += f" ({compared['E_minus_floor']:+.3f}"
    if "covered_by_E_interval" in compared:
        text += "; inside E's 95% interval" if compared["covered_by_E_interval"] else "; outside E's 95% interval"
    return text + ")"
