"""Venues: where market data comes from (the seeded mock today; Polymarket and Kalshi later)."""
