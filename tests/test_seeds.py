"""Seeds in fits (bigmodel/scaling/seeds.py): replicates are rows that differ only in their seed,
every fit uses them all and reports their spread, the noise floor a law's residuals sit on."""

from __future__ import annotations

import numpy as np
import pytest

from bigmodel.scaling import fit
from bigmodel.scaling.points import Points
from bigmodel.scaling.seeds import replicate_groups, seed_spread

HEADER = "name,status,params,non_embedding_params,tokens,flops,final_loss,final_eval_loss,eval_bpb,wall_time_s,role"


def points(names, loss, params=None, tokens=None):
    n = len(loss)
    params = np.full(n, 1e5) if params is None else np.asarray(params, float)
    tokens = np.full(n, 1e6) if tokens is None else np.asarray(tokens, float)
    return Points(params, tokens, np.full(n, np.nan), np.asarray(loss, float), "loss", tuple(names))


def test_replicates_are_names_equal_but_for_the_seed_part():
    names = ["L2-d64-tok1.6M-lr6e-3-s0", "L2-d64-tok1.6M-lr6e-3-s1", "L2-d64-tok1.6M-lr3e-3-s0",  # another lr: no replicate
             "L2-d32-tok1.6M-lr6e-3-s0-cd20", "L2-d32-tok1.6M-lr6e-3-s12-cd20", "L2-d32-tok800K-lr6e-3-s1-cd20"]
    groups = replicate_groups(points(names, np.ones(6)))
    assert [group.tolist() for group in groups] == [[0, 1], [3, 4]]


def test_a_csv_without_names_groups_equal_n_and_d():
    csv_points = points((), [3.0, 3.1, 2.0, 2.9], params=[1e5, 1e5, 4e5, 1e5], tokens=[1e6, 1e6, 1e6, 1e6])
    assert [group.tolist() for group in replicate_groups(csv_points)] == [[0, 1, 3]]


def test_the_spread_is_each_groups_sample_std_and_their_pooled_std():
    spread = seed_spread(points(["a-s0", "a-s1", "a-s2", "b-s0", "b-s1", "c-s0"], [1.0, 1.2, 1.4, 2.0, 2.1, 5.0]))
    assert [(group["seeds"], round(group["mean"], 6), round(group["std"], 6)) for group in spread["groups"]] == [
        (3, 1.2, 0.2), (2, 2.05, round(0.05 * np.sqrt(2), 6))]
    # Pooled: (0.08 + 0.005) squared deviations over 2 + 1 degrees of freedom.
    assert spread["pooled_std"] == pytest.approx(np.sqrt(0.085 / 3)) and spread["degrees_of_freedom"] == 3
    assert seed_spread(points(["a-s0", "b-s0"], [1.0, 2.0])) is None


def test_a_sweeps_fit_uses_every_seed_and_reports_their_spread(tmp_path):
    n = np.array([1e4, 3e4, 1e5, 3e5, 1e6])
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(3):
        loss = 1.5 + 30 * n ** -0.3 + rng.normal(0, 0.01, n.size)
        rows += [f"L2-n{int(p)}-s{seed},done,{2 * p},{p},1e6,{6e6 * p},{l},{l},,1," for p, l in zip(n, loss)]
    rows.append("stable-L2-n1-s0,done,2,1,1e6,6e6,9,9,,1,stable")  # never a point
    (tmp_path / "runs.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    result = fit.fit_input(tmp_path, "power")
    assert result["n_points"] == 15
    spread = result["seed_spread"]
    assert len(spread["groups"]) == 5 and all(group["seeds"] == 3 for group in spread["groups"])
    assert 0.005 < spread["pooled_std"] < 0.02  # the generating noise: 0.01
    assert "seeds: pooled std" in result["summary"] and "(5 groups, 15 runs)" in result["summary"]
