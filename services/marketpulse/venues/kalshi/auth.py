"""Kalshi request signing: RSA-PSS with SHA-256 (MGF1 SHA-256, salt length = digest length) over
``timestamp_ms + METHOD + path``, base64-encoded. The WebSocket handshake is always signed."""

from __future__ import annotations

import base64
import time
from urllib.parse import urlparse

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from marketpulse.errors import ConfigError
from marketpulse.settings import Settings

_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


def load_private_key(pem: bytes) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"Kalshi private key is not an unencrypted PEM key: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError("Kalshi private key is not an RSA key")
    return key


def sign(key: rsa.RSAPrivateKey, timestamp_ms: int, method: str, path: str) -> str:
    message = f"{timestamp_ms}{method.upper()}{path}".encode()
    return base64.b64encode(key.sign(message, _PSS, hashes.SHA256())).decode("ascii")


def signed_headers(
    key_id: str, key: rsa.RSAPrivateKey, path: str, timestamp_ms: int | None = None
) -> dict[str, str]:
    """Headers of a signed GET of ``path`` (for the WebSocket: ``/trade-api/ws/v2``)."""
    ts = time.time_ns() // 1_000_000 if timestamp_ms is None else timestamp_ms
    return {
        "KALSHI-ACCESS-KEY": key_id,
        "KALSHI-ACCESS-TIMESTAMP": str(ts),
        "KALSHI-ACCESS-SIGNATURE": sign(key, ts, "GET", path),
    }


class Credentials:
    """Key id and private key from settings; the key file is read once."""

    def __init__(self, key_id: str, key: rsa.RSAPrivateKey) -> None:
        self.key_id = key_id
        self._key = key

    @classmethod
    def from_settings(cls, settings: Settings) -> Credentials:
        if settings.kalshi_key_id is None or not settings.kalshi_key_id.get_secret_value():
            raise ConfigError("Kalshi's WebSocket needs MPX_KALSHI_KEY_ID (an API key id)")
        if settings.kalshi_private_key is not None:
            pem = settings.kalshi_private_key.get_secret_value().encode()
        elif settings.kalshi_private_key_path is not None:
            try:
                pem = settings.kalshi_private_key_path.read_bytes()
            except OSError as exc:
                raise ConfigError(f"cannot read MPX_KALSHI_PRIVATE_KEY_PATH: {exc}") from None
        else:
            raise ConfigError(
                "Kalshi's WebSocket needs MPX_KALSHI_PRIVATE_KEY or MPX_KALSHI_PRIVATE_KEY_PATH"
            )
        return cls(settings.kalshi_key_id.get_secret_value(), load_private_key(pem))

    def ws_headers(self, ws_url: str) -> dict[str, str]:
        """Fresh headers for one connection attempt (the timestamp is part of the signature)."""
        return signed_headers(self.key_id, self._key, urlparse(ws_url).path)

    def __repr__(self) -> str:  # never print the key
        return "Credentials(key_id=***)"
