"""One error hierarchy, each error carrying its message and the fix.

::

    ConnAuthError
    ├── ConfigError              bad or missing configuration (names the field)
    ├── ConnectionNotFound       no connection of that name
    ├── ConsentRequired          no usable token: the user must authorize
    ├── FlowError                a consent flow failed (state, IdP error, exchange)
    │   └── ScopeMismatch        the IdP granted other scopes than requested
    ├── IdPUnavailable           the IdP did not answer or answered garbage
    │   └── IdPBusy              the IdP asked to retry later (503 + Retry-After)
    ├── AccessDenied             the caller may not do this (wrong user, read-only)
    └── DriverMissing            a warehouse driver is not installed

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
            "Check the name, or add it to c.ConnAuth.connections in jupyter_server_config.py.",
        )
        self.name = name


class ConsentRequired(ConnAuthError):
    code = "consent_required"
    status = 401


class FlowError(ConnAuthError):
    code = "flow_error"
    status = 400


class ScopeMismatch(FlowError):
    code = "scope_mismatch"


class IdPUnavailable(ConnAuthError):
    code = "idp_unavailable"
    status = 502


class IdPBusy(IdPUnavailable):
    """The IdP is overloaded or timed out: worth retrying after ``retry_after`` seconds."""

    status = 503

    def __init__(self, message: str, fix: str | None = None, *, retry_after: float = 5.0) -> None:
        super().__init__(message, fix)
        self.retry_after = max(1, round(retry_after))

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "retry_after": self.retry_after}


class AccessDenied(ConnAuthError):
    code = "access_denied"
    status = 403


class DriverMissing(ConnAuthError):
    code = "driver_missing"
    status = 500
