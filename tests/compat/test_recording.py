"""``--llama-inference`` on whichever release is installed: part of the compatibility suite.

A project records one ``chat.completions.create`` per test against the suite's fake model
(numbered answers, so a replayed answer is told from a live one), then a copy of it
replays them with the model out of reach: the same answers, no request reaching the
model. Library and server (fork) mode. A release without a recorder the plugin drives
says so in one line. The full set (xdist, templates, tools, a missing recording) runs on
llama-stack 0.7 and OGX 1.5 in ``tests/test_inference.py``; this is what each older line
must also do, kept to two in-process inner runs per mode (they cost seconds, not a stack
import each: the outer process imported the stack already).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import import_stack
from flavors import FLAVOR, skip_module_without_a_stack
from openai_server import FakeOpenAI, running_openai_server, with_fake_model

from pytest_llamastate.plugin.inference import recorder_problem

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


def test_library(llama_stack_factory, llama_store, llama_recordings):
    with llama_stack_factory.start(llama_store, mode="library") as stack:
        ask(stack, llama_recordings)


def test_server(llama_stack, llama_recordings):
    ask(llama_stack, llama_recordings)
"""


@pytest.fixture(scope="module")
def fake_model() -> Iterator[FakeOpenAI]:
    """The model, for the module; and the stack imported in this process (llama-stack
    before 0.4.3 is not, by the conftest), which the in-process inner runs need."""
    import_stack()
    with running_openai_server() as server:
        yield server


def _answers(root: Path) -> list[tuple[str, list[list[str]]]]:
    lines = (root / "answers.jsonl").read_text().splitlines()
    return [(answer, requests) for answer, requests in map(json.loads, lines)]


@pytest.mark.skipif(FLAVOR.recorder is None, reason="no recorder the plugin drives")
def test_recorded_answers_replay_offline_in_a_copy(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, fake_model: FakeOpenAI
) -> None:
    """A library stack's test and a forked server's (the zygote starts with the run)."""
    from openai.resources.chat.completions import AsyncCompletions

    chat = AsyncCompletions.create  # what the recorder patches
    config = with_fake_model(yaml.safe_load(FLAVOR.default_config.read_text()))
    pytester.path.joinpath("tests").mkdir()
    pytester.path.joinpath("tests", "run.yaml").write_text(yaml.safe_dump(config))
    pytester.path.joinpath("tests", "test_model.py").write_text(TESTS)
    pytester.makeini("[pytest]\nllama_stack_config = tests/run.yaml\nllama_stack_mode = server\n")
    args = ("-p", "no:cacheprovider", "-p", "no:randomly", "--llama-server-process=fork")
    monkeypatch.setenv("FAKE_OPENAI_URL", fake_model.base_url)
    pytester.runpytest(*args, "--llama-inference=record").assert_outcomes(passed=2)
    recorded = _answers(pytester.path)
    assert len({answer for answer, _ in recorded}) == 2  # one model call each
    # Each under its own test's id (a server learns it from the header), beside the test.
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


@pytest.mark.skipif(FLAVOR.recorder is not None, reason="the release has a recorder")
def test_a_release_without_a_recorder_says_so_in_one_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_it(): pass")
    result = pytester.runpytest("-p", "no:cacheprovider", "--llama-inference=record")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    said = recorder_problem(FLAVOR)
    assert said is not None
    assert said.startswith(f"{FLAVOR.name} {FLAVOR.version()} has no request recorder")
    assert result.stderr.str().strip() == f"ERROR: --llama-inference=record: {said}"
