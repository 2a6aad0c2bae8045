"""--llama-inference: record a test's model calls against a local fake model, stop it,
replay in a copy of the project offline, and get the same answers; a request without a
recording fails its test in one line. Library and server, with xdist, on the installed
flavor (make test runs the suite once per flavor)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import BACKEND
from flavors import FLAVOR, needs_stack
from openai_server import with_fake_model

from pytest_llamastate.plugin.inference import recorder_problem
from pytest_llamastate.releases import LLAMA_STACK

pytestmark = needs_stack

CONFTEST = """
import os
from pathlib import Path
import pytest
from openai_server import running_openai_server
from pytest_llamastate import llama_template

@pytest.fixture(scope="session", autouse=True)
def fake_model():
    if os.environ.get("NO_MODEL"):  # replay: nothing listens there
        os.environ["FAKE_OPENAI_URL"] = "http://127.0.0.1:9/v1"
        yield
        return
    with running_openai_server(a=2, b=3) as server:
        os.environ["FAKE_OPENAI_URL"] = server.base_url
        yield

@llama_template
def greeted(stack):  # its model call is recorded under the template's own id
    answer = stack.client.chat.completions.create(
        model="openai/fake-model", messages=[{"role": "user", "content": "greet"}]
    )
    prompt = stack.client.prompts.create(prompt=answer.choices[0].message.content)
    # For the test to retrieve it: llama-stack 0.7.3 cannot list prompts on kv_postgres.
    Path("greeted-prompt").write_text(prompt.prompt_id)
"""

TESTS = """
import asyncio
import json
from pathlib import Path
import pytest
from pytest_llamastate import mcp_tools
from pytest_llamastate.releases import detect

def add(a: int, b: int) -> int:
    \"\"\"Add two integers.\"\"\"
    return a + b

calc = mcp_tools("mcp::calc", add)

def ask(stack, text, **extra):
    return stack.client.chat.completions.create(
        model="openai/fake-model", messages=[{"role": "user", "content": text}], **extra
    )

def save(name, value):
    Path("answers").mkdir(exist_ok=True)
    Path("answers", name).write_text(json.dumps(value))

def test_chat(llama_stack, llama_recordings):
    save("chat", ask(llama_stack, "hi").choices[0].message.content)
    [request] = [r for r in llama_recordings.requests if "chat" in r.endpoint]
    assert request.file.startswith("tests/recordings/")
    save("chat-event", request.event)

def test_chat_twice(llama_stack):
    save("twice", [ask(llama_stack, q).choices[0].message.content for q in ("one", "two")])

def mcp_session(action):
    # Lists or calls calc's tools with an MCP client, as a server-mode test must (a
    # server has no route that invokes a tool).
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def run():
        async with streamable_http_client(calc.server.url) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                return await action(session)

    return asyncio.run(run())

def tool_schemas(stack):
    if stack.mode == "library" or not detect().tools_route_bug:  # OGX 1.5's route fails
        return [(t["name"], t["description"], t["input_schema"]) for t in stack.tools("mcp::calc")]
    listed = mcp_session(lambda session: session.list_tools())
    wire = [t.model_dump(by_alias=True, mode="json") for t in listed.tools]  # mcp 1 and 2
    return [(t["name"], t["description"], t["inputSchema"]) for t in wire]

def run_tool(stack, name, arguments):
    if stack.mode == "library":
        return stack.invoke_tool(name, **arguments)
    done = mcp_session(lambda session: session.call_tool(name, arguments))
    return json.loads(done.content[0].text)

@pytest.mark.llama_toolgroups(calc)
def test_tool_flow(llama_stack):
    tools = [
        {"type": "function", "function": {"name": name, "description": text, "parameters": schema}}
        for name, text, schema in tool_schemas(llama_stack)
    ]
    first = ask(llama_stack, "add 2 and 3", tools=tools).choices[0].message
    [call] = first.tool_calls
    result = run_tool(llama_stack, call.function.name, json.loads(call.function.arguments))
    final = llama_stack.client.chat.completions.create(
        model="openai/fake-model",
        messages=[
            {"role": "user", "content": "add 2 and 3"},
            {"role": "assistant", "tool_calls": [{"id": call.id, "type": "function",
             "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
            {"role": "tool", "tool_call_id": call.id, "content": str(result)},
        ],
        tools=tools,
    )
    save("tool", [call.function.name, call.function.arguments, result,
                  final.choices[0].message.content, len(calc.server.calls)])

@pytest.mark.llama_template("greeted")
def test_from_template(llama_stack):
    prompt = llama_stack.client.prompts.retrieve(Path("greeted-prompt").read_text())
    save("template", [prompt.prompt])

@pytest.mark.persistent("chat-soak")
def test_persistent_store(llama_stack, llama_recordings):
    save("persistent", ask(llama_stack, "soak").choices[0].message.content)
    save("persistent-files", [r.file for r in llama_recordings.requests if "chat" in r.endpoint])
"""


TEST_IDS = [
    f"tests/test_model.py::{name}"
    for name in ("test_chat", "test_chat_twice", "test_tool_flow", "test_persistent_store")
]
#: A test whose stack lists the models (at start) without a chat call of its own.
OTHER_IDS = ["tests/test_model.py::test_from_template"]


def _project(pytester: pytest.Pytester, mode: str) -> None:
    """A project whose run config is the plugin's offline one (its stores on the suite's
    backend) with the fake model added."""
    base = FLAVOR.default_postgres_config if BACKEND == "postgres" else FLAVOR.default_config
    config = with_fake_model(yaml.safe_load(base.read_text()))
    pytester.path.joinpath("tests").mkdir()
    pytester.path.joinpath("tests", "run.yaml").write_text(yaml.safe_dump(config))
    shutil.copy(Path(__file__).with_name("openai_server.py"), pytester.path / "tests")
    pytester.path.joinpath("tests", "conftest.py").write_text(CONFTEST)
    pytester.path.joinpath("tests", "test_model.py").write_text(TESTS)
    pytester.makeini(
        f"[pytest]\nllama_stack_config = tests/run.yaml\nllama_stack_mode = {mode}\n"
        "pythonpath = tests\n"
    )


def _answers(root: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((root / "answers").iterdir())}


@pytest.mark.parametrize("mode", ["library", "server"])
def test_record_then_replay_offline_in_a_copy(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    _project(pytester, mode)
    recorded = pytester.runpytest_subprocess(
        "-n", "2", "-p", "no:randomly", "--llama-inference=record"
    )
    recorded.assert_outcomes(passed=5)
    recorded.stdout.fnmatch_lines(["llamastate: inference=record (--llama-inference): *"])
    answers = _answers(pytester.path)
    assert answers["chat-event"] == '"recorded"'
    # Each recording is beside the module that made it, under the id that made it: a
    # template's build under the template's own id, a persistent store's test as any test.
    recordings = pytester.path / "tests" / "recordings"
    ids = {json.loads(f.read_text())["test_id"] for f in recordings.glob("*.json")}
    assert {"tests/conftest.py::llama_template[greeted]", *TEST_IDS} <= ids
    assert ids <= {"tests/conftest.py::llama_template[greeted]", *TEST_IDS, *OTHER_IDS}
    [persistent] = json.loads(answers["persistent-files"])  # in the project, not the store
    assert persistent.startswith("tests/recordings/")

    copy = pytester.path.parent / f"{pytester.path.name}-clone"
    shutil.copytree(pytester.path, copy, ignore=shutil.ignore_patterns("answers"))
    monkeypatch.chdir(copy)
    monkeypatch.setenv("NO_MODEL", "1")
    monkeypatch.setenv("LLAMASTATE_INFERENCE", "replay")  # the variable CI sets
    replayed = pytester.runpytest_subprocess("-n", "2", "-p", "no:randomly", "--rootdir", str(copy))
    replayed.assert_outcomes(passed=5)
    again = _answers(copy)
    assert again.pop("chat-event") == '"replayed"'
    answers.pop("chat-event")
    assert again == answers
    [prompt] = json.loads(again["template"])
    assert prompt.startswith("answer ")
    # The model's tool call came from the recording; the real tool ran, once per run.
    name, arguments, result, final, calls = json.loads(again["tool"])
    assert (name, json.loads(arguments), result, calls) == ("add", {"a": 2, "b": 3}, 5, 1)
    assert final.startswith("answer ")


TEMPLATE_TEST = """
import pytest

@pytest.mark.llama_template("greeted")
def test_from_template(llama_stack):
    assert llama_stack.client.prompts.list()
"""


def test_a_template_build_on_an_exec_server_is_recorded_under_the_template_id(
    pytester: pytest.Pytester,
) -> None:
    """A server started by the CLI learns the test id only from the header the plugin's
    client stamps: the client a template's builder gets stamps the template's own id."""
    _project(pytester, "server")
    pytester.path.joinpath("tests", "test_model.py").write_text(TEMPLATE_TEST)
    result = pytester.runpytest_subprocess(
        "-p", "no:randomly", "--llama-inference=record", "--llama-server-process=exec"
    )
    result.assert_outcomes(passed=1)
    recordings = pytester.path / "tests" / "recordings"
    [chat] = [
        recording
        for recording in map(json.loads, map(Path.read_text, recordings.glob("*.json")))
        if recording["request"]["endpoint"] == "/v1/chat/completions"
    ]
    assert chat["test_id"] == "tests/conftest.py::llama_template[greeted]"
    assert chat["request"]["body"]["messages"] == [{"role": "user", "content": "greet"}]


def test_a_request_without_a_recording_fails_in_one_line(pytester: pytest.Pytester) -> None:
    _project(pytester, "library")
    result = pytester.runpytest_subprocess(
        "-p",
        "no:randomly",
        "--llama-inference=replay",
        "-k",
        "test_chat and not twice",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "tests/test_model.py::test_chat: no recording of POST /v1/chat/completions "
            "(model fake-model) in tests/recordings/; record it with "
            "--llama-inference=record-if-missing",
            "*- llama recordings -*",
            "missing: POST /v1/chat/completions (model fake-model) tests/recordings/*.json",
        ]
    )
    assert "Traceback" not in result.stdout.str()


def test_an_unknown_mode_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_it(): pass")
    result = pytester.runpytest("--llama-inference=replya")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: --llama-inference: unknown inference mode 'replya'; allowed: live, record, *"]
    )


def test_live_is_the_default_and_says_so(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_it(llama_recordings): assert llama_recordings.requests == []")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["llamastate: inference=live (default): model calls are not recorded"]
    )


@pytest.mark.parametrize("release", ["0.2.12", "0.2.20"], ids=["none", "0.2.17-0.2.24"])
def test_a_release_whose_recorder_is_not_driven_says_so_in_one_line(release: str) -> None:
    said = recorder_problem(LLAMA_STACK.at(release))  # the release table's line
    assert said is not None
    assert said.endswith(
        " has no request recorder the plugin drives; "
        "recording and replay need llama-stack 0.3 or later, or OGX"
    )
    assert "\n" not in said
    assert recorder_problem(FLAVOR) is None  # the installed release's recorder is driven
