"""The per-process health endpoint: metrics, liveness, and readiness that names a quiet shard."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from marketpulse import frames, health


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_readyz_reports_a_quiet_shard_and_metrics_are_served() -> None:
    frames.note_shard("polymarket", "pm-ws-0", recv_ms=1_000)  # silent since 1970
    server = health.serve(0, lambda: frames.collector_health(60.0), host="127.0.0.1")
    try:
        status, body = get(server.server_port, "/readyz")
        assert status == 503
        shards = json.loads(body)["shards"]
        assert {"venue": "polymarket", "shard": "pm-ws-0", "quiet": True}.items() <= next(
            s for s in shards if s["shard"] == "pm-ws-0"
        ).items()
        frames.note_shard("polymarket", "pm-ws-0", recv_ms=frames.time.time_ns() // 1_000_000)
        others_quiet = any(
            s["quiet"] for s in frames.collector_health(60.0)["shards"] if s["shard"] != "pm-ws-0"
        )
        status, _ = get(server.server_port, "/readyz")
        assert status == (503 if others_quiet else 200)
        assert get(server.server_port, "/healthz") == (200, b'{"status": "ok"}')
        status, metrics = get(server.server_port, "/metrics")
        assert status == 200 and b"mpx_collector_last_message" in metrics
    finally:
        server.shutdown()
        frames.forget_shard("polymarket", "pm-ws-0")
