"""The fast tier (`pytest -m "not slow"`, docs/contributing.md): the `slow` marker is registered, and
deselecting it leaves out the files that kill trainers, start clusters or train for minutes while
keeping those files' quick tests and every quick file."""

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# Whole files marked slow (pytestmark): each spends minutes of CPU on real multi-process training.
SLOW_FILES = ("test_chaos.py", "test_determinism.py")
# Files with a slow half: the real runs are marked, the pure functions stay in the fast tier.
MIXED_FILES = ("test_train.py", "test_ray_backend.py")
QUICK_FILE = "test_registry.py"


def collected(*arguments: str) -> list[str]:
    """Test ids pytest collects from the slow, mixed and quick files with `arguments` added."""
    files = [f"tests/{name}" for name in (*SLOW_FILES, *MIXED_FILES, QUICK_FILE)]
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *arguments, *files],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [line for line in result.stdout.splitlines() if "::" in line]


def in_file(ids: list[str], name: str) -> list[str]:
    return [test for test in ids if test.startswith(f"tests/{name}::")]


def test_the_slow_marker_is_registered(pytestconfig):
    assert any(line.startswith("slow:") for line in pytestconfig.getini("markers"))


def test_not_slow_leaves_out_the_heavy_files_and_keeps_the_quick_tests():
    everything, fast = collected(), collected("-m", "not slow")
    for name in SLOW_FILES:
        assert in_file(everything, name) and not in_file(fast, name), name
    for name in MIXED_FILES:
        assert 0 < len(in_file(fast, name)) < len(in_file(everything, name)), name
    assert in_file(fast, QUICK_FILE) == in_file(everything, QUICK_FILE) != []
    assert set(fast) < set(everything)
