"""The fault-injection harness of tools/chaos.py: run the real CLI as processes, watch them, compare
their run directories with a reference run. The scenarios live in chaos.py."""

from __future__ import annotations

import collections, dataclasses, hashlib, itertools, json, os, random, re
import signal, subprocess, sys, threading, time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = {"train.steps": 30, "train.batch_size": 4, "data.seq_len": 32, "checkpoint.every_steps": 5, "checkpoint.keep": 2,
        "eval.every_steps": 10, "eval.batches": 2, "optim.warmup_steps": 5, "train.log_every": 1}
STEPS, EVERY, EVAL_EVERY = 30, 5, 10
FINETUNE = {"train.steps": 16, "train.batch_size": 8, "train.log_every": 1, "task.seq_len": 32, "task.verses": 2, "eval.every_steps": 4,
            "eval.max_examples": 32, "eval.batch_size": 32, "checkpoint.every_steps": 4, "optim.warmup_steps": 2, "optim.lr": 3e-3}
TRAIN_KEYS, EVAL_KEYS = ("step", "loss", "lr", "grad_norm", "tokens_seen"), ("step", "eval_loss", "eval_bpb")
STOPPED, BAD_INPUT, TIMEOUT_S = 75, 2, 300  # exit codes: stopped and resumable; bad input
IN_USE = re.compile(r"in use|busy|locked", re.I)
NO_SPACE = re.compile(r"space|ENOSPC|EFBIG|too large|full", re.I)
EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b")


@dataclasses.dataclass
class Result:
    name: str
    passed: bool
    details: str  # notes, then what was checked (PASS) or what differed (FAIL)
    seconds: float
    values: dict  # the concrete observations: exit codes, steps, error lines


@dataclasses.dataclass
class Outcome:
    rc: int | None  # None: still running at the timeout (then killed)
    out: str
    err: str

    def errors(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("error:")]

    def warnings(self) -> list[str]:
        return [line for line in (self.out + "\n" + self.err).splitlines() if line.startswith("warning:")]

    def describe(self) -> str:
        """Exit code, stderr size and its most telling line: an error:, else an exception, else the last."""
        lines = [line for line in self.err.splitlines() if line.strip()]
        telling = self.errors() or [line for line in lines if EXCEPTION.match(line)] or lines or ["(stderr empty)"]
        return f"{'hung' if self.rc is None else f'exit {self.rc}'}, {len(lines)} stderr lines: {telling[-1][:240]!r}"


class Checks:
    """One scenario's checks (a failed one keeps what differed), notes, values and random source."""

    def __init__(self, rng: random.Random):
        self.passed, self.failed, self.notes, self.values, self.rng = [], [], [], {}, rng

    def __call__(self, ok: bool, what: str, differed: str = "") -> bool:
        (self.passed if ok else self.failed).append(what if ok or not differed else f"{what}: {differed}")
        return ok


class Proc:
    """A CLI subprocess whose stdout and stderr go to files under <root>/logs."""

    def __init__(self, lab: "Lab", argv: list[str], label: str):
        self.log = lab.root / "logs" / f"{next(lab.counter):03d}-{label}"
        while Path(f"{self.log}.out").exists():  # a reused --workdir keeps its earlier logs
            self.log = lab.root / "logs" / f"{next(lab.counter):03d}-{label}"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{self.log}.out", "w") as out, open(f"{self.log}.err", "w") as err:
            self.popen = subprocess.Popen(argv, cwd=lab.repo, env=lab.env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self, signum=signal.SIGKILL) -> bool:
        """Send signum if the process still runs; True if it was sent."""
        if not self.alive():
            return False
        os.kill(self.pid, signum)
        return True

    def finish(self, timeout: float = TIMEOUT_S) -> Outcome:
        try:
            rc = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            rc = None
        return Outcome(rc, Path(f"{self.log}.out").read_text(errors="replace"), Path(f"{self.log}.err").read_text(errors="replace"))


def wait_until(proc: Proc, condition, timeout: float = TIMEOUT_S, poll_s: float = 0.005) -> bool:
    """Poll until condition() (True) or the process ends or the time is up (False)."""
    deadline = time.monotonic() + timeout
    while proc.alive() and time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll_s)
    return False


def read_records(path: Path) -> tuple[list[dict], int]:
    """metrics.jsonl's records and the number of lines that are not JSON."""
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return [], 0
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return records, len(lines) - len(records)


def logged(workdir: Path, wanted) -> bool:
    return any(wanted(record) for record in read_records(Path(workdir) / "metrics.jsonl")[0])


def curve(workdir: Path) -> dict:
    """The per-step records a rerun must reproduce exactly (floats as repr), timing fields left out."""
    records, torn = read_records(Path(workdir) / "metrics.jsonl")
    return {"train": [tuple(repr(r.get(k)) for k in TRAIN_KEYS) for r in records if "loss" in r],
            "eval": [tuple(repr(r.get(k)) for k in EVAL_KEYS) for r in records if "eval_loss" in r], "torn": torn}


def curve_diff(workdir: Path, want: dict) -> str | None:
    got = curve(workdir)
    if got["torn"]:
        return f"metrics.jsonl has {got['torn']} line(s) that are not JSON"
    for kind, keys in (("train", TRAIN_KEYS), ("eval", EVAL_KEYS)):
        for index, (a, b) in enumerate(zip(got[kind], want[kind])):
            if a != b:
                return f"{kind} record {index} is {dict(zip(keys, a))}, reference {dict(zip(keys, b))}"
        if len(got[kind]) != len(want[kind]):
            return f"{len(got[kind])} {kind} records (last steps {[r[0] for r in got[kind]][-5:]}), reference {len(want[kind])}"
    return None


def summary_diff(workdir: Path, want: dict) -> str | None:
    try:
        got = json.loads((Path(workdir) / "summary.json").read_text())
    except (OSError, json.JSONDecodeError) as error:
        return f"no readable summary.json ({type(error).__name__})"
    bad = [f"{k} {got.get(k)!r} != {want[k]!r}" for k in ("final_loss", "final_eval_loss") if repr(got.get(k)) != repr(want[k])]
    return "; ".join(bad) or None


def check_curve(c: Checks, label: str, workdir: Path, reference: dict) -> None:
    diff = curve_diff(workdir, reference["curve"])
    c(diff is None, f"{label}: metrics.jsonl == reference", diff or "")


def json_field(path: Path, key: str):
    try:
        return json.loads(path.read_text()).get(key)
    except (OSError, json.JSONDecodeError):
        return None


def snapshot(root: Path) -> dict:
    """Every file under root: (size, mtime_ns, sha1), to prove that nothing changed."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


def disk_bytes(root: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in Path(root).rglob("*") if p.is_file())


def mount(*args: str) -> str | None:
    """mount(8); None on success, else its message."""
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    return None if done.returncode == 0 else (done.stderr.strip() or f"mount exited {done.returncode}")


def unmount(target: Path) -> None:
    if subprocess.run(["umount", str(target)], capture_output=True).returncode:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def proc_stat(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name: [state, ppid, ...]; [] if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def process_alive(pid: int) -> bool:
    return proc_stat(pid)[:1] not in ([], ["Z"])


def children_of(pid: int) -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and proc_stat(int(p.name))[1:2] == [str(pid)]]


class Lab:
    """Where runs go, the data they read, and the reference runs (made once, shared by scenarios)."""

    def __init__(self, root, points: int = 20, seed: int = 0, repo=REPO, data_dir: str | None = None, compile_cache: bool = True):
        self.root, self.points, self.seed, self.repo = Path(root), points, seed, Path(repo)
        self.root.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1",
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(self.repo), os.environ.get("PYTHONPATH")]))}
        if compile_cache:
            self.env.update(JAX_COMPILATION_CACHE_DIR=str(self.root / "jax_cache"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                            JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
        self.counter, self._data_dir, self._cache, self._locks = itertools.count(1), data_dir, {}, collections.defaultdict(threading.Lock)

    @property
    def data_dir(self) -> str:
        def prepare():
            path = str(self.root / "tfds")
            subprocess.run([sys.executable, "-c", "import sys; from bigmodel.data.kjv import prepare_kjv; prepare_kjv(sys.argv[1])",
                            path], cwd=self.repo, env=self.env, check=True, capture_output=True)
            return path
        return self._data_dir or self.cached("data_dir", prepare)

    def cached(self, key: str, make):
        """make() once per key, also when scenarios run in threads (tests/test_chaos.py)."""
        with self._locks[key]:
            if key not in self._cache:
                self._cache[key] = make()
            return self._cache[key]

    def new_dir(self, label: str) -> Path:
        """A fresh <root>/<label>-NNN path (a reused --workdir keeps its earlier runs)."""
        while (path := self.root / f"{label}-{next(self.counter):03d}").exists():
            pass
        return path

    def train_argv(self, workdir, *extra: str) -> list[str]:
        settings = {**TINY, "data.data_dir": self.data_dir}
        return [sys.executable, "-m", "bigmodel", "train", "--config", "configs/lm.py:L2", "--workdir", str(workdir),
                *[f"--config.{k}={v}" for k, v in settings.items()], *extra]

    def eval_argv(self, workdir) -> list[str]:
        return [sys.executable, "-m", "bigmodel", "eval", "--workdir", str(workdir)]

    def finetune_argv(self, run: Path, workdir: Path) -> list[str]:
        return [sys.executable, "-m", "bigmodel", "finetune", "--from", str(run), "--task", "kjv_books", "--workdir", str(workdir),
                *[f"--config.{k}={v}" for k, v in FINETUNE.items()]]

    def export_argv(self, run: Path, out: Path) -> list[str]:
        return [sys.executable, "-m", "bigmodel", "export", "--workdir", str(run), "--out", str(out)]

    def sweep_argv(self, experiment: Path, workdir: Path) -> list[str]:
        return [sys.executable, "-m", "bigmodel", "sweep", str(experiment), "--workdir", str(workdir)]

    def start(self, argv, label: str) -> Proc:
        return Proc(self, argv, label)

    def run(self, argv, label: str, timeout: float = TIMEOUT_S) -> Outcome:
        return self.start(argv, label).finish(timeout)

    def reference(self) -> dict:
        """One uninterrupted run of the tiny config: its curve, summary and timings."""
        def make():
            workdir, started = self.new_dir("reference"), time.perf_counter()
            outcome = self.run(self.train_argv(workdir), "reference")
            if outcome.rc != 0:
                raise RuntimeError(f"the reference run failed ({outcome.describe()}): nothing to compare against")
            step_times = sorted(r["step_time_s"] for r in read_records(workdir / "metrics.jsonl")[0] if "step_time_s" in r)
            return {"workdir": workdir, "curve": curve(workdir), "summary": json.loads((workdir / "summary.json").read_text()),
                    "seconds": time.perf_counter() - started, "step_time_s": step_times[len(step_times) // 2]}
        return self.cached("reference", make)

    def stopped_run(self, step: int = 20) -> tuple[Path, int]:
        """A run stopped by --stop_at_step (checkpoints step-5 and step) and its exit code; copy it before use."""
        def make():
            workdir = self.new_dir(f"stopped{step}")
            outcome = self.run(self.train_argv(workdir, "--stop_at_step", str(step)), f"stop{step}")
            if outcome.rc not in (0, STOPPED):
                raise RuntimeError(f"--stop_at_step {step} failed ({outcome.describe()})")
            return workdir, outcome.rc
        return self.cached(f"stopped{step}", make)

    def experiment(self, runs: int = 3, steps: int = 15) -> Path:
        """A tiny study file: `runs` small models of `steps` steps, fitted and plotted when runs >= 3."""
        path = self.root / f"experiment_{runs}x{steps}.py"
        shapes = ", ".join(f"shape_of({n}, {d})" for n, d in [(1, 32), (1, 64), (2, 32), (2, 64)][:runs])
        overrides = {"train.batch_size": 4, "data.seq_len": 32, "eval.batches": 2, "train.log_every": 1, "checkpoint.every_steps": 5,
                     "eval.every_steps": 5, "optim.warmup_steps": 3, "data.data_dir": self.data_dir}
        analysis = {"law": "power", "x": "non_embedding_params"} if runs >= 3 else None
        path.write_text("from bigmodel.scaling.sweep import SizeGrid, Study, shape_of\n\n\ndef get_study():\n"
                        f"    return Study(base_config='configs/lm.py:L2', overrides={overrides!r},\n"
                        f"                 grid=SizeGrid([{shapes}], tokens={steps * 4 * 32}), analysis={analysis!r})\n")
        return path


SCENARIOS = {}


def scenario(function):
    """Register a scenario: function(lab, checks, **options) → wrapper(lab, **options) → Result."""
    def wrapper(lab: Lab, **options) -> Result:
        checks, started = Checks(random.Random(f"{lab.seed}:{function.__name__}")), time.perf_counter()
        try:
            function(lab, checks, **options)
        except Exception as error:  # noqa: BLE001 — a harness or setup failure is that scenario's FAIL
            checks(False, "scenario raised", f"{type(error).__name__}: {error}")
        details = "; ".join(checks.notes + (checks.failed or checks.passed))
        return Result(function.__name__, not checks.failed, details, time.perf_counter() - started, checks.values)
    wrapper.__name__ = wrapper.__qualname__ = function.__name__
    wrapper.__doc__ = function.__doc__
    SCENARIOS[function.__name__] = wrapper
    return wrapper


def kill_rounds(lab: Lab, c: Checks, points: int, label: str, argv, kill_somewhere, check_run) -> None:
    """Run argv(workdir) and SIGKILL it (kill_somewhere(proc, workdir) → where, or None if it ended
    first), rerunning the same command until it exits 0; then a fresh workdir while kills are due.
    check_run(workdir) judges every finished run."""
    kills, runs, exit_codes, failed = [], 0, collections.Counter(), False
    while len(kills) < points and runs < points + 3 and not failed:
        workdir, runs, outcome = lab.new_dir(label), runs + 1, None
        for _ in range(4 * points + 10):
            proc = lab.start(argv(workdir), label)
            where = kill_somewhere(proc, workdir) if len(kills) < points else None
            outcome = proc.finish()
            exit_codes[outcome.rc] += 1
            if not where:
                break
            kills.append(where)
        failed = not c(outcome.rc == 0, f"run {runs} finishes after {len(kills)} kills", outcome.describe())
        if not failed:
            check_run(workdir)
    c.values.update(kills=kills, runs=runs, exit_codes=dict(exit_codes))
    kinds = dict(collections.Counter(where.split("@")[0] for where in kills))
    c(len(kills) >= points, f"{len(kills)} SIGKILLs over {runs} run(s) {kinds}", f"only {len(kills)} of {points} landed")
