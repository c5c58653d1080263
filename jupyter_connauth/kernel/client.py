"""A thin HTTP client of the broker API, for kernels.

It reads ``JUPYTER_CONNAUTH_URL`` and ``JUPYTER_CONNAUTH_TOKEN`` (set by the server
extension for the kernels it starts) and turns every answer into either data or a
:class:`ConnAuthError` with the broker's message and fix.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

import httpx2

from ..core.errors import (
    AccessDenied,
    ConfigError,
    ConnAuthError,
    ConnectionNotFound,
    ConsentRequired,
    FlowError,
    IdPUnavailable,
)
from ..core.redact import remember

URL_ENV = "JUPYTER_CONNAUTH_URL"
TOKEN_ENV = "JUPYTER_CONNAUTH_TOKEN"  # noqa: S105 - an environment variable's name

_ERRORS: dict[str, type[ConnAuthError]] = {
    "consent_required": ConsentRequired,
    "idp_unavailable": IdPUnavailable,
    "access_denied": AccessDenied,
    "flow_error": FlowError,
    "scope_mismatch": FlowError,
}


@dataclass
class AccessToken:
    connection: str
    access_token: str
    expires_at: float | None
    token_type: str = "Bearer"  # noqa: S105 - the token type
    identity: str | None = None
    warning: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: The grant the token comes from (a session opened under another one is closed).
    grant: str | None = None

    def __repr__(self) -> str:
        return f"AccessToken(connection={self.connection!r}, expires_at={self.expires_at!r})"

    def valid_for(self, seconds: float) -> bool:
        return self.expires_at is None or self.expires_at - seconds > time.time()


@dataclass
class ConsentNeeded:
    connection: str
    reason: str
    reason_text: str
    authorize_url: str
    flow_id: str
    expires_at: float

    def __repr__(self) -> str:
        return f"ConsentNeeded(connection={self.connection!r}, reason={self.reason!r})"


#: Seconds a kernel waits for a device flow past the code's expiry.
DEVICE_VERDICT_GRACE = 5.0


@dataclass
class DeviceCode(ConsentNeeded):
    """A device-code consent (RFC 8628): the user opens ``verification_uri`` on any
    device and types ``user_code`` (meant to be shown; the device code never reaches
    the kernel). ``authorize_url`` is the URI to open, with the code where the IdP
    gives ``verification_uri_complete``, so whatever shows a consent link shows this."""

    user_code: str = ""
    verification_uri: str = ""
    verification_uri_complete: str | None = None

    def __repr__(self) -> str:
        return f"DeviceCode(connection={self.connection!r}, user_code={self.user_code!r})"


def device_code(data: dict[str, Any]) -> DeviceCode:
    """The broker's ``{"status": "device_code", ...}`` answer."""
    complete = data.get("verification_uri_complete") or None
    return DeviceCode(
        connection=data["connection"],
        reason=data["reason"],
        reason_text=data.get("reason_text") or data["reason"],
        authorize_url=complete or data["verification_uri"],
        flow_id=data["flow_id"],
        # waited for a little past the code's expiry: the broker's verdict (expired_token,
        # with its fix) comes then
        expires_at=time.time() + float(data["expires_in"]) + DEVICE_VERDICT_GRACE,
        user_code=data["user_code"],
        verification_uri=data["verification_uri"],
        verification_uri_complete=complete,
    )


class BrokerAPI(Protocol):
    """What kernels need from a broker: over HTTP, or in-process without a server."""

    #: True once the client is closed (a new one is needed to call the broker).
    closed: bool

    def info(self) -> dict[str, Any]: ...
    def connections(self) -> list[dict[str, Any]]: ...
    def status(self, name: str) -> dict[str, Any]: ...
    def token(self, name: str) -> AccessToken | ConsentNeeded: ...
    def rejected(self, name: str, report: dict[str, Any]) -> AccessToken | ConsentNeeded: ...
    def authorize(self, name: str, *, switch_account: bool = False) -> ConsentNeeded: ...
    def authorize_device(self, name: str, *, switch_account: bool = False) -> DeviceCode: ...
    def revoke(self, name: str) -> dict[str, Any]: ...
    def flow(self, flow_id: str) -> dict[str, Any]: ...
    def cancel_flow(self, flow_id: str) -> dict[str, Any]: ...
    def doctor(self, name: str) -> list[dict[str, Any]]: ...


def connect_broker() -> BrokerAPI:
    """The server's broker when this kernel was started by one, else an in-process one."""
    if os.environ.get(URL_ENV) and os.environ.get(TOKEN_ENV):
        return BrokerClient()
    from .local import LocalBrokerClient

    return LocalBrokerClient()


class BrokerClient:
    """Synchronous client: kernels run user code synchronously anyway."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx2.BaseTransport | None = None,
        jupyter_token: str | None = None,
    ) -> None:
        """``jupyter_token``: authenticate as a Jupyter user (scripts) instead of a kernel."""
        url = url or os.environ.get(URL_ENV)
        token = token or os.environ.get(TOKEN_ENV) or jupyter_token
        if not url or not token:
            raise ConfigError(
                URL_ENV,
                "this kernel was not started by a Jupyter server with jupyter-connauth",
                "start Jupyter with the extension enabled "
                "(jupyter server extension list), or set JUPYTER_CONNAUTH_URL and "
                "JUPYTER_CONNAUTH_TOKEN",
            )
        self.url = url if url.endswith("/") else url + "/"
        self._http = httpx2.Client(
            base_url=self.url,
            headers=(
                {"Authorization": f"token {jupyter_token}"}
                if jupyter_token
                else {"X-ConnAuth-Token": token}
            ),
            timeout=timeout,
            transport=transport,
            trust_env=False,
        )

    #: True once :meth:`close` ran: :func:`jupyter_connauth.kernel.api.kernel` then makes
    #: a new client instead of calling a closed one.
    closed = False

    def close(self) -> None:
        self.closed = True
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx2.HTTPError as e:
            raise ConnAuthError(
                f"The Jupyter server's broker at {self.url} is unreachable ({type(e).__name__}).",
                "is the Jupyter server still running? Restart the kernel from JupyterLab",
                code="broker_unreachable",
            ) from None
        if resp.status_code == 204:
            return None
        try:
            data = resp.json()
        except ValueError:
            data = None
        if resp.is_success and isinstance(data, dict):
            return data
        if resp.status_code == 403 and (
            not isinstance(data, dict) or data.get("error") in (None, "http_error")
        ):
            raise AccessDenied(
                "The broker refused this kernel's credentials.",
                "restart the kernel so it gets the current server's credentials",
            )
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            code = data["error"]
            message = str(data.get("message") or code)
            fix = data.get("fix")
            if code == "connection_not_found":
                err: ConnAuthError = ConnectionNotFound.__new__(ConnectionNotFound)
                ConnAuthError.__init__(err, message, fix)
                raise err
            if code == "config_error":
                raise ConnAuthError(message, fix, code=code)
            cls = _ERRORS.get(code, ConnAuthError)
            raise cls(message, fix, code=code)
        raise ConnAuthError(
            f"The broker answered HTTP {resp.status_code}.", None, code="broker_error"
        )

    @staticmethod
    def _name(name: str) -> str:
        return quote(name, safe="")

    def info(self) -> dict[str, Any]:
        return dict(self._call("GET", "info"))

    def connections(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "connections")["connections"])

    def status(self, name: str) -> dict[str, Any]:
        return dict(self._call("GET", f"connections/{self._name(name)}"))

    def token(self, name: str) -> AccessToken | ConsentNeeded:
        data = self._call("POST", f"connections/{self._name(name)}/token")
        return token_or_consent(data)

    def rejected(self, name: str, report: dict[str, Any]) -> AccessToken | ConsentNeeded:
        """The warehouse rejected the token of ``report["grant"]``: the broker refreshes
        it once (a new token to retry with), then marks the grant rejected."""
        data = self._call("POST", f"connections/{self._name(name)}/rejected", json=report)
        return token_or_consent(data)

    def authorize(self, name: str, *, switch_account: bool = False) -> ConsentNeeded:
        """A new consent flow; ``switch_account``: the user may consent as another IdP
        account than the one stored for this connection (refused otherwise)."""
        body = {"switch_account": True} if switch_account else None
        data = self._call("POST", f"connections/{self._name(name)}/authorize", json=body)
        result = token_or_consent(data)
        assert isinstance(result, ConsentNeeded)
        return result

    def authorize_device(self, name: str, *, switch_account: bool = False) -> DeviceCode:
        """A device-code consent (RFC 8628) the broker polls the IdP for."""
        body: dict[str, Any] = {"method": "device"}
        if switch_account:
            body["switch_account"] = True
        return device_code(
            self._call("POST", f"connections/{self._name(name)}/authorize", json=body)
        )

    def revoke(self, name: str) -> dict[str, Any]:
        return dict(self._call("POST", f"connections/{self._name(name)}/revoke"))

    def doctor(self, name: str) -> list[dict[str, Any]]:
        return list(self._call("GET", f"connections/{self._name(name)}/doctor")["checks"])

    def flow(self, flow_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"flows/{self._name(flow_id)}"))

    def cancel_flow(self, flow_id: str) -> dict[str, Any]:
        """Cancel a pending consent flow: its link then stores nothing."""
        return dict(self._call("DELETE", f"flows/{self._name(flow_id)}"))

    # -- JupyterHub admins (the hub service answers these; a single server does not) ----
    def _admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            return self._call(method, f"admin/{path}", json=body)
        except ConnAuthError as e:
            if e.code == "http_error" or "404" in e.message:
                raise ConnAuthError(
                    "Admin commands need the JupyterHub connauth service.",
                    "run them in a notebook on the JupyterHub where the service is enabled",
                    code="not_a_hub",
                ) from None
            raise

    def admin_users(self) -> list[dict[str, Any]]:
        return list(self._admin("GET", "users")["users"])

    def admin_revoke_user(self, user: str, name: str | None = None) -> dict[str, Any]:
        body = {"connection": name} if name else {}
        return dict(self._admin("POST", f"users/{self._name(user)}/revoke", body))

    def admin_revoke_all(self, name: str | None = None) -> dict[str, Any]:
        return dict(self._admin("POST", "revoke", {"connection": name} if name else {}))

    def admin_scopes(self, name: str, scopes: str) -> dict[str, Any]:
        return dict(
            self._admin("PUT", f"connections/{self._name(name)}/scopes", {"scopes": scopes})
        )

    def wait_for_flow(
        self, flow_id: str, *, timeout: float = 600.0, interval: float = 0.5
    ) -> dict[str, Any]:
        """Poll until the flow completes or fails; raises on failure or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            flow = self.flow(flow_id)
            if flow["status"] == "complete":
                return flow
            if flow["status"] == "failed":
                raise FlowError(
                    flow.get("message") or "Authorization failed.",
                    flow.get("fix"),
                    code=flow.get("error") or "flow_error",
                )
            if time.monotonic() >= deadline:
                raise FlowError(
                    "Timed out waiting for authorization.",
                    "run the cell again and finish signing in within the time limit",
                    code="flow_timeout",
                )
            time.sleep(interval)


def token_or_consent(data: dict[str, Any]) -> AccessToken | ConsentNeeded:
    """A broker's token answer (JSON) as the kernel's objects."""
    if data.get("status") == "consent_required":
        return ConsentNeeded(
            connection=data["connection"],
            reason=data["reason"],
            reason_text=data.get("reason_text") or data["reason"],
            authorize_url=data["authorize_url"],
            flow_id=data["flow_id"],
            expires_at=data["expires_at"],
        )
    remember(data.get("access_token"))  # masked in every error this kernel shows
    known = {"status", "connection", "access_token", "expires_at", "token_type"}
    known |= {"identity", "warning", "grant"}
    return AccessToken(
        connection=data["connection"],
        access_token=data["access_token"],
        expires_at=data.get("expires_at"),
        token_type=data.get("token_type") or "Bearer",
        identity=data.get("identity"),
        warning=data.get("warning"),
        grant=data.get("grant"),
        extra={k: v for k, v in data.items() if k not in known},
    )
