"""A test's starting state: copied from a built template vs built through the API.

The state is the issue's example: two toolgroups, a prompt, a conversation with two
items and an uploaded file. The baseline is what a test does without templates: build it
through the running stack's API in the test. The template side is what ``llama_store``
does per test under ``@pytest.mark.llama_template``: make the store and copy the built
template into it (paths rewritten). Both run in the same process and run; the template's
one-off build is reported apart.
"""

from __future__ import annotations

import io
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from pytest_llamastate import LlamaStack, LlamaStackFactory, llama_template
from pytest_llamastate.releases import detect
from pytest_llamastate.stack import StackMode
from pytest_llamastate.stack.state_templates import StateTemplates
from pytest_llamastate.state.seed_rows import TemplateCache
from pytest_llamastate.state.store_factory import LlamaStoreFactory

COPY_ROUNDS = 200
API_ROUNDS = 10
#: Server mode: each toolgroup registration restarts the server (0.7 has no route).
SERVER_ROUNDS = 3


def build_state(stack: LlamaStack) -> None:
    """The state every test starts from, through the stack's API."""
    stack.register_toolgroup("mcp::crm", mcp_endpoint="http://127.0.0.1:9/crm")
    stack.register_toolgroup("mcp::mail", mcp_endpoint="http://127.0.0.1:9/mail")
    client = stack.client
    client.prompts.create(prompt="Hello {{ name }}", variables=["name"])
    text = [{"type": "input_text", "text": "hi"}]
    client.conversations.create(
        items=[{"type": "message", "role": "user", "content": text}] * 2,
        metadata={"topic": "crm"},
    )
    data = io.BytesIO(b"crm notes")
    data.name = "notes.txt"
    client.files.create(file=data, purpose="assistants")


def main() -> dict[str, Any]:
    flavor = detect()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        seeds = TemplateCache(root / "seeds", flavor, flavor.default_config)
        stacks = LlamaStackFactory("library", flavor.default_config, flavor=flavor)
        templates = StateTemplates(root / "state", stacks, seeds, uuid.uuid4().hex)
        factory = LlamaStoreFactory("none", seeds, root / "stores")
        config = stacks.load_config()
        start = time.perf_counter()
        built, _ = templates.get(llama_template("crm")(build_state), config, "bench")
        build_s = time.perf_counter() - start

        empty, copies = [], []
        for n in range(COPY_ROUNDS):  # interleaved, so both see the same disk load
            start = time.perf_counter()
            factory.mktemp(f"empty{n}")
            empty.append(time.perf_counter() - start)
            start = time.perf_counter()
            store = factory.mktemp(f"copy{n}", template=built)
            copies.append(time.perf_counter() - start)
        assert len(store.toolgroups()) == 2
        library = _through_api(factory, stacks, "library", API_ROUNDS)
        server = _through_api(factory, stacks, "server", SERVER_ROUNDS)
        factory.finish(failed=False)
    copy_s = statistics.median(copies)
    return {
        "flavor": f"{flavor.name} {flavor.version()}",
        "template_build_s": round(build_s, 2),
        "empty_store_ms": round(statistics.median(empty) * 1000, 3),
        "template_copy_ms": round(copy_s * 1000, 3),
        "through_api_library_ms": round(library * 1000, 1),
        "through_api_server_ms": round(server * 1000, 1),
        "speedup_library": round(library / copy_s, 1),
        "speedup_server": round(server / copy_s, 1),
    }


def _through_api(
    factory: LlamaStoreFactory, stacks: LlamaStackFactory, mode: StackMode, rounds: int
) -> float:
    """Median seconds to build the state through the API on a started stack."""
    times = []
    for n in range(rounds):
        store = factory.mktemp(f"{mode}{n}")
        with store.activate(), stacks.start(store, mode=mode) as stack:
            start = time.perf_counter()
            build_state(stack)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


if __name__ == "__main__":
    print(main())
