"""Two recipes fitted as one: their laws share the entropy floor E (and, by choice, the exponents).

Recipe A's and B's runs are one data set. Chinchilla: log L = LSE(e, a_r − α_r log N, b_r − β_r
log D) for the runs of recipe r ∈ {A, B}; the compute frontier (Marin's L(C) = E + A·C^−γ):
log L = LSE(e, a_r − γ_r log C). The optimiser (`lbfgs.py`) fits that as one LSE law whose terms
are switched off on the other recipe's runs (`noise.Layout`), so e is fitted once from both (the
same data has one floor), or pinned at a known floor (`floor`). With `shared_exponents` both
recipes use one α and one β (one γ): they differ only in A and B, a constant compute multiplier.

Starts: each recipe is first fitted alone from the grid as `fit` would (`fit._fit_lse`); the
joint fit is polished from every pair of their best end points, with e taken from either. The
bootstrap keeps the design and redraws the noise of both recipes from one noise model of the
joint fit (`fit._bootstrap_thetas`): each recipe's runs keep their groups (the branches of one
stable run share a draw), and σ's seed part pools both recipes' replicates.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from bigmodel.scaling import lbfgs
from bigmodel.scaling.fit import (
    BOOTSTRAP_STARTS,
    CHINCHILLA_GRID,
    POLISH_ITERATIONS,
    POWER_GRID,
    _bootstrap_thetas,
    _distinct_best,
    _fit_lse,
    _power_parameters,
)
from bigmodel.scaling.noise import (
    MASKED,
    Layout,
    log_prediction_jacobian,
    seed_variance,
)
from bigmodel.scaling.points import Points
from bigmodel.scaling.versus import EXPONENT_NAMES, SIDES

PAIRED_STARTS = 4  # best end points of each recipe's own fit combined into joint starts


@dataclasses.dataclass(frozen=True)
class Joint:
    """Both recipes' runs as one LSE data set: features (K, n), the layout, log loss, which runs are A's."""

    law: str
    features: np.ndarray
    layout: Layout
    log_loss: np.ndarray
    is_a: np.ndarray
    shared_exponents: bool

    @property
    def terms(self) -> int:
        """LSE terms per recipe (2 for Chinchilla's N and D, 1 for the frontier's C)."""
        return self.features.shape[0] // 2


def _recipe_features(points: Points, law: str) -> np.ndarray:
    if law == "chinchilla":
        return np.log(np.stack([points.non_embedding_params, points.tokens]))
    return np.log(points.compute())[None, :]


def joint_data(points_a: Points, points_b: Points, law: str, shared_exponents: bool, floor: float | None) -> Joint:
    """The joint data set: A's terms masked on B's runs and B's on A's; tied slopes; e pinned at `floor`."""
    features_a, features_b = _recipe_features(points_a, law), _recipe_features(points_b, law)
    terms, n_a, n_b = features_a.shape[0], len(points_a), len(points_b)
    features = np.hstack([np.vstack([features_a, features_a]), np.vstack([features_b, features_b])])
    offsets = np.zeros((2 * terms, n_a + n_b))
    offsets[:terms, n_a:] = MASKED
    offsets[terms:, :n_a] = MASKED
    ties = np.vstack([np.eye(terms), np.eye(terms)]) if shared_exponents else np.eye(2 * terms)
    free = np.ones(1 + 2 * terms + ties.shape[1])
    if floor is not None:
        free[0] = 0.0
    log_loss = np.log(np.concatenate([points_a.loss, points_b.loss]))
    return Joint(law, features, Layout(offsets, ties, free), log_loss, np.arange(n_a + n_b) < n_a, shared_exponents)


def recipe_theta(theta, joint: Joint, side: str) -> np.ndarray:
    """One recipe's own LSE parameter vector [e, c_1..c_K, s_1..s_K] out of the joint one."""
    theta, terms = np.asarray(theta, dtype=float), joint.terms
    rows = slice(0, terms) if side == "A" else slice(terms, 2 * terms)
    slopes = joint.layout.ties @ theta[1 + 2 * terms :]
    return np.concatenate([theta[:1], theta[1 : 1 + 2 * terms][rows], slopes[rows]])


def law_parameters(theta, law: str) -> dict:
    """E, A, B, alpha, beta (Chinchilla) or E, A, alpha (the frontier in C) of one recipe's theta."""
    if law == "power":
        return _power_parameters(theta)
    e, a, b, alpha, beta = (float(value) for value in theta)
    with np.errstate(over="ignore"):
        return {"E": float(np.exp(e)), "A": float(np.exp(a)), "B": float(np.exp(b)), "alpha": alpha, "beta": beta}


def _joint_starts(joint: Joint, floor: float | None) -> np.ndarray:
    """Joint starts from every pair of the recipes' own best end points, e from either (or the floor)."""
    grid = CHINCHILLA_GRID if joint.law == "chinchilla" else POWER_GRID
    own = [_fit_lse(joint.features[: joint.terms, mask], joint.log_loss[mask], grid)[2][:PAIRED_STARTS]
           for mask in (joint.is_a, ~joint.is_a)]
    terms, starts = joint.terms, []
    for theta_a in own[0]:
        for theta_b in own[1]:
            intercepts = np.concatenate([theta_a[1 : 1 + terms], theta_b[1 : 1 + terms]])
            slopes_a, slopes_b = theta_a[1 + terms :], theta_b[1 + terms :]
            slopes = (slopes_a + slopes_b) / 2 if joint.shared_exponents else np.concatenate([slopes_a, slopes_b])
            floors = [math.log(floor)] if floor is not None else [theta_a[0], theta_b[0]]
            starts += [np.concatenate([[e], intercepts, slopes]) for e in floors]
    return np.array(starts)


def fit_joint(joint: Joint, floor: float | None = None) -> tuple[np.ndarray, float, np.ndarray]:
    """The best joint parameters, their objective, and the distinct best end points (bootstrap starts)."""
    starts = _joint_starts(joint, floor)
    weights = np.ones((len(starts), joint.log_loss.size))
    thetas, values = lbfgs.minimise(starts, weights, joint.features, joint.log_loss, iterations=POLISH_ITERATIONS, layout=joint.layout)
    if not np.isfinite(values).any():
        raise ValueError("no start of the joint fit reached a finite objective: check both inputs for extreme values")
    best = int(np.argmin(values))
    return thetas[best], float(values[best]), _distinct_best(thetas, values, BOOTSTRAP_STARTS)


def joint_groups(points_a: Points, points_b: Points) -> list[str]:
    """Each run's noise group, named per recipe (A's stable run and B's never share a draw)."""
    def named(points: Points, side: str) -> list[str]:
        groups = points.groups or ("",) * len(points)
        return [f"{side}:{group}" if group else "" for group in groups]

    return named(points_a, "A") + named(points_b, "B")


def pooled_seed_variance(points_a: Points, points_b: Points) -> tuple[float, int] | None:
    """Seed replicates' variance of log loss, pooled over both recipes (their dof), or None."""
    found = [value for value in (seed_variance(points_a), seed_variance(points_b)) if value]
    if not found:
        return None
    dof = sum(d for _, d in found)
    return sum(v * d for v, d in found) / dof, dof


def exponent_at_bound(theta, joint: Joint) -> dict:
    """fit.json's `at_bound` for the joint fit: E whose term is under 1e-4 of every loss, flat exponents."""
    from bigmodel.scaling.intervals import BOUND_SHARE, EXPONENT_FLOOR

    flagged = {}
    if joint.layout.free[0] and np.max(log_prediction_jacobian(theta, joint.features, joint.layout)[:, 0]) < BOUND_SHARE:
        flagged["E"] = {"bound": 0.0, "why": f"its term is under {BOUND_SHARE:.0e} of every fitted loss: only an upper bound is measured"}
    for side in SIDES:
        own = recipe_theta(theta, joint, side)
        for name, exponent in zip(EXPONENT_NAMES[joint.law], own[1 + joint.terms :]):
            if exponent < EXPONENT_FLOOR:
                flagged[f"{side}.{name}"] = {"bound": 0.0, "why": "the fitted term is flat (exponent ≤ 0): no scaling measured"}
    return flagged


def fit_recipes(points_a: Points, points_b: Points, law: str, *, shared_exponents: bool = False, floor: float | None = None,
                bootstrap: int = 0, seed: int = 0, bootstrap_method: str = "noise") -> dict:
    """The joint fit: {"theta", "objective", "laws": {A: ..., B: ...}, "thetas": per replicate,
    "noise": the noise model, "joint": the data set, "at_bound"}. `floor` pins E."""
    joint = joint_data(points_a, points_b, law, shared_exponents, floor)
    theta, objective, starts = fit_joint(joint, floor)
    result = {"theta": theta, "objective": objective, "joint": joint, "thetas": np.empty((0, theta.size)), "noise": None,
              "laws": {side: law_parameters(recipe_theta(theta, joint, side), law) for side in SIDES},
              "at_bound": exponent_at_bound(theta, joint)}
    if bootstrap > 0:
        thetas, model = _bootstrap_thetas(joint.features, joint.log_loss, starts, bootstrap, seed, "sum", bootstrap_method, theta,
                                          joint_groups(points_a, points_b), pooled_seed_variance(points_a, points_b), layout=joint.layout)
        result.update(thetas=thetas, noise=model)
    return result
