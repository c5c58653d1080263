"""One error hierarchy, each error carrying its message and the fix.

::

    ConnAuthError
    ├── ConfigError              bad or missing configuration (names the field)
    ├── ConnectionNotFound       no connection of that name
    ├── ConsentRequired          no usable token: the user must authorize
    ├── SubjectRejected          the IdP refused the login token of a pass-through
    ├── FlowError                a consent flow failed (state, IdP error, exchange)
    │   └── ScopeMismatch        the IdP granted other scopes than requested
    ├── IdPUnavailable           the IdP did not answer or answered garbage
    │   └── IdPBusy              the IdP asked to retry later (503 + Retry-After)
    ├── AccessDenied             the caller may not do this (wrong user, read-only)
    ├── SigningRefused           this process may not hold the Snowflake signing key
    ├── NoSubject                the user has no verified value of the JWT subject claim
    ├── DriverMissing            a warehouse driver is not installed
    ├── WarehouseUnreachable     the warehouse did not answer
    ├── SnowflakeAuthError       Snowflake refused the credential at login
    ├── QueryError               the warehouse rejected the SQL
    └── TooManyRows              more rows than --max-rows
Messages never contain token values: build them from names, codes and fixes only.
"""

from __future__ import annotations

from typing import Any


class ConnAuthError(Exception):
    """Base error: a message a user can read and, where one exists, the fix."""

    code = "connauth_error"
    status = 500

    def __init__(self, message: str, fix: str | None = None, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        if self.fix:
            return f"{self.message}\nFix: {self.fix}"
        return self.message

    def to_json(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, "fix": self.fix}

    def _render_traceback_(self) -> list[str]:
        """IPython shows this instead of a traceback wall."""
        lines = [f"\x1b[31m{type(self).__name__}\x1b[0m: {self.message}"]
        if self.fix:
            lines.append(f"\x1b[32mFix\x1b[0m: {self.fix}")
        return lines


class ConfigError(ConnAuthError):
    code = "config_error"
    status = 500

    def __init__(self, field: str, message: str, fix: str | None = None) -> None:
        super().__init__(f"{field}: {message}", fix)
        self.field = field


class ConnectionNotFound(ConnAuthError):
    code = "connection_not_found"
    status = 404

    def __init__(self, name: str, known: list[str] | None = None) -> None:
        known_txt = ", ".join(sorted(known)) if known else "none are configured"
        super().__init__(
            f"No connection named {name!r} (known: {known_txt}).",
            "Check the name (%sql_connector list), or add it: Add connection in the "
            "Connections sidebar, or c.ConnAuth.connections in jupyter_server_config.py.",
        )
        self.name = name


class ConsentRequired(ConnAuthError):
    code, status = "consent_required", 401


class SubjectRejected(ConnAuthError):
    """The IdP refused the subject token: the user must sign in again."""

    code, status = "subject_rejected", 401


class FlowError(ConnAuthError):
    code, status = "flow_error", 400


class ScopeMismatch(FlowError):
    code = "scope_mismatch"


class IdPUnavailable(ConnAuthError):
    code, status = "idp_unavailable", 502


class IdPBusy(IdPUnavailable):
    """The IdP is overloaded or timed out: worth retrying after ``retry_after`` seconds."""

    status = 503

    def __init__(self, message: str, fix: str | None = None, *, retry_after: float = 5.0) -> None:
        super().__init__(message, fix)
        self.retry_after = max(1, round(retry_after))

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "retry_after": self.retry_after}


class AccessDenied(ConnAuthError):
    code, status = "access_denied", 403


class SigningRefused(ConnAuthError):
    """This process runs as the notebook user: it must not hold the signing key."""

    code, status = "jwt_signing_refused", 403


class NoSubject(ConnAuthError):
    """The user's identity has no verified value of the claim the admin named."""

    code, status = "no_subject", 403


class DriverMissing(ConnAuthError):
    code, status = "driver_missing", 500


class WarehouseUnreachable(ConnAuthError):
    code, status = "warehouse_unreachable", 502


class SnowflakeAuthError(ConnAuthError):
    """Snowflake refused the credential at login (the code names the reason)."""

    code, status = "snowflake_auth_error", 401


class QueryError(ConnAuthError):
    """The warehouse rejected the SQL: its message, cleanly."""

    code, status = "query_error", 400


class TooManyRows(ConnAuthError):
    code, status = "too_many_rows", 400
