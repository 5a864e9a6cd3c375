"""A real HTTP server on 127.0.0.1 standing in for a Slack incoming webhook (or any JSON
webhook): it records every request it answers, and answers what the test scripts: "ok",
an HTTP status, 429 with a Retry-After, or a hang (no answer until the client gives up)."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    at: float  # time.monotonic() when the request arrived
    path: str
    body: dict[str, Any]
    status: int  # what was answered (0: hung)


@dataclass(frozen=True)
class Reply:
    status: int = 200
    retry_after: float | None = None
    hang_s: float = 0.0


OK = Reply()


def hang(seconds: float) -> Reply:
    return Reply(status=0, hang_s=seconds)


class SlackStandIn:
    """`with SlackStandIn() as slack: slack.url` … `slack.script(Reply(500), ...)`.

    Scripted replies are used once each, in order; then `default` answers (OK unless set,
    e.g. `slack.default = Reply(500)` for an outage until it is set back)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.default = OK
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/services/T000/B000/XXXX"

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    def payloads(self, ok_only: bool = True) -> list[dict[str, Any]]:
        with self._lock:
            return [r.body for r in self.received if r.status == 200 or not ok_only]

    def _next(self) -> Reply:
        with self._lock:
            return self._script.popleft() if self._script else self.default

    def _record(self, received: Received) -> None:
        with self._lock:
            self.received.append(received)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                at = time.monotonic()
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                reply = standin._next()
                standin._record(Received(at, self.path, body, reply.status))
                if reply.hang_s:
                    standin._closing.wait(reply.hang_s)
                    return  # no answer at all: the client times out
                self.send_response(reply.status)
                if reply.retry_after is not None:
                    self.send_header("Retry-After", f"{reply.retry_after:g}")
                text = b"ok" if reply.status == 200 else b"error"
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def log_message(self, format: str, *args: Any) -> None:
                return None  # keep test output clean

        return Handler

    def __enter__(self) -> SlackStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
