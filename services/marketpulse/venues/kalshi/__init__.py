"""Kalshi: REST discovery and order books, the signed WebSocket, and their normalization.

Public entry points (the collector wires them):
  * ``KalshiNormalizer(depth=..., gap_policy="hold"|"count")``: frames → records.
  * ``KalshiSource(settings, sink, ...)`` with ``await source.run(stop)``: the live venue.
  * ``signed_headers(key_id, private_key_pem, timestamp_ms)``: the WebSocket handshake headers.
"""

from marketpulse.venues.kalshi.auth import Credentials, signed_headers
from marketpulse.venues.kalshi.normalize import (
    REST_CHANNEL,
    WS_CHANNEL,
    GapPolicy,
    KalshiNormalizer,
    rest_channel,
)
from marketpulse.venues.kalshi.rest import KalshiRest
from marketpulse.venues.kalshi.source import KalshiSource

__all__ = [
    "REST_CHANNEL",
    "WS_CHANNEL",
    "Credentials",
    "GapPolicy",
    "KalshiNormalizer",
    "KalshiRest",
    "KalshiSource",
    "rest_channel",
    "signed_headers",
]
