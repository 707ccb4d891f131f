"""Tokens at rest: a passphrase is stretched with a salted KDF, values of older versions still open, and a box
without a key says loudly that it stores tokens in plaintext."""

from __future__ import annotations

import base64
import hashlib

import pytest
import structlog
from cryptography.fernet import Fernet, InvalidToken

from shared.secret import Secret
from token_service.crypto import SecretBox

TOKEN = "eyJhbGciOiJIUzUxMiJ9.eyJ0eXAiOiJhY2Nlc3MifQ.c2ln"


def test_a_passphrase_is_stretched_with_a_salt() -> None:
    """Two boxes of one passphrase seal under different salts (`s:<salt>:`) and open each other's values, and a
    value an older version sealed with the unsalted SHA-256 of the passphrase (`f:`) still opens."""
    first, second = SecretBox(Secret("correct horse")), SecretBox(Secret("correct horse"))
    one, two = first.seal(TOKEN), second.seal(TOKEN)
    assert one.startswith("s:") and two.startswith("s:") and TOKEN not in one
    assert one.split(":")[1] != two.split(":")[1]
    assert (second.open(one), first.open(two)) == (TOKEN, TOKEN)
    unsalted = Fernet(base64.urlsafe_b64encode(hashlib.sha256(b"correct horse").digest()))
    with pytest.raises(InvalidToken):  # the salted key is not the old unsalted SHA-256 one
        unsalted.decrypt(one.split(":", 2)[2].encode())
    assert first.open("f:" + unsalted.encrypt(TOKEN.encode()).decode()) == TOKEN


def test_a_box_without_a_key_warns_that_tokens_are_plaintext() -> None:
    """Making a SecretBox with no TOKEN_ENCRYPTION_KEY logs one warning saying tokens are stored unencrypted."""
    with structlog.testing.capture_logs() as logs:
        assert SecretBox(None).seal(TOKEN) == "p:" + TOKEN
    warnings = [entry for entry in logs if entry["event"] == "tokens_stored_in_plaintext"]
    assert len(warnings) == 1 and warnings[0]["log_level"] == "warning"
    assert warnings[0]["detail"].startswith(
        "TOKEN_ENCRYPTION_KEY is not set: Kimi tokens are stored in Redis"
    )
    assert TOKEN not in str(logs)
