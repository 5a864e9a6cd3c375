"""The HTTP endpoint of processes that have no API of their own (collector, sink, alerts):
`/metrics` for Prometheus, `/healthz` (alive) and `/readyz` (the process's own readiness, e.g.
the collector's quiet shards), on MPX_METRICS_PORT. A thread, so a busy event loop cannot
make the process look dead to its orchestrator."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

Readiness = Callable[[], dict[str, Any]]


def _always_ready() -> dict[str, Any]:
    return {"ok": True}


def _handler(ready: Readiness) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                self._json(200, {"status": "ok"})
            elif self.path == "/readyz":
                state = ready()
                self._json(200 if state.get("ok") else 503, state)
            else:
                self._json(404, {"detail": "try /metrics, /healthz or /readyz"})

        def _json(self, status: int, body: dict[str, Any]) -> None:
            self._send(status, json.dumps(body).encode(), "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # scrapes every few seconds would drown the process's own log

    return Handler


def serve(
    port: int, ready: Readiness = _always_ready, host: str = "0.0.0.0"
) -> ThreadingHTTPServer:
    """Serve in a daemon thread; returns the server (its `server_port` when `port` is 0)."""
    server = ThreadingHTTPServer((host, port), _handler(ready))
    threading.Thread(target=server.serve_forever, name="mpx-health", daemon=True).start()
    return server
