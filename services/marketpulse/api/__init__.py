"""The HTTP API (FastAPI): `app` builds it, one module per group of routes (`insights`, `live`,
`admin`), and the helpers they share (`auth`, `querying`, `resources`, `readiness`, `lag`)."""

from marketpulse.api.app import create_app, run

__all__ = ["create_app", "run"]
