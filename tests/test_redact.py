"""The one redactor: remembered values of any shape, the known shapes, bounded memory, and
the log handler that rewrites records of the package's and the drivers' loggers."""

from __future__ import annotations

import json
import logging
import secrets

import pytest

from jupyter_connauth.core.redact import CAPACITY, MASK, redact, remember


def opaque() -> str:
    return secrets.token_urlsafe(24)  # Okta / Databricks / Snowflake style: no dots


def test_remembered_values_whatever_their_shape() -> None:
    token, refresh = opaque(), "0.AXo" + opaque() + "*x!"  # Entra-like, odd characters
    remember(token, refresh, None, "short")
    text = (
        f"driver said: invalid token {token}; see https://h/x?token_hint={token}&a=1 "
        f"and {json.dumps({'detail': refresh})}"
    )
    out = redact(text)
    assert token not in out and refresh not in out
    assert out.count(MASK) == 3 and "driver said: invalid token" in out
    assert redact("short and ordinary words stay") == "short and ordinary words stay"


@pytest.mark.parametrize(
    "text",
    [
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl",
        "ya29.a0AfH6SMBxyz-123",
        "dapi0123456789abcdef0123456789abcdef",
        "Authorization: Bearer abcdefgh12345678",
        "GET /oauth/connector/callback?code=SplxlOBeZQQYbYS6WxSbIA&state=x",
        "grant_type=refresh_token&refresh_token=tGzv3JOkF0XG5Qx2TlKWIA",
        '{"access_token": "2YotnFZFEjr1zCsicMWpAA", "token_type": "Bearer"}',
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----",
    ],
)
def test_known_shapes(text: str) -> None:
    out = redact(text)
    assert MASK in out
    for secret in (
        "eyJzdWIiOiJhIn0",
        "a0AfH6SMBxyz",
        "0123456789abcdef",
        "abcdefgh12345678",
        "SplxlOBeZQQYbYS6WxSbIA",
        "tGzv3JOkF0XG5Qx2TlKWIA",
        "2YotnFZFEjr1zCsicMWpAA",
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
    ):
        assert secret not in out


def test_memory_is_bounded_to_the_most_recent_values() -> None:
    first = opaque()
    remember(first)
    remember(*(opaque() for _ in range(CAPACITY)))
    assert first in redact(f"old {first}")  # forgotten: the oldest value went first
    recent = opaque()
    remember(recent)
    assert recent not in redact(f"new {recent}")


def test_log_records_are_rewritten_before_any_handler(caplog: pytest.LogCaptureFixture) -> None:
    token = opaque()
    remember(token)
    caplog.set_level(logging.DEBUG)
    child = logging.getLogger("jupyter_connauth.some.module")
    child.warning("refresh failed for %s: %s", "alice", f"server quoted {token}")
    try:
        raise RuntimeError(f"boom with {token}")
    except RuntimeError:
        child.exception("failed")
    logging.getLogger("databricks.sql.thrift_backend").error("error-message: %s", token)
    text = caplog.text
    assert "refresh failed for alice: server quoted [redacted]" in text
    assert "boom with [redacted]" in text
    assert token not in text


def test_warnings_still_reach_stderr_when_nothing_is_configured() -> None:
    """As Python's last resort does for a process without logging configuration (a
    kernel): the redacting handler must not swallow them."""
    import subprocess
    import sys

    code = (
        "import logging\n"
        "from jupyter_connauth.core.redact import remember\n"
        "remember('opaque-value-0123456789')\n"
        "logging.getLogger('jupyter_connauth.x').warning('refresh failed: %s', "
        "'opaque-value-0123456789')\n"
        "logging.getLogger('jupyter_connauth.x').info('not shown')\n"
    )
    err = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stderr
    assert err.strip() == "refresh failed: [redacted]"
