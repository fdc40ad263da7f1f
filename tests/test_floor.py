"""The fitted E against a known truth (bigmodel/scaling/floor.py): a sweep on the `markov` corpus
carries the corpus's exact entropy rate into fit.json and the plots, and a real model trained on
that corpus never beats the entropy rate beyond noise."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bigmodel.cli import main
from bigmodel.data.markov import markov_entropy_rate
from bigmodel.scaling import fit
from bigmodel.scaling.plot_figures import plot_loss_vs_params

# First-order source over 32 bytes: few enough contexts (32) that a tiny model learns them in 200 steps.
CORPUS = "markov/order=1,seed=3,train_bytes=131072,validation_bytes=32768,document_bytes=4096"
HEADER = "name,status,params,non_embedding_params,tokens,flops,final_loss,final_eval_loss,eval_bpb,wall_time_s"
SIZES = np.array([1e4, 3e4, 1e5, 3e5, 1e6, 3e6])


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def entropy(data_dir) -> float:
    return markov_entropy_rate(data_dir, CORPUS)["entropy_rate_nats_per_byte"]


def write_sweep(directory, loss, dataset, data_dir, tokenizer="bytes"):
    """A finished power-law sweep: runs.csv and each run's config.json (what floor.py reads)."""
    rows = []
    for index, (size, value) in enumerate(zip(SIZES, loss)):
        name = f"L2-n{index}-s0"
        rows.append(f"{name},done,{2 * size},{size},1e6,{6e6 * size},{value},{value},,1")
        (directory / name).mkdir(parents=True)
        data = {"dataset": dataset, "tokenizer": tokenizer, "data_dir": data_dir}
        (directory / name / "config.json").write_text(json.dumps({"data": data}))
    (directory / "runs.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    return directory


def law(floor: float, seed: int = 0) -> np.ndarray:
    return (floor + 2.0 * SIZES ** -0.35) * (1 + np.random.default_rng(seed).normal(0, 0.002, SIZES.size))


def test_a_markov_sweeps_fit_reports_the_true_entropy_rate_and_whether_e_finds_it(tmp_path, data_dir, entropy):
    right = fit.fit_input(write_sweep(tmp_path / "right", law(entropy), CORPUS, data_dir), "power", bootstrap=20)
    floor = right["known_floor"]
    assert floor["dataset"] == CORPUS and floor["loss"] == pytest.approx(entropy)
    assert floor["bits_per_byte"] == pytest.approx(entropy / np.log(2))
    assert floor["E_minus_floor"] == pytest.approx(right["E"] - entropy) and abs(floor["E_minus_floor"]) < 0.02
    assert floor["covered_by_E_interval"] is True and "inside E's 95% interval" in right["summary"]
    # A law whose floor is 0.3 nats above the truth: its E is found outside.
    wrong = fit.fit_input(write_sweep(tmp_path / "wrong", law(entropy + 0.3), CORPUS, data_dir), "power", bootstrap=20)
    assert wrong["known_floor"]["E_minus_floor"] == pytest.approx(0.3, abs=0.03)
    assert wrong["known_floor"]["covered_by_E_interval"] is False


@pytest.mark.parametrize("dataset, tokenizer", [("kjv", "bytes"), (CORPUS, "spm")])  # no floor, or one per byte not per token
def test_other_corpora_and_token_losses_have_no_known_floor(tmp_path, data_dir, dataset, tokenizer):
    result = fit.fit_input(write_sweep(tmp_path, law(1.0), dataset, data_dir, tokenizer), "power")
    assert "known_floor" not in result and "entropy rate" not in result["summary"]


def test_the_loss_vs_size_plot_draws_the_floor(tmp_path, data_dir, entropy):
    result = fit.fit_input(write_sweep(tmp_path, law(entropy), CORPUS, data_dir), "power")
    figure = plot_loss_vs_params(SIZES, np.full(SIZES.size, 1e6), law(entropy), result)
    [line] = [line for line in figure.axes[0].get_lines() if line.get_gid() == "known-floor"]
    assert list(line.get_ydata()) == pytest.approx([entropy, entropy])
    low, high = figure.axes[0].get_ylim()
    assert low < entropy < high


@pytest.mark.slow  # trains L1 for 200 steps
def test_a_trained_model_approaches_the_entropy_rate_and_never_beats_it(tmp_path, data_dir, entropy):
    workdir = tmp_path / "run"
    settings = {"data.dataset": CORPUS, "data.data_dir": data_dir, "train.steps": 200, "train.batch_size": 16,
                "data.seq_len": 64, "optim.warmup_steps": 10, "optim.lr": 1e-2, "eval.every_steps": 200, "eval.batches": 32,
                "checkpoint.every_steps": 200}
    assert main(["train", "--config", "configs/lm.py:L1", "--workdir", str(workdir),
                 *[f"--config.{key}={value}" for key, value in settings.items()]]) == 0
    eval_loss = json.loads((workdir / "summary.json").read_text())["final_eval_loss"]
    marginal = markov_entropy_rate(data_dir, CORPUS)["marginal_entropy_bits_per_byte"] * np.log(2)
    # 32 × 64 validation bytes per batch, 32 batches: the mean's standard error is ~0.01 nats.
    assert entropy - 0.03 < eval_loss < entropy + 0.15 < marginal  # learned the contexts; never below the truth
