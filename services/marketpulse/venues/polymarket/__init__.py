"""Polymarket: Gamma discovery, the CLOB market-channel WebSocket, REST book snapshots and the
Data API's trades, normalized into the catalog's markets, books, ticks and trades."""

VENUE = "polymarket"
PREFIX = "pm:"
