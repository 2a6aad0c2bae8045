"""Every example of the README and the docs runs, as the user would run it.

Each page is one test (its examples build on each other, as a reader's folder does); how
a page's blocks are run is in ``docexamples.py``. The last tests show that a broken example
fails, and that the ``llamastate`` help and the docs agree.
"""

from __future__ import annotations

import re
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest
from docexamples import ExampleError, blocks, mask, run_page
from openai_server import running_openai_server

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


@pytest.mark.parametrize("page", PAGES, ids=[p.as_posix() for p in PAGES])
def test_examples_of(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
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


def test_the_cli_reference_is_generated_from_the_help() -> None:
    page = (ROOT / "docs" / "reference" / "cli.md").read_text()
    assert "<!-- reference: cli -->" in page
