"""``%sql_connector doctor NAME``: check a connection's setup and say what to fix."""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ..core.errors import ConnAuthError
from ..core.flavours import default_scopes
from ..oauth.flavours import DoctorFacts
from ..oauth.rfc8628 import device_endpoint
from .federation import federation_checks
from .fixes import device_fix
from .jwt_mint import OPT_IN, public_key_fingerprint, signing_refusal

if TYPE_CHECKING:
    from .broker import Broker


@dataclass
class Check:
    check: str
    ok: bool | None  # None: information only
    detail: str
    fix: str | None = None


async def diagnose(broker: Broker, user: str, name: str) -> list[dict[str, Any]]:
    checks: list[Check] = []
    spec = broker.connection(name)
    lane = broker.lane(spec)
    provider = lane.provider
    settings = provider.settings
    flavour = provider.flavour
    try:
        broker._check_config(spec)
    except ConnAuthError as e:
        checks.append(Check("IdP config", False, e.message, e.fix))
        return [asdict(c) for c in checks]
    from urllib.parse import urlsplit

    parts = urlsplit(settings.discovery_url)
    if parts.scheme != "https" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        checks.append(
            Check(
                "TLS",
                False,
                f"the discovery URL uses {parts.scheme}://: tokens would cross the network "
                "in the clear",
                "use the IdP's https:// discovery URL",
            )
        )
    try:
        meta = await provider.idp.metadata()
        checks.append(
            Check("discovery URL", True, f"{settings.discovery_url} (issuer {meta['issuer']})")
        )
        methods = meta.get("code_challenge_methods_supported") or []
        if methods and "S256" not in methods:
            checks.append(
                Check("PKCE", False, "the IdP does not list S256", "enable PKCE S256 for the app")
            )
        checks.append(_device_check(meta, name))
    except ConnAuthError as e:
        checks.append(Check("discovery URL", False, e.message, e.fix))
        meta = {}
    how = f"{settings.where}.flavour" if settings.flavour else "from the discovery URL"
    checks.append(Check("flavour", None, f"{flavour.name}: {flavour.label} ({how})"))
    checks.append(
        Check(
            "redirect URI",
            None,
            broker.redirect_uri,
            "register exactly this URI in the IdP app (Azure: Authentication → Web → "
            "Redirect URIs); behind a proxy set c.ConnAuth.public_url",
        )
    )
    template = default_scopes(spec.connector, flavour.name, spec.auth)  # type: ignore[arg-type]
    scopes = " ".join(spec.scopes)
    if spec.federated:  # BigQuery through Workforce Identity Federation
        checks.extend(Check(*c) for c in federation_checks(spec, meta, settings.client_id))
    elif template is not None and tuple(spec.scopes) != template:
        checks.append(
            Check(
                "scopes",
                None,
                f"{scopes} (the template for {spec.connector}/{flavour.name} is "
                f"{' '.join(template)})",
            )
        )
    else:
        checks.append(Check("scopes", True, scopes))
    supported = meta.get("scopes_supported") or []
    if (
        "offline_access" not in spec.consent_scopes
        and "offline_access" not in flavour.unknown_scopes
        and (flavour.name == "azure" or "offline_access" in supported)
    ):
        checks.append(
            Check(
                "offline_access",
                False,
                "not requested: the IdP will issue no refresh token, so users consent again "
                "whenever the access token expires",
                "add offline_access to the connection's scopes",
            )
        )
    if meta:
        facts = DoctorFacts(
            client_id=settings.client_id,
            metadata=meta,
            auth_method=provider.idp.auth_method,
            authorize_params=lane.flows.authorize_params,
            connection=spec,
            consent_scopes=lane.flows.requested_scopes(spec),
            token_claims=_stored_claims(broker, user, name),
            allowed_tenants=settings.allowed_tenants,
        )
        checks.extend(Check(f.check, f.ok, f.detail, f.fix) for f in flavour.doctor(facts))
    if spec.auth == "oauth-jwt":
        checks.append(_signing_check(broker))
        try:
            key = await asyncio.to_thread(broker.minter.private_key, spec)  # parsing blocks
            fp = public_key_fingerprint(key)
            expected = spec.extra.get("jwt_public_key_fp")
            if expected and expected != fp:
                checks.append(
                    Check(
                        "private key",
                        False,
                        f"the broker's key has fingerprint {fp}, the connection expects {expected}",
                        "set EXTERNAL_OAUTH_RSA_PUBLIC_KEY in the Snowflake security integration "
                        "to the public half of the broker's key (or fix jwt_public_key_fp)",
                    )
                )
            else:
                checks.append(
                    Check(
                        "private key",
                        True,
                        f"present, public key fingerprint {fp} (compare with "
                        "RSA_PUBLIC_KEY_FP of the integration)",
                    )
                )
        except ConnAuthError as e:
            checks.append(Check("private key", False, e.message, e.fix))
        checks.append(
            Check(
                "JWT issuer",
                None,
                broker.minter.issuer,
                "EXTERNAL_OAUTH_ISSUER of the security integration must be exactly this "
                "(c.ConnAuth.jwt_issuer)",
            )
        )
        claim = broker.config.jwt_subject_claim
        checks.append(
            Check(
                "JWT subject",
                None,
                f"the user's {'verified ' if claim == 'email' else ''}{claim!r} claim "
                "(c.ConnAuth.jwt_subject_claim)",
                "an immutable claim (oid, sub) set as the Snowflake users' LOGIN_NAME is "
                "safer than an email that can be renamed"
                if claim in ("email", "preferred_username", "upn", "name")
                else None,
            )
        )
    status = broker.status(user, name)
    if status["status"] == "authorized":
        checks.append(Check("your token", True, f"authorized as {status.get('authorized_as')}"))
    else:
        checks.append(
            Check(
                "your token",
                None,
                status.get("reason_text") or status.get("message") or status["status"],
                f"%sql_connector authorize {name}",
            )
        )
    return [asdict(c) for c in checks]


def _device_check(meta: dict[str, Any], name: str) -> Check:
    """Whether ``%sql_connector authorize NAME --device`` can work with this IdP."""
    if device_endpoint(meta):
        return Check("device code", True, "the IdP offers device-code consent (RFC 8628)")
    return Check(
        "device code",
        None,
        "the IdP's discovery has no device_authorization_endpoint: "
        f"%sql_connector authorize {name} --device and kernels without a browser cannot "
        "consent",
        device_fix("device_flow_unsupported", name),
    )


def _stored_claims(broker: Broker, user: str, name: str) -> dict[str, Any]:
    """The user's stored access token's claims, unverified: only to say what is wrong
    with it (its audience), never to trust it. {} for an opaque token."""
    stored = broker.store.get_token(user, name)
    if stored is None or stored.record is None:
        return {}
    parts = stored.record.access_token.split(".")
    if len(parts) != 3:
        return {}
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return {}
    return {k: claims[k] for k in ("aud", "tid", "iss") if isinstance(claims, dict) and k in claims}


def _signing_check(broker: Broker) -> Check:
    """Where the Snowflake signing key lives, and who can read it."""
    refused = signing_refusal(broker.config, broker.jwt_signing_isolated)
    if refused is not None:
        return Check("JWT signing", False, refused.message, refused.fix)
    if broker.jwt_signing_isolated:
        return Check("JWT signing", True, "in the JupyterHub service, out of users' reach")
    return Check(
        "JWT signing",
        False,
        f"{OPT_IN} is on: this server runs as its users, so whoever runs code here can "
        "read the signing key and mint a Snowflake token for any Snowflake user",
        "host the broker as the JupyterHub service (docs/jupyterhub.md), or turn the "
        "option off where not everyone on this server may act as every Snowflake user",
    )
