"""``--llama-inference`` on whichever release is installed: part of the compatibility suite.

A project records one ``chat.completions.create`` per test against the suite's fake model
(numbered answers, so a replayed answer is told from a live one), then a copy of it
replays them with the model out of reach: the same answers, each from its own test's
recording, no request reaching the model. Library stacks, in two in-process inner runs
(the outer process imported the stack once). A server restores the test id from the
header the plugin stamps: checked on the release's own code, in process; a forked server
doing it for real imports the stack once more (about 10 s of CPU per line), which the
full suite does on llama-stack 0.7 and OGX 1.5 (``tests/test_inference.py``, with xdist,
templates, tools and a missing recording). A release without a recorder the plugin drives
says so in one line.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from flavors import FLAVOR, skip_module_without_a_stack
from openai_server import FakeOpenAI, running_openai_server, with_fake_model
from pytest_zygote import import_stack

from pytest_llamastate.plugin.inference import recorder_problem
from pytest_llamastate.releases import import_quietly
from pytest_llamastate.stack.recording import Recording

skip_module_without_a_stack()

TESTS = """
import json
from pathlib import Path


def ask(stack, recordings):
    answer = stack.client.chat.completions.create(
        model="openai/fake-model", messages=[{"role": "user", "content": "hi"}]
    )
    chats = [r for r in recordings.requests if r.endpoint.endswith("/chat/completions")]
    said = [answer.choices[0].message.content, [(r.event, r.file) for r in chats]]
    with Path("answers.jsonl").open("a") as out:
        out.write(json.dumps(said) + "\\n")


def test_one(llama_stack, llama_recordings):
    ask(llama_stack, llama_recordings)


def test_two(llama_stack, llama_recordings):
    ask(llama_stack, llama_recordings)
"""


@pytest.fixture(scope="module")
def fake_model() -> Iterator[FakeOpenAI]:
    """The model, for the module; and the stack and its recorder imported in this process
    (the conftest does not import the stack before llama-stack 0.4.3), which the in-process
    inner runs need: a stack re-imported by each run mixes fresh modules with those of the
    last (llama-stack 0.3's API types then recurse in ``typing``)."""
    import_stack()
    if FLAVOR.recorder is not None and recorder_problem(FLAVOR) is None:
        import_quietly(FLAVOR.recorder.module)
    with running_openai_server() as server:
        yield server


def _answers(root: Path) -> list[tuple[str, list[list[str]]]]:
    lines = (root / "answers.jsonl").read_text().splitlines()
    return [(answer, requests) for answer, requests in map(json.loads, lines)]


@pytest.mark.skipif(FLAVOR.recorder is None, reason="no recorder the plugin drives")
def test_recorded_answers_replay_offline_in_a_copy(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, fake_model: FakeOpenAI
) -> None:
    from openai.resources.chat.completions import AsyncCompletions

    chat = AsyncCompletions.create  # what the recorder patches
    config = with_fake_model(yaml.safe_load(FLAVOR.default_config.read_text()))
    pytester.path.joinpath("tests").mkdir()
    pytester.path.joinpath("tests", "run.yaml").write_text(yaml.safe_dump(config))
    pytester.path.joinpath("tests", "test_model.py").write_text(TESTS)
    pytester.makeini("[pytest]\nllama_stack_config = tests/run.yaml\nllama_stack_mode = library\n")
    args = ("-p", "no:cacheprovider", "-p", "no:randomly")
    monkeypatch.setenv("FAKE_OPENAI_URL", fake_model.base_url)
    pytester.runpytest(*args, "--llama-inference=record").assert_outcomes(passed=2)
    recorded = _answers(pytester.path)
    assert len({answer for answer, _ in recorded}) == 2  # one model call each
    # Each under its own test's id, beside the test module.
    for _, [[event, file]] in recorded:
        assert event == "recorded"
        assert file.startswith("tests/recordings/")
    assert AsyncCompletions.create is chat  # the recorder left with the last stack
    asked = len(fake_model.requests)

    copy = pytester.path.parent / f"{pytester.path.name}-copy"
    shutil.copytree(pytester.path, copy, ignore=shutil.ignore_patterns("answers.jsonl"))
    monkeypatch.chdir(copy)
    monkeypatch.setenv("FAKE_OPENAI_URL", "http://127.0.0.1:9/v1")  # nothing listens there
    replayed = pytester.runpytest(*args, "--rootdir", str(copy), "--llama-inference=replay")
    replayed.assert_outcomes(passed=2)
    assert _answers(copy) == [(answer, [["replayed", file]]) for answer, [[_, file]] in recorded]
    assert len(fake_model.requests) == asked


@pytest.mark.skipif(FLAVOR.recorder is None, reason="no recorder the plugin drives")
def test_a_server_restores_the_test_id_the_plugin_stamps(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What a server does with each request, on the release's own code: with the
    environment the plugin starts a forked server in, the provider data of a request from
    the plugin's client (stamped) becomes the recorder's test id."""
    import httpx

    recording = Recording("replay", tmp_path, FLAVOR, tmp_path / "events.jsonl")
    for name, value in recording.environment(server="fork").items():
        monkeypatch.setenv(name, value)
    client_class = getattr(import_quietly(FLAVOR.client_package), FLAVOR.client_class)
    client = client_class(base_url="http://127.0.0.1:9")
    recording.stamp(client)
    request = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    with recording.as_test("tests/test_model.py::test_one"):
        client._prepare_request(request)
    assert FLAVOR.recorder is not None
    context = import_quietly(FLAVOR.recorder.context_module)
    headers = import_quietly(f"{FLAVOR.core}.request_headers")
    with headers.request_provider_data_context(request.headers):
        token = context.sync_test_context_from_provider_data()
        restored = context.get_test_context()
    if token is not None:
        context.reset_test_context(token)
    assert restored == "tests/test_model.py::test_one"


@pytest.mark.skipif(FLAVOR.recorder is not None, reason="the release has a recorder")
def test_a_release_without_a_recorder_says_so_in_one_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_it(): pass")
    result = pytester.runpytest("-p", "no:cacheprovider", "--llama-inference=record")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    said = recorder_problem(FLAVOR)
    assert said is not None
    assert said.startswith(f"{FLAVOR.name} {FLAVOR.version()} has no request recorder")
    assert result.stderr.str().strip() == f"ERROR: --llama-inference=record: {said}"
