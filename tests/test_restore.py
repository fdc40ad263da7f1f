"""`bigmodel.restore`, the one home for opening a finished run: what it accepts as a train run,
and the rule that keeps it the one home (no command module lends library code to another)."""

import ast
from pathlib import Path

import pytest

from bigmodel.config import load_config, to_json
from bigmodel.restore import saved_train_config

PACKAGE = Path(__file__).resolve().parents[1] / "bigmodel"
# Modules that are a command's body: they import libraries, and nothing but the CLI imports them.
COMMAND_MODULES = ("bigmodel.evaluate", "bigmodel.inference.generate", "bigmodel.inference.serve", "bigmodel.inference.export",
                   "bigmodel.finetune.command", "bigmodel.scaling.compare", "bigmodel.data.prepare_command",
                   "bigmodel.scaling.recommend_command")
FRONT_DOOR = ("cli.py", "__main__.py")


@pytest.mark.parametrize("config_text, readable", [
    (None, False),  # no config.json
    ("{oops", False),  # not JSON
    ('{"task": {"name": "kjv_books"}, "backbone": {"init_from": "runs/x"}}', False),  # a fine-tuning run's
    (to_json(load_config("configs/lm.py:L1")), True),
])
def test_a_train_run_is_a_readable_config_json_with_a_model_group(tmp_path, config_text, readable):
    if config_text is not None:
        (tmp_path / "config.json").write_text(config_text)
    saved = saved_train_config(tmp_path)
    assert (saved is not None) == readable
    if readable:
        assert saved["model"]["n_layers"] == load_config("configs/lm.py:L1").model.n_layers


def imported_modules(path: Path) -> set[str]:
    """Every bigmodel module `path` imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bigmodel"):
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.startswith("bigmodel")}
    return names


def test_no_module_but_the_cli_imports_a_command_module():
    missing = [module for module in COMMAND_MODULES if not (PACKAGE.parent / (module.replace(".", "/") + ".py")).is_file()]
    assert missing == []  # a module that moved updates the list rather than silencing the rule
    offenders = [f"{path.relative_to(PACKAGE.parent)} imports {module}"
                 for path in sorted(PACKAGE.rglob("*.py")) if path.name not in FRONT_DOOR
                 for module in sorted(imported_modules(path) & set(COMMAND_MODULES))
                 if module != ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)]
    assert offenders == []
