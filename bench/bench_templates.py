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
from pytest_llamastate.flavor import detect
from pytest_llamastate.statetemplates import StateTemplates
from pytest_llamastate.stores import LlamaStoreFactory
from pytest_llamastate.templates import TemplateCache

COPY_ROUNDS = 200
API_ROUNDS = 10


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

        copies = []
        for n in range(COPY_ROUNDS):
            start = time.perf_counter()
            store = factory.mktemp(f"copy{n}", template=built)
            copies.append(time.perf_counter() - start)
        assert len(store.toolgroups()) == 2

        through_api = []
        for n in range(API_ROUNDS):
            store = factory.mktemp(f"api{n}")
            with store.activate(), stacks.start(store) as stack:
                start = time.perf_counter()
                build_state(stack)
                through_api.append(time.perf_counter() - start)
        factory.finish(failed=False)
    copy_s, api_s = statistics.median(copies), statistics.median(through_api)
    return {
        "flavor": f"{flavor.name} {flavor.version()}",
        "template_build_s": round(build_s, 2),
        "template_copy_ms": round(copy_s * 1000, 3),
        "through_api_ms": round(api_s * 1000, 1),
        "speedup": round(api_s / copy_s, 1),
    }


if __name__ == "__main__":
    print(main())
