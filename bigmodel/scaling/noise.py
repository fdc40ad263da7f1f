"""How a study's losses scatter about its law, and bootstrap replicates redrawn from that scatter.

The noise model, in log loss (a run's relative error):

    log L_i = f(N_i, D_i; θ) + u_g(i) + ε_i,   ε_i ~ (0, σ_run²) per run,  u_g ~ N(0, σ_shared²) per group

A group is the runs that share training and so share its luck: the cooldown branches of one
stable run (the registry's `parent`; a CSV's `group` column). A run in no group is its own group.
Two facts shape the estimate of the two variances:

- A fit absorbs most of a shared shift. When the groups are the sizes (the main job: each size's
  four token counts branch off one stable run), a per-size shift is nearly a change of A and α:
  on the main job's 3 × 4 grid the linearised fit keeps 1.7 of the 12 units of group variance in
  its residuals (tr ZᵀMZ, M = I − H), so they cannot tell a study with shared noise from one
  without (a moment estimate from them swung between 0 and 10× the truth), though shared noise
  widens α's sampling spread several times. So σ_shared comes from seed replicates where there
  are any (a rerun with another seed redraws both parts: σ_seeds² − σ_run²), and otherwise is
  ASSUMED equal to σ_run (`ASSUMED_SHARED_SHARE`: half the variance shared). fit.json names
  which (`noise.shared_source`).
- The fit is near-L1 (Huber δ = 1e-3 on residuals ~0.01): it passes through about p points, whose
  residuals are ~0, so resampling raw residuals redraws too little noise. Estimates here use the
  residual sum of squares over n − p (p = the rank of the fit's Jacobian: a parameter at its
  bound fits nothing) and, for the wild bootstrap, residuals centred and scaled by √(n/(n−p)).

Bootstrap methods (`BOOTSTRAP_METHODS`): "noise" (default: parametric, Gaussian ε and u from the
model), "wild" (each run's scaled residual times a Rademacher sign, plus u per group), and the
old ones: "residuals" (raw residuals drawn with replacement) and "points" (resample runs).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bigmodel.scaling.points import Points

BOOTSTRAP_METHODS = ("noise", "wild", "residuals", "points")
DEFAULT_METHOD = "noise"
# The share of a grouped run's noise variance taken to be shared with its group where seed
# replicates cannot measure it, and the least share where they can: σ_shared ≥ σ_run. Branches
# share ~80% of their training (a 20% cooldown), so the stable run's luck is at least the cooldown's.
ASSUMED_SHARED_SHARE = 0.5
RANK_TOLERANCE = 1e-6  # singular values below this × the largest: a direction the fit cannot move (a parameter at a bound)


@dataclasses.dataclass(frozen=True)
class NoiseModel:
    """σ's in log loss (≈ relative loss); `groups` labels each point's shared-noise group 0, 1, …"""

    sigma_run: float
    sigma_shared: float
    groups: np.ndarray
    shared_source: str  # "seeds", "residuals", "assumed" or "none" (no group has two runs)
    dof: int  # n − p of the fit

    @property
    def sigma_total(self) -> float:
        """One new run's noise: its own part and its (new) group's."""
        return float(np.hypot(self.sigma_run, self.sigma_shared))

    def to_json(self) -> dict:
        sizes = np.bincount(self.groups)
        return {"model": "log L = law + shared (per group) + per run", "sigma_run": self.sigma_run,
                "sigma_shared": self.sigma_shared, "sigma_total": self.sigma_total, "shared_source": self.shared_source,
                "groups": int(sizes.size), "largest_group": int(sizes.max()), "residual_dof": self.dof}


# ----------------------------------------------------------------------------- the fit's geometry

MASKED = -1e4  # a term's offset where it does not apply: e^-10000 is 0 in float32 and float64


@dataclasses.dataclass(frozen=True)
class Layout:
    """How the LSE law's terms meet the points: `offsets` (K, n) added to each term (0, or MASKED
    where the term does not apply), `ties` (K, S): which slope parameter each term uses (slopes =
    ties · s), `free` (P,): 1 for a fitted parameter, 0 for one pinned at its start value."""

    offsets: np.ndarray
    ties: np.ndarray
    free: np.ndarray

    @staticmethod
    def plain(n_terms: int, n_points: int) -> Layout:
        """The one-law layout: every term at every point, a slope of its own, all free."""
        return Layout(np.zeros((n_terms, n_points)), np.eye(n_terms), np.ones(1 + 2 * n_terms))




def _law_terms(theta, features, layout: Layout | None = None) -> np.ndarray:
    """(K + 1, n): the LSE law's log terms e, c_k − s_k·f_k (+ the layout's offsets) at every point."""
    theta, features = np.asarray(theta, dtype=float), np.asarray(features, dtype=float)
    n_terms = features.shape[0]
    layout = layout or Layout.plain(n_terms, features.shape[1])
    slopes = layout.ties @ theta[1 + n_terms :]
    terms = theta[1 : 1 + n_terms, None] - slopes[:, None] * features + layout.offsets
    return np.vstack([np.full(features.shape[1], theta[0]), terms])


def log_prediction(theta, features, layout: Layout | None = None) -> np.ndarray:
    """log L at every point: LSE(e, a − α log N, b − β log D) (one term per feature row)."""
    return np.logaddexp.reduce(_law_terms(theta, features, layout), axis=0)


def log_prediction_jacobian(theta, features, layout: Layout | None = None) -> np.ndarray:
    """(n, p): ∂ log L / ∂[e, c_1..c_K, s_1..s_S] of the LSE law (the layout of `lbfgs.py`); a
    pinned parameter's column is 0 (the fit does not move it)."""
    features = np.asarray(features, dtype=float)
    layout = layout or Layout.plain(features.shape[0], features.shape[1])
    terms = _law_terms(theta, features, layout)
    shares = np.exp(terms - np.logaddexp.reduce(terms, axis=0))  # each term's share of L at each point
    slope_columns = (-shares[1:] * features).T @ layout.ties
    return np.column_stack([shares[0], *shares[1:], slope_columns]) * layout.free


def hat_matrix(jacobian: np.ndarray) -> tuple[np.ndarray, int]:
    """The linearised fit's projection J J⁺ and its rank (the parameters the data actually fit)."""
    u, singular, _ = np.linalg.svd(jacobian, full_matrices=False)
    rank = int(np.sum(singular > RANK_TOLERANCE * singular[0])) if singular.size and singular[0] > 0 else 0
    return u[:, :rank] @ u[:, :rank].T, rank


def scaled_residuals(residuals: np.ndarray, rank: int) -> np.ndarray:
    """Residuals centred and scaled by √(n/(n−p)): mean 0, mean square = RSS/(n−p), σ²'s estimate."""
    residuals = np.asarray(residuals, dtype=float)
    n = residuals.size
    centred = residuals - residuals.mean()
    return centred * np.sqrt(n / max(n - rank, 1))


def group_labels(groups, n: int) -> np.ndarray:
    """0, 1, … per distinct group name (first-seen order); each point its own group without names."""
    if groups is None or len(groups) == 0:
        return np.arange(n)
    names = [str(g) for g in groups]
    if len(names) != n:
        raise ValueError(f"{len(names)} group labels for {n} points: give one per point")
    order = {name: index for index, name in enumerate(dict.fromkeys(names))}
    labels = np.array([order[name] for name in names])
    blank = np.array([name == "" for name in names])  # no group: its own
    labels[blank] = labels.max() + 1 + np.arange(blank.sum())
    return np.unique(labels, return_inverse=True)[1]


def seed_variance(points: Points | None) -> tuple[float, int] | None:
    """Pooled variance of log loss between seed replicates (their dof), None without replicates."""
    if points is None:
        return None
    from bigmodel.scaling.seeds import replicate_groups

    squares, dof = 0.0, 0
    for members in replicate_groups(points):
        logs = np.log(points.loss[members])
        squares += float(((logs - logs.mean()) ** 2).sum())
        dof += members.size - 1
    return (squares / dof, dof) if dof else None


def estimate_noise(theta, features, log_loss, groups=None, seeds: tuple[float, int] | None = None,
                   layout: Layout | None = None) -> NoiseModel:
    """The noise model of a fit at `theta` (module docstring); `seeds` from `seed_variance`.

    σ_run² = RSS/(n − p). σ_shared² (only where some group has two or more runs): from seed
    replicates, σ_seeds² − σ_run², but never below the assumed share; without seeds, the assumed
    share (σ_shared = σ_run at ASSUMED_SHARED_SHARE = 0.5). With seeds and no groups, σ_run is the
    larger of the two estimates of the same thing. `layout`: a joint fit's (`lbfgs.Layout`)."""
    hat_rank = hat_matrix(log_prediction_jacobian(theta, features, layout))[1]
    residuals = np.asarray(log_loss, dtype=float) - log_prediction(theta, features, layout)
    labels = group_labels(groups, residuals.size)
    dof = int(residuals.size - hat_rank)
    run = float(residuals @ residuals) / max(dof, 1)
    grouped = np.bincount(labels).max() >= 2
    assumed = ASSUMED_SHARED_SHARE / (1 - ASSUMED_SHARED_SHARE) * run if grouped else 0.0
    if seeds is not None and grouped:
        shared, source = max(seeds[0] - run, assumed), ("seeds" if seeds[0] - run > assumed else "assumed")
    elif seeds is not None:
        run, shared, source = max(run, seeds[0]), 0.0, "none"
    else:
        shared, source = assumed, ("assumed" if grouped else "none")
    return NoiseModel(float(np.sqrt(run)), float(np.sqrt(shared)), labels, source, dof)


# ----------------------------------------------------------------------------- replicates


def sigma_inflation(dof: int) -> float:
    """σ̂'s multiplier for its own uncertainty in one new run's noise: t₀.₉₇₅(dof) / z₀.₉₇₅.

    σ̂ comes from a handful of residual degrees of freedom (8 on the main job), so a new run's
    noise is t-distributed, not Gaussian (t₀.₉₇₅ = 2.31 at 8 dof against 1.96), as in a textbook
    prediction interval. The bootstrap replicates are not widened: the near-L1 fit's RSS/(n−p)
    already runs ~10% above σ², and widening them too covered β in 100 of 100 simulated main-job
    studies. Drawing σ per replicate from its χ² distribution was worse still: its rare huge σ's
    fling poorly identified parameters (α on the main job) decades away."""
    if dof <= 0:
        return 1.0
    from scipy.stats import t

    return float(t.ppf(0.975, dof) / 1.959963984540054)


def draw_noise(model: NoiseModel, replicates: int, rng, residuals=None, rank: int = 0) -> np.ndarray:
    """(replicates, n) log-loss noise: per-run Gaussian (or, given `residuals`, wild: each run's
    scaled residual × a Rademacher sign) plus one Gaussian draw per group and replicate."""
    n = model.groups.size
    if residuals is None:
        per_run = rng.normal(0.0, model.sigma_run, size=(replicates, n))
    else:
        signs = rng.choice([-1.0, 1.0], size=(replicates, n))
        per_run = signs * scaled_residuals(residuals, rank)
    shared = rng.normal(0.0, model.sigma_shared, size=(replicates, model.groups.max() + 1))
    return per_run + shared[:, model.groups]


def raw_residual_targets(fitted, log_loss, replicates: int, rng) -> np.ndarray:
    """The old "residuals" method: fitted values plus raw residuals drawn with replacement."""
    residuals = log_loss - fitted
    return fitted + residuals[rng.integers(0, log_loss.size, size=(replicates, log_loss.size))]


def bootstrap_targets(method: str, theta, features, log_loss, replicates: int, rng, groups=None,
                      seeds: tuple[float, int] | None = None, layout: Layout | None = None) -> tuple[np.ndarray, NoiseModel]:
    """(replicates, n) log-loss targets of a design-keeping bootstrap, and the noise model."""
    model = estimate_noise(theta, features, log_loss, groups, seeds, layout)
    fitted = log_prediction(theta, features, layout)
    if method == "residuals":
        return raw_residual_targets(fitted, log_loss, replicates, rng), model
    if method == "wild":
        rank = int(log_loss.size - model.dof)
        return fitted + draw_noise(model, replicates, rng, residuals=log_loss - fitted, rank=rank), model
    if method == "noise":
        return fitted + draw_noise(model, replicates, rng), model
    raise ValueError(f"unknown bootstrap method {method!r}: use one of {', '.join(BOOTSTRAP_METHODS)}")
