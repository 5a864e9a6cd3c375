"""MarketPulse: surveillance of prediction markets on Apache Kafka."""

__version__ = "0.1.0"
