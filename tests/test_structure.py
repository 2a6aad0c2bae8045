"""The package's shape: folders are the layers and imports run one way (the import-linter
contract in pyproject.toml, also run by `make lint`), and no module grows past 400 lines."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "pytest_llamastate"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    if not LINT_IMPORTS.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_package_keeps_its_import_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "culprit"),
    [
        # a cycle: the store (state) reaching up to the stack
        (
            "state/store.py",
            "from ..stack import LlamaStack\n",
            "pytest_llamastate.state.store -> pytest_llamastate.stack",
        ),
        # a function-local import does not dodge the check: storage reaching up to state
        (
            "storage/sqlite.py",
            "def _dodge() -> None:\n    from ..state.persistent import Lease\n",
            "pytest_llamastate.storage.sqlite -> pytest_llamastate.state.persistent",
        ),
        # the plugin and the command are side by side: neither imports the other
        (
            "plugin/reports.py",
            "from ..cli import inspection\n",
            "pytest_llamastate.plugin.reports -> pytest_llamastate.cli.inspection",
        ),
    ],
)
def test_an_import_against_the_layers_breaks_the_contract(
    tmp_path: Path, module: str, line: str, culprit: str
) -> None:
    shutil.copytree(
        PACKAGE, tmp_path / "pytest_llamastate", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with (tmp_path / "pytest_llamastate" / module).open("a") as f:
        f.write("\n" + line)
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout
    assert "1 broken" in result.stdout
    assert culprit in result.stdout


def test_no_module_is_over_400_lines() -> None:
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines())
        for path in PACKAGE.rglob("*.py")
    }
    assert {path: n for path, n in sizes.items() if n > 400} == {}


def test_the_folders_are_the_layers() -> None:
    """Every module lives in a layer folder; the release table is one of them."""
    top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert top == set()
    assert folders == {"plugin", "cli", "stack", "state", "storage", "releases", "process"}


def _has_behaviour(path: Path) -> bool:
    """A module defining a function or class (re-exports and scripts of one call do not)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(isinstance(n, (ast.FunctionDef, ast.ClassDef)) for n in ast.walk(tree))


def _mapped_tests() -> dict[str, list[str]]:
    """docs/architecture.md's test table: module -> the test files that test it."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = text.split("## Tests: which file tests which module", 1)[1].split("\n## ", 1)[0]
    mapped: dict[str, list[str]] = {}
    for row in table.splitlines():
        cells = row.split("|")
        if len(cells) == 4 and re.match(r"`(compat/)?test_", cells[1].strip()):
            files = re.findall(r"`([^`]+)`", cells[1])
            for module in re.findall(r"`([^`]+)`", cells[2]):
                mapped.setdefault(module, []).extend(files)
    return mapped


def test_every_module_has_its_test_file() -> None:
    """tests/test_<module>.py, or the files the architecture page's table names for it."""
    mapped = _mapped_tests()
    untested, stale = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).as_posix()
        own = path.parent.name if path.stem == "__init__" else path.stem
        names = {f"test_{path.parent.name}_{own}.py"}
        if len(path.relative_to(PACKAGE).parts) <= 2:  # not in a folder of a folder
            names.add(f"test_{own}.py")
        if not _has_behaviour(path) or any((ROOT / "tests" / n).is_file() for n in names):
            continue
        files = mapped.pop(module, [])
        if not files:
            untested.append(module)
        stale += [f for f in files if not (ROOT / "tests" / f).is_file()]
    assert untested == [], "no test file: add tests/test_<module>.py or a line to the table"
    assert stale == [], "the table names test files that do not exist"
    assert mapped == {}, "the table names modules that do not exist or have their own file"
