"""The value rules that are not a bad-input row: the shared argparse types at their edges, tiny
temperatures decoding greedily, the cache home, bench's peak from the environment, plan's FLOPs
note, and every shipped study's analysis passing the dry-run check (the check refuses no real one).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from bigmodel import arguments

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("kind, text, value", [
    (arguments.seed, "0", 0), (arguments.seed, str(2**32 - 1), 2**32 - 1), (arguments.positive_int, "7", 7),
    (arguments.non_negative_int, "0", 0), (arguments.positive_number, "1e-300", 1e-300), (arguments.utf8_text, "ünïcode", "ünïcode"),
])
def test_a_type_takes_the_edge_of_its_range(kind, text, value):
    assert kind(text) == value


@pytest.mark.parametrize("kind, text", [
    (arguments.seed, str(2**32)), (arguments.seed, "-1"), (arguments.seed, "1.5"), (arguments.positive_int, "9" * 5000),
    (arguments.non_negative_int, "-1"), (arguments.positive_number, "0"), (arguments.positive_number, "-inf"),
    (arguments.positive_number, "nan"), (arguments.utf8_text, "a\udcffb"), (arguments.path_text, " "),
    (arguments.int_in(1, 4, "why"), "5"), (arguments.bootstrap_replicates(0), str(10**6 + 1)),
])
def test_a_type_refuses_past_its_edge(kind, text):
    with pytest.raises(argparse.ArgumentTypeError):
        kind(text)


def test_a_temperature_below_the_threshold_decodes_greedily():
    import jax
    import numpy as np

    from bigmodel.inference.sampling import GREEDY_BELOW, Sampling, sample

    logits = np.random.default_rng(0).normal(size=(64, 50)).astype(np.float32) * 30  # |logit| / 1e-45 overflows float32
    for temperature in (1e-45, GREEDY_BELOW / 2):
        assert (np.asarray(sample(jax.random.key(1), logits, Sampling(temperature))) == logits.argmax(axis=-1)).all()


def test_the_cache_home_follows_xdg_cache_home_when_absolute(tmp_path):
    from bigmodel.data.sources import resolve_data_dir
    from bigmodel.runtime import compilation_cache_dir, user_cache_dir

    environment = {"XDG_CACHE_HOME": str(tmp_path)}
    assert user_cache_dir(environment) == tmp_path / "bigmodel"
    assert compilation_cache_dir(environment) == tmp_path / "bigmodel" / "jax"
    assert resolve_data_dir({"data_dir": ""}, environment) == str(tmp_path / "bigmodel" / "tfds")
    assert resolve_data_dir({"data_dir": ""}, {**environment, "TFDS_DATA_DIR": "/data"}) == "/data"
    assert user_cache_dir({"XDG_CACHE_HOME": "relative"}) == Path.home() / ".cache" / "bigmodel"  # the spec: ignore it


@pytest.mark.parametrize("text", ["abc", "-1", "nan", "inf", "0"])
def test_bench_refuses_a_peak_in_the_environment_that_is_not_a_positive_number(text):
    from bigmodel.bench import peak_flops_from_environment
    from bigmodel.config import ConfigError

    with pytest.raises(ConfigError, match="BIGMODEL_PEAK_FLOPS"):
        peak_flops_from_environment({"BIGMODEL_PEAK_FLOPS": text})
    assert peak_flops_from_environment({"BIGMODEL_PEAK_FLOPS": "989e12"}) == 989e12
    assert peak_flops_from_environment({}) == 0.0


def test_plans_flops_note_names_the_loops_xla_counts_once():
    from bigmodel.config import load_config
    from bigmodel.plan import compiled_flops_note

    gpt = compiled_flops_note(load_config("configs/gpt.py:124m"))  # unrolled layers, accumulated micro-batches
    assert "gradient-accumulation loop (1 of" in gpt and "scanned" not in gpt
    lm = compiled_flops_note(load_config("configs/lm.py:L4"))  # scanned layers, no accumulation
    assert "scanned layer stack (1 of 4 layers)" in lm and "accumulation" not in lm


def test_every_shipped_studys_analysis_passes_the_dry_run_check():
    from bigmodel.scaling.runner import check_analysis, load_study

    studies = sorted((REPO / "experiments").glob("*.py"))
    analysed = [path.name for path in studies if load_study(path).analysis]
    for path in studies:
        check_analysis(load_study(path).analysis)
    assert "demo.py" in analysed


def test_batches_past_one_pass_over_the_validation_split_are_refused(kjv_data_dir):
    from bigmodel.config import ConfigError, load_config
    from bigmodel.data import load_dataset
    from bigmodel.data.pipeline import batches_in_one_pass, check_batches

    config = load_config("configs/lm.py:L1", {"data.data_dir": kjv_data_dir, "data.seq_len": "64"})
    validation = load_dataset(config.data, "validation", seed=0)
    one_pass = batches_in_one_pass(validation, 8)
    assert one_pass == validation.num_windows // 8 > 1
    check_batches(one_pass, validation, 8)
    with pytest.raises(ConfigError, match=f"use at most {one_pass}"):
        check_batches(one_pass + 1, validation, 8)


def test_a_study_may_give_its_numbers_as_numpy_values():
    import numpy as np

    from bigmodel.scaling.sweep import SizeGrid, Study, expand

    study = Study(base_config="configs/lm.py:L1", grid=SizeGrid(["L1"], tokens=4096), seeds=np.arange(2), learning_rates=np.array([1e-3, 2e-3]),
                  batch_size=np.int64(8))
    runs = expand(study)
    assert {type(run.batch_size) for run in runs} == {int} and runs[0].batch_size == 8
    assert sorted((run.seed, run.learning_rate) for run in runs) == [(0, 1e-3), (0, 2e-3), (1, 1e-3), (1, 2e-3)]
    assert all(type(json.loads(json.dumps(run.summary()))["seed"]) is int for run in runs)  # what --dry-run --json prints
