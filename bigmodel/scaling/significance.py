"""Is a difference in loss real? Welch's t-test across seeds, a paired bootstrap over eval
batches, and the smallest difference a number of seeds can detect. Pure: arrays in, numbers out.

Conventions: every difference is B − A (negative: B has the lower loss); intervals are
two-sided at `confidence` (95%); p-values are two-sided.

The Student-t distributions come from `scipy.special` (`stdtr`, `stdtrit`, `nctdtr`): scipy is
a required dependency of jax, so it is always installed where bigmodel is, and its t and
noncentral-t CDFs are the reference implementations a hand-written incomplete beta would have
to be tested against anyway. Welch's power has no closed form: `welch_power` integrates it
numerically over the two sample variances.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
from scipy import special

CONFIDENCE = 0.95
ALPHA = 0.05
POWER = 0.80
BOOTSTRAP_RESAMPLES = 10_000
WELCH_QUADRATURE_NODES = 64  # per sample variance: see _welch_critical_grid
MAX_SEEDS = 1000  # seeds_needed gives up beyond this: the difference is too small to chase with seeds


def t_cdf(t: float, df: float) -> float:
    """P(T ≤ t) for Student's t with `df` degrees of freedom (any real df > 0: Welch's df is)."""
    return float(special.stdtr(df, t))


def t_quantile(probability: float, df: float) -> float:
    """The t with P(T ≤ t) = probability."""
    return float(special.stdtrit(df, probability))


def _sample(values, name: str, minimum: int) -> np.ndarray:
    """A 1-D float array of at least `minimum` finite values, or a ValueError naming it."""
    array = np.asarray(values, dtype=float).ravel()
    if array.size < minimum:
        raise ValueError(f"{name} has {array.size} value(s); this needs at least {minimum}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds a non-finite value: {array.tolist()}")
    return array


# ----------------------------------------------------------------------------- across seeds


@dataclasses.dataclass(frozen=True)
class Welch:
    difference: float  # mean(b) − mean(a)
    standard_error: float  # sqrt(var_a/n_a + var_b/n_b), sample variances (ddof 1)
    t: float
    df: float  # Welch–Satterthwaite
    low: float
    high: float
    p_value: float
    confidence: float


def welch(a, b, confidence: float = CONFIDENCE) -> Welch:
    """Welch's unequal-variance t-test of mean(b) − mean(a): the right default across seeds,
    since two configurations need not have the same seed-to-seed spread."""
    a, b = _sample(a, "group A", 2), _sample(b, "group B", 2)
    var_a, var_b = float(a.var(ddof=1)) / a.size, float(b.var(ddof=1)) / b.size
    standard_error = math.sqrt(var_a + var_b)
    difference = float(b.mean() - a.mean())
    if standard_error == 0:
        # Every run of both groups has the same loss (bit-identical reruns): there is no spread
        # to test against, and a p-value of 0 or 1 would claim more than the data say.
        raise ValueError(f"every run of A and of B has the same final eval loss (difference {difference:+.6g}): "
                         "no seed-to-seed spread to test against; vary config.seed across the runs")
    df = float((var_a + var_b) ** 2 / (var_a**2 / (a.size - 1) + var_b**2 / (b.size - 1)))
    t = difference / standard_error
    half_width = t_quantile(0.5 + confidence / 2, df) * standard_error
    p_value = 2 * t_cdf(-abs(t), df)
    return Welch(difference, standard_error, t, df, difference - half_width, difference + half_width, p_value, confidence)


def pooled_sd(a, b) -> float:
    """The seed-to-seed standard deviation pooled over both groups (each about its own mean)."""
    a, b = _sample(a, "group A", 2), _sample(b, "group B", 2)
    return math.sqrt(((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2))


def pooled_power(difference: float, sd: float, n_a: int, n_b: int, alpha: float = ALPHA) -> float:
    """Exact power of the two-sided pooled-variance two-sample t-test at level `alpha` when the
    true means differ by `difference` and each run's SD is `sd`: the statistic then follows a
    noncentral t with df n_a + n_b − 2. Not the test compare runs: kept to show what assuming
    equal spreads would claim (docs/compare.md)."""
    df = n_a + n_b - 2
    noncentrality = abs(difference) / (sd * math.sqrt(1 / n_a + 1 / n_b))
    critical = t_quantile(1 - alpha / 2, df)
    return float(1 - special.nctdtr(df, noncentrality, critical) + special.nctdtr(df, noncentrality, -critical))


@functools.lru_cache(maxsize=256)
def _welch_critical_grid(n_a: int, n_b: int, sd_ratio: float, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Welch's rejection threshold |mean(b) − mean(a)| > t₁₋α/₂(ν̂)·SÊ on a product grid of
    the two sample variances, in units of the true SE of the difference, with its quadrature
    weights. Sample variances are independent of sample means for normal runs, so given them
    the test rejects with a normal probability; averaging that over the two scaled χ² laws of the
    variances is the exact power. Gauss–Legendre in each variance's quantile u ∈ (0, 1):
    the conditional power is bounded and smooth in u, and 64 nodes a side agree with 128 to
    1e-5 at 2–5 seeds."""
    nodes, weights = special.roots_legendre(WELCH_QUADRATURE_NODES)
    quantiles, weights = (nodes + 1) / 2, weights / 2
    var_a = special.chdtri(n_a - 1, 1 - quantiles) / (n_a - 1) / n_a  # S_a²/n_a at true SD 1
    var_b = special.chdtri(n_b - 1, 1 - quantiles) / (n_b - 1) * sd_ratio**2 / n_b
    var_a, var_b = var_a[:, None], var_b[None, :]
    df = (var_a + var_b) ** 2 / (var_a**2 / (n_a - 1) + var_b**2 / (n_b - 1))
    threshold = special.stdtrit(df, 1 - alpha / 2) * np.sqrt(var_a + var_b)
    true_se = math.sqrt(1 / n_a + sd_ratio**2 / n_b)
    return (threshold / true_se).ravel(), np.outer(weights, weights).ravel()


def welch_power(difference: float, sd: float, n_a: int, n_b: int, alpha: float = ALPHA, sd_b: float | None = None) -> float:
    """Power of the two-sided Welch t-test (the test `welch` runs) at level `alpha` when the true
    means differ by `difference` and A's runs have SD `sd`, B's `sd_b` (default: the same).
    Welch's statistic has no closed-form law, so this integrates numerically over the two
    sample variances (deterministic; tests/test_significance.py holds it to a Monte Carlo of
    the test). At equal SDs it is below the pooled test's power at 2–5 seeds, by the most at
    2 a side: its 80%-power difference there is 10.4 SD, the pooled test's 5.65."""
    sd_b = sd if sd_b is None else sd_b
    thresholds, weights = _welch_critical_grid(n_a, n_b, float(sd_b / sd), float(alpha))
    shift = abs(difference) / (sd * math.sqrt(1 / n_a + (sd_b / sd) ** 2 / n_b))
    return float(np.sum(weights * (special.ndtr(shift - thresholds) + special.ndtr(-shift - thresholds))))


POWER_FUNCTIONS = {"welch": welch_power, "pooled": pooled_power}
TEST_NAMES = {"welch": "Welch's t-test", "pooled": "pooled t-test"}


def _power_function(test: str):
    if test not in POWER_FUNCTIONS:
        raise ValueError(f"unknown test {test!r}: use one of {', '.join(POWER_FUNCTIONS)}")
    return POWER_FUNCTIONS[test]


def minimal_detectable_difference(sd: float, n_a: int, n_b: int | None = None, alpha: float = ALPHA, target_power: float = POWER,
                                  test: str = "welch") -> float:
    """The smallest true difference that `n_a` and `n_b` seeds detect with probability
    `target_power` at level `alpha` by `test` ("welch", the test compare runs, or "pooled"),
    given a seed-to-seed SD of `sd` on both sides (same units as sd).

    Solved on the test's own power (not the normal approximation (z₁₋α/₂ + z_power)·SE, which
    at 2 seeds a side says 2.8 SD: Welch's needs 10.4, the pooled test's 5.65). Power rises monotonically with the
    difference, so bisection on [0, upper] converges; 100 halvings reach float precision."""
    n_b = n_a if n_b is None else n_b
    if n_a < 2 or n_b < 2:
        raise ValueError(f"need at least 2 seeds per side for a seed-to-seed SD, got {n_a} and {n_b}")
    if not (math.isfinite(sd) and sd > 0):
        raise ValueError(f"the seed-to-seed SD must be a positive number, got {sd}")
    power = _power_function(test)
    low, high = 0.0, sd
    while power(high, sd, n_a, n_b, alpha) < target_power:
        high *= 2
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if power(middle, sd, n_a, n_b, alpha) < target_power else (low, middle)
    return high


def seeds_needed(difference: float, sd: float, alpha: float = ALPHA, target_power: float = POWER, test: str = "welch") -> int | None:
    """The fewest seeds a side for which `test` reaches `target_power` against `difference`
    (None beyond MAX_SEEDS). Power rises with the seeds, so doubling then bisection finds it."""
    power = _power_function(test)
    if difference == 0 or power(difference, sd, MAX_SEEDS, MAX_SEEDS, alpha) < target_power:
        return None
    low, high = 1, 2  # power(low) < target ≤ power(high) once the doubling stops
    while power(difference, sd, high, high, alpha) < target_power:
        low, high = high, min(2 * high, MAX_SEEDS)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if power(difference, sd, middle, middle, alpha) < target_power else (low, middle)
    return high


# ----------------------------------------------------------------------------- over eval batches


@dataclasses.dataclass(frozen=True)
class PairedBootstrap:
    difference: float  # mean over batches of b − a
    standard_error: float  # of that mean: SD of the batch differences / sqrt(batches)
    low: float  # studentized bootstrap interval
    high: float
    p_value: float
    batches: int
    resamples: int
    confidence: float


def paired_bootstrap(a, b, resamples: int = BOOTSTRAP_RESAMPLES, confidence: float = CONFIDENCE, seed: int = 0) -> PairedBootstrap:
    """Bootstrap of mean(b − a) over paired samples (one per eval batch, the same batch for both
    runs), resampling batches with replacement.

    Pairing removes the batch-to-batch variation both models share (some text is simply
    harder), so this is far tighter than comparing two means; it measures evaluation noise only,
    not seed-to-seed variation.

    Studentized (bootstrap-t; Efron & Tibshirani 1993, §12.5): each resample's mean is divided
    by its own standard error, and the interval and p-value come from those t values. At the 16
    batches a run evaluates by default, the plain percentile interval covered the true
    difference in ~0.89 of simulated trials (0.87 at 8 batches, worse for skewed losses);
    bootstrap-t stays near 0.95 from 8 batches up. The p-value is the share of resampled |t|
    at least the observed |t| (the null is the resampled t centred on the observed mean),
    counted as (k + 1) / (resamples + 1) so it is never 0.
    """
    a, b = _sample(a, "A's batch losses", 2), _sample(b, "B's batch losses", 2)
    if a.size != b.size:
        raise ValueError(f"paired samples need as many batches on each side, got {a.size} and {b.size}")
    if resamples < 1:
        raise ValueError(f"need at least one bootstrap resample, got {resamples}")
    differences = b - a
    observed = float(differences.mean())
    standard_error = float(differences.std(ddof=1)) / math.sqrt(differences.size)
    if standard_error == 0:
        raise ValueError(f"B − A is exactly {observed:+.6g} on every batch (the same model twice?): no batch-to-batch spread to resample")
    rng = np.random.default_rng(seed)
    resampled = differences[rng.integers(0, differences.size, size=(resamples, differences.size))]
    with np.errstate(divide="ignore", invalid="ignore"):  # a resample of one repeated batch has no spread: t = ±inf, or 0 at the mean
        t = (resampled.mean(axis=1) - observed) / (resampled.std(axis=1, ddof=1) / math.sqrt(differences.size))
    t = np.nan_to_num(t, nan=0.0, posinf=np.inf, neginf=-np.inf)
    tail = (1 - confidence) / 2
    t_low, t_high = np.quantile(t, [tail, 1 - tail])
    extreme = int(np.sum(np.abs(t) >= abs(observed) / standard_error))
    return PairedBootstrap(observed, standard_error, observed - float(t_high) * standard_error, observed - float(t_low) * standard_error,
                           (extreme + 1) / (resamples + 1), differences.size, resamples, confidence)
