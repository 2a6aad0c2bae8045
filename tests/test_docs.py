"""Every example of the README and the docs runs, as the user would run it.

Each page is one test (its examples build on each other, as a reader's folder does); how
a page's blocks are run is in ``docexamples.py``. The last tests show that a broken example
fails, and that the ``llamastate`` help and the docs agree.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest
from docexamples import ExampleError, blocks, mask, run_page
from openai_server import running_openai_server

from pytest_llamastate.releases import detect

ROOT = Path(__file__).parent.parent
PAGES = [
    p.relative_to(ROOT)
    for p in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    if p.is_file()
]


#: Pages whose examples call a model, and how many chat requests reach it: they run
#: against the local fake model (``OPENAI_BASE_URL``, as a reader points them at theirs);
#: the inference page records once, and its replays must not reach the model.
MODEL_PAGES = {Path("docs/inference.md"): 1}

#: The pages worked through on OGX too: the front door, the first page, and every page with
#: an example for one flavor only. The others use nothing that differs by flavor that the
#: rest of the suite does not run on both; they run on llama-stack, the default install
#: (on OGX they were about half of this file's CPU, the largest of the suite).
BOTH_FLAVORS = {Path("README.md"), Path("docs/getting-started.md")}


def _runs_here(page: Path) -> bool:
    if detect().name != "ogx" or page in BOTH_FLAVORS:
        return True
    return any(b.directive.get("flavor") for b in blocks(ROOT / page))


@pytest.mark.parametrize("page", PAGES, ids=[p.as_posix() for p in PAGES])
def test_examples_of(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not _runs_here(page):
        pytest.skip("no example of this page differs by flavor: run on llama-stack")
    with ExitStack() as running:
        model = None
        if page in MODEL_PAGES:
            model = running.enter_context(running_openai_server(model_id="gpt-4o-mini"))
            monkeypatch.setenv("OPENAI_BASE_URL", model.base_url)
            monkeypatch.setenv("OPENAI_API_KEY", "fake")
        ran = run_page(ROOT / page, tmp_path)  # raises on the first example that fails
    examples = [b for b in blocks(ROOT / page) if b.lang in ("python", "console")]
    # A page with examples ran some of them, or says why each was skipped.
    assert ran.ran + len(ran.skipped) >= min(len(examples), 1), page
    if model is not None:
        chats = [r for r, _ in model.requests if r.endswith("/chat/completions")]
        assert len(chats) == MODEL_PAGES[page], model.requests


# --- the collector itself --------------------------------------------------------------


def _page(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "page.md"
    path.write_text(text)
    return path


def test_a_broken_example_fails_naming_page_and_line(tmp_path: Path) -> None:
    page = _page(
        tmp_path,
        "# A page\n\nSome prose.\n\n```python\n# test_broken.py\n"
        "def test_store(llama_store):\n    assert llama_store.path.is_file()   # it is a folder\n"
        "```\n",
    )
    with pytest.raises(ExampleError) as info:
        run_page(page, tmp_path / "run")
    message = str(info.value)
    assert message.startswith(f"{page}:5: `pytest test_broken.py` ended with {{'failed': 1}}")
    assert "assert False" in message


def test_a_working_example_passes_and_files_build_on_each_other(tmp_path: Path) -> None:
    page = _page(
        tmp_path,
        "```yaml\n# toolgroups.yaml\ntoolgroups:\n  - {toolgroup_id: mcp::docs, mcp_endpoint: "
        "'http://127.0.0.1:9/mcp'}\n```\n\n```ini\n# pytest.ini\n[pytest]\n"
        "llama_toolgroups_file = toolgroups.yaml\n```\n\n```python\n"
        "def test_seeded(llama_store):\n"
        "    assert [t.identifier for t in llama_store.toolgroups()] == ['mcp::docs']\n```\n",
    )
    assert run_page(page, tmp_path / "run").ran == 1


def test_expected_outcomes_and_output_are_checked(tmp_path: Path) -> None:
    text = (
        '<!-- example: outcome="passed=1 failed=1" -->\n```python\n# test_two.py\n'
        "def test_ok(llama_store):\n    pass\n\n"
        "def test_bad(llama_store):\n    assert 0\n```\n\n"
        "<!-- example: output -->\n```text\n{line}\n```\n"
    )
    ok = _page(tmp_path, text.format(line="state of this test: /tmp/pytest-of-me/pytest-3/..."))
    assert run_page(ok, tmp_path / "ok").ran == 1
    wrong = _page(tmp_path, text.format(line="state of that test: ..."))
    with pytest.raises(ExampleError, match="did not print, in this order"):
        run_page(wrong, tmp_path / "wrong")


def test_console_sessions_are_checked_against_real_output(tmp_path: Path) -> None:
    text = "```console\n$ llamastate show nowhere\n{line}\n```\n"
    ok = _page(tmp_path, text.format(line="llamastate: nowhere: no such folder"))
    assert run_page(ok, tmp_path / "ok").ran == 1
    wrong = _page(tmp_path, text.format(line="llamastate: nowhere: not a store"))
    with pytest.raises(ExampleError, match="llamastate show nowhere"):
        run_page(wrong, tmp_path / "wrong")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("```yaml\na: [1\n```\n", "the yaml block does not parse"),
        ('<!-- example: skip="" -->\n```python\npass\n```\n', "skip needs a reason"),
        ("<!-- example: bogus -->\n```python\npass\n```\n", "unknown example directive"),
        ("```console\n$ rm -rf /\n```\n", "only pytest and llamastate commands run"),
    ],
    ids=["bad-yaml", "skip-without-reason", "unknown-directive", "other-command"],
)
def test_page_mistakes_are_refused(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(ExampleError, match=error):
        run_page(_page(tmp_path, text), tmp_path / "run")


def test_masks_hide_only_what_varies() -> None:
    assert mask("crm: built in 1.97s: /tmp/pytest-of-me/pytest-12/x") == mask(
        "crm: built in 0.4s: /tmp/h/pytest-of-root/pytest-0/x"
    )
    assert mask("toolgroups (2):") != mask("toolgroups (3):")
    assert mask("3 passed in 93.10s (0:01:33)") == mask("3 passed in 2.71s")
    assert mask("crm  template  crm  4m  41.8K  1") == mask("crm  template  crm  5s  41.8K  1")


# --- the command's help and the docs ---------------------------------------------------


def _help(*args: str) -> str:
    script = Path(sys.executable).with_name("llamastate")
    done = subprocess.run([script, *args, "--help"], capture_output=True, text=True, check=True)
    return done.stdout


def test_every_llamastate_command_is_documented_in_the_guides() -> None:
    commands = re.findall(r"^ {4}(\w+) {2,}", _help(), flags=re.MULTILINE)
    assert commands == ["ls", "show", "diff", "env", "reset"]
    guide = (ROOT / "docs" / "guides" / "debugging.md").read_text()
    for command in commands:
        assert f"$ llamastate {command}" in guide, command
        assert _help(command).startswith(f"usage: llamastate {command}"), command


def test_the_debugging_guide_names_what_json_output_holds() -> None:
    """``show --json`` and ``diff --json``: the keys their help names (``test_cli.py``
    checks those against the output) are the keys the guide names."""
    guide = (ROOT / "docs" / "guides" / "debugging.md").read_text()
    for command in ("show", "diff"):
        text = " ".join(_help(command).split())
        keys = text.split("--json one JSON object: ", 1)[1].split(",")
        assert len(keys) > 3, text
        assert [k.strip() for k in keys if f"`{k.strip()}`" not in guide] == [], command


def test_the_cli_reference_is_generated_from_the_help() -> None:
    page = (ROOT / "docs" / "reference" / "cli.md").read_text()
    assert "<!-- reference: cli -->" in page


# --- install instructions -------------------------------------------------------------

#: An install command (pip, uv, pipx, poetry) up to the end of its line or inline code.
_INSTALL = re.compile(r"\b(?:pip3?|uv pip|uv|pipx|poetry) (?:install|add)\b[^\n`]*")
#: The plugin named as a package index requirement: not a path (``./pytest-llamastate``),
#: not a direct reference (``pytest-llamastate @ git+...``), not a wheel file.
_FROM_INDEX = re.compile(
    r"(?<![\w./-])['\"]?pytest[-_]llamastate(?:\[[\w,]*\])?(?:[=<>~!]=?[\w.*]+)?['\"]?"
    r"(?=[\s'\"]|$)(?!\s*@)"
)


def _index_installs(text: str) -> list[str]:
    return [c for c in _INSTALL.findall(text) if _FROM_INDEX.search(c)]


@pytest.mark.parametrize(
    ("command", "from_index"),
    [
        ("pip install pytest-llamastate", True),
        ("pip install 'pytest-llamastate[stack,postgres]' pytest-xdist", True),
        ("uv add pytest-llamastate==0.1.0", True),
        ("pip install './pytest-llamastate[stack]'", False),
        ("pip install ./pytest-llamastate", False),
        ("pip install 'pytest-llamastate[stack] @ git+https://example.org/x.git'", False),
        ("pip install './wheels/pytest_llamastate-0.1.0-py3-none-any.whl[stack]'", False),
        ("pip install -e . pytest-xdist", False),
    ],
)
def test_installs_from_the_index_are_recognised(command: str, from_index: bool) -> None:
    assert bool(_index_installs(f"run `{command}` first")) is from_index


def test_no_page_installs_the_plugin_from_pypi() -> None:
    """The README says the plugin is not on PyPI: no page may tell a user to install it
    from there (the README, the docs and the changelog's install lines alike). When it is
    published, the README says so and this test has nothing to check."""
    readme = (ROOT / "README.md").read_text()
    if "not on PyPI" not in readme:
        pytest.skip("the README no longer says the plugin is not on PyPI")
    found = {
        page.as_posix(): hits
        for page in [*PAGES, Path("CHANGELOG.md")]
        if (hits := _index_installs((ROOT / page).read_text()))
    }
    assert found == {}


# --- the compatibility tables and the release table ------------------------------------

_ROW = re.compile(
    r"^\| (llama-stack|OGX) (\d+\.\d+\.\d+) \| ([^|]+) \| `([^`]+)`[^|]*\|(?: ([^|]*) \|)?", re.M
)


def _passing_releases() -> set[str]:
    """The releases whose suite `make test` runs: the two main venvs and COMPAT_RELEASES."""
    makefile = (ROOT / "Makefile").read_text()
    main = re.findall(r"^VENV_([\w.-]+) :=", makefile, flags=re.MULTILINE)
    assert main, "the Makefile no longer names its main venvs (VENV_<release>)"
    done = subprocess.run(
        ["make", "-s", "--eval", "print-compat: ; @echo $(COMPAT_RELEASES)", "print-compat"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return {*main, *done.stdout.split()}


@pytest.mark.parametrize("page", ["README.md", "docs/compatibility.md"])
def test_compatibility_tables_say_what_the_release_table_says(page: str) -> None:
    """Each tested release has one row: its Python and its pins from ``releases/lines.py``
    (or, for the newest of a flavor, the extra that installs it), and, in the README,
    whether `make test` runs its suite; no row names a release that is not tested."""
    from pytest_llamastate.releases.tested import TESTED

    rows = {
        (dist.lower(), version): (python.strip(), install, (suite or "").strip())
        for dist, version, python, install, suite in _ROW.findall((ROOT / page).read_text())
    }
    tested = {(t.distribution, t.version): t for t in TESTED}
    assert set(rows) == set(tested), f"{page}: rows differ from releases/lines.py TESTED"
    passing = _passing_releases()
    for key, (python, install, suite) in rows.items():
        release = tested[key]
        newest = release == [t for t in TESTED if t.distribution == key[0]][-1]
        assert python == release.python, (page, key)
        assert install == release.install or (newest and "pytest-llamastate[" in install), (
            page,
            key,
            install,
        )
        if suite:
            assert suite == ("passes" if release.slug in passing else "not yet"), (page, key)


# --- the generated reference and what pytest knows -------------------------------------


def test_the_options_reference_lists_every_option_pytest_has() -> None:
    """Also the options of modules the plugin loads itself (``--llama-inference``)."""
    spec = importlib.util.spec_from_file_location(
        "docs_reference", ROOT / "tools" / "docs_reference.py"
    )
    assert spec is not None
    assert spec.loader is not None
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    table = reference.options()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--help", "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT / "docs",
    )
    flags = set(re.findall(r"^\s+(--llama-[\w-]+)", done.stdout, flags=re.MULTILINE))
    inis = set(re.findall(r"^\s+(llama_\w+) \(", done.stdout, flags=re.MULTILINE))
    assert flags
    assert inis
    assert {f for f in flags if f"`{f}" not in table} == set()
    assert {i for i in inis if f"`{i}`" not in table} == set()


def _slug(heading: str) -> str:
    """A heading's anchor as GitHub and MkDocs' toc make it (for the headings used here)."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_the_readmes_links_lead_to_pages_and_headings() -> None:
    """MkDocs checks the links of docs/ (strict); the README is not part of the site."""
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#\s]+)?(?:#([^)\s]+))?\)", readme)
    local = [(path, anchor) for path, anchor in links if not path.startswith("http")]
    assert local
    for path, anchor in local:
        target = ROOT / path if path else ROOT / "README.md"
        assert target.exists(), path
        if anchor:
            headings = re.findall(r"^#+ (.*)$", target.read_text(), flags=re.MULTILINE)
            assert anchor in {_slug(h) for h in headings}, (path, anchor)


def test_the_architecture_page_names_every_module() -> None:
    """The module map for contributors: a module added without a row fails here."""
    page = (ROOT / "docs" / "architecture.md").read_text()
    package = ROOT / "pytest_llamastate"
    modules = [p for p in package.rglob("*.py") if p.name != "__init__.py"]
    assert modules
    # Named by its path under the package or under its folder (`releases/lines.py` or,
    # in the stack/ section, `library.py`).
    missing = [
        str(m.relative_to(package))
        for m in modules
        if f"`{m.relative_to(package)}`" not in page
        and f"`{m.name}`" not in page
        and f"/{m.name}`" not in page
    ]
    assert missing == []
