"""A scripted OpenAI-compatible chat server on loopback, speaking the real wire format.

Each reply is taken from a script: a dict {"tool_calls": [(name, args)]} or {"content": str},
or a callable(request_json) returning one. Every request body is recorded for assertions.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

Reply = dict[str, Any] | Callable[[dict], dict[str, Any]]


def completion(reply: dict[str, Any], model: str) -> dict[str, Any]:
    """A chat.completion object as OpenAI returns it."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.get("content")}
    finish = "stop"
    if reply.get("tool_calls"):
        message["tool_calls"] = [
            {"id": f"call_{uuid.uuid4().hex[:16]}", "type": "function",
             "function": {"name": name, "arguments": json.dumps(args)}}
            for name, args in reply["tool_calls"]]
        finish = "tool_calls"
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "message": message, "finish_reason": finish,
                                         "logprobs": None}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}}


class FakeOpenAI:
    def __init__(self, script: list[Reply] | None = None, model: str = "scripted-model"):
        self.script = list(script or [])
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self.default: Reply = {"content": "no more script"}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep test output clean
                pass

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/health":
                    return self._send(200, {"status": "ok"})
                if self.path == "/v1/models":
                    return self._send(200, {"object": "list", "data": [{"id": fake.model, "object": "model"}]})
                self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": "not found"}})
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(body)
                reply = fake.script.pop(0) if fake.script else fake.default
                if callable(reply):
                    reply = reply(body)
                self._send(200, completion(reply, body.get("model", fake.model)))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "FakeOpenAI":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
