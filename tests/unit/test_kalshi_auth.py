"""Kalshi request signing, verified with the public half of a key generated here."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import SecretStr

from marketpulse.errors import ConfigError
from marketpulse.settings import Settings
from marketpulse.venues.kalshi.auth import Credentials, signed_headers

PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def test_signature_verifies_over_timestamp_method_and_path(key: rsa.RSAPrivateKey) -> None:
    headers = signed_headers("key-1", key, "/trade-api/ws/v2", timestamp_ms=1786401938338)
    assert headers["KALSHI-ACCESS-KEY"] == "key-1"
    assert headers["KALSHI-ACCESS-TIMESTAMP"] == "1786401938338"
    sig = base64.b64decode(headers["KALSHI-ACCESS-SIGNATURE"])
    key.public_key().verify(sig, b"1786401938338GET/trade-api/ws/v2", PSS, hashes.SHA256())
    with pytest.raises(InvalidSignature):  # any other message fails
        key.public_key().verify(sig, b"1786401938339GET/trade-api/ws/v2", PSS, hashes.SHA256())


def test_credentials_from_settings(key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    inline = Settings(kalshi_key_id=SecretStr("kid"), kalshi_private_key=SecretStr(pem(key)))
    path = tmp_path / "kalshi.pem"
    path.write_text(pem(key))
    from_file = Settings(kalshi_key_id=SecretStr("kid"), kalshi_private_key_path=path)
    for s in (inline, from_file):
        creds = Credentials.from_settings(s)
        h = creds.ws_headers("wss://api.elections.kalshi.com/trade-api/ws/v2")
        msg = f"{h['KALSHI-ACCESS-TIMESTAMP']}GET/trade-api/ws/v2".encode()
        sig = base64.b64decode(h["KALSHI-ACCESS-SIGNATURE"])
        key.public_key().verify(sig, msg, PSS, hashes.SHA256())
        assert "BEGIN" not in repr(creds) and "kid" not in repr(creds)
    assert "BEGIN" not in repr(inline)  # SecretStr: the key never reaches a log line


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "MPX_KALSHI_KEY_ID"),
        ({"kalshi_key_id": SecretStr("kid")}, "MPX_KALSHI_PRIVATE_KEY"),
        ({"kalshi_key_id": SecretStr("kid"), "kalshi_private_key": SecretStr("nope")}, "PEM"),
        (
            {"kalshi_key_id": SecretStr("kid"), "kalshi_private_key_path": Path("/nonexistent")},
            "cannot read",
        ),
    ],
)
def test_missing_or_bad_credentials_are_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Credentials.from_settings(Settings(**kwargs))
