"""A tiny OpenAI-compatible model server for tests, on 127.0.0.1: no real model anywhere.

It lists one model and answers chat completions with numbered answers ("answer 1",
"answer 2", ...), so a live call and a replayed one can be told apart. When a request
offers tools and carries no tool result yet, it asks for the first tool instead (with the
arguments given to :func:`running_openai_server`), the way a model starts a tool-using flow.
Every request it served is recorded in ``server.requests``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "fake-model"
#: The variable a run config from :func:`with_fake_model` reads the server's URL from.
URL_VAR = "FAKE_OPENAI_URL"


@dataclass
class FakeOpenAI:
    """The running server: its URL (``.../v1``) and what it was asked."""

    base_url: str
    tool_arguments: dict[str, Any]
    #: The one model it lists.
    model_id: str = MODEL
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    answers: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_answer(self) -> str:
        with self.lock:
            self.answers += 1
            return f"answer {self.answers}"


def _completion(body: dict[str, Any], server: FakeOpenAI) -> dict[str, Any]:
    messages = body.get("messages") or []
    tools = body.get("tools") or []
    message: dict[str, Any]
    if tools and not any(m.get("role") == "tool" for m in messages):
        name = tools[0]["function"]["name"]
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": f"call_{len(server.requests)}",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(server.tool_arguments)},
                }
            ],
        }
        finish = "tool_calls"
    else:
        message = {"role": "assistant", "content": server.next_answer()}
        finish = "stop"
    return {
        "id": f"chatcmpl-{len(server.requests)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", MODEL),
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def _chunks(completion: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The same completion as a stream: one delta chunk, then the finish."""
    choice = completion["choices"][0]
    delta = dict(choice["message"])
    if delta.get("tool_calls"):
        delta["tool_calls"] = [dict(c, index=i) for i, c in enumerate(delta["tool_calls"])]
    base = {k: completion[k] for k in ("id", "created", "model")}
    yield {
        **base,
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
    }
    yield {
        **base,
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}],
        "usage": completion["usage"],
    }


def _handler(server: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            server.requests.append(("GET " + self.path, {}))
            if self.path.rstrip("/").endswith("/models"):
                model = {
                    "id": server.model_id,
                    "object": "model",
                    "created": 0,
                    "owned_by": "tests",
                }
                self._send(200, {"object": "list", "data": [model]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            server.requests.append(("POST " + self.path, body))
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            completion = _completion(body, server)
            if not body.get("stream"):
                self._send(200, completion)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for chunk in _chunks(completion):
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")

    return Handler


@contextmanager
def running_openai_server(*, model_id: str = MODEL, **tool_arguments: Any) -> Iterator[FakeOpenAI]:
    """Serve the fake model on a free port; yields the server (``.base_url`` ends in /v1).
    ``model_id`` is the model it lists (a page's example asks for a real model's name)."""
    state = FakeOpenAI(base_url="", tool_arguments=tool_arguments, model_id=model_id)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def with_fake_model(config: dict[str, Any]) -> dict[str, Any]:
    """A run config (parsed) that also serves this model: the inference API with a
    ``remote::openai`` provider at ``${env.FAKE_OPENAI_URL}``, the model registered (a
    test asks for ``openai/fake-model``). The variable keeps one config for every port."""
    config = dict(config, providers=dict(config["providers"]))
    config["apis"] = ["inference", *config["apis"]]
    config["providers"]["inference"] = [
        {
            "provider_id": "openai",
            "provider_type": "remote::openai",
            "config": {"base_url": f"${{env.{URL_VAR}}}", "api_key": "fake"},
        }
    ]
    model = {
        "model_id": MODEL,
        "provider_id": "openai",
        "provider_model_id": MODEL,
        "model_type": "llm",
    }
    config["registered_resources"] = {"models": [model]}
    return config
