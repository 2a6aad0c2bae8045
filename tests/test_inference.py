"""--llama-inference: record a test's model calls against a local fake model, stop it,
replay in a copy of the project offline, and get the same answers; a request without a
recording fails its test in one line. Library and server, with xdist, on the installed
flavor (make test runs the suite once per flavor)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from flavors import FLAVOR, needs_stack

pytestmark = needs_stack

CONFTEST = """
import os
import pytest
from openai_server import running_openai_server

@pytest.fixture(scope="session", autouse=True)
def fake_model():
    if os.environ.get("NO_MODEL"):  # replay: nothing listens there
        os.environ["FAKE_OPENAI_URL"] = "http://127.0.0.1:9/v1"
        yield
        return
    with running_openai_server(a=2, b=3) as server:
        os.environ["FAKE_OPENAI_URL"] = server.base_url
        yield
"""

TESTS = """
import json
from pathlib import Path
import pytest
from pytest_llamastate import mcp_tools

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

@pytest.mark.llama_toolgroups(calc)
def test_tool_flow(llama_stack):
    if llama_stack.mode == "server":
        pytest.skip("invoke_tool is library mode only")
    tools = [
        {"type": "function", "function": {"name": t["name"], "description": t["description"],
                                          "parameters": t["input_schema"]}}
        for t in llama_stack.tools("mcp::calc")
    ]
    first = ask(llama_stack, "add 2 and 3", tools=tools).choices[0].message
    [call] = first.tool_calls
    result = llama_stack.invoke_tool(call.function.name, **json.loads(call.function.arguments))
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
"""


def _project(pytester: pytest.Pytester, mode: str) -> None:
    config = yaml.safe_load(FLAVOR.default_config.read_text())
    config["apis"].insert(0, "inference")
    config["providers"]["inference"] = [
        {
            "provider_id": "openai",
            "provider_type": "remote::openai",
            "config": {"base_url": "${env.FAKE_OPENAI_URL}", "api_key": "fake"},
        }
    ]
    config["registered_resources"] = {
        "models": [
            {
                "model_id": "fake-model",
                "provider_id": "openai",
                "provider_model_id": "fake-model",
                "model_type": "llm",
            }
        ]
    }
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
    recorded.assert_outcomes(
        passed=3 if mode == "library" else 2, skipped=0 if mode == "library" else 1
    )
    recorded.stdout.fnmatch_lines(["llamastate: inference=record (--llama-inference): *"])
    answers = _answers(pytester.path)
    assert list((pytester.path / "tests" / "recordings").glob("*.json"))
    assert answers["chat-event"] == '"recorded"'

    copy = pytester.path.parent / f"{pytester.path.name}-clone"
    shutil.copytree(pytester.path, copy, ignore=shutil.ignore_patterns("answers"))
    monkeypatch.chdir(copy)
    monkeypatch.setenv("NO_MODEL", "1")
    monkeypatch.setenv("LLAMASTATE_INFERENCE", "replay")  # the variable CI sets
    replayed = pytester.runpytest_subprocess("-n", "2", "-p", "no:randomly", "--rootdir", str(copy))
    replayed.assert_outcomes(
        passed=3 if mode == "library" else 2, skipped=0 if mode == "library" else 1
    )
    again = _answers(copy)
    assert again.pop("chat-event") == '"replayed"'
    answers.pop("chat-event")
    assert again == answers
    if mode == "library":  # the model's tool call came from the recording; the tool ran
        name, arguments, result, final, calls = yaml.safe_load(again["tool"])
        assert (name, yaml.safe_load(arguments), result, calls) == ("add", {"a": 2, "b": 3}, 5, 1)
        assert final.startswith("answer ")


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
