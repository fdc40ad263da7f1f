"""Fault injection against the real CLI: kill -9, damaged checkpoints, full, read-only and vanished
disks, two processes on one workdir, Ctrl-C twice. Every scenario runs `python -m bigmodel
train|eval|sweep` as subprocesses on a tiny config (L2, 30 steps of 4×32 tokens: seconds a run)
and compares the outcome with an uninterrupted reference run, bit for bit. The scenarios of
`finetune` and `export` (kill -9, full and read-only disks) are in chaos_commands.py.

  python tools/chaos.py                          # everything, --points 20: 6.6 min on 2 busy cores
  python tools/chaos.py --points 3 --only kill9_train --workdir /tmp/chaos --seed 1

One line per scenario (PASS/FAIL, seconds, what was checked or what differed); the exit code is
the number of failed scenarios. Runs go to --workdir (default: a temporary directory, deleted
when everything passed, kept and printed otherwise); each process's output is in <workdir>/logs.
The processes share a JAX compilation cache in <workdir>/jax_cache (filled by the reference
runs, then only read): compiling is two thirds of a launch here. Mounts (tmpfs, read-only bind)
need root; without them disk_full falls back to RLIMIT_FSIZE (a real EFBIG) and says so.
tests/test_chaos.py runs a subset in CI. Scenario functions take (lab, **options) and return a
Result, so they can be called in-process.
"""

from __future__ import annotations

import argparse, csv, hashlib, io, json, math, os, random, re, shutil, signal, sys, tempfile, threading, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # chaos_lab beside this script, however it is run

from chaos_lab import (  # noqa: E402
    REPO, STEPS, EVERY, EVAL_EVERY, STOPPED, BAD_INPUT, IN_USE, NO_SPACE, Outcome, Checks,
    Proc, wait_until, read_records, logged, curve, curve_diff, summary_diff, check_curve,
    json_field, snapshot, disk_bytes, mount, unmount, process_alive, children_of, Lab, SCENARIOS, scenario, kill_rounds,
)


@scenario
def kill9_train(lab: Lab, c: Checks, points: int | None = None):
    """SIGKILL the trainer at >= points places (in steps, checkpoint writes, eval, random times)."""
    reference = lab.reference()

    def kill_somewhere(proc: Proc, workdir: Path) -> str | None:
        done = max([r.get("step", 0) for r in read_records(workdir / "metrics.jsonl")[0]], default=0)  # targets: steps not logged yet
        steps = {"in_step": [s for s in range(done + 1, STEPS) if s % EVERY],
                 "checkpoint_write": [s for s in range(done + 1, STEPS + 1) if s % EVERY == 0],
                 "eval": [s for s in range(done + 1, STEPS + 1) if s % EVAL_EVERY == 0]}
        where = c.rng.choice(["in_step", "checkpoint_write", "eval", "wall_clock"])
        if where == "wall_clock" or not steps[where]:
            where = "wall_clock"
            time.sleep(c.rng.uniform(0, 0.6 * reference["seconds"]))  # startup included (the reference also compiled)
        else:  # the trainer logs step s, evaluates (every 10th), then saves asynchronously (every 5th)
            target = c.rng.choice(steps[where])
            key = "eval_loss" if where == "checkpoint_write" and target % EVAL_EVERY == 0 else "loss"
            wait_until(proc, lambda: logged(workdir, lambda r: r.get("step") == target and key in r))
            if where == "in_step":
                time.sleep(c.rng.uniform(0, reference["step_time_s"]))
            where = f"{where}@{target}"
        return where if proc.kill() else None

    def check_run(workdir: Path) -> None:
        diff = curve_diff(workdir, reference["curve"]) or summary_diff(workdir, reference["summary"])
        c(diff is None, f"{workdir.name}: metrics.jsonl and summary.json == reference", diff or "")

    kill_rounds(lab, c, points or lab.points, "kill9", lab.train_argv, kill_somewhere, check_run)


class SweepWatcher(threading.Thread):
    """Polls sweep workdirs (root/<prefix>*): runs.csv must parse with the full header at every
    observation, and no run's summary.json may change once it has appeared."""

    def __init__(self, root: Path, prefix: str, header: list[str], n_runs: int):
        super().__init__(daemon=True)
        self.root, self.prefix, self.header, self.n_runs = root, prefix, header, n_runs
        self.observations, self.problems, self.summaries, self.stop = 0, set(), {}, threading.Event()

    def run(self):
        while not self.stop.wait(0.01):
            self.poll()
        self.poll()

    def poll(self):
        for workdir in self.root.glob(f"{self.prefix}*"):
            try:
                text = (workdir / "runs.csv").read_text()
            except FileNotFoundError:
                continue  # not yet written (it is replaced atomically, never removed)
            self.observations += 1
            rows = list(csv.reader(io.StringIO(text)))
            if not rows or rows[0] != self.header or len(rows) != self.n_runs + 1 or any(len(r) != len(self.header) for r in rows):
                self.problems.add(f"{workdir.name}/runs.csv unparseable or partial: {text[:100]!r}")
            for summary in workdir.glob("*/summary.json"):
                try:
                    seen = (summary.stat().st_mtime_ns, summary.read_bytes())
                except FileNotFoundError:
                    seen = None
                if self.summaries.setdefault(summary, seen) != seen:
                    self.problems.add(f"{summary.parent.name}/summary.json was rewritten or removed after it appeared")


def sweep_reference(lab: Lab, experiment: Path) -> dict:
    def make():
        workdir, started = lab.new_dir("sweep_reference"), time.perf_counter()
        outcome = lab.run(lab.sweep_argv(experiment, workdir), "sweep_reference")
        rows = list(csv.reader(io.StringIO((workdir / "runs.csv").read_text()))) if (workdir / "runs.csv").exists() else []
        if outcome.rc != 0 or not rows:
            raise RuntimeError(f"the reference sweep failed ({outcome.describe()})")
        last_summary = max(p.stat().st_mtime for p in workdir.glob("*/summary.json"))
        runs = {r[0]: {"curve": curve(workdir / r[0]), "summary": json.loads((workdir / r[0] / "summary.json").read_text())} for r in rows[1:]}
        return {"header": rows[0], "runs": runs, "seconds": time.perf_counter() - started, "fit": (workdir / "fit.json").exists(),
                "analysis_s": max(0.5, time.time() - last_summary)}
    return lab.cached(f"sweep:{experiment}", make)


@scenario
def kill9_sweep(lab: Lab, c: Checks, points: int | None = None):
    """SIGKILL the sweep driver (its pid only) at >= points/2 places: after a registry update,
    between runs, in the fit and plots, at random times. Its trainers must exit with it."""
    experiment = lab.experiment(runs=3, steps=15)
    reference, orphans = sweep_reference(lab, experiment), []
    watcher = SweepWatcher(lab.root, "kill9_sweep-", reference["header"], len(reference["runs"]))

    def kill_somewhere(proc: Proc, workdir: Path) -> str | None:
        registry, done = workdir / "runs.csv", len(list(workdir.glob("*/summary.json")))
        mtime = registry.stat().st_mtime_ns if registry.exists() else 0
        where = c.rng.choice(["registry_update", "between_runs", "wall_clock"] if done < len(reference["runs"]) else ["analysis", "wall_clock"])
        if where == "registry_update":
            wait_until(proc, lambda: registry.exists() and registry.stat().st_mtime_ns != mtime, poll_s=0.001)
        elif where == "between_runs":  # the driver notices a finished run within its 0.5 s poll
            wait_until(proc, lambda: len(list(workdir.glob("*/summary.json"))) > done)
            time.sleep(c.rng.uniform(0, 0.6))
        else:
            time.sleep(c.rng.uniform(0, reference["analysis_s"] if where == "analysis" else 0.6 * reference["seconds"]))
        children = children_of(proc.pid)
        if not proc.kill():
            return None
        proc.popen.wait()
        deadline = time.monotonic() + 10
        while any(map(process_alive, children)) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in filter(process_alive, children):  # the runner should have taken them down with it
            orphans.append(pid)
            os.kill(pid, signal.SIGKILL)
        return where

    def check_run(workdir: Path) -> None:
        rows = list(csv.DictReader(io.StringIO((workdir / "runs.csv").read_text())))
        problems = [f"{r.get('name')} is {r.get('status')} {r.get('error', '')[:80]}" for r in rows if r.get("status") != "done"]
        problems += [f"{name}: {diff}" for name, want in reference["runs"].items()
                     if (diff := curve_diff(workdir / name, want["curve"]) or summary_diff(workdir / name, want["summary"]))]
        problems += ["no fit.json"] if reference["fit"] and not (workdir / "fit.json").exists() else []
        c(not problems, f"{workdir.name}: registry all done, {len(rows)} runs' metrics and summaries == reference"
          + (", fit.json written" if reference["fit"] else ""), "; ".join(problems))

    watcher.start()
    try:
        kill_rounds(lab, c, math.ceil((points or lab.points) / 2), "kill9_sweep", lambda w: lab.sweep_argv(experiment, w),
                    kill_somewhere, check_run)
    finally:
        watcher.stop.set()
        watcher.join()
    c.values["orphans"] = len(orphans)
    c(not orphans, "trainers exit with their driver", f"{len(orphans)} trainer(s) still ran 10 s after their driver was SIGKILLed")
    c(not watcher.problems, f"runs.csv parsed at all {watcher.observations} observations; no summary.json rewritten",
      "; ".join(sorted(watcher.problems)[:3]))


def damage(checkpoint_dir: Path, mode: str, files: int = 2) -> list[Path]:
    """Overwrite the head and 4 KiB of the middle of (or truncate to half) a checkpoint's largest files."""
    largest = sorted((p for p in checkpoint_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)[-files:]
    for path in largest:
        data = bytearray(path.read_bytes())
        if mode == "truncate":
            data = data[: len(data) // 2]
        else:
            middle = len(data) // 2
            data[middle: middle + 4096] = random.Random(len(data)).randbytes(len(data[middle: middle + 4096]))
            data[:64] = b"\xff" * len(data[:64])
        path.write_bytes(bytes(data))
    return largest


ALL_DAMAGE = tuple((mode, command) for mode in ("overwrite", "truncate") for command in ("eval", "train"))


@scenario
def corrupt_checkpoint(lab: Lab, c: Checks, cases=ALL_DAMAGE):
    """Damage the newest checkpoint (20) of a stopped run: eval and train warn and fall back to 15;
    train keeps the damaged files and finishes with the reference curve."""
    reference, (stopped, stop_rc) = lab.reference(), lab.stopped_run(20)
    c.values["stop_at_step_exit_code"] = stop_rc
    c.notes.append(f"--stop_at_step 20 exited {stop_rc}")
    bad, good, started = 20, 15, {}
    for mode, command in cases:  # each case on its own copy, all at once
        workdir = lab.new_dir(f"corrupt_{mode}_{command}")
        shutil.copytree(stopped, workdir, symlinks=True)
        digests = {hashlib.sha1(p.read_bytes()).hexdigest() for p in damage(workdir / "checkpoints" / str(bad), mode)}
        argv = lab.eval_argv(workdir) if command == "eval" else lab.train_argv(workdir)
        started[mode, command] = workdir, digests, lab.start(argv, f"corrupt_{mode}_{command}")
    for (mode, command), (workdir, digests, proc) in started.items():
        outcome, label = proc.finish(), f"{mode}/{command}"
        warnings = outcome.warnings()
        c.values[f"{mode}_{command}"] = {"rc": outcome.rc, "warnings": warnings}
        c(outcome.rc == 0, f"{label} exits 0", outcome.describe())
        c(len(warnings) == 1 and re.search(rf"\b{bad}\b", warnings[0]) is not None, f"{label}: one warning naming step {bad}",
          f"warning lines: {warnings}")
        if command == "eval":
            step = c.values[f"{mode}_eval_step"] = json_field(workdir / "eval.json", "step")
            c(step == good, f"{label}: eval.json step {good}", f"eval.json step {step}")
        else:
            kept = {hashlib.sha1(p.read_bytes()).hexdigest() for p in workdir.rglob("*") if p.is_file()}
            c(digests <= kept, f"{label}: the damaged files are kept", "they were deleted or overwritten")
            check_curve(c, label, workdir, reference)


def check_refused(c: Checks, label: str, outcome: Outcome, workdir: Path) -> None:
    errors = c.values.setdefault(label, {"rc": outcome.rc, "errors": outcome.errors()})["errors"]
    c(outcome.rc == BAD_INPUT, f"{label} exits {BAD_INPUT}", outcome.describe())
    c(len(errors) == 1 and bool(IN_USE.search(errors[0])) and str(workdir) in errors[0],
      f"{label}: one error line saying {workdir.name} is in use", f"error lines: {errors}")


@scenario
def two_trainers(lab: Lab, c: Checks, sweeps: bool = True):
    """A second trainer (sweep) on a busy workdir exits 2 with one error line; the first finishes;
    after kill -9 of one, the next starts at once (the lock dies with its process)."""
    reference, experiment = lab.reference(), lab.experiment(runs=1, steps=15)
    kinds = [("trainer", lab.train_argv, lambda w: (w / "metrics.jsonl").exists())]
    if sweeps:
        kinds.append(("sweep", lambda w: lab.sweep_argv(experiment, w), lambda w: any(w.glob("*/metrics.jsonl"))))
    for what, argv, running in kinds:
        workdir = lab.new_dir(f"two_{what}s")
        first = lab.start(argv(workdir), f"first_{what}")
        wait_until(first, lambda: running(workdir))
        first.kill(signal.SIGSTOP)  # paused, it still holds the workdir: the second one cannot outlast it
        check_refused(c, f"second_{what}", lab.run(argv(workdir), f"second_{what}"), workdir)
        first.kill(signal.SIGCONT)
        outcome = first.finish()
        c(outcome.rc == 0, f"the first {what} finishes", outcome.describe())
        if what == "trainer":
            check_curve(c, "the first trainer", workdir, reference)
        workdir = lab.new_dir(f"killed_{what}")
        killed = lab.start(argv(workdir), f"killed_{what}")
        wait_until(killed, lambda: running(workdir))
        killed.kill()
        killed.finish()
        outcome = lab.run(argv(workdir), f"{what}_after_kill")
        c.values[f"{what}_after_kill_rc"] = outcome.rc
        c(outcome.rc == 0, f"a {what} starts at once on the workdir of a SIGKILLed one and finishes", outcome.describe())


@scenario
def disk_full(lab: Lab, c: Checks, tmpfs: bool = True):
    """Out of space mid-run: a non-zero exit with one error line about space (<= 3 stderr lines);
    the earlier checkpoint restores (eval); with space again, the rerun gives the reference curve."""
    reference = lab.reference()
    checkpoint_bytes = disk_bytes(reference["workdir"] / "checkpoints" / str(STEPS))
    other_bytes = disk_bytes(reference["workdir"]) - disk_bytes(reference["workdir"] / "checkpoints")
    size_k = math.ceil((other_bytes + 1.5 * checkpoint_bytes) / 1024) + 64  # one checkpoint fits, two do not
    mount_point = lab.new_dir("disk_full")
    mount_point.mkdir()
    problem = mount("-t", "tmpfs", "-o", f"size={size_k}k", "tmpfs", str(mount_point)) if tmpfs else "not tried"
    workdir, prefix = mount_point / "run", []
    try:
        if problem:  # a per-file size limit instead: the kernel answers EFBIG
            first = lab.run(lab.train_argv(workdir, "--stop_at_step", str(EVERY)), "disk_full_first")
            c(first.rc in (0, STOPPED), f"--stop_at_step {EVERY} before the file size limit", first.describe())
            limit = max(p.stat().st_size for p in (workdir / "checkpoints").rglob("*") if p.is_file()) // 2
            prefix = [sys.executable, "-c", "import os, resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]),) * 2); "
                      "os.execv(sys.argv[2], sys.argv[2:])", str(limit)]  # Python ignores SIGXFSZ: writes fail with EFBIG
            c.notes.append(f"RLIMIT_FSIZE fallback, {limit // 1024} KiB per file (tmpfs mount: {problem})")
        else:
            c.notes.append(f"tmpfs of {size_k} KiB (one checkpoint: {checkpoint_bytes // 1024} KiB)")
        outcome = lab.run(prefix + lab.train_argv(workdir), "disk_full")
        errors, lines = outcome.errors(), [line for line in outcome.err.splitlines() if line.strip()]
        c.values.update(rc=outcome.rc, errors=errors, stderr_lines=len(lines))
        c(outcome.rc not in (0, None), f"out of space: exit {outcome.rc}", outcome.describe())
        c(len(errors) == 1 and bool(NO_SPACE.search(errors[0])) and len(lines) <= 3, "one error line about space, <= 3 stderr lines",
          f"{len(lines)} stderr lines, error lines {errors}")
        if not problem:
            c(mount("-o", "remount,size=256m", str(mount_point)) is None, "remounted bigger")
        evaluated = lab.run(lab.eval_argv(workdir), "disk_full_eval")
        step = c.values["eval_step"] = json_field(workdir / "eval.json", "step")
        c(evaluated.rc == 0 and isinstance(step, int) and step >= EVERY, f"eval restores the last intact checkpoint (step {step})",
          evaluated.describe())
        rerun = lab.run(lab.train_argv(workdir), "disk_full_rerun")
        c(rerun.rc == 0, "the rerun finishes", rerun.describe())
        check_curve(c, "the rerun", workdir, reference)
    finally:
        if not problem:
            unmount(mount_point)


@scenario
def readonly_and_vanished(lab: Lab, c: Checks):
    """A read-only run and a new workdir under a read-only parent: exit 2, one error line, nothing
    changed; a workdir deleted mid-run: non-zero exit, one error line; --workdir a file: exit 2."""
    stopped, _ = lab.stopped_run(20)
    source, mount_point = lab.new_dir("readonly_source"), lab.new_dir("readonly_mount")
    shutil.copytree(stopped, source / "run", symlinks=True)
    mount_point.mkdir()
    problem = mount("--bind", str(source), str(mount_point)) or mount("-o", "remount,ro,bind", str(mount_point))
    try:
        c(problem is None, "read-only bind mount", problem or "")
        before = snapshot(source)
        for label, workdir in (("readonly_run", mount_point / "run"), ("readonly_parent", mount_point / "new")):
            outcome = lab.run(lab.train_argv(workdir), label)
            c.values[label] = {"rc": outcome.rc, "errors": outcome.errors()}
            c(outcome.rc == BAD_INPUT and len(outcome.errors()) == 1, f"{label}: exit 2, one error line", outcome.describe())
        c(snapshot(source) == before, "the read-only run is unchanged", "files differ")
    finally:
        if not problem:
            unmount(mount_point)
    parent = lab.new_dir("vanishing")
    proc = lab.start(lab.train_argv(parent / "run"), "vanished")
    wait_until(proc, lambda: logged(parent / "run", lambda r: r.get("step") == EVERY + 1))  # checkpoint 5 may still be writing
    while parent.exists():  # the trainer may create files while the tree is being removed
        shutil.rmtree(parent, ignore_errors=True)
    outcome = proc.finish()
    c.values["vanished"] = {"rc": outcome.rc, "errors": outcome.errors()}
    c(outcome.rc not in (0, None) and len(outcome.errors()) == 1,
      f"workdir deleted mid-run: exit {outcome.rc}, one error line ({len(outcome.err.splitlines())} stderr lines)", outcome.describe())
    regular = lab.new_dir("a_file")
    regular.write_text("not a directory\n")
    outcome = lab.run(lab.train_argv(regular), "workdir_is_a_file")
    c.values["workdir_is_a_file"] = {"rc": outcome.rc, "errors": outcome.errors()}
    c(outcome.rc == BAD_INPUT and len(outcome.errors()) == 1 and regular.read_text() == "not a directory\n",
      "--workdir is a file: exit 2, one error line, file untouched", outcome.describe())


@scenario
def sigint_twice(lab: Lab, c: Checks):
    """Two quick SIGINTs: exit 75 (stopped, resumable); the rerun reproduces the reference."""
    reference, workdir = lab.reference(), lab.new_dir("sigint")
    proc, step = lab.start(lab.train_argv(workdir), "sigint"), c.rng.randint(3, STEPS - 8)
    wait_until(proc, lambda: logged(workdir, lambda r: r.get("step") == step and "loss" in r))
    proc.kill(signal.SIGINT)
    time.sleep(0.05)
    proc.kill(signal.SIGINT)
    outcome = proc.finish()
    c.values.update(rc=outcome.rc, signalled_after_step=step)
    c(outcome.rc == STOPPED, f"SIGINT twice after step {step}: exit {STOPPED}", outcome.describe())
    rerun = lab.run(lab.train_argv(workdir), "sigint_rerun")
    c(rerun.rc == 0, "the rerun finishes", rerun.describe())
    check_curve(c, "the rerun", workdir, reference)


import chaos_commands  # noqa: E402, F401 — finetune's and export's scenarios register themselves


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=20, help="SIGKILLs of kill9_train (kill9_sweep: half as many)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append", help="run only this scenario (repeatable)")
    parser.add_argument("--workdir", help="where runs go (default: a temporary directory, deleted if all pass)")
    parser.add_argument("--repo", default=str(REPO), help="the checkout whose `python -m bigmodel` is tested")
    parser.add_argument("--no-compile-cache", action="store_true", help="compile in every launch (no shared JAX cache)")
    args = parser.parse_args(argv)
    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="chaos-"))
    lab = Lab(root, args.points, args.seed, args.repo, compile_cache=not args.no_compile_cache)
    started, results = time.perf_counter(), []
    for name in args.only or SCENARIOS:
        results.append(SCENARIOS[name](lab))
        print(f"{'PASS' if results[-1].passed else 'FAIL'} {name:<22} {results[-1].seconds:6.1f}s  {results[-1].details}", flush=True)
    failed = sum(not result.passed for result in results)
    print(f"{len(results) - failed}/{len(results)} passed in {time.perf_counter() - started:.0f}s (points={args.points}, seed={args.seed})")
    if failed or args.workdir:
        print(f"runs and logs kept in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return min(failed, 125)


if __name__ == "__main__":
    sys.exit(main())
