"""State templates: built once on a real stack, copied into every test; leak report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flavors import skip_module_without_a_stack

from pytest_llamastate import TemplateError, llama_template
from pytest_llamastate.cli.command import main as llamastate

skip_module_without_a_stack()

BOTH_MODES = pytest.mark.parametrize("mode", ["library", "server"])


def crm_conftest(builds: Path, extra: str = "") -> str:
    """A template with two toolgroups, a prompt, a conversation with items and a file."""
    return f"""
import io
from pytest_llamastate import llama_template

@llama_template("crm")
def crm(stack):
    with open({str(builds)!r}, "a") as f:
        f.write("built\\n")
    stack.register_toolgroup("mcp::crm", mcp_endpoint="http://127.0.0.1:9/crm")
    stack.register_toolgroup("mcp::mail", mcp_endpoint="http://127.0.0.1:9/mail")
    c = stack.client
    c.prompts.create(prompt="Hello {{{{ name }}}}", variables=["name"])
    c.conversations.create(
        items=[
            {{"type": "message", "role": "user", "content": [{{"type": "input_text", "text": "hi"}}]}},
            {{"type": "message", "role": "user", "content": [{{"type": "input_text", "text": "again"}}]}},
        ],
        metadata={{"topic": "crm"}},
    ){extra}
    data = io.BytesIO(b"crm notes")
    data.name = "notes.txt"
    c.files.create(file=data, purpose="assistants")
"""


#: Tests that read the template's state through the API, change it, and check that the
#: next test sees exactly the template again (pytest runs them in file order).
CRM_TESTS = """
import sqlite3
import pytest
from pytest_llamastate.plugin.session import session_state

pytestmark = pytest.mark.llama_template("crm")


def content(client, file_id):
    got = client.files.content(file_id)
    for attr in ("content", "text"):
        got = getattr(got, attr, got)
    return got.encode() if isinstance(got, str) else bytes(got)


def conversation_ids(store):  # the API lists none: read the ids from the SQL tables
    if store.database_url is None:
        return [r[0] for r in sqlite3.connect(store.sqlstore_path).execute(
            "SELECT id FROM openai_conversations")]
    from pytest_llamastate.storage.postgres.client import with_connection

    async def ids(conn):
        return [r[0] for r in await conn.fetch("SELECT id FROM openai_conversations")]

    return with_connection(store.tables.url, ids)


def prompt_texts(stack):
    c = stack.client
    listed = c.prompts.list()
    texts = [p.prompt for p in getattr(listed, "data", listed)]
    if texts or stack.store.database_url is None:
        return texts
    # llama-stack 0.7.3 lists no prompt on kv_postgres (its key-range query sees the
    # namespaced keys): find them in the rows, then read each through the API
    ids = {k.split(":")[3] for k, _ in stack.store.tables.rows() if k.startswith("prompts:prompts:v1:")}
    return [c.prompts.retrieve(i).prompt for i in sorted(ids)]


def state(stack):
    c = stack.client
    conv_ids = conversation_ids(stack.store)
    items = [
        [part.text for item in c.conversations.items.list(cid, order="asc").data for part in item.content]
        for cid in conv_ids
    ]
    files = [(f.filename, content(c, f.id)) for f in c.files.list().data]
    prompts = prompt_texts(stack)
    return sorted(t.identifier for t in stack.toolgroups()), prompts, items, files


EXPECTED = (["mcp::crm", "mcp::mail"], ["Hello {{ name }}"], [["hi", "again"]],
            [("notes.txt", b"crm notes")])


def check_copy(request, llama_store):
    assert llama_store.template == "crm"
    built = list(session_state(request.config).state_templates._built.values())
    needle = str(built[0].path).encode()
    for path in llama_store.path.rglob("*"):
        if path.is_file():
            assert needle not in path.read_bytes(), path
    if llama_store.database_url is not None:  # and not in the copied database
        from pytest_llamastate.storage.postgres.tables import text_columns_with

        assert text_columns_with(llama_store.tables.url, needle.decode()) == []


def test_first_sees_the_template_and_changes_it(llama_stack, request):
    assert state(llama_stack) == EXPECTED
    check_copy(request, llama_stack.store)
    c = llama_stack.client
    llama_stack.register_toolgroup("mcp::new", mcp_endpoint="http://127.0.0.1:9/new")
    c.prompts.create(prompt="Bye")
    for f in c.files.list().data:
        c.files.delete(f.id)
    c.conversations.create(items=[])


@pytest.mark.llama_toolgroups({"toolgroup_id": "mcp::seeded", "mcp_endpoint": "http://127.0.0.1:9/s"})
def test_next_sees_exactly_the_template_with_its_seeds(llama_stack, request):
    tgs, *rest = state(llama_stack)
    assert (tgs, *rest) == (["mcp::crm", "mcp::mail", "mcp::seeded"], *EXPECTED[1:])
    check_copy(request, llama_stack.store)


def test_last_still_sees_the_template(llama_stack):
    assert state(llama_stack) == EXPECTED
    assert False, "on purpose: the report names the template"
"""


@BOTH_MODES
@pytest.mark.both_backends
@pytest.mark.exec_too
def test_every_test_starts_from_the_template(
    pytester: pytest.Pytester, mode: str, tmp_path: Path
) -> None:
    builds = tmp_path / "builds"
    pytester.makeconftest(crm_conftest(builds))
    pytester.makepyfile(test_crm=CRM_TESTS)
    result = pytester.runpytest(f"--llama-stack-mode={mode}", "-p", "no:randomly")
    result.assert_outcomes(passed=2, failed=1)
    assert builds.read_text() == "built\n"
    result.stdout.fnmatch_lines(
        ["*started from template: crm*", "*llama templates*", "crm: built*"]
    )


@pytest.mark.flavor_neutral
@pytest.mark.both_backends
def test_a_template_is_built_once_across_xdist_workers(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    builds = tmp_path / "builds"
    pytester.makeconftest(crm_conftest(builds))
    tests = "\n".join(
        f"""
@pytest.mark.llama_template("crm")
def test_{n}(llama_store):
    assert sorted(t.identifier for t in llama_store.toolgroups()) == ["mcp::crm", "mcp::mail"]
"""
        for n in range(6)
    )
    pytester.makepyfile(f"import pytest\n{tests}")
    result = pytester.runpytest_subprocess("-n", "2")
    result.assert_outcomes(passed=6)
    assert builds.read_text() == "built\n"


@pytest.mark.both_backends
def test_reuse_keeps_the_template_until_the_builder_changes(
    pytester: pytest.Pytester, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    builds = tmp_path / "builds"
    pytester.makeconftest(crm_conftest(builds))
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.llama_template("crm")
        def test_it(llama_store):
            assert len(llama_store.toolgroups()) == 2
        """
    )
    first = pytester.runpytest("--llama-reuse-templates")
    first.assert_outcomes(passed=1)
    first.stdout.fnmatch_lines(["crm: built in *s (first build): *llamastate-templates*"])
    second = pytester.runpytest("--llama-reuse-templates")
    second.assert_outcomes(passed=1)
    second.stdout.fnmatch_lines(["crm: reused: *"])
    assert builds.read_text() == "built\n"

    cache = pytester.path / ".pytest_cache" / "d" / "llamastate-templates"
    capsys.readouterr()
    assert llamastate(["ls", str(cache)]) == 0
    listing = capsys.readouterr().out
    assert "template" in listing
    assert "crm" in listing
    assert llamastate(["show", "--json", str(next(p for p in cache.iterdir() if p.is_dir()))]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["marker"]["complete"] is True
    assert shown["sql_tables"]["openai_files"] == 1

    pytester.makeconftest(crm_conftest(builds, extra="  # the builder changed"))
    third = pytester.runpytest("--llama-reuse-templates")
    third.assert_outcomes(passed=1)
    third.stdout.fnmatch_lines(["crm: rebuilt in *s (builder source changed): *"])
    # The ini twin, and no rebuild without a change.
    pytester.makeini("[pytest]\nllama_reuse_templates = true\n")
    pytester.runpytest().stdout.fnmatch_lines(["crm: reused: *"])
    assert builds.read_text() == "built\n" * 2


def test_the_store_of_a_kept_copy_names_its_template(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    pytester.makeconftest(
        """
        from pytest_llamastate import llama_template

        @llama_template(seeds=[{"toolgroup_id": "mcp::x", "mcp_endpoint": "http://127.0.0.1:9/x"}])
        def plain(stack):
            pass
        """
    )
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.llama_template("plain")
        def test_it(llama_store):
            print("STORE", llama_store.path)
            assert [t.identifier for t in llama_store.toolgroups()] == ["mcp::x"]
        """
    )
    result = pytester.runpytest("-s", "--llama-keep-store")
    result.assert_outcomes(passed=1)
    store = next(line.split("STORE ")[1].split()[0] for line in result.outlines if "STORE " in line)
    capsys.readouterr()
    assert llamastate(["show", store]) == 0
    assert "template: plain" in capsys.readouterr().out


# -- bad input ----------------------------------------------------------------------


def test_an_unknown_template_name_stops_the_run_naming_the_test_and_the_known_ones(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(
        "from pytest_llamastate import llama_template\n\n"
        "@llama_template\ndef crm(stack): pass\n\n"
        "@llama_template('docs')\ndef other(stack): pass\n"
    )
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.llama_template("nope")
        def test_it(llama_store): pass
        """
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*test_an_unknown_template_name*.py::test_it: @pytest.mark.llama_template('nope'): "
            "no template of that name; known: crm, docs"
        ]
    )


def test_two_templates_with_one_name_are_refused(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        "from pytest_llamastate import llama_template\n\n@llama_template\ndef crm(stack): pass\n"
    )
    pytester.makepyfile(
        """
        import pytest
        from pytest_llamastate import llama_template

        @llama_template("crm")
        def mine(stack): pass

        @pytest.mark.llama_template("crm")
        def test_it(llama_store): pass
        """
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*two templates are named 'crm': *conftest.py:3 and *.py:4*"])


@pytest.mark.parametrize(
    ("builder", "message"),
    [
        (42, "decorates 42, which is not a function"),
        (lambda: None, "takes the wrong arguments; a builder takes one, the LlamaStack"),
        (lambda a, b: None, "takes the wrong arguments"),
    ],
)
def test_a_builder_must_be_a_function_of_the_stack(builder: object, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        llama_template("t")(builder)  # type: ignore[arg-type]


def test_async_builders_and_bad_names_are_refused() -> None:
    async def builder(stack: object) -> None: ...

    with pytest.raises(TemplateError, match="must be a plain function"):
        llama_template(builder)  # type: ignore[arg-type]
    with pytest.raises(TemplateError, match="a template name is"):
        llama_template("a b")
    with pytest.raises(TemplateError, match="seeded twice"):
        llama_template("t", seeds=[{"toolgroup_id": "a", "provider_id": "p"}] * 2)


def test_a_bad_builder_in_a_conftest_fails_its_import_with_the_reason(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(
        "from pytest_llamastate import llama_template\n\n@llama_template\ndef crm(): pass\n"
    )
    pytester.makepyfile("def test_it(): pass")
    result = pytester.runpytest()
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*template 'crm' (*conftest.py:3): def crm() takes the wrong*"])


def test_a_failing_builder_fails_each_test_once_with_its_own_traceback(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(
        """
        from pytest_llamastate import llama_template

        @llama_template
        def broken(stack):
            stack.register_toolgroup("mcp::ok", mcp_endpoint="http://127.0.0.1:9/ok")
            raise ValueError("the CRM fixture data is missing")
        """
    )
    pytester.makepyfile(
        """
        import pytest

        pytestmark = pytest.mark.llama_template("broken")

        def test_one(llama_store): pass

        def test_two(llama_store): pass
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(errors=2)
    # (under CI=true pytest repeats whole messages in the short summary: look above it)
    out = result.stdout.str().split("short test summary")[0]
    assert out.count("the CRM fixture data is missing") == 2  # the raise line and the error
    assert out.count('raise ValueError("the CRM fixture data is missing")') == 1
    assert "pytest_llamastate/" not in out  # builder frames only
    result.stdout.fnmatch_lines(
        ["*template 'broken' failed to build earlier in this run; the error of *test_one shows why"]
    )


def build_errors(pytester: pytest.Pytester, conftest: str, name: str) -> pytest.RunResult:
    """Run one test asking for template ``name`` declared in ``conftest``; it must error."""
    pytester.makeconftest(conftest)
    pytester.makepyfile(
        f"import pytest\n\n@pytest.mark.llama_template({name!r})\ndef test_it(llama_store): pass\n"
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    return result


def test_a_builder_that_starts_its_own_stack_is_stopped(pytester: pytest.Pytester) -> None:
    conftest = """
from pytest_llamastate import LlamaStackFactory, LlamaStore, llama_template
from pytest_llamastate.state.stackconfig import DEFAULT_CONFIG

@llama_template
def sneaky(stack):
    other = LlamaStore.create(stack.store.path.parent / "elsewhere")
    LlamaStackFactory("server", DEFAULT_CONFIG).start(other)
"""
    build_errors(pytester, conftest, "sneaky").stdout.fnmatch_lines(
        ["*template 'sneaky' (*conftest.py:*) started a stack of its own (on *elsewhere)*"]
    )


def test_a_builder_writing_to_the_real_home_is_caught_by_the_guard(
    pytester: pytest.Pytester,
) -> None:
    conftest = """
from pathlib import Path
from pytest_llamastate import llama_template

@llama_template
def leaky(stack):
    (Path.home() / ".llama").mkdir(exist_ok=True)
    (Path.home() / ".llama" / "oops.db").write_text("x")
"""
    build_errors(pytester, conftest, "leaky").stdout.fnmatch_lines(
        ["*template 'leaky' *wrote to the real Llama Stack home*", "*oops.db*"]
    )


# -- leak report for shared stores ----------------------------------------------------

SHARED = """
import pytest

@pytest.fixture(scope="module")
def shared(llama_store_factory, llama_stack_factory):
    store = llama_store_factory.mktemp("shared")
    with store.activate(), llama_stack_factory.start(store) as stack:
        yield stack

def test_leaves_a_toolgroup_and_a_conversation(shared):
    shared.register_toolgroup("mcp::left", mcp_endpoint="http://127.0.0.1:9/left")
    shared.client.conversations.create(items=[])

def test_cleans_up(shared):
    shared.register_toolgroup("mcp::tidy", mcp_endpoint="http://127.0.0.1:9/tidy")
    shared.unregister_toolgroup("mcp::tidy")

def test_own_store_is_not_shared(llama_store, llama_store_factory):
    mine = llama_store_factory.mktemp("mine", seeds=[{"toolgroup_id": "mcp::mine", "mcp_endpoint": "http://127.0.0.1:9/m"}])
    assert mine.toolgroups()
"""


@pytest.mark.parametrize("mode", ["off", "warn", "error"])
def test_leaks_in_shared_stores_are_named(pytester: pytest.Pytester, mode: str) -> None:
    pytester.makepyfile(SHARED)
    result = pytester.runpytest(f"--llama-leaks={mode}", "-p", "no:randomly")
    out = result.stdout.str()
    if mode == "off":
        result.assert_outcomes(passed=3)
        assert "did not undo" not in out
        return
    if mode == "warn":
        result.assert_outcomes(passed=3, warnings=1)
    else:
        result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*test_leaves_a_toolgroup_and_a_conversation changed the shared store shared and did "
            "not undo it*",
            "*+ tool_group:mcp::left",
            "*+ 1 row(s) in sql_store.db:openai_conversations (conv_*)",
        ]
    )
    assert "test_cleans_up changed" not in out
    assert "test_own_store_is_not_shared changed" not in out


def test_the_leak_mode_is_checked(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nllama_leaks = loud\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*ini llama_leaks: unknown value 'loud'; allowed values: off, warn, error"]
    )
