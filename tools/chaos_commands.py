"""tools/chaos.py's scenarios for the commands that use a trained run: kill -9 during `finetune` (the
rerun ends with the uninterrupted run's results, bit for bit) and during `export` (the rerun leaves
the --out folder holding the one file), and both on a full or read-only disk (exit 74, one line,
nothing left behind). They start from the train reference run (`Lab.reference`)."""

from __future__ import annotations

import json, math, shutil, sys, time
from pathlib import Path

from chaos_lab import FINETUNE, NO_SPACE, Checks, Lab, Outcome, Proc, disk_bytes, kill_rounds, logged, mount, read_records, scenario, unmount, wait_until

STORAGE_ERROR = 74
TIMING_KEYS = ("examples_per_s", "tokens_per_s")  # the only fields of a finetune record that may differ between runs
FINETUNE_STEPS, FINETUNE_EVERY = FINETUNE["train.steps"], FINETUNE["checkpoint.every_steps"]


def finetune_results(workdir: Path) -> dict:
    """What a resumed fine-tuning run must reproduce: test_metrics.json and metrics.jsonl less its timings."""
    records, torn = read_records(workdir / "metrics.jsonl")
    try:
        test = json.loads((workdir / "test_metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        test = None
    return {"test": test, "curve": [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records], "torn": torn}


def results_diff(got: dict, want: dict) -> str | None:
    if got["test"] != want["test"]:
        differing = sorted(k for k in want["test"] if (got["test"] or {}).get(k) != want["test"][k]) if got["test"] else "missing"
        return f"test_metrics.json differs: {differing}"
    for index, (a, b) in enumerate(zip(got["curve"], want["curve"])):
        if a != b:
            return f"metrics record {index} is {a}, reference {b}"
    return None if (len(got["curve"]), got["torn"]) == (len(want["curve"]), 0) else f"{len(got['curve'])} records ({got['torn']} torn)"


def finetune_reference(lab: Lab) -> dict:
    def make():
        workdir, started = lab.new_dir("finetune_reference"), time.perf_counter()
        outcome = lab.run(lab.finetune_argv(lab.reference()["workdir"], workdir), "finetune_reference")
        if outcome.rc != 0:
            raise RuntimeError(f"the reference fine-tuning run failed ({outcome.describe()})")
        return {"workdir": workdir, "results": finetune_results(workdir), "seconds": time.perf_counter() - started}
    return lab.cached("finetune_reference", make)


def export_reference(lab: Lab) -> dict:
    """A 1-step L8 run (26 MB of float32 parameters: its file takes long enough to write that a
    kill can land inside the write) and its uninterrupted export."""
    def make():
        run = lab.new_dir("export_run")
        settings = {"train.steps": 1, "train.batch_size": 1, "data.seq_len": 16, "eval.batches": 1, "optim.warmup_steps": 0,
                    "data.data_dir": lab.data_dir}
        trained = lab.run([sys.executable, "-m", "bigmodel", "train", "--config", "configs/lm.py:L8", "--workdir", str(run),
                           *[f"--config.{k}={v}" for k, v in settings.items()]], "export_run")
        out, started = lab.new_dir("export_reference") / "model.safetensors", time.perf_counter()
        out.parent.mkdir()
        outcome = lab.run(lab.export_argv(run, out), "export_reference")
        if trained.rc != 0 or outcome.rc != 0:
            raise RuntimeError(f"the L8 run or its reference export failed ({trained.describe()}; {outcome.describe()})")
        return {"run": run, "tensors": tensors_of(out), "bytes": out.stat().st_size, "seconds": time.perf_counter() - started}
    return lab.cached("export_reference", make)


def tensors_of(path: Path) -> dict:
    from safetensors.numpy import load_file

    return {name: array.tobytes() for name, array in load_file(str(path)).items()}


@scenario
def kill9_finetune(lab: Lab, c: Checks, points: int | None = None):
    """SIGKILL `finetune` inside steps, while a checkpoint is written and at random times; rerun
    until it finishes: test_metrics.json and metrics.jsonl equal an uninterrupted run's."""
    reference, run = finetune_reference(lab), lab.reference()["workdir"]

    def kill_somewhere(proc: Proc, workdir: Path) -> str | None:
        done = max([r.get("step", 0) for r in read_records(workdir / "metrics.jsonl")[0]], default=0)
        steps = {"in_step": [s for s in range(done + 1, FINETUNE_STEPS) if s % FINETUNE_EVERY],
                 "checkpoint_write": [s for s in range(done + 1, FINETUNE_STEPS) if s % FINETUNE_EVERY == 0]}
        where = c.rng.choice(["in_step", "checkpoint_write", "wall_clock"])
        if where == "wall_clock" or not steps[where]:
            where = "wall_clock"
            time.sleep(c.rng.uniform(0, 0.6 * reference["seconds"]))
        else:  # the loop logs step s, evaluates (every 4th: its record comes before the save), then saves
            target = c.rng.choice(steps[where])
            key = "eval_loss" if where == "checkpoint_write" else "loss"
            wait_until(proc, lambda: logged(workdir, lambda r: r.get("step") == target and key in r))
            where = f"{where}@{target}"
        return where if proc.kill() else None

    def check_run(workdir: Path) -> None:
        diff = results_diff(finetune_results(workdir), reference["results"])
        c(diff is None, f"{workdir.name}: test_metrics.json and metrics.jsonl == reference", diff or "")
        leftovers = [p.name for p in (workdir / "checkpoints").iterdir() if "tmp" in p.name]
        c(not leftovers, f"{workdir.name}: no unfinished checkpoint left", f"left: {leftovers}")

    kill_rounds(lab, c, points or max(2, lab.points // 4), "kill9_finetune", lambda w: lab.finetune_argv(run, w), kill_somewhere, check_run)


@scenario
def kill9_export(lab: Lab, c: Checks, points: int | None = None):
    """SIGKILL `export` while it writes its file (and at random times); the rerun (--force where a
    file was finished) leaves the --out folder holding the one file, with the reference tensors."""
    reference = export_reference(lab)
    run, left, kills = reference["run"], [], []
    for index in range(points or max(2, lab.points // 4)):
        out = lab.new_dir("kill9_export") / "model.safetensors"
        out.parent.mkdir()
        proc = lab.start(lab.export_argv(run, out), "kill9_export")
        if index % 2 == 0:  # the moment the file starts inside its temporary folder
            wait_until(proc, lambda: any(any(d.iterdir()) for d in out.parent.iterdir() if d.name.startswith(".") and d.is_dir()),
                       poll_s=0.001)
        else:
            time.sleep(c.rng.uniform(0.3, 0.9) * reference["seconds"])
        if proc.kill():
            kills.append("writing" if index % 2 == 0 else "wall_clock")
        proc.finish()
        debris = [p for p in out.parent.iterdir() if p.name.startswith(".")]
        left.append((len(debris), sum(disk_bytes(p) if p.is_dir() else p.stat().st_size for p in debris)))
        rerun = lab.run(lab.export_argv(run, out) + (["--force"] if out.exists() else []), "kill9_export_rerun")
        c(rerun.rc == 0, f"export rerun {index + 1} finishes", rerun.describe())
        names = sorted(p.name for p in out.parent.iterdir())
        c(names == [out.name], f"rerun {index + 1}: the folder holds the file alone", f"it holds {names}")
        if out.exists():
            c(tensors_of(out) == reference["tensors"], f"rerun {index + 1}: tensors == reference", "tensors differ")
    c.values.update(kills=kills, bytes_left_by_kills=left)
    c(any(count for count, _ in left), f"{len(kills)} SIGKILLs; {sum(1 for count, _ in left if count)} left a temporary folder "
      f"(up to {max(size for _, size in left) // 1024} KiB), each removed by the rerun", "no kill landed while the file was written")


def limited(limit_bytes: int) -> list[str]:
    """An argv prefix that runs a command with RLIMIT_FSIZE (a real EFBIG) where mounting is not allowed."""
    return [sys.executable, "-c", "import os, resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]),) * 2); "
            "os.execv(sys.argv[2], sys.argv[2:])", str(limit_bytes)]


def one_storage_line(c: Checks, label: str, outcome: Outcome) -> None:
    errors = outcome.errors()
    c.values[label] = {"rc": outcome.rc, "errors": errors, "tracebacks": outcome.err.count("Traceback")}
    c(outcome.rc == STORAGE_ERROR and len(errors) == 1 and "Traceback" not in outcome.err,
      f"{label}: exit {STORAGE_ERROR}, one error line, no traceback", outcome.describe())


@scenario
def storage_finetune_export(lab: Lab, c: Checks):
    """finetune on a disk that fills up (exit 74, one line; with space again the rerun equals the
    reference), export onto a full disk and into a read-only folder (exit 74, one line, nothing left)."""
    reference, run = finetune_reference(lab), lab.reference()["workdir"]
    checkpoint_bytes = disk_bytes(reference["workdir"] / "checkpoints" / str(FINETUNE_STEPS))
    other_bytes = disk_bytes(reference["workdir"]) - disk_bytes(reference["workdir"] / "checkpoints")
    size_k = math.ceil((other_bytes + 1.5 * checkpoint_bytes) / 1024) + 64  # one checkpoint fits, two do not
    mount_point = lab.new_dir("storage_finetune")
    mount_point.mkdir()
    problem = mount("-t", "tmpfs", "-o", f"size={size_k}k", "tmpfs", str(mount_point))
    workdir, prefix = mount_point / "ft", []
    try:
        if problem:
            first = lab.run(lab.finetune_argv(run, workdir) + ["--stop_at_step", str(FINETUNE_EVERY)], "finetune_first")
            c(first.rc == 0, f"--stop_at_step {FINETUNE_EVERY} before the file size limit", first.describe())
            prefix = limited(max(p.stat().st_size for p in (workdir / "checkpoints").rglob("*") if p.is_file()) // 2)
            c.notes.append(f"RLIMIT_FSIZE fallback (tmpfs mount: {problem})")
        outcome = lab.run(prefix + lab.finetune_argv(run, workdir), "finetune_disk_full")
        one_storage_line(c, "finetune_disk_full", outcome)
        c(bool(outcome.errors()) and bool(NO_SPACE.search(outcome.errors()[0])), "finetune: the line says the disk is full", outcome.describe())
        if not problem:
            c(mount("-o", "remount,size=64m", str(mount_point)) is None, "remounted bigger")
        rerun = lab.run(lab.finetune_argv(run, workdir), "finetune_disk_full_rerun")
        diff = results_diff(finetune_results(workdir), reference["results"])
        c(rerun.rc == 0 and diff is None, "finetune rerun with space: results == reference", diff or rerun.describe())
        leftovers = [p.name for p in (workdir / "checkpoints").iterdir() if "tmp" in p.name]
        c(not leftovers, "finetune rerun: the cut checkpoint's tmp folder is gone", f"left: {leftovers}")
        out = mount_point / "export" / "model.safetensors"
        out.parent.mkdir()
        if problem:
            outcome = lab.run(limited(4096) + lab.export_argv(run, out), "export_disk_full")
        else:
            shutil.rmtree(workdir)
            free = shutil.disk_usage(mount_point).free
            (mount_point / "filler").write_bytes(b"\0" * max(free - 16 * 1024, 0))
            outcome = lab.run(lab.export_argv(run, out), "export_disk_full")
        one_storage_line(c, "export_disk_full", outcome)
        c(list(out.parent.iterdir()) == [], "export on a full disk leaves nothing", str(list(out.parent.iterdir())))
        if problem:
            c.notes.append("read-only export skipped (no mount)")
        else:
            c(mount("-o", "remount,ro", str(mount_point)) is None, "remounted read-only")
            one_storage_line(c, "export_read_only", lab.run(lab.export_argv(run, out), "export_read_only"))
    finally:
        if not problem:
            unmount(mount_point)

