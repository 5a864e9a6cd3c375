"""One root exception. Each error says whether retrying can help, so loops decide between
retry and dead letter without a chain of isinstance checks."""

from __future__ import annotations


class MarketPulseError(Exception):
    retriable: bool = False
    kind: str = "error"


class BadMessage(MarketPulseError):
    """Input that can never be processed: goes to the dead-letter topic with its reason."""

    retriable = False

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class TransientError(MarketPulseError):
    """A dependency is briefly unavailable (broker, warehouse, venue): retry with backoff."""

    retriable = True
    kind = "transient"


class ConfigError(MarketPulseError):
    kind = "config"
