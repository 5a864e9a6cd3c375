"""Identifiers of the execution stage, defined once: the API announces an intent's id before the
stage has created it, and both must derive the same one."""

from __future__ import annotations

import hashlib

INTENT_PREFIX = "int-"


def intent_id_for(signal_id: str) -> str:
    """The intent a signal becomes. Deterministic, so a redelivered signal or a repeated
    `POST /api/intents` names the same intent (and the stage applies it once)."""
    return INTENT_PREFIX + hashlib.sha1(signal_id.encode()).hexdigest()[:20]
