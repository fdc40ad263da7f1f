"""`compare`'s statistics (bigmodel/scaling/significance.py) on synthetic groups with a known
difference, and the command on hand-written run directories. Fast: no model is trained or
restored (the one-run-a-side path, which evaluates checkpoints, is docs/scaling.md's command)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bigmodel.cli import main
from bigmodel.scaling import significance
from bigmodel.scaling.significance import minimal_detectable_difference, paired_bootstrap, t_cdf, t_quantile, welch

REPO = Path(__file__).resolve().parent.parent


def binomial_tolerance(rate: float, trials: int, sds: float = 3.5) -> float:
    """How far an observed rejection rate may stray from `rate` by chance (3.5 SD: ~1 in 2,000)."""
    return sds * math.sqrt(rate * (1 - rate) / trials)


# ----------------------------------------------------------------------------- the t distribution


@pytest.mark.parametrize("t, df, probability", [
    (2.228, 10, 0.975),  # Student's t table: two-sided 5% critical values ...
    (4.303, 2, 0.975),
    (6.314, 1, 0.95),
    (2.750, 30, 0.995),
    (1.96, 1e7, 0.975),  # ... and the normal limit
])
def test_t_cdf_matches_table_values(t, df, probability):
    assert t_cdf(t, df) == pytest.approx(probability, abs=2e-4)
    assert t_quantile(probability, df) == pytest.approx(t, abs=2e-3)


def test_t_cdf_matches_closed_forms():
    assert t_cdf(1.0, 1) == pytest.approx(0.75, abs=1e-12)  # df 1 is the Cauchy: 1/2 + atan(t)/π
    for t in (-3.0, -0.5, 0.0, 0.7, 5.0):
        assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)  # df 2
        assert t_cdf(-t, 7.3) == pytest.approx(1 - t_cdf(t, 7.3), abs=1e-12)  # symmetric, any real df


# ----------------------------------------------------------------------------- Welch across seeds


def test_welch_t_and_df_match_hand_computed_values():
    # A = 1,2,3,4 (mean 2.5, var 5/3), B = 2,4,6 (mean 4, var 4): SE² = (5/3)/4 + 4/3 = 1.75,
    # t = 1.5/√1.75, df = 1.75² / (((5/12)²)/3 + ((4/3)²)/2) = 3.0625 / 0.946759...
    result = welch([1, 2, 3, 4], [2, 4, 6])
    assert result.difference == pytest.approx(1.5)
    assert result.standard_error == pytest.approx(math.sqrt(1.75))
    assert result.t == pytest.approx(1.5 / math.sqrt(1.75))
    assert result.df == pytest.approx(3.0625 / ((5 / 12) ** 2 / 3 + (4 / 3) ** 2 / 2))
    assert result.p_value == pytest.approx(2 * t_cdf(-result.t, result.df))
    half_width = t_quantile(0.975, result.df) * result.standard_error
    assert (result.low, result.high) == pytest.approx((1.5 - half_width, 1.5 + half_width))


def test_welch_equals_the_pooled_t_test_at_equal_sizes_and_spreads():
    result = welch([0.0, 2.0, 4.0], [3.0, 5.0, 7.0])  # both variance 4, n 3: pooled t with df 4
    assert result.df == pytest.approx(4.0)
    assert result.t == pytest.approx(3.0 / math.sqrt(4 / 3 + 4 / 3))


def simulated_rejections(difference_sds: float, seeds: int, trials: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    return float(np.mean([welch(rng.normal(0, 1, seeds), rng.normal(difference_sds, 1, seeds)).p_value < 0.05 for _ in range(trials)]))


def test_welch_detects_a_difference_of_three_seed_sds_with_five_seeds():
    assert simulated_rejections(3.0, seeds=5, trials=200, seed=0) >= 0.90  # exact power ≈ 0.98


def test_welch_false_positive_rate_is_five_percent():
    rate = simulated_rejections(0.0, seeds=5, trials=400, seed=1)
    assert abs(rate - 0.05) <= binomial_tolerance(0.05, 400)


def test_welch_interval_and_p_value_agree():
    rng = np.random.default_rng(2)
    for _ in range(50):
        result = welch(rng.normal(0, 1, 4), rng.normal(1, 1, 3))
        assert (result.p_value < 0.05) == (result.low > 0 or result.high < 0)


# ----------------------------------------------------------------------------- minimal detectable difference


class SimulatedWelch:
    """A Monte Carlo of Welch's two-sided test at SD 1, written apart from `welch_power`: each
    trial draws both groups' runs, and one set of draws serves every true difference (adding
    the difference to B's runs moves only the mean), so the rejection rate is one curve in it."""

    def __init__(self, n_a: int, n_b: int, trials: int, seed: int, sd_b: float = 1.0, alpha: float = 0.05):
        rng = np.random.default_rng(seed)
        a, b = rng.normal(0, 1, (trials, n_a)), rng.normal(0, sd_b, (trials, n_b))
        var_a, var_b = a.var(axis=1, ddof=1) / n_a, b.var(axis=1, ddof=1) / n_b
        df = (var_a + var_b) ** 2 / (var_a**2 / (n_a - 1) + var_b**2 / (n_b - 1))
        self.null_difference = b.mean(axis=1) - a.mean(axis=1)
        self.threshold = t_quantile_array(1 - alpha / 2, df) * np.sqrt(var_a + var_b)
        self.first = (a[0], b[0])

    def rejection_rate(self, difference: float) -> float:
        return float(np.mean(np.abs(self.null_difference + difference) > self.threshold))

    def difference_at(self, power: float) -> float:
        """The smallest difference the simulated test rejects in `power` of the trials."""
        low, high = 0.0, 100.0
        for _ in range(60):
            middle = (low + high) / 2
            low, high = (middle, high) if self.rejection_rate(middle) < power else (low, middle)
        return high


def t_quantile_array(probability: float, df: np.ndarray) -> np.ndarray:
    from scipy import special

    return special.stdtrit(df, probability)


def test_the_simulation_runs_welchs_test():
    simulation = SimulatedWelch(3, 4, trials=10, seed=0)
    a, b = simulation.first
    for difference in np.linspace(-4, 4, 81):
        result = welch(a, b + difference)
        assert simulation.null_difference[0] + difference == pytest.approx(result.difference)
        assert simulation.threshold[0] == pytest.approx(t_quantile(0.975, result.df) * result.standard_error)
        assert (abs(result.difference) > simulation.threshold[0]) == (result.p_value < 0.05)


# DESIGN §6: Welch's 80%-power difference in seed SDs at 2, 3, 5 seeds a side, and the pooled t-test's.
EIGHTY_PERCENT = {2: (10.4, 5.65), 3: (3.5, 3.07), 5: (2.08, 2.02)}


@pytest.mark.parametrize("seeds", sorted(EIGHTY_PERCENT))
def test_minimal_detectable_difference_matches_a_monte_carlo_of_welchs_test(seeds):
    detectable = minimal_detectable_difference(1.0, seeds)
    simulated = SimulatedWelch(seeds, seeds, trials=200_000, seed=seeds).difference_at(0.80)
    assert detectable == pytest.approx(simulated, rel=0.05)
    welch_sds, pooled_sds = EIGHTY_PERCENT[seeds]
    assert detectable == pytest.approx(welch_sds, abs=0.01)
    assert minimal_detectable_difference(1.0, seeds, test="pooled") == pytest.approx(pooled_sds, abs=0.01)


def test_the_pooled_difference_is_not_welchs_at_two_seeds():
    # What compare quoted before: the pooled test's 5.65 SD, at which Welch's test rejects ~48% of the time.
    simulation = SimulatedWelch(2, 2, trials=200_000, seed=7)
    pooled = minimal_detectable_difference(1.0, 2, test="pooled")
    assert abs(pooled / simulation.difference_at(0.80) - 1) > 0.4
    assert simulation.rejection_rate(pooled) == pytest.approx(significance.welch_power(pooled, 1.0, 2, 2), abs=0.005)
    assert significance.welch_power(pooled, 1.0, 2, 2) == pytest.approx(0.48, abs=0.01)


@pytest.mark.parametrize("n_a, n_b, sd_b, difference", [(2, 5, 1.0, 3.0), (4, 3, 2.0, 3.0), (3, 3, 0.5, 1.5), (10, 10, 1.0, 1.0)])
def test_welch_power_matches_the_simulation_at_unequal_seeds_and_spreads(n_a, n_b, sd_b, difference):
    simulated = SimulatedWelch(n_a, n_b, trials=100_000, seed=n_a * n_b, sd_b=sd_b).rejection_rate(difference)
    computed = significance.welch_power(difference, 1.0, n_a, n_b, sd_b=sd_b)
    assert abs(simulated - computed) <= binomial_tolerance(computed, 100_000)


def test_welch_power_at_no_difference_is_its_size_and_is_scale_free():
    # Welch's test is conservative at few seeds: it rejects 2.3% of true nulls at 2 a side, 3.5% at 3.
    sizes = [significance.welch_power(0.0, 1.0, n, n) for n in (2, 3, 5, 40)]
    assert sizes == pytest.approx([0.0234, 0.0351, 0.0442, 0.0500], abs=5e-4)
    assert sizes[0] == pytest.approx(SimulatedWelch(2, 2, trials=100_000, seed=11).rejection_rate(0.0), abs=binomial_tolerance(0.0234, 100_000))
    assert significance.welch_power(0.03, 0.01, 3, 4) == pytest.approx(significance.welch_power(3.0, 1.0, 3, 4), abs=1e-12)


def test_minimal_detectable_difference_matches_cohens_table():
    # Cohen (1988), Table 2.4.1: d = 0.8 at α = .05 two-sided and 80% power needs 26 per group
    # (pooled t-test; Welch's test agrees at this many seeds).
    assert minimal_detectable_difference(1.0, 26, test="pooled") <= 0.8 < minimal_detectable_difference(1.0, 25, test="pooled")
    assert minimal_detectable_difference(1.0, 26) <= 0.8 < minimal_detectable_difference(1.0, 25)


def test_minimal_detectable_difference_has_the_stated_power():
    detectable = minimal_detectable_difference(1.0, 5)
    assert significance.welch_power(detectable, 1.0, 5, 5) == pytest.approx(0.80, abs=1e-6)
    assert abs(simulated_rejections(detectable, seeds=5, trials=1000, seed=3) - 0.80) <= binomial_tolerance(0.8, 1000)


def test_minimal_detectable_difference_scales_with_the_sd_and_shrinks_with_seeds():
    assert minimal_detectable_difference(0.01, 5) == pytest.approx(0.01 * minimal_detectable_difference(1.0, 5))
    values = [minimal_detectable_difference(1.0, n) for n in (2, 3, 5, 10)]
    assert values == sorted(values, reverse=True)
    assert values[0] > 3 * (1.96 + 0.84)  # two seeds: the normal approximation would say 2.8 SD


@pytest.mark.parametrize("test", ["welch", "pooled"])
@pytest.mark.parametrize("seeds", [2, 3, 5, 17])
def test_seeds_needed_inverts_the_minimal_detectable_difference(test, seeds):
    assert significance.seeds_needed(minimal_detectable_difference(1.0, seeds, test=test), 1.0, test=test) == seeds
    assert significance.seeds_needed(0.99 * minimal_detectable_difference(1.0, seeds, test=test), 1.0, test=test) == seeds + 1


def test_seeds_needed_gives_up_on_differences_no_practical_number_of_seeds_detects():
    assert significance.seeds_needed(0.0, 1.0) is None
    assert significance.seeds_needed(0.1, 1.0) is None  # ~1,570 a side
    assert significance.seeds_needed(0.2, 1.0) == 394


# ----------------------------------------------------------------------------- paired bootstrap over batches


def test_paired_bootstrap_interval_covers_the_true_difference():
    rng = np.random.default_rng(4)
    covered = []
    for trial in range(200):
        a = rng.normal(3.0, 0.05, 16)  # batch difficulty, shared by both runs
        b = a + rng.normal(0.01, 0.02, 16)
        result = paired_bootstrap(a, b, resamples=2000, seed=trial)
        covered.append(result.low <= 0.01 <= result.high)
    assert abs(np.mean(covered) - 0.95) <= binomial_tolerance(0.95, 200)


def test_paired_bootstrap_detects_a_real_difference_and_rarely_a_false_one():
    rng = np.random.default_rng(5)
    a = rng.normal(3.0, 0.05, 32)
    assert paired_bootstrap(a, a + rng.normal(0.02, 0.02, 32), resamples=2000).p_value < 0.01
    false_positives = [paired_bootstrap(a, a + rng.normal(0, 0.02, 32), resamples=1000, seed=trial).p_value < 0.05 for trial in range(400)]
    assert abs(np.mean(false_positives) - 0.05) <= binomial_tolerance(0.05, 400)


def test_pairing_removes_the_shared_batch_variation():
    rng = np.random.default_rng(6)
    a = rng.normal(3.0, 0.5, 16)  # batches vary 25× more than the runs differ
    result = paired_bootstrap(a, a + 0.02 + rng.normal(0, 0.002, 16))
    assert result.p_value < 0.01 and result.high - result.low < 0.01


@pytest.mark.parametrize("call, message", [
    (lambda: welch([1.0], [1.0, 2.0]), "group A has 1 value"),
    (lambda: welch([1.0, math.nan], [1.0, 2.0]), "non-finite"),
    (lambda: welch([1.0, 1.0], [2.0, 2.0]), "no seed-to-seed spread"),
    (lambda: paired_bootstrap([1.0, 2.0], [1.0, 2.0, 3.0]), "as many batches"),
    (lambda: paired_bootstrap([1.0, 2.0], [1.5, 2.5]), "on every batch"),
    (lambda: minimal_detectable_difference(1.0, 1), "at least 2 seeds"),
    (lambda: minimal_detectable_difference(1.0, 3, test="student"), "unknown test 'student': use one of welch, pooled"),
])
def test_statistics_refuse_what_they_cannot_answer(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ----------------------------------------------------------------------------- the command


def fake_run(directory: Path, eval_loss: float | None, seq_len: int = 128) -> Path:
    """A finished run as compare reads it: summary.json and config.json's data group."""
    directory.mkdir(parents=True)
    (directory / "summary.json").write_text(json.dumps({"final_eval_loss": eval_loss, "steps": 100}))
    data = {"dataset": "kjv", "tokenizer": "bytes", "vocab_size": 256, "seq_len": seq_len, "data_dir": str(directory)}
    (directory / "config.json").write_text(json.dumps({"data": data}))
    return directory


@pytest.fixture
def seed_groups(tmp_path) -> Path:
    """Three seeds of a baseline (1.50, 1.51, 1.52) and of a candidate 0.1 lower."""
    for seed, loss in enumerate((1.50, 1.51, 1.52)):
        fake_run(tmp_path / f"base-s{seed}", loss)
        fake_run(tmp_path / f"wide-s{seed}", loss - 0.1)
    return tmp_path


def test_compare_prints_welch_and_the_minimal_detectable_difference(seed_groups, capsys):
    assert main(["compare", str(seed_groups / "base-s*"), str(seed_groups / "wide-s*")]) == 0
    out = capsys.readouterr().out
    assert "A: 3 runs" in out and "B: 3 runs" in out
    assert "B − A = -0.10000 nats/token" in out and "Welch t = -12.247, df = 4.00" in out
    assert (f"minimal detectable difference at 3 vs 3 seeds (Welch's t-test, 80% power, α = 0.05): {minimal_detectable_difference(0.01, 3):.5f} nats/token "
            "(both sides at the pooled seed SD 0.01000)") in out
    assert f"{minimal_detectable_difference(0.01, 3, test='pooled'):.5f}" not in out


def test_compare_json_and_comma_lists(seed_groups, capsys):
    group_b = ",".join(str(seed_groups / f"wide-s{seed}") for seed in range(3))
    assert main(["compare", str(seed_groups / "base-s*"), group_b, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["method"] == "welch" and result["difference"] == pytest.approx(-0.1)
    assert result["p_value"] < 0.001 and result["low"] < -0.1 < result["high"] < 0
    assert result["pooled_sd"] == pytest.approx(0.01) and result["a"]["eval_losses"] == pytest.approx([1.50, 1.51, 1.52])
    assert result["power_test"] == "welch" and result["minimal_detectable_difference"] == pytest.approx(0.01 * 3.5074, rel=1e-4)
    assert result["loss_unit"] == "nats/token"  # summary.json without eval_bpb: how many bytes a token holds is unknown


def test_compare_reads_the_committed_branch_study_registries(capsys):
    results = REPO / "experiments" / "branches_results"
    assert main(["compare", f"{results / 'cosine_runs.csv'}:L2-d96-tok1.6M-*", f"{results / 'branches_runs.csv'}:L2-d96-tok1.6M-*", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["a"]["runs"]) == len(result["b"]["runs"]) == 2
    assert result["difference"] == pytest.approx(-0.02037, abs=1e-5) and result["p_value"] > 0.05
    # Welch's own 80%-power difference at 2 vs 2 seeds (the pooled t-test's was 0.08663, 10 seeds).
    assert result["minimal_detectable_difference"] == pytest.approx(0.15924, abs=1e-5) and result["seeds_needed"] == 11
    assert result["loss_unit"] == "nats/byte"  # the bytes tokenizer: eval_bpb = loss / ln 2 in every row
    assert main(["compare", f"{results / 'cosine_runs.csv'}:L2-d96-tok1.6M-*", f"{results / 'branches_runs.csv'}:L2-d96-tok1.6M-*"]) == 0
    out = capsys.readouterr().out
    assert "B − A = -0.02037 nats/byte" in out and ": 0.15924 nats/byte (both sides" in out and "nats/token" not in out


def test_the_tool_is_the_same_command(seed_groups):
    done = subprocess.run([sys.executable, "tools/compare_runs.py", str(seed_groups / "base-s*"), str(seed_groups / "wide-s*")],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and "B − A = -0.10000" in done.stdout


def sweep_registry(directory: Path) -> Path:
    directory.mkdir()
    rows = ["name,status,final_eval_loss", "a-s0,done,1.5", "a-s1,done,1.6", "a-s2,failed,", "b-s0,done,1.4"]
    (directory / "runs.csv").write_text("\n".join(rows) + "\n")
    return directory


@pytest.mark.parametrize("arguments, message", [
    (lambda t: [str(t / "nothing"), str(t / "base-s0")], "does not exist"),
    (lambda t: [str(t / "none-*"), str(t / "base-s*")], "matches no run directory"),
    (lambda t: [str(sweep_registry(t / "sweep")), str(t / "base-s*")], "is a sweep registry, not a run: pick its runs with"),
    (lambda t: [f"{sweep_registry(t / 'sweep')}:zzz-*", str(t / "base-s*")], "no finished run of"),
    (lambda t: [str(t / "base-s*"), str(t / "wide-s0")], "A has 3 run(s) and B 1"),
    (lambda t: [str(t / "base-s*"), f"{t / 'base-s0'},{t / 'wide-s1'}"], "a run cannot be compared with itself"),
    (lambda t: [str(t / "base-s*"), f"{t / 'wide-s0'},{t / 'wide-s0'}"], "names"),
    (lambda t: [str(t / "base-s*"), f"{t / 'wide-s0'},,{t / 'wide-s1'}"], "has an empty item"),
    (lambda t: [str(t / "base-s*"), f"{fake_run(t / 'x0', 1.4, seq_len=64)},{t / 'wide-s1'}"], "evaluate on different text (data.seq_len"),
    (lambda t: [str(t / "base-s*"), f"{fake_run(t / 'x0', None)},{t / 'wide-s1'}"], "has no final_eval_loss"),
    (lambda t: [f"{sweep_registry(t / 'sweep')}:a-s0", f"{t / 'sweep'}:b-s0"], "has no run directory beside its registry"),
    (lambda t: [str(fake_run(t / "x0", 1.5)), str(fake_run(t / "x1", 1.4))], "has no checkpoint to evaluate"),
    (lambda t: [str(fake_run(t / "x0", 1.5)), str(fake_run(t / "x1", 1.4, seq_len=256))], "evaluate on different text (data.seq_len 128 vs 256)"),
    (lambda t: [f"{fake_run(t / 'x0', 1.5)},{fake_run(t / 'x1', 1.5)}", f"{fake_run(t / 'y0', 1.4)},{fake_run(t / 'y1', 1.4)}"],
     "no seed-to-seed spread"),
    (lambda t: [str(t / "base-s*"), f"{t / 'wide-s0'},{t / 'wide-s0'}/."], "names"),
    (lambda t: [str(t / "base-s*"), str(t / "wide-s*"), "--batches", "0"], "argument --batches: expected a positive integer"),
    (lambda t: [str(t / "base-s*"), str(t / "wide-s*"), "--bootstrap", "100"], "apply to one run a side"),
])
def test_bad_inputs_are_one_error_line_and_exit_2(seed_groups, capsys, arguments, message):
    try:
        code = main(["compare", *arguments(seed_groups)])
    except SystemExit as exit_:  # argparse's usage errors leave through exit()
        code = exit_.code
    assert code == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if not line.startswith("note:")]
    assert captured.out == "" and len(errors) == 1 and errors[0].startswith("error: ") and message in errors[0], captured.err


def test_runs_not_done_are_named_not_silently_dropped(tmp_path, capsys):
    sweep = sweep_registry(tmp_path / "sweep")
    fake_run(tmp_path / "b0", 1.40)
    fake_run(tmp_path / "b1", 1.45)
    assert main(["compare", f"{sweep}:a-*", f"{tmp_path / 'b0'},{tmp_path / 'b1'}"]) == 0
    captured = capsys.readouterr()
    assert "left out 1 run(s)" in captured.err and "a-s2" in captured.err and "A: 2 runs" in captured.out


class FakeValidation:
    num_windows = 100  # one pass: 12 batches of 8


@pytest.mark.parametrize("requested, configured, expected", [(None, 16, 12), (None, 5, 5), (12, 16, 12), (3, 16, 3)])
def test_batches_stay_within_one_pass_over_the_validation_split(requested, configured, expected):
    from bigmodel.scaling.compare import batches_to_evaluate

    assert batches_to_evaluate(requested, configured, 8, FakeValidation()) == expected


def test_more_batches_than_one_pass_is_an_error():
    from bigmodel.scaling.compare import batches_to_evaluate

    with pytest.raises(ValueError, match="more than one pass over the validation split .12 batches of 8.: use at most 12"):
        batches_to_evaluate(13, 16, 8, FakeValidation())
