"""The package's shape: folders are the layers and imports run one way (the import-linter
contract in pyproject.toml, also run by `make lint`), and no module grows past 400 lines."""

from __future__ import annotations

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
