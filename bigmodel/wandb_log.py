"""Weights & Biases, optional: `--config.logging.wandb=PROJECT` mirrors a run there.

A train run logs the scalars it writes to metrics.jsonl and TensorBoard (`metrics.MetricsLog`),
its resolved config, and its summary.json; a sweep logs its fit and plots as an artifact. The
W&B run id is kept in `<workdir>/wandb_run_id`, so a resumed run continues the same W&B run
(`resume="allow"`); W&B's own files go under `<workdir>/wandb/`. Steps a resumed run logs again
(those after its last checkpoint) are dropped by W&B, which keeps each run's steps increasing.

`WANDB_MODE=offline` writes everything locally (`wandb sync` uploads it later), which is how the
tests run. wandb takes seconds to import: it is imported only when a project is configured.
Install it with `pip install 'bigmodel[wandb]'`.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from bigmodel import files
from bigmodel.exit_codes import ConfigError

RUN_ID_FILE = "wandb_run_id"
INSTALL = "pip install 'bigmodel[wandb]'"


def project_of(config) -> str:
    """The W&B project a config logs to; "" (off) for configs written before logging existed."""
    logging = config.get("logging") if hasattr(config, "get") else None
    return (logging.get("wandb", "") if logging is not None else "") or ""


def stored_run_id(workdir: Path) -> str:
    """This workdir's W&B run id: read back on resume, made and saved on the first start."""
    path = Path(workdir) / RUN_ID_FILE
    if path.exists():
        return path.read_text().strip()
    run_id = secrets.token_hex(4)  # W&B's ids are 8 characters of [0-9a-z]
    files.write_atomically(path, run_id + "\n")
    return run_id


def start(project: str, workdir: Path, config: dict, job_type: str, run_id: str | None = None):
    """A started W&B run (ConfigError, one line, if W&B cannot start: no login, no network)."""
    try:
        import wandb
    except ImportError:
        raise ConfigError(f"config.logging.wandb={project!r} needs the wandb package: {INSTALL}") from None
    try:
        return wandb.init(project=project, id=run_id, resume="allow" if run_id else None, dir=str(workdir), name=Path(workdir).name,
                          config=config, job_type=job_type, settings=wandb.Settings(silent=True, console="off"))
    except Exception as error:  # noqa: BLE001 — wandb raises many types; each means "W&B did not start"
        raise ConfigError(f"config.logging.wandb={project!r}: W&B did not start ({type(error).__name__}: {error}): "
                          "run `wandb login`, or set WANDB_MODE=offline to log locally") from None


class WandbRun:
    """One train run's W&B mirror: scalars by step, the config at start, the summary at the end."""

    def __init__(self, project: str, workdir: Path, config: dict):
        self._run = start(project, workdir, config, job_type="train", run_id=stored_run_id(workdir))

    def log(self, scalars: dict, step: int) -> None:
        self._run.log(scalars, step=step)

    def summarize(self, summary: dict) -> None:
        self._run.summary.update({key: value for key, value in summary.items() if isinstance(value, (int, float, str, bool))})

    def close(self) -> None:
        self._run.finish()


def log_analysis(project: str, sweep_dir: Path, fit_path: Path, plots_dir: Path) -> None:
    """The sweep's fit.json and plots/ as one `scaling-fit` artifact of an `analysis` W&B run."""
    import wandb

    run = start(project, sweep_dir, {"sweep": str(sweep_dir)}, job_type="analysis")
    try:
        artifact = wandb.Artifact(f"{Path(sweep_dir).name}-fit", type="scaling-fit")
        artifact.add_file(str(fit_path))
        artifact.add_dir(str(plots_dir), name="plots")
        run.log_artifact(artifact)
        run.summary.update({key: value for key, value in files.read_json(fit_path).items() if isinstance(value, (int, float, str))})
    finally:
        run.finish()

