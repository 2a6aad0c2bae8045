"""What a release keeps at class or module level never carries one library stack's state
into the next (``process_state`` in the release table): the same suite passes in library
mode as in server mode, where every stack is a process of its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml
from flavors import FLAVOR, skip_module_without_a_stack
from openai_server import MODEL, FakeOpenAI, running_openai_server

from pytest_llamastate.stack.library import process_state

skip_module_without_a_stack()


@pytest.mark.parametrize("entry", FLAVOR.process_state)
def test_every_listed_state_is_a_container_of_the_installed_release(entry: str) -> None:
    """A renamed or moved attribute would leave a release's state uncleared, silently."""
    state = process_state(FLAVOR).get(entry)
    assert hasattr(state, "clear")
    assert hasattr(state, "__len__")


@pytest.fixture(scope="module")
def model_server() -> Iterator[FakeOpenAI]:
    with running_openai_server() as server:
        yield server


def _config_with_a_model(base_url: str) -> str:
    """The plugin's offline config plus a ``remote::openai`` provider at ``base_url``."""
    config = yaml.safe_load(FLAVOR.default_config.read_text())
    config["apis"].append("inference")
    config["providers"]["inference"] = [
        {
            "provider_id": "openai",
            "provider_type": "remote::openai",
            "config": {"api_key": "not-a-key", "base_url": base_url},
        }
    ]
    return yaml.safe_dump(config)


@pytest.mark.parametrize("mode", ["library", "server"])
def test_every_stack_lists_the_models_of_its_providers(
    pytester: pytest.Pytester, mode: str, model_server: FakeOpenAI
) -> None:
    """llama-stack 0.7.3 remembers in a class attribute which providers' models it listed:
    without the reset, only the process's first library stack lists ``fake-model``."""
    pytester.makefile(".yaml", run=_config_with_a_model(model_server.base_url))
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.parametrize("n", range(3))
        def test_models(llama_stack, n):
            listed = llama_stack.client.models.list()  # a page on OGX 1.0-1.4
            ids = [getattr(m, "identifier", None) or m.id for m in getattr(listed, "data", listed)]
            assert any(i.endswith("{MODEL}") for i in ids), ids
        """
    )
    result = pytester.runpytest(f"--llama-stack-mode={mode}", "--llama-stack-config=run.yaml")
    result.assert_outcomes(passed=3)


def test_the_next_stack_remembers_no_mcp_transport(pytester: pytest.Pytester, mcp_url: str) -> None:
    """The MCP client keeps the transport that worked per URL in a module global, and a
    later test may get the same port for a server speaking another transport: the next
    test starts with none remembered (named directly here, not through the table)."""
    pytester.makepyfile(
        f"""
        from pytest_llamastate.releases import import_quietly

        def protocols():
            return len(import_quietly("{FLAVOR.package}.providers.utils.tools.mcp").protocol_cache)

        def test_fill(llama_stack):
            llama_stack.register_toolgroup("mcp::calc", mcp_endpoint="{mcp_url}")
            assert [t["name"] for t in llama_stack.tools()] == ["add"]
            assert protocols() == 1

        def test_next(llama_stack):
            assert protocols() == 0
        """
    )
    pytester.runpytest().assert_outcomes(passed=2)


def test_a_library_stack_stores_its_chat_completion_before_it_stops(
    pytester: pytest.Pytester, model_server: FakeOpenAI
) -> None:
    """OGX's inference router stores a chat completion in a task of its own after the answer
    went back (``background_writes``). A stack stopped at once lost the completion, and the
    store's aiosqlite thread then called into the closed loop: a warning that failed a
    ``-W error`` run. (OGX 1.5's own client warns on a string message, hence the filter.)"""
    pytester.makefile(".yaml", run=_config_with_a_model(model_server.base_url))
    pytester.makepyfile(
        f"""
        def chat(stack):
            return stack.client.chat.completions.create(
                model="openai/{MODEL}", messages=[{{"role": "user", "content": "hi"}}]
            )

        def test_stored(llama_store, llama_stack_factory):
            with llama_stack_factory.start(llama_store) as stack:
                answer = chat(stack)
            with llama_stack_factory.start(llama_store) as stack:  # the same store again
                stored = stack.client.chat.completions.list().data
            assert [c.id for c in stored] == [answer.id]

        def test_next(llama_stack):  # where the last stack's late warning surfaced
            assert chat(llama_stack).choices[0].message.content
        """
    )
    result = pytester.runpytest(
        "-W",
        "error",
        "-W",
        "ignore:Pydantic serializer warnings:UserWarning",
        "--llama-stack-config=run.yaml",
    )
    result.assert_outcomes(passed=2)
    assert "Event loop is closed" not in result.stdout.str() + result.stderr.str()
