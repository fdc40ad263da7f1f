"""The front page and the docs site say only what is true of the code beside them.

Every relative link in README.md and docs/ names a file that exists (and, into a markdown page,
a heading it has); every `python -m bigmodel COMMAND --flag` shown is a real command with that
flag; every `from bigmodel... import name` shown imports; the study the guide tells a reader to
write expands into the runs it shows; README's layout names files that exist. `mkdocs build
--strict` (CI) checks the site's own links again, with the real renderer.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import re
import shlex
import unicodedata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def page_id(page: Path) -> str:
    return str(page.relative_to(REPO))


def prose_and_code(text: str) -> tuple[list[str], list[str]]:
    """The page's lines outside fenced code blocks, and those inside them."""
    prose, code, fenced = [], [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        (code if fenced else prose).append(line)
    return prose, code


def slug(heading: str) -> str:
    """The anchor Python-Markdown's toc extension (mkdocs' default) gives a heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.replace("`", "").replace("*", "")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


@functools.cache
def anchors(page: Path) -> set[str]:
    prose, _ = prose_and_code(page.read_text())
    return {slug(line.lstrip("#").strip()) for line in prose if re.match(r"#{1,6} ", line)}


def relative_links(page: Path) -> list[str]:
    prose, _ = prose_and_code(page.read_text())
    targets = [match for line in prose for match in LINK.findall(line)]
    return [target for target in targets if not re.match(r"[a-z]+:", target)]  # http:, https:, mailto:


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_relative_link_names_a_file_and_heading_that_exist(page):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no file {resolved}")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: {resolved.name} has no heading with anchor #{anchor}")
    assert not broken, f"{page_id(page)}: " + "; ".join(broken)


def test_the_link_check_sees_links_and_headings():
    """Guard against a check that passes because it reads nothing."""
    assert "docs/results.md" in relative_links(REPO / "README.md")
    assert "2026-11-23-isoflop-profiles-approaches-2-and-3" in anchors(REPO / "docs/results.md")
    assert slug("`plan`'s memory estimate") == "plans-memory-estimate"


# ----------------------------------------------------------------------------- commands


def shell_commands(page: Path) -> list[list[str]]:
    """Every `python -m bigmodel ...` command in the page's code blocks and inline code, as argv
    from `bigmodel` on (comments and the rest of a `&&` chain dropped)."""
    prose, code = prose_and_code(page.read_text().replace("\\\n", " "))  # continuation lines joined
    texts = [line.split("  #")[0] for line in code if not line.lstrip().startswith("#")]
    texts += [span for line in prose for span in re.findall(r"`([^`]*python3? -m bigmodel [^`]*)`", line)]
    commands = []
    for text in texts:
        for part in re.split(r"&&|\|", text):
            match = re.search(r"python3? -m bigmodel (.*)", part)
            if match:
                try:
                    commands.append(shlex.split(match.group(1).rstrip("&; ")))
                except ValueError:  # an unbalanced quote inside prose: not a command we can check
                    continue
    return commands


@functools.cache
def help_text(*command: str) -> str:
    from bigmodel.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    return out.getvalue()


def command_names() -> set[str]:
    choices = re.search(r"\{([a-z,]+)\}", help_text())
    return set(choices.group(1).split(","))


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_command_shown_is_real_with_real_flags(page):
    names = command_names()
    wrong = []
    for argv in shell_commands(page):
        if not argv or argv[0] in ("-h", "--help") or argv[0] in ("<command>", "COMMAND"):
            continue
        if argv[0] not in names:
            wrong.append(f"unknown command {argv[0]!r}")
            continue
        flags = {word.split("=")[0] for word in argv[1:] if word.startswith("--") and not word.startswith("--config.")}
        documented = set(re.findall(r"--[a-z_-]+", help_text(argv[0])))
        wrong += [f"{argv[0]} has no flag {flag}" for flag in sorted(flags - documented)]
    assert not wrong, f"{page_id(page)}: " + "; ".join(wrong)


def test_the_command_check_sees_commands():
    commands = shell_commands(REPO / "docs/inference.md")
    assert ["serve", "--workdir", "runs/demo/L2-d96-tok1.6M-lr6.9e-3-s0-cd20", "--port", "8765"] in commands
    assert {"train", "sweep", "fit", "compare"} <= command_names()
    slurm = [argv for argv in shell_commands(REPO / "docs/clusters.md") if "slurm" in argv]
    assert slurm and "--partition" in slurm[0]  # a command continued over two lines is read whole


def test_examples_leave_the_repository_root_and_port_8000_alone():
    """A new user's checkout stays clean and a busy port 8000 breaks no example."""
    for page in PAGES:
        for argv in shell_commands(page):
            if argv and argv[0] == "export":
                out = argv[argv.index("--out") + 1]
                assert out.startswith(("/tmp/", "runs/")), f"{page_id(page)}: export writes {out} into the checkout"
            if argv and argv[0] == "serve":
                assert "--port" in argv, f"{page_id(page)}: serve example without --port relies on port 8000 being free"
        assert "localhost:8000" not in page.read_text(), f"{page_id(page)} talks to port 8000"


# ----------------------------------------------------------------------------- python


def python_imports(page: Path) -> list[tuple[str, list[str]]]:
    found = re.findall(r"from (bigmodel[\w.]*) import ([\w, ]+)", page.read_text())
    # `name as alias` imports `name`
    return [(module, [name.split(" as ")[0].strip() for name in names.split(",") if name.strip()]) for module, names in found]


@pytest.mark.parametrize("page", [page for page in PAGES if python_imports(page)], ids=page_id)
def test_every_python_import_shown_resolves(page):
    for module_name, names in python_imports(page):
        module = importlib.import_module(module_name)
        missing = [name for name in names if not hasattr(module, name)]
        assert not missing, f"{page_id(page)}: {module_name} has no {missing}"


def test_the_study_guide_example_expands_to_the_runs_it_shows(tmp_path, monkeypatch):
    from bigmodel.scaling.sweep import expand

    text = (REPO / "docs/studies.md").read_text()
    example = re.search(r"Save this as `experiments/width\.py`:\n\n```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {}
    monkeypatch.chdir(tmp_path)  # the base config resolves to the repository's copy from anywhere
    exec(compile(example, "experiments/width.py", "exec"), namespace)
    runs = expand(namespace["get_study"]())
    assert len(runs) == 12
    assert runs[0].name == "L2-d32-tok801K-lr1.2e-2-s0" and runs[-1].name == "L2-d128-tok801K-lr6e-3-s2"
    assert f"# {len(runs)} runs;" in text and runs[0].name in text and runs[-1].name in text


# ----------------------------------------------------------------------------- layout

# Named by README's layout (the target layout of the 2026-12 restructure) before the branches that
# create them are merged; empty this set once they are, so the layout is checked in full.
def layout_names() -> set[str]:
    block = re.search(r"## Layout\n\n```\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    return set(re.findall(r"(?<![\w/.])([\w.]+\.py|[\w]+/)(?=[\s,)]|$)", block))


def test_the_layout_names_only_files_and_folders_that_exist():
    where = [REPO, REPO / "configs", REPO / "tools", REPO / "bigmodel", REPO / "bigmodel" / "scaling", REPO / "bigmodel" / "inference"]
    missing = {name for name in layout_names() if not any((folder / name).exists() for folder in where)}
    assert {"train.py", "sweep.py", "inference/", "backends/", "lm.py"} <= layout_names()
    assert not missing, f"README's layout names {sorted(missing)}, which do not exist"
