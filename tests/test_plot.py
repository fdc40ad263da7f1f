"""Scaling plots on a synthetic sweep and a synthetic isoFLOP CSV, both drawn from known laws."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bigmodel.scaling import plot
from bigmodel.scaling.plot_data import group_budgets, load_input, read_metrics

REPO = Path(__file__).resolve().parent.parent
# L(N) = E + A·N^-alpha, the law the synthetic sweep's final losses follow.
TRUE_E, TRUE_A, TRUE_ALPHA = 1.5, 60.0, 0.35
SIZES = [20_000, 50_000, 120_000, 300_000, 800_000]
TOKENS_PER_STEP = 8_192
STEPS = 200
REGISTRY_COLUMNS = "name,status,params,non_embedding_params,tokens,flops,final_loss,final_eval_loss,eval_bpb,wall_time_s".split(",")


def true_loss(n):
    return TRUE_E + TRUE_A * np.asarray(n, dtype=float) ** -TRUE_ALPHA


def write_run(run_dir: Path, n: int, rng) -> dict:
    """metrics.jsonl (training lines every 5 steps, eval every 50) and summary.json for one run."""
    run_dir.mkdir(parents=True)
    final = float(true_loss(n))
    tokens = STEPS * TOKENS_PER_STEP
    flops_per_token = 6 * n + 6 * 32 * 256  # the head's matmul on top of 6N, as flops.py counts
    lines = []
    for step in range(5, STEPS + 1, 5):
        seen = step * TOKENS_PER_STEP
        clean = final + (5.5 - final) * ((seen / tokens) ** -0.5 - 1) / ((STEPS / 5) ** 0.5 - 1)
        lines.append({"step": step, "loss": clean + rng.normal(0, 0.02), "lr": 1e-3, "grad_norm": 1.0,
                      "tokens_seen": seen, "tokens_per_s": 1e4, "step_time_s": 0.1})
        if step % 50 == 0:
            lines.append({"step": step, "eval_loss": clean + 0.03, "eval_bpb": (clean + 0.03) / np.log(2)})
    text = "\n".join(json.dumps(line) for line in lines) + '\n{"step": 201, "loss'  # torn last line
    (run_dir / "metrics.jsonl").write_text(text)
    summary = {"params": n + 2 * 32 * 256, "non_embedding_params": n, "flops_per_token": flops_per_token,
               "tokens": tokens, "flops": flops_per_token * tokens, "final_loss": final - 0.01, "final_eval_loss": final}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return summary


def make_sweep(root: Path) -> Path:
    """Five finished runs following the true law, plus one failed run that must not be drawn."""
    rng = np.random.default_rng(0)
    rows = []
    for index, n in enumerate(SIZES):
        name = f"n{n}"
        summary = write_run(root / name, n, rng)
        status = ("finished", "done")[index % 2]  # the runner writes "finished"; hand-made registries "done"
        rows.append({"name": name, "status": status, **{k: summary[k] for k in ("params", "non_embedding_params", "tokens", "flops", "final_loss", "final_eval_loss")},
                     "eval_bpb": summary["final_eval_loss"] / np.log(2), "wall_time_s": 10})
    rows.append({"name": "broken", "status": "failed", "params": 1, "non_embedding_params": 1, "tokens": 1, "flops": 1,
                 "final_loss": "", "final_eval_loss": "", "eval_bpb": "", "wall_time_s": 1})
    with (root / "runs.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, REGISTRY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.fixture
def sweep_dir(tmp_path) -> Path:
    return make_sweep(tmp_path / "sweep")


def make_isoflop_csv(path: Path) -> Path:
    """Three budgets × five sizes; each profile a parabola in log10 N with vertex 0.1·C^0.5."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["params", "tokens", "loss", "flops"])
        for compute in (1e15, 4e15, 1.6e16):
            n_opt = 0.1 * compute**0.5
            for factor in (0.25, 0.5, 1, 2, 4):
                n = n_opt * factor
                loss = 1.5 + 30 * compute**-0.1 + 0.3 * np.log10(factor) ** 2
                writer.writerow([n, compute / (6 * n), loss, compute])
    return path


@pytest.fixture
def isoflop_csv(tmp_path) -> Path:
    return make_isoflop_csv(tmp_path / "isoflop.csv")


def assert_real_png(path: Path, size: tuple[int, int]) -> None:
    """The PNG has the pixel size asked for and is a picture, not a blank canvas."""
    image = Image.open(path)
    assert image.size == size
    colours = np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0)
    assert len(colours) > 50, f"{path.name} has only {len(colours)} colours"
    assert path.stat().st_size > 30_000
    assert path.with_suffix(".svg").stat().st_size > 10_000


def gids(figure, gid: str) -> list:
    return [artist for axes in figure.axes for artist in axes.get_children() if artist.get_gid() == gid]


def test_read_metrics_keeps_curve_past_a_torn_line(sweep_dir):
    train, evals = read_metrics(sweep_dir / "n20000" / "metrics.jsonl")
    assert len(train["loss"]) == STEPS // 5
    np.testing.assert_allclose(evals["tokens"], [50 * TOKENS_PER_STEP, 100 * TOKENS_PER_STEP, 150 * TOKENS_PER_STEP, 200 * TOKENS_PER_STEP])


def test_read_metrics_lets_a_resumed_run_overwrite_its_repeated_steps(tmp_path):
    lines = [{"step": 10, "loss": 3.0, "tokens_seen": 100}, {"step": 20, "loss": 2.9, "tokens_seen": 200},
             {"step": 20, "eval_loss": 3.1}, {"step": 20, "loss": 2.5, "tokens_seen": 200},  # resumed from step 10
             {"step": 30, "loss": 2.4, "tokens_seen": 300}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    train, evals = read_metrics(tmp_path / "metrics.jsonl")
    assert train["tokens"].tolist() == [100, 200, 300] and train["loss"].tolist() == [3.0, 2.5, 2.4]
    assert evals["tokens"].tolist() == [200] and evals["loss"].tolist() == [3.1]


def test_load_sweep_uses_done_runs_and_eval_loss(sweep_dir):
    data = load_input(sweep_dir)
    np.testing.assert_allclose(data.params, SIZES)
    np.testing.assert_allclose(data.loss, true_loss(SIZES))
    assert data.loss_name == "validation loss"
    assert [curve.name for curve in data.curves] == [f"n{n}" for n in SIZES]


def test_group_budgets_tolerates_rounded_steps():
    labels = group_budgets(np.array([1e15, 1.02e15, 0.99e15, 4e15, 4.1e15, np.nan]))
    assert labels.tolist() == [0, 0, 0, 1, 1, -1]
    labels = group_budgets(np.array([1e15, 1.02e15, 0.99e15, 4e15, 4.1e15, 9e15, 9e15, 9e15]), min_points=3)
    assert labels.tolist() == [0, 0, 0, -1, -1, 1, 1, 1]


def test_law_label_writes_the_law_out():
    assert plot.law_label({"E": 1.2, "A": 35.0, "alpha": 0.31}) == r"$L = 1.20 + 35\,N^{-0.310}$"
    assert r"\times 10^{5}" in plot.law_label({"E": 1.2, "A": 2.5e5, "alpha": 0.31})


def test_plot_all_on_a_sweep_with_its_fit_json(sweep_dir, tmp_path):
    measured = float(true_loss(SIZES[-1]))
    fit = {"law": "power", "x": "params", "E": TRUE_E, "A": TRUE_A, "alpha": TRUE_ALPHA, "objective": 0, "n_points": 4,
           "holdout": {"params": SIZES[-1], "tokens": 1, "measured_loss": measured,
                       "predicted_loss": measured + 0.01, "relative_error": 0.01 / measured}}
    (sweep_dir / "fit.json").write_text(json.dumps(fit))
    notes = []
    paths = plot.plot_all(sweep_dir, tmp_path / "plots", note=notes.append)
    assert sorted({path.stem for path in paths}) == ["loss_vs_compute", "loss_vs_params", "training_curves"]
    assert len(paths) == 6 and all(path.exists() for path in paths)
    assert any("isoflop skipped" in text for text in notes)
    assert any("no bootstrap samples" in text for text in notes)
    for name in ("loss_vs_compute", "loss_vs_params", "training_curves"):
        assert_real_png(tmp_path / "plots" / f"{name}.png", (1200, 825))


def test_training_curves_one_line_per_run(sweep_dir):
    figure = plot.plot_training_curves(load_input(sweep_dir).curves)
    assert len(gids(figure, "run")) == len(SIZES)
    assert len(gids(figure, "eval")) == len(SIZES)


def test_loss_vs_compute_draws_curves_points_and_frontier(sweep_dir):
    data = load_input(sweep_dir)
    compute_law = {"E": 1.0, "A": 300.0, "alpha": 0.2}  # a power law over FLOPs (fit_input --x flops)
    figure = plot.plot_loss_vs_compute(data.flops, data.loss, data.params, data.curves, fit=compute_law)
    assert len(gids(figure, "run")) == len(SIZES)
    (law,) = gids(figure, "fit")
    assert law.get_label() == plot.law_label(compute_law, "C") and "C^" in law.get_label()
    (frontier,) = gids(figure, "frontier")
    compute, loss = frontier.get_data()
    assert np.all(np.diff(compute) > 0) and np.all(np.diff(loss) < 0)  # a Pareto front


def test_loss_vs_params_band_holdout_and_law(sweep_dir):
    data = load_input(sweep_dir)
    predicted = float(true_loss(SIZES[-1])) * 1.02
    fit = {"law": "power", "E": TRUE_E, "A": TRUE_A, "alpha": TRUE_ALPHA,
           "samples": [{"E": TRUE_E + d, "A": TRUE_A, "alpha": TRUE_ALPHA} for d in np.linspace(-0.05, 0.05, 50)],
           "holdout": {"params": SIZES[-1], "tokens": 1, "measured_loss": float(data.loss[-1]),
                       "predicted_loss": predicted, "relative_error": 0.02}}
    figure = plot.plot_loss_vs_params(data.params, data.loss, fit)
    (points,) = gids(figure, "points")
    assert len(points.get_offsets()) == len(SIZES) - 1  # the held-out run is not drawn as a fitted point
    (star,) = gids(figure, "holdout")
    np.testing.assert_allclose(star.get_offsets()[0], [SIZES[-1], data.loss[-1]])
    (diamond,) = gids(figure, "holdout-prediction")
    np.testing.assert_allclose(diamond.get_offsets()[0], [SIZES[-1], predicted])
    (band,) = gids(figure, "band")
    (law,) = gids(figure, "fit")
    assert law.get_label() == plot.law_label(fit)
    # The band spans ±0.05 in E around the law: check its height at the first grid point.
    vertices = band.get_paths()[0].vertices
    assert np.ptp(vertices[np.isclose(vertices[:, 0], vertices[0, 0]), 1]) == pytest.approx(0.095, abs=0.01)


def test_isoflop_csv_one_parabola_per_budget(isoflop_csv, tmp_path):
    notes = []
    paths = plot.plot_all(isoflop_csv, tmp_path / "plots", note=notes.append)
    assert sorted({path.stem for path in paths}) == ["isoflop", "loss_vs_compute"]
    assert any("loss_vs_params skipped" in text for text in notes)
    assert_real_png(tmp_path / "plots" / "isoflop.png", (1950, 825))
    data = load_input(isoflop_csv)
    from bigmodel.scaling import fit as fitting

    isoflop = fitting.fit_isoflop(data.params, data.tokens, data.loss, data.flops)
    assert isoflop["a"] == pytest.approx(0.5, abs=0.01)
    figure = plot.plot_isoflop(data.params, data.loss, data.flops, isoflop)
    assert len(gids(figure, "parabola")) == 3
    assert len(gids(figure, "vertex")) == 3
    (law,) = gids(figure, "fit")
    compute, n_opt = law.get_data()
    np.testing.assert_allclose(n_opt, 0.1 * compute**0.5, rtol=0.05)


def test_cli_refits_a_sweep_without_fit_json(sweep_dir, tmp_path):
    result = subprocess.run([sys.executable, "tools/plot_scaling.py", str(sweep_dir), "--out", str(tmp_path / "out")],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "note: isoflop skipped" in result.stdout
    (law,) = [line for line in result.stdout.splitlines() if "fitted here" in line]
    alpha = float(law.split("N^-")[1].split()[0])
    assert alpha == pytest.approx(TRUE_ALPHA, abs=0.02)  # noise-free final losses: the fit is near exact
    assert sorted(path.name for path in (tmp_path / "out").glob("*.png")) == ["loss_vs_compute.png", "loss_vs_params.png", "training_curves.png"]
    assert_real_png(tmp_path / "out" / "loss_vs_params.png", (1200, 825))


def test_cli_bad_input_is_one_error_line(tmp_path):
    result = subprocess.run([sys.executable, "tools/plot_scaling.py", str(tmp_path / "missing.csv"), "--out", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "missing.csv" in result.stderr and len(result.stderr.splitlines()) == 1
