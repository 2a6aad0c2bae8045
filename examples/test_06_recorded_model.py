"""Deterministic inference: a test's model call answered from its recording, offline.

pytest.ini sets `llama_inference = replay`: the chat below is answered from
recordings/ (committed beside this file), with no model and no key. They were recorded
with `--llama-inference=record-if-missing`, once on llama-stack and once on OGX, against a
local OpenAI-compatible stand-in (the project's tests/openai_server.py, which lists
`gpt-4o-mini` and answers "answer 1", "answer 2", ...); point OPENAI_BASE_URL and
OPENAI_API_KEY at your model to record your own. See docs/inference.md.
"""

import pytest
import yaml


@pytest.fixture
def llama_stack_config(llama_stack_config, tmp_path):
    """The plugin's default config plus a model: the remote::openai provider."""
    config = yaml.safe_load(llama_stack_config.read_text())
    config["apis"].append("inference")
    config["providers"]["inference"] = [
        {
            "provider_id": "openai",
            "provider_type": "remote::openai",
            "config": {
                "base_url": "${env.OPENAI_BASE_URL:=https://api.openai.com/v1}",
                "api_key": "${env.OPENAI_API_KEY:=none}",  # replay sends nothing
            },
        }
    ]
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_answer_is_the_recorded_one(llama_stack, llama_recordings):
    answer = llama_stack.client.chat.completions.create(
        model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "Say hi"}]
    )
    assert answer.choices[0].message.content == "answer 1"
    [chat] = [r for r in llama_recordings.requests if r.endpoint == "POST /v1/chat/completions"]
    assert chat.file.startswith("recordings/")
    assert chat.event in ("replayed", "recorded")  # recorded: when you record your own
