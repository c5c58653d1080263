"""The consent flow: authorization code with PKCE S256 and a one-shot server-side state.

Only a random ``state`` travels through the browser; its hash finds the flow, which
keeps the code verifier, the nonce, the user and the connection server-side. A state
is good once, for ``flow_ttl`` seconds, for the user who started it.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..core.connections import ConnectionSpec
from ..core.errors import FlowError, IdPUnavailable, ScopeMismatch
from ..core.tokens import REASON_TEXT, Flow, TokenRecord
from ..oauth.client import IdPClient
from ..oauth.oidc import PromptRules, add_userinfo, identity_from_claims
from ..oauth.rfc6749 import OAuthProtocolError, TokenResponse
from ..oauth.rfc7636 import new_code_verifier
from ..oauth.rfc9207 import IssuerMismatchError, IssuerMissingError, check_issuer
from .account import check_expected_email, check_same_account
from .federation import grant_expiry
from .fixes import error_code, fix_for
from .store import TokenStore

log = logging.getLogger(__name__)

#: Longest callback parameter we accept; real codes and states are far shorter.
MAX_PARAM_LENGTH = 4096


def hash_state(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


@dataclass
class FlowStart:
    flow: Flow
    authorize_url: str

    def to_json(self) -> dict[str, object]:
        return {
            "status": "consent_required",
            "connection": self.flow.connection,
            "reason": self.flow.reason,
            "reason_text": REASON_TEXT.get(self.flow.reason, self.flow.reason),
            "authorize_url": self.authorize_url,
            "flow_id": self.flow.flow_id,
            "expires_at": self.flow.expires_at,
        }


class ConsentFlows:
    def __init__(
        self,
        idp: IdPClient,
        store: TokenStore,
        *,
        redirect_uri: str,
        identity_scopes: list[str],
        authorize_params: Mapping[str, str],
        ttl: float = 600.0,
        prompt_rules: PromptRules | None = None,
    ) -> None:
        self.idp = idp
        self.store = store
        self.redirect_uri = redirect_uri
        self.identity_scopes = identity_scopes
        self.authorize_params = dict(authorize_params)
        self.ttl = ttl
        self.prompt_rules: PromptRules = prompt_rules or idp.flavour.prompt_params
        #: (user, connection) → the claims challenge (Entra's Conditional Access) the
        #: next consent must pass as ``claims``, until one completes.
        self.claims: dict[tuple[str, str], str] = {}

    def requested_scopes(self, spec: ConnectionSpec) -> list[str]:
        """What the IdP is asked for, as the flavour allows (no offline_access on Google)."""
        wanted = dict.fromkeys([*self.identity_scopes, *spec.consent_scopes])
        return self.idp.flavour.request_scopes(wanted)

    def challenge(self, user: str, connection: str, claims: str) -> None:
        """Remember a claims challenge: the next consent of ``user`` for ``connection``
        passes it, so the new grant satisfies the policy (no loop of consents)."""
        self.claims[(user, connection)] = claims

    def _extra(self, spec: ConnectionSpec) -> dict[str, str]:
        resource = spec.consent_resource
        return {"resource": resource} if resource else {}

    async def start(
        self,
        user: str,
        spec: ConnectionSpec,
        reason: str,
        *,
        expected_email: str | None,
        switch_account: bool = False,
    ) -> FlowStart:
        """A new flow for ``user``. ``expected_email`` is keyword-only and required, so
        no path that starts a flow can drop the host's identity of the user; the stored
        grant's IdP account is checked at the callback unless ``switch_account``."""
        now = time.time()
        self.store.purge_flows(now - self.ttl)
        state = secrets.token_urlsafe(32)
        verifier = new_code_verifier()
        nonce = secrets.token_urlsafe(24)
        scopes = self.requested_scopes(spec)
        params = {**self.authorize_params, **self._extra(spec)}
        claims = self.claims.get((user, spec.name))
        if claims:
            params["claims"] = claims
        extra = self.prompt_rules(scopes, params, switch_account=switch_account, reason=reason)
        url = await self.idp.authorization_url(
            redirect_uri=self.redirect_uri,
            scopes=scopes,
            state=state,
            code_verifier=verifier,
            nonce=nonce,
            extra=extra,
        )
        flow = self.new_flow(
            user,
            spec,
            reason,
            state=state,
            code_verifier=verifier,
            nonce=nonce,
            expires_at=now + self.ttl,
            expected_email=expected_email,
            switch_account=switch_account,
        )
        return FlowStart(flow, url)

    def new_flow(
        self,
        user: str,
        spec: ConnectionSpec,
        reason: str,
        *,
        state: str,
        code_verifier: str,
        nonce: str,
        expires_at: float,
        expected_email: str | None,
        switch_account: bool,
        redirect_uri: str | None = None,
    ) -> Flow:
        """A pending flow, stored; only ``state``'s hash is kept."""
        flow = Flow(
            flow_id=secrets.token_urlsafe(16),
            state_hash=hash_state(state),
            user=user,
            connection=spec.name,
            fingerprint=spec.fingerprint,
            code_verifier=code_verifier,
            nonce=nonce,
            redirect_uri=self.redirect_uri if redirect_uri is None else redirect_uri,
            created_at=time.time(),
            expires_at=expires_at,
            reason=reason,
            expected_email=expected_email,
            switch_account=switch_account,
        )
        self.store.put_flow(flow)
        return flow

    def _fail(self, flow: Flow | None, error: FlowError) -> FlowError:
        if flow is not None:
            flow.status = "failed"
            flow.error = error.code if error.code != "flow_error" else "flow_failed"
            flow.message = error.message
            flow.fix = error.fix
            self.store.update_flow(flow)
        return error

    def cancel(self, flow: Flow) -> bool:
        """Cancel a pending flow: its state is burnt (the IdP's redirect then finds no
        flow and stores nothing) and it says ``failed`` with ``error`` ``cancelled``.
        False when the callback took the state first (it completes or fails by itself)."""
        if self.store.take_flow_by_state(flow.state_hash, time.time()) is None:
            return False
        self._fail(
            flow,
            FlowError(
                "You cancelled this consent; nothing was stored.",
                f"run the cell again (or %sql_connector authorize {flow.connection}) "
                "for a new Authorize link",
                code="cancelled",
            ),
        )
        log.info("jupyter-connauth: consent flow for %s cancelled", flow.connection)
        return True

    async def callback(
        self,
        params: Mapping[str, str],
        *,
        caller: str | None,
        spec_for: object,
        flows_for: Callable[[str], ConsentFlows] | None = None,
    ) -> Flow:
        """Handle the IdP's redirect. Returns the completed flow or raises FlowError.

        ``caller`` is the user whose browser session brought the request (the hosts
        send a browser without one through their login first; None only where a hub
        admin turned that off); a flow started by someone else is refused. The IdP
        account must match the host's email of the user and the stored grant's
        subject (:mod:`.account`). ``spec_for`` maps a connection name to its spec.
        """
        for key, value in params.items():
            if len(value) > MAX_PARAM_LENGTH:
                raise FlowError(
                    f"The callback parameter {key!r} is too long.",
                    "start the authorization again from Jupyter",
                )
        state = params.get("state")
        error = params.get("error")
        if not state:
            if error:
                raise FlowError(
                    f"The identity provider answered {error}: "
                    f"{params.get('error_description') or 'no description'}.",
                    fix_for(error, params.get("error_description"), redirect_uri=self.redirect_uri),
                    code=error_code(error),
                )
            raise FlowError(
                "This page was opened without a sign-in state.",
                "start the authorization from Jupyter (the Authorize button or "
                "%sql_connector authorize NAME); don't open the callback URL directly",
            )
        flow = self.store.take_flow_by_state(hash_state(state), time.time())
        if flow is None:
            raise FlowError(
                "This sign-in link is unknown or was already used.",
                "start the authorization again from Jupyter; each link works once",
                code="invalid_state",
            )
        if caller is not None and caller != flow.user:
            # The state is burnt either way: its owner starts again, nobody else can use it.
            raise FlowError(
                "This sign-in was started by another user.",
                "sign in to Jupyter as the user who started it, or start your own",
                code="foreign_state",
            )
        if flow.expires_at < time.time():
            raise self._fail(
                flow,
                FlowError(
                    "This sign-in link has expired.",
                    "start the authorization again from Jupyter and finish it within "
                    f"{int(self.ttl // 60)} minutes",
                    code="expired_state",
                ),
            )
        flows = self
        if flows_for is not None:
            try:
                flows = flows_for(flow.connection)
            except Exception as e:
                raise self._fail(flow, FlowError(str(e), None, code="connection_gone")) from None
        return await flows._complete(flow, params, spec_for)

    def spec_of(self, flow: Flow, spec_for: object) -> ConnectionSpec:
        """The flow's connection as it is now; FlowError if it is gone or its scopes
        changed while the user was signing in."""
        try:
            spec: ConnectionSpec = spec_for(flow.connection)  # type: ignore[operator]
        except Exception as e:
            raise self._fail(flow, FlowError(str(e), None, code="connection_gone")) from None
        if spec.fingerprint != flow.fingerprint:
            raise self._fail(
                flow,
                FlowError(
                    "The connection's scopes changed while you were signing in.",
                    "authorize again",
                    code="scopes_changed",
                ),
            )
        return spec

    async def _complete(self, flow: Flow, params: Mapping[str, str], spec_for: object) -> Flow:
        try:
            meta = await self.idp.metadata()
        except IdPUnavailable as e:
            raise self._fail(flow, FlowError(e.message, e.fix, code="idp_unavailable")) from None
        try:
            check_issuer(params, meta, self.idp.allowed_tenants)  # RFC 9207 mix-up defence
        except IssuerMismatchError as e:
            if "{tenantid}" in str(meta.get("issuer")):  # Entra's common endpoint
                raise self._fail(
                    flow,
                    FlowError(
                        f"The sign-in came from an Entra ID tenant this server does not allow "
                        f"({params.get('iss')}).",
                        "an admin adds the tenant id to c.ConnAuth.allowed_tenants if its "
                        "users may sign in; otherwise sign in with an account of an allowed "
                        "tenant",
                        code="tenant_not_allowed",
                    ),
                ) from None
            raise self._fail(
                flow,
                FlowError(
                    "The sign-in response came from another issuer than the configured IdP.",
                    "check c.ConnAuth.discovery_url; if it is right, this may be an attack: "
                    "start again",
                    code=e.error,
                ),
            ) from None
        except IssuerMissingError as e:
            raise self._fail(
                flow,
                FlowError(
                    "The sign-in response lacks the issuer the IdP promises to send.",
                    "start the authorization again from Jupyter",
                    code=e.error,
                ),
            ) from None
        spec = self.spec_of(flow, spec_for)
        scopes_txt = " ".join(self.requested_scopes(spec))
        error = params.get("error")
        if error:
            desc = params.get("error_description")
            raise self._fail(
                flow,
                FlowError(
                    f"The identity provider answered {error}" + (f": {desc}" if desc else "."),
                    fix_for(
                        error,
                        desc,
                        redirect_uri=self.redirect_uri,
                        scopes=scopes_txt,
                        resource=spec.resource or "",
                    ),
                    code=error_code(error),
                ),
            )
        code = params.get("code")
        if not code:
            raise self._fail(
                flow,
                FlowError(
                    "The sign-in response has no authorization code.",
                    "start the authorization again from Jupyter",
                    code="missing_code",
                ),
            )
        try:
            resp = await self.idp.exchange_code(
                code=code,
                code_verifier=flow.code_verifier,
                redirect_uri=flow.redirect_uri,
                extra=self._extra(spec),
            )
        except OAuthProtocolError as e:
            raise self._fail(
                flow,
                FlowError(
                    f"The IdP refused the authorization code ({e.error}).",
                    fix_for(
                        e.error,
                        e.description,
                        redirect_uri=self.redirect_uri,
                        scopes=scopes_txt,
                        resource=spec.resource or "",
                    )
                    or "start the authorization again from Jupyter",
                    code=error_code(e.error),
                ),
            ) from None
        except IdPUnavailable as e:
            raise self._fail(flow, FlowError(e.message, e.fix, code="idp_unavailable")) from None
        return await self.store_grant(flow, resp, spec)

    async def store_grant(self, flow: Flow, resp: TokenResponse, spec: ConnectionSpec) -> Flow:
        """Check a flow's token response and store it as the user's grant: the ID token
        (nonce, signature, claims), the account against the host's email and the stored
        grant's, the granted scopes. Every way to consent (the callback, the device
        code of :mod:`.device`) ends here; raises FlowError with the flow marked failed."""
        identity: dict[str, str] = {}
        if resp.id_token:
            try:
                claims = await self.idp.verify_id_token(
                    resp.id_token, flow.nonce or None, access_token=resp.access_token
                )
            except (OAuthProtocolError, IdPUnavailable) as e:
                raise self._fail(
                    flow,
                    FlowError(
                        f"The IdP's ID token could not be verified: {e}.",
                        "check the IdP's signing keys and c.ConnAuth.client_id",
                        code="invalid_id_token",
                    ),
                ) from None
            identity = identity_from_claims(claims)
            if "email" not in identity and identity.get("sub"):
                info = await self.idp.userinfo(resp.access_token)
                if info is not None:
                    add_userinfo(identity, info)
        try:
            check_expected_email(flow, identity)
            check_same_account(flow, self.store.get_token(flow.user, flow.connection), identity)
        except FlowError as e:
            raise self._fail(flow, e) from None
        flavour = self.idp.flavour
        missing = flavour.missing_scopes(flavour.request_scopes(spec.consent_scopes), resp.scope)
        if missing:
            raise self._fail(
                flow,
                ScopeMismatch(
                    "The IdP granted other scopes than the connection requests: missing "
                    + " ".join(missing)
                    + f" (granted: {' '.join(resp.scope or ()) or 'none'}).",
                    "Align the connection's Scopes field with the IdP's policy: remove the "
                    "scopes the IdP will not grant, or allow them for the app at the IdP.",
                ),
            )
        record = TokenRecord(
            access_token=resp.access_token,
            expires_at=grant_expiry(spec, resp.expires_at, resp.id_token),
            id_token=resp.id_token if spec.federated else None,  # kept only as a subject
            refresh_token=resp.refresh_token,
            refresh_expires_at=resp.refresh_expires_at,
            token_type=resp.token_type,
            scope=resp.scope,
            identity=identity,
            grant_id=secrets.token_urlsafe(12),
        )
        self.store.put_token(flow.user, flow.connection, spec.fingerprint, record)
        self.claims.pop((flow.user, flow.connection), None)
        flow.status = "complete"
        flow.identity = record.display_identity
        self.store.update_flow(flow)
        if "offline_access" in spec.consent_scopes and not resp.refresh_token:
            log.warning(
                "jupyter-connauth: the IdP issued no refresh token for %s although "
                "offline_access was requested (%s flavour); the user will be asked again "
                "at expiry",
                flow.connection,
                self.idp.flavour.name,
            )
        log.info("jupyter-connauth: user %s authorized %s", flow.user, flow.connection)
        return flow
