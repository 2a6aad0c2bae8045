"""Every usage error the plugin raises, in one table.

A wrong option, ini value, seed, marker, store name or run config stops the run before any
test starts (exit code 4) with one line that names the value and what to do instead. A row:
the command-line arguments, the files the run needs (ini file, seed file, config, tests),
and the error's first line as an fnmatch pattern; ``<dir>`` stands for the run's folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatch

import pytest
from _pytest.mark.structures import ParameterSet
from flavors import FLAVOR, needs_stack

#: Rows about seeds, persistent stores and run configs also run on Postgres (make test).
STACK = (pytest.mark.both_backends, needs_stack)

MINIMAL = FLAVOR.default_config.read_text()
PLAIN_TEST = {"test_it.py": "def test_it(): pass\n"}
STORE_TEST = {"test_it.py": "def test_it(llama_store): pass\n"}
STACK_TEST = {"test_it.py": "def test_it(llama_stack): pass\n"}
AFILE = {"afile": "not a folder", **STORE_TEST}


def row(
    id: str,
    args: list[str],
    files: Mapping[str, str],
    first_line: str,
    marks: tuple[pytest.MarkDecorator, ...] = (),
) -> ParameterSet:
    return pytest.param(args, files, first_line, id=id, marks=marks)


def marked(marker: str) -> dict[str, str]:
    """A test module whose one test carries ``@pytest.mark.<marker>``."""
    return {
        "test_it.py": f"import pytest\n@pytest.mark.{marker}\ndef test_it(llama_store):\n    pass\n"
    }


def seed_file(name: str, text: str | None) -> dict[str, str]:
    """The ini naming the seed file, and the file itself unless ``text`` is None."""
    files = {"tox.ini": f"[pytest]\nllama_toolgroups_file = {name}\n", **STORE_TEST}
    return files if text is None else {**files, name: text}


def config(text: str) -> dict[str, str]:
    return {"run.yaml": text, **STACK_TEST}


RUN_YAML = ["--llama-stack-config=<dir>/run.yaml"]

USAGE_ERRORS = [
    # Options and their ini twins.
    row(
        "keep-store-ini",
        ["-o", "llama_keep_store=sometimes"],
        STORE_TEST,
        "*llama_keep_store: unknown value 'sometimes'; allowed values: failed, all, none*",
    ),
    row(
        "keep-store",
        ["--llama-keep-store=sometimes"],
        STORE_TEST,
        "*--llama-keep-store: unknown value 'sometimes'; allowed values: failed, all, none*",
    ),
    row(
        "keep-store-given-a-test-path",
        ["--llama-keep-store", "test_it.py"],
        STORE_TEST,
        "*--llama-keep-store: 'test_it.py' looks like a test path*write --llama-keep-store=WHICH*",
    ),
    row(
        "guard",
        ["--llama-guard=loud"],
        STORE_TEST,
        "*--llama-guard: unknown value 'loud'; allowed values: error, warn, off*",
    ),
    row("guard-ini", ["-o", "llama_guard=loud"], STORE_TEST, "*llama_guard: unknown value 'loud'*"),
    row(
        "retention-count-ini",
        ["-o", "llama_store_retention_count=-1"],
        STORE_TEST,
        "*llama_store_retention_count: '-1' is not a whole number >= 0*",
    ),
    row(
        "store-dir-is-a-file",
        ["--llama-store-dir", "afile"],
        AFILE,
        "*--llama-store-dir: */afile exists and is not a folder*",
    ),
    row(
        "store-dir-not-writable",
        ["--llama-store-dir", "afile/sub"],
        AFILE,
        "*--llama-store-dir: cannot write to */afile/sub*",
    ),
    row(
        "store-dir-ini-is-a-file",
        ["-o", "llama_store_dir=afile"],
        AFILE,
        "*ini llama_store_dir: */afile exists and is not a folder*",
    ),
    row(
        "flavor",
        ["--llama-flavor=llama"],
        PLAIN_TEST,
        "ERROR: --llama-flavor: unknown value 'llama'; allowed values: auto, llama-stack, ogx",
    ),
    row(
        "flavor-ini",
        ["-o", "llama_flavor=OGX-1"],
        PLAIN_TEST,
        "ERROR: ini llama_flavor: unknown value 'OGX-1'; allowed values: auto, llama-stack, ogx",
    ),
    row(
        "stack-mode",
        ["--llama-stack-mode=remote"],
        STORE_TEST,
        "ERROR: --llama-stack-mode: unknown value 'remote'; allowed values: library, server, container",
    ),
    row(
        "server-process",
        ["--llama-server-process=spawn"],
        STORE_TEST,
        "ERROR: --llama-server-process: unknown value 'spawn'; allowed values: fork, exec",
    ),
    row(
        "start-timeout",
        ["--llama-stack-start-timeout=-1"],
        STORE_TEST,
        "ERROR: --llama-stack-start-timeout: '-1' is not a positive number of seconds",
    ),
    row(
        "persist-lock-timeout-ini",
        ["-o", "llama_persist_lock_timeout=abc"],
        STORE_TEST,
        "ERROR: ini llama_persist_lock_timeout: 'abc' is not a positive number of seconds",
    ),
    row(
        "persist-dir-is-a-file",
        ["--llama-persist-dir", "afile"],
        AFILE,
        "ERROR: --llama-persist-dir: <dir>/afile exists and is not a folder; choose a folder",
    ),
    row(
        "backend",
        ["--llama-backend=mysql"],
        STORE_TEST,
        "ERROR: --llama-backend: unknown value 'mysql'; allowed values: sqlite, postgres",
    ),
    row(
        "postgres-url-on-sqlite",
        ["--llama-postgres-url=postgresql://u@h/db"],
        STORE_TEST,
        "ERROR: --llama-postgres-url is set, but the backend is sqlite: add --llama-backend=postgres",
    ),
    row(
        "postgres-url-not-postgres",
        ["--llama-backend=postgres", "--llama-postgres-url=mysql://u:hunter2@h/db"],
        STORE_TEST,
        "ERROR: --llama-backend=postgres: mysql://u:***@h/db: not a Postgres URL; "
        "use postgresql://USER:PASSWORD@HOST:PORT/DB",
    ),
    # Seeds given on a marker, checked at collection.
    row(
        "seed-twice",
        [],
        marked(
            'llama_toolgroups({"toolgroup_id": "mcp::a", "mcp_endpoint": "http://h/a"}, {"toolgroup_id": "mcp::a", "mcp_endpoint": "http://h/b"})'
        ),
        "ERROR: *test_it: llama_toolgroups: *toolgroup 'mcp::a' is seeded twice*",
        STACK,
    ),
    row(
        "seed-empty-id",
        [],
        marked('llama_toolgroups({"toolgroup_id": ""})'),
        "ERROR: *test_it: llama_toolgroups: *toolgroup_id must be a non-empty string*",
        STACK,
    ),
    row(
        "seed-unknown-key",
        [],
        marked('llama_toolgroups({"toolgroup_id": "mcp::a", "endpoint": "http://h/a"})'),
        "ERROR: *test_it: llama_toolgroups: *unknown key(s) endpoint*allowed:*",
        STACK,
    ),
    row(
        "seed-mcp-without-endpoint",
        [],
        marked('llama_toolgroups({"toolgroup_id": "mcp::a"})'),
        "ERROR: *test_it: llama_toolgroups: *'mcp::a': an MCP toolgroup needs mcp_endpoint*",
        STACK,
    ),
    row(
        "seed-endpoint-not-a-url",
        [],
        marked('llama_toolgroups({"toolgroup_id": "mcp::a", "mcp_endpoint": "not a url"})'),
        "ERROR: *test_it: llama_toolgroups: *mcp_endpoint 'not a url' is not an http(s) URL*",
        STACK,
    ),
    row(
        "seed-without-provider",
        [],
        marked('llama_toolgroups({"toolgroup_id": "builtin::x"})'),
        "ERROR: *test_it: llama_toolgroups: *'builtin::x': no provider_id*",
        STACK,
    ),
    row(
        "seed-that-is-a-bare-id",
        [],
        marked('llama_toolgroups("mcp::bare")'),
        "ERROR: *test_it: llama_toolgroups: a seed is a ToolgroupSeed, a mapping or "
        "mcp_tools(...), not the bare id 'mcp::bare': give {'toolgroup_id': 'mcp::bare', "
        "'mcp_endpoint': ...} (or a provider_id)",
        STACK,
    ),
    row(
        "seed-of-a-wrong-type",
        [],
        marked("llama_toolgroups(42)"),
        "ERROR: *test_it: llama_toolgroups: "
        "*a seed is a ToolgroupSeed, a mapping or mcp_tools(...), got int 42*",
        STACK,
    ),
    # The llama_toolgroups_file ini option.
    row(
        "seed-file-missing",
        [],
        seed_file("missing.yaml", None),
        "ERROR: llama_toolgroups_file: *missing.yaml: seed file not found*",
        STACK,
    ),
    row(
        "seed-file-bad-yaml",
        [],
        seed_file("bad.yaml", "toolgroups: [unclosed"),
        "ERROR: llama_toolgroups_file: *bad.yaml: does not parse (*",
        STACK,
    ),
    row(
        "seed-file-bad-json",
        [],
        seed_file("bad.json", "{"),
        "ERROR: llama_toolgroups_file: *bad.json: does not parse (JSONDecodeError*",
        STACK,
    ),
    row(
        "seed-file-bad-toml",
        [],
        seed_file("bad.toml", "[[toolgroups]\n"),
        "ERROR: llama_toolgroups_file: *bad.toml: does not parse (TOMLDecodeError*",
        STACK,
    ),
    row(
        "seed-file-not-a-list",
        [],
        seed_file("list.yaml", "toolgroups: 3\n"),
        "ERROR: llama_toolgroups_file: *list.yaml: expected a top-level 'toolgroups' list*",
        STACK,
    ),
    row(
        "seed-file-unknown-type",
        [],
        seed_file("seeds.ini", "x"),
        "ERROR: llama_toolgroups_file: *unknown seed file type*",
        STACK,
    ),
    row(
        "seed-file-seeds-twice",
        [],
        seed_file(
            "dup.yaml",
            "toolgroups: [{toolgroup_id: 'mcp::a', mcp_endpoint: 'http://h/'}, "
            "{toolgroup_id: 'mcp::a', mcp_endpoint: 'http://h/'}]\n",
        ),
        "ERROR: llama_toolgroups_file: *dup.yaml: toolgroup 'mcp::a' is seeded twice*",
        STACK,
    ),
    # Persistent store names: on the marker and in --llama-reset-persistent.
    row(
        "persistent-name-escapes",
        [],
        marked('persistent("../escape")'),
        "ERROR: *test_it: @pytest.mark.persistent: *invalid persistent store name '../escape'*",
        STACK,
    ),
    row(
        "persistent-name-with-a-slash",
        [],
        marked('persistent("a/b")'),
        "ERROR: *test_it: @pytest.mark.persistent: *invalid persistent store name 'a/b'*",
        STACK,
    ),
    row(
        "persistent-name-empty",
        [],
        marked('persistent("")'),
        "ERROR: *test_it: @pytest.mark.persistent: *invalid persistent store name ''*",
        STACK,
    ),
    row(
        "reset-persistent-given-a-test-path",
        ["--llama-reset-persistent", "tests/"],
        {},
        "*write --llama-reset-persistent=NAME*",
        STACK,
    ),
    row(
        "reset-persistent-ini",
        ["-o", "llama_reset_persistent=a/b"],
        {},
        "ERROR: ini llama_reset_persistent: invalid persistent store name 'a/b'*",
        STACK,
    ),
    row(
        "reset-persistent-bad-name",
        ["--llama-reset-persistent=.."],
        STORE_TEST,
        "ERROR: --llama-reset-persistent: invalid persistent store name '..': *",
    ),
    # A run config that fails the checks (state outside the store) or does not load.
    row(
        "config-state-outside-the-store",
        RUN_YAML,
        config(MINIMAL.replace("${env.SQLITE_STORE_DIR}/kvstore.db", "~/.llama/kvstore.db")),
        "ERROR: --llama-stack-config: <dir>/run.yaml: "
        "*storage.backends.kv_default.db_path = */.llama/kvstore.db is outside the test's store*",
        STACK,
    ),
    row(
        "config-relative-state-path",
        RUN_YAML,
        config(MINIMAL.replace("${env.SQLITE_STORE_DIR}/kvstore.db", "state/kvstore.db")),
        "ERROR: --llama-stack-config: <dir>/run.yaml: "
        "*storage.backends.kv_default.db_path = 'state/kvstore.db' is a relative path*",
        STACK,
    ),
    row(
        "config-without-storage",
        RUN_YAML,
        config(MINIMAL.split("storage:")[0]),
        "ERROR: --llama-stack-config: <dir>/run.yaml: *no storage.backends section*",
        STACK,
    ),
    row(
        "config-not-yaml",
        RUN_YAML,
        config("key: [unclosed"),
        "ERROR: --llama-stack-config: <dir>/run.yaml: *not valid YAML*",
        STACK,
    ),
    row(
        "config-not-a-run-config",
        RUN_YAML,
        config("- a list\n"),
        "ERROR: --llama-stack-config: <dir>/run.yaml: *not a stack run config*",
        STACK,
    ),
    row(
        "config-missing-ini",
        ["-o", "llama_stack_config=nope.yaml"],
        STACK_TEST,
        "*ini llama_stack_config: */nope.yaml: stack config not found*",
        STACK,
    ),
]


@pytest.mark.parametrize(("args", "files", "first_line"), USAGE_ERRORS)
def test_a_usage_error_stops_the_run_before_any_test(
    pytester: pytest.Pytester, args: list[str], files: Mapping[str, str], first_line: str
) -> None:
    for name, text in files.items():
        pytester.path.joinpath(name).write_text(text)
    here = str(pytester.path)
    result = pytester.runpytest(*(arg.replace("<dir>", here) for arg in args))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = result.stderr.lines
    assert errors, result.stdout.str()
    assert fnmatch(errors[0], first_line.replace("<dir>", here)), result.stderr.str()
    assert "Traceback" not in result.stderr.str()
    assert [line for line in errors if line.strip()] == [errors[0]]  # one line, all of it
