"""The ``llamastate`` command, run as users run it: a subprocess on stores real runs kept."""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_llamastate import LlamaStore
from pytest_llamastate.releases import detect
from pytest_llamastate.storage.sqlite import write_entries

KEY = "distributions:registry:v10::"

# Two failing tests, so both stores are kept: B drops mcp::gone, adds mcp::new and moves
# mcp::one to another endpoint; the model is the same in both.
SUITE = f"""
import json, sqlite3
from pytest_llamastate.storage.sqlite import write_entries

def tg(name, uri, args=None):
    return json.dumps({{"identifier": name, "provider_id": "model-context-protocol",
                       "provider_resource_id": name, "mcp_endpoint": {{"uri": uri}},
                       "args": args, "type": "tool_group"}})

MODEL = json.dumps({{"identifier": "llama3", "provider_id": "ollama", "type": "model"}})

def test_a(llama_store):
    write_entries(llama_store.kvstore_path, {{
        "{KEY}tool_group:mcp::one": tg("mcp::one", "http://127.0.0.1:9001/sse"),
        "{KEY}tool_group:mcp::gone": tg("mcp::gone", "http://127.0.0.1:9002/sse"),
        "{KEY}model:llama3": MODEL,
    }})
    with sqlite3.connect(llama_store.sqlstore_path) as conn:
        conn.execute("CREATE TABLE openai_conversations (id TEXT)")
        conn.executemany("INSERT INTO openai_conversations VALUES (?)", [("c1",), ("c2",)])
    assert False

def test_b(llama_store):
    write_entries(llama_store.kvstore_path, {{
        "{KEY}tool_group:mcp::one": tg("mcp::one", "http://127.0.0.1:9101/sse"),
        "{KEY}tool_group:mcp::new": tg("mcp::new", "http://127.0.0.1:9003/sse", {{"k": "v"}}),
        "{KEY}model:llama3": MODEL,
    }})
    assert False
"""


def llamastate(
    *args: object, cwd: Path | None = None, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m pytest_llamastate ARGS``; stdin is always a pipe (empty: EOF at once)."""
    return subprocess.run(
        [sys.executable, "-m", "pytest_llamastate", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        input=stdin,
        env=env,
        timeout=120,
        check=False,
    )


def json_keys_in_help(command: str) -> set[str]:
    """The keys ``llamastate COMMAND --help`` says its ``--json`` object has."""
    text = " ".join(llamastate(command, "--help").stdout.split())
    listed = text.split("--json one JSON object: ", 1)[1].split(" -", 1)[0]
    return {key.strip() for key in listed.split(",")}


def assert_one_line_error(result: subprocess.CompletedProcess[str], path: Path) -> None:
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"llamastate: {path}: "), result.stderr


def corrupt_store(path: Path) -> Path:
    LlamaStore.create(path)
    (path / "kvstore.db").write_bytes(b"not a database, " * 256)
    return path


def table(output: str) -> dict[str, list[str]]:
    """``ls`` rows by path; columns are separated by two or more spaces."""
    lines = output.splitlines()
    assert re.split(r"\s{2,}", lines[0].strip()) == [
        "PATH",
        "KIND",
        "LABEL",
        "AGE",
        "SIZE",
        "TOOLGROUPS",
    ]
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines[1:]]
    return {row[0]: row[1:] for row in rows}


@pytest.fixture
def kept(pytester: pytest.Pytester) -> tuple[Path, Path]:
    """The stores of test_a and test_b, kept by a real failing run."""
    pytester.makepyfile(test_suite=SUITE)
    pytester.runpytest("--llama-store-dir", str(pytester.path / "stores")).assert_outcomes(failed=2)
    a, b = (pytester.path / "stores" / "run-0" / name for name in ("test_a0", "test_b0"))
    assert (a / "kvstore.db").is_file()
    assert (b / "kvstore.db").is_file()
    return a, b


def test_ls_lists_kept_and_persistent_stores_but_nothing_inside_a_store(
    kept: tuple[Path, Path], pytester: pytest.Pytester
) -> None:
    a, b = kept
    base = pytester.path / "stores"
    LlamaStore.create(a / "nested")  # inside a store: not listed
    (base / "plain" / "deeper").mkdir(parents=True)  # no marker: skipped silently
    LlamaStore.create(base / "plain" / "deeper" / "p", label="shared", kind="persistent")
    corrupt = corrupt_store(base / "plain" / "broken")

    result = llamastate("ls", base)

    assert result.returncode == 0, result.stderr
    rows = table(result.stdout)
    assert set(rows) == {str(a), str(b), str(base / "plain/deeper/p"), str(corrupt)}
    assert rows[str(a)][:2] == ["test", "test_suite.py::test_a"]
    assert rows[str(b)][:2] == ["test", "test_suite.py::test_b"]
    assert rows[str(base / "plain/deeper/p")][:2] == ["persistent", "shared"]
    assert rows[str(a)][4] == rows[str(b)][4] == "2"
    assert rows[str(corrupt)][4] == "?"  # a damaged store does not break the listing
    for _kind, _label, age, size, _count in rows.values():
        assert re.fullmatch(r"\d+[smhd]", age)
        assert re.fullmatch(r"\d+(\.\d)?[BKMGT]", size)


def test_ls_defaults_to_persistent_stores_and_the_newest_three_basetemps(
    tmp_path: Path,
) -> None:
    temproot = tmp_path / "tmp"
    user_root = temproot / f"pytest-of-{getpass.getuser()}"
    for n in range(1, 6):
        (user_root / f"pytest-{n}").mkdir(parents=True)
    (user_root / "pytest-current").symlink_to(user_root / "pytest-1")  # not a basetemp
    (user_root / "pytest-5" / "link").symlink_to(user_root / "pytest-1")  # not followed
    old = LlamaStore.create(user_root / "pytest-1" / "old0").path
    new = user_root / "pytest-5" / "popen-gw0" / "llamastate" / "test_new0"
    new.parent.mkdir(parents=True)
    LlamaStore.create(new)
    project = tmp_path / "project"
    (project / ".pytest_cache" / "d" / "llamastate").mkdir(parents=True)
    LlamaStore.create(project / ".pytest_cache/d/llamastate/db", label="db", kind="persistent")
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_DEBUG_TEMPROOT"}

    result = llamastate("ls", cwd=project, env={**env, "TMPDIR": str(temproot)})

    assert result.returncode == 0, result.stderr
    rows = table(result.stdout)
    assert set(rows) == {".pytest_cache/d/llamastate/db", str(new)}
    assert str(old) not in result.stdout


def test_show_text(kept: tuple[Path, Path]) -> None:
    a, _ = kept
    result = llamastate("show", a)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"path:     {a}" in lines
    assert "kind:     test" in lines
    assert "label:    test_suite.py::test_a" in lines
    assert re.search(
        r"^created:  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(\d+[smhd] ago\)$", result.stdout, re.M
    )
    assert lines[lines.index("toolgroups (2):") + 1 :][:2] == [
        "  mcp::gone  provider=model-context-protocol  mcp_endpoint=http://127.0.0.1:9002/sse",
        "  mcp::one  provider=model-context-protocol  mcp_endpoint=http://127.0.0.1:9001/sse",
    ]
    assert "  model (1): llama3" in lines
    assert "  openai_conversations: 2 rows" in lines


def test_show_json(kept: tuple[Path, Path]) -> None:
    _, b = kept
    result = llamastate("show", b, "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert set(doc) == {
        "path",
        "kind",
        "label",
        "created",
        "toolgroups",
        "registry",
        "kv_namespaces",
        "sql_tables",
        "marker",
    }
    assert set(doc) == json_keys_in_help("show")  # the help says what --json prints
    assert doc["marker"] == LlamaStore.read_marker(b)
    assert doc["path"] == str(b)
    assert (doc["kind"], doc["label"]) == ("test", "test_suite.py::test_b")
    assert doc["created"] == LlamaStore.read_marker(b)["created"]
    assert doc["toolgroups"] == [
        {
            "identifier": "mcp::new",
            "provider_id": "model-context-protocol",
            "mcp_endpoint": "http://127.0.0.1:9003/sse",
            "args": {"k": "v"},
        },
        {
            "identifier": "mcp::one",
            "provider_id": "model-context-protocol",
            "mcp_endpoint": "http://127.0.0.1:9101/sse",
            "args": None,
        },
    ]
    assert doc["registry"] == {"model": ["llama3"], "tool_group": ["mcp::new", "mcp::one"]}
    assert doc["kv_namespaces"] == {"distributions": 3}
    assert doc["sql_tables"] == {}


def test_show_prints_extra_marker_fields_of_a_persistent_store(tmp_path: Path) -> None:
    store = LlamaStore.create(tmp_path / "db", label="db", kind="persistent")
    marker = store.path / ".llamastate.json"
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "fingerprint": "abc123"}))
    result = llamastate("show", store.path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "kind:     persistent" in lines
    assert "label:    db" in lines
    assert "fingerprint: abc123" in lines
    assert "toolgroups (0):" in lines


def test_show_reads_namespaced_registry_keys(tmp_path: Path) -> None:
    store = LlamaStore.create(tmp_path / "ogx")
    value = {"identifier": "mcp::ogx", "provider_id": "mcp", "mcp_endpoint": {"uri": "http://x"}}
    write_entries(
        store.kvstore_path,
        {f"registry:{KEY}tool_group:mcp::ogx": json.dumps(value), "prompts:p1": "{}"},
    )
    with sqlite3.connect(store.sqlstore_path) as conn:
        conn.execute('CREATE TABLE "odd ""name""" (x)')
    doc = json.loads(llamastate("show", store.path, "--json").stdout)
    assert [t["identifier"] for t in doc["toolgroups"]] == ["mcp::ogx"]
    assert doc["toolgroups"][0]["mcp_endpoint"] == "http://x"
    assert doc["registry"] == {"tool_group": ["mcp::ogx"]}
    assert doc["kv_namespaces"] == {"prompts": 1, "registry": 1}
    assert doc["sql_tables"] == {'odd "name"': 0}


def test_show_lists_every_kv_namespace_and_database_a_test_wrote_to(tmp_path: Path) -> None:
    """A batch row (kv namespace ``batch``), a provider's own kv file and SQL file: none of
    them registry rows, all of them state a test left."""
    store = LlamaStore.create(tmp_path / "store")
    write_entries(store.kvstore_path, {f"{KEY}model:m": "{}", "batch:batch_1": "{}"})
    write_entries(store.path / "batches.db", {"batch:batch_2": "{}", "batch:batch_3": "{}"})
    with sqlite3.connect(store.path / "vectors.db") as conn:
        conn.execute("CREATE TABLE chunks (x)")
        conn.execute("INSERT INTO chunks VALUES (1)")
    (store.path / "milvus.db").write_bytes(b"not sqlite")
    result = llamastate("show", store.path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    start = lines.index("kv namespaces (2):")
    assert lines[start + 1 : start + 3] == ["  batch: 3 rows", "  distributions: 1 rows"]
    assert lines[lines.index("SQLite tables (1):") + 1] == "  vectors.db:chunks: 1 rows"


def test_diff_reports_added_removed_and_changed(kept: tuple[Path, Path]) -> None:
    a, b = kept
    result = llamastate("diff", a, b)
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == [
        "+ tool_group:mcp::new",
        "- tool_group:mcp::gone",
        "~ tool_group:mcp::one (mcp_endpoint)",
    ]

    doc = json.loads(llamastate("diff", a, b, "--json").stdout)
    assert (doc["a"], doc["b"]) == (str(a), str(b))
    assert set(doc) == json_keys_in_help("diff")
    assert [r["key"] for r in doc["added"]] == [f"{KEY}tool_group:mcp::new"]
    assert doc["added"][0]["value"]["args"] == {"k": "v"}
    assert [r["identifier"] for r in doc["removed"]] == ["mcp::gone"]
    [changed] = doc["changed"]
    assert (changed["type"], changed["identifier"], changed["fields"]) == (
        "tool_group",
        "mcp::one",
        ["mcp_endpoint"],
    )
    assert changed["before"]["mcp_endpoint"] == {"uri": "http://127.0.0.1:9001/sse"}
    assert changed["after"]["mcp_endpoint"] == {"uri": "http://127.0.0.1:9101/sse"}


def test_diff_of_equal_stores_is_empty_and_exits_0(kept: tuple[Path, Path]) -> None:
    a, _ = kept
    result = llamastate("diff", a, a)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.fixture
def persist(tmp_path: Path) -> Path:
    """A persist dir: stores p1, p2; a plain folder; a test store; a store outside it."""
    folder = tmp_path / "persist"
    folder.mkdir()
    for name in ("p1", "p2"):
        LlamaStore.create(folder / name, label=name, kind="persistent")
    (folder / "plain").mkdir()
    (folder / "plain" / "data").write_text("keep me")
    LlamaStore.create(folder / "teststore", label="t::t")
    LlamaStore.create(tmp_path / "outside", label="outside", kind="persistent")
    return folder


def test_reset_yes_deletes_only_the_named_store(persist: Path) -> None:
    result = llamastate("reset", "p1", "--yes", "--persist-dir", persist)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"removed {persist / 'p1'}\n"
    assert sorted(p.name for p in persist.iterdir()) == ["p2", "plain", "teststore"]


def test_reset_all_deletes_persistent_stores_only(persist: Path) -> None:
    result = llamastate("reset", "--all", "--yes", "--persist-dir", "persist", cwd=persist.parent)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in persist.iterdir()) == ["plain", "teststore"]
    assert (persist / "plain" / "data").read_text() == "keep me"
    assert (persist.parent / "outside").is_dir()


def test_reset_defaults_to_the_project_persist_dir(tmp_path: Path) -> None:
    folder = tmp_path / ".pytest_cache" / "d" / "llamastate"
    folder.mkdir(parents=True)
    LlamaStore.create(folder / "db", label="db", kind="persistent")
    result = llamastate("reset", "db", "--yes", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not (folder / "db").exists()
    assert folder.is_dir()


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("plain", "not a pytest-llamastate store"),
        ("teststore", "a test store, not a persistent one"),
        ("missing", "no such persistent store"),
        ("../outside", "not a store name"),
    ],
)
def test_reset_refuses_what_is_not_a_named_persistent_store(
    persist: Path, name: str, problem: str
) -> None:
    before = sorted(p for p in persist.parent.rglob("*"))
    result = llamastate("reset", "p1", name, "--yes", "--persist-dir", persist)
    assert_one_line_error(result, persist / name)
    assert problem in result.stderr
    assert sorted(p for p in persist.parent.rglob("*")) == before  # not even p1 went


@pytest.mark.parametrize(
    ("answer", "code", "deleted"), [("n\n", 1, False), ("", 1, False), ("y\n", 0, True)]
)
def test_reset_asks_first(persist: Path, answer: str, code: int, deleted: bool) -> None:
    result = llamastate("reset", "p1", "p2", "--persist-dir", persist, stdin=answer)
    assert result.returncode == code, result.stderr
    assert f"  {persist / 'p1'}\n" in result.stderr
    assert "[y/N]" in result.stderr
    assert (persist / "p1").exists() is not deleted
    assert (persist / "p2").exists() is not deleted


@pytest.mark.parametrize("args", [[], ["p1", "--all"]])
def test_reset_needs_names_or_all(persist: Path, args: list[str]) -> None:
    result = llamastate("reset", *args, "--yes", "--persist-dir", persist)
    assert result.returncode == 2
    assert (persist / "p1").is_dir()


def test_env_console_script_output_evals_in_bash(tmp_path: Path) -> None:
    script = shutil.which("llamastate") or str(Path(sys.executable).parent / "llamastate")
    assert Path(script).is_file(), "llamastate console script not installed"
    store = LlamaStore.create(tmp_path / "it's a store")
    (store.path / "stack.yaml").write_text("version: 2\n")
    result = subprocess.run(
        [script, "env", str(store.path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    flavor = detect()
    command = " ".join([flavor.cli, *flavor.run_args])
    flags = "".join(f" {flag}" for flag in flavor.server_flags)
    last = result.stdout.splitlines()[-1]
    port = re.fullmatch(r".* --port (\d+).*", last)
    assert port, last
    assert last == (
        f"# {command} '{tmp_path}/it'\"'\"'s a store/stack.yaml' --port {port[1]}{flags}"
    )
    with socket.socket() as sock:  # a port that was free, not the config's 8321
        sock.bind(("127.0.0.1", int(port[1])))

    shell = 'eval "$(llamastate env "$1")" && printf "%s\\n" "$SQLITE_STORE_DIR" "$OGX_CONFIG_DIR"'
    env = {**os.environ, "PATH": f"{Path(script).parent}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(
        ["bash", "-c", shell, "bash", str(store.path)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    assert out.splitlines() == [str(store.path), str(store.path / "config")]


def test_env_without_stack_yaml_has_exports_only(tmp_path: Path) -> None:
    store = LlamaStore.create(tmp_path / "s")
    result = llamastate("env", store.path)
    assert result.stdout.splitlines() == [f"export {k}={v}" for k, v in store.env.items()]


@pytest.mark.parametrize(
    "case",
    ["show-plain", "show-missing", "show-corrupt", "diff-corrupt", "env-plain", "ls-missing"],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, case: str) -> None:
    good = LlamaStore.create(tmp_path / "good").path
    plain = tmp_path / "plain"
    plain.mkdir()
    corrupt = corrupt_store(tmp_path / "corrupt")
    missing = tmp_path / "missing"
    args, named = {
        "show-plain": (["show", plain], plain),
        "show-missing": (["show", missing], missing),
        "show-corrupt": (["show", corrupt, "--json"], corrupt / "kvstore.db"),
        "diff-corrupt": (["diff", good, corrupt], corrupt / "kvstore.db"),
        "env-plain": (["env", plain], plain),
        "ls-missing": (["ls", missing], missing),
    }[case]
    result = llamastate(*args)
    assert_one_line_error(result, named)


def test_the_command_does_not_import_llama_stack(tmp_path: Path) -> None:
    code = (
        "import sys; from pytest_llamastate.cli.command import main; main(['ls', sys.argv[1]]); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('llama_stack', 'ogx')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert result.stdout.splitlines()[-1] == "[]"
