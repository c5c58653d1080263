"""Device-code consent (RFC 8628) for kernels no browser can reach.

The broker asks the IdP for a user code, answers it with the verification URI, and
polls the token endpoint itself (:func:`..oauth.rfc8628.poll`: the ``interval``, 5
seconds more per ``slow_down``, never past ``expires_in``). The answer is checked and
stored by :meth:`.flows.ConsentFlows.store_grant`, exactly as a callback's is. One
device flow runs per (user, connection): a new one replaces the old. The flow is a
:class:`~..core.tokens.Flow` like the others (``GET flows/FLOW_ID``); the
``device_code`` stays in this process's memory, never in the store.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core.connections import ConnectionSpec
from ..core.errors import ConnAuthError, FlowError
from ..core.tokens import REASON_TEXT, Flow
from ..oauth import rfc8628
from ..oauth.rfc6749 import OAuthProtocolError
from .fixes import device_fix, error_code
from .flows import ConsentFlows

log = logging.getLogger(__name__)

#: The stored flow outlives the device code a little, so the poller's verdict
#: (expired_token, with its fix) is what ``GET flows/FLOW_ID`` shows.
EXPIRY_GRACE = 10.0

_MESSAGES = {
    "access_denied": "Consent was refused at the identity provider.",
    "expired_token": "The device code expired before it was entered at the identity provider.",
}


@dataclass
class DeviceStart:
    flow: Flow
    device: rfc8628.DeviceAuthorization

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": "device_code",
            "connection": self.flow.connection,
            "reason": self.flow.reason,
            "reason_text": REASON_TEXT.get(self.flow.reason, self.flow.reason),
            "flow_id": self.flow.flow_id,
            "user_code": self.device.user_code,
            "verification_uri": self.device.verification_uri,
            "expires_in": self.device.expires_in,
            "expires_at": self.device.expires_at,
            "interval": self.device.interval,
        }
        if self.device.verification_uri_complete:
            out["verification_uri_complete"] = self.device.verification_uri_complete
        return out


class DeviceFlows:
    def __init__(self, flows: ConsentFlows, spec_for: Callable[[str], ConnectionSpec]) -> None:
        self.flows = flows
        self.spec_for = spec_for
        self._polls: dict[tuple[str, str], tuple[Flow, asyncio.Task[None]]] = {}

    async def start(
        self,
        user: str,
        spec: ConnectionSpec,
        reason: str,
        *,
        expected_email: str | None,
        switch_account: bool = False,
    ) -> DeviceStart:
        idp = self.flows.idp
        meta = await idp.metadata()
        try:
            device = await rfc8628.request_device_authorization(
                idp.token_endpoint,
                meta,
                scopes=self.flows.requested_scopes(spec),
                extra=self.flows._extra(spec),
            )
        except OAuthProtocolError as e:
            raise FlowError(
                f"The IdP refused the device authorization request ({e.error}).",
                device_fix(e.error, spec.name),
                code=error_code(e.error),
            ) from None
        flow = self.flows.new_flow(
            user,
            spec,
            reason,
            state=secrets.token_urlsafe(32),  # no browser brings it back: no callback
            code_verifier="",
            nonce="",  # RFC 8628 has no nonce: the ID token is checked without one
            expires_at=device.expires_at + EXPIRY_GRACE,
            expected_email=expected_email,
            switch_account=switch_account,
            redirect_uri="",
        )
        key = (user, spec.name)
        previous = self._polls.pop(key, None)
        if previous is not None:
            self._end(previous[0], "superseded", "A newer device code replaced this one.")
            previous[1].cancel()
        task = asyncio.get_running_loop().create_task(self._poll(flow, device, meta))
        self._polls[key] = (flow, task)
        task.add_done_callback(lambda t: self._forget(key, t))
        log.info("jupyter-connauth: device code consent started for %s", spec.name)
        return DeviceStart(flow, device)

    def _forget(self, key: tuple[str, str], task: asyncio.Task[None]) -> None:
        if key in self._polls and self._polls[key][1] is task:
            del self._polls[key]

    def cancel(self, flow: Flow) -> None:
        """Stop polling the IdP for ``flow`` (the user cancelled it)."""
        key = (flow.user, flow.connection)
        polled = self._polls.get(key)
        if polled is not None and polled[0].flow_id == flow.flow_id:
            del self._polls[key]
            polled[1].cancel()

    def _end(self, flow: Flow, code: str, message: str, fix: str | None = None) -> None:
        self.flows._fail(flow, FlowError(message, fix, code=code))

    async def _poll(
        self, flow: Flow, device: rfc8628.DeviceAuthorization, meta: dict[str, Any]
    ) -> None:
        try:
            resp = await rfc8628.poll(self.flows.idp.token_endpoint, meta, device)
            spec = self.flows.spec_of(flow, self.spec_for)
            await self.flows.store_grant(flow, resp, spec)
        except OAuthProtocolError as e:
            message = _MESSAGES.get(e.error, f"The IdP refused the device code ({e.error}).")
            self._end(flow, error_code(e.error), message, device_fix(e.error, flow.connection))
        except FlowError:
            pass  # the flow is marked failed with its fix already
        except ConnAuthError as e:
            self._end(flow, e.code, e.message, e.fix)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the poller dies alone; the flow says so
            log.error("jupyter-connauth: device flow failed (%s)", type(e).__name__)
            self._end(flow, "flow_failed", "The device code consent failed unexpectedly.")
        else:
            log.info("jupyter-connauth: device code consent complete for %s", flow.connection)

    def close(self) -> None:
        for _flow, task in self._polls.values():
            task.cancel()
        self._polls.clear()
