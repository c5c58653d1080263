"""``%sql_connector doctor NAME``: check a connection's setup and say what to fix."""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ..core.errors import ConnAuthError
from ..core.flavours import default_scopes
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
    cfg = broker.config
    if broker.config_error is not None:
        checks.append(
            Check("IdP config", False, broker.config_error.message, broker.config_error.fix)
        )
        return [asdict(c) for c in checks]
    from urllib.parse import urlsplit

    parts = urlsplit(cfg.discovery_url)
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
        meta = await broker.idp.metadata()
        checks.append(
            Check("discovery URL", True, f"{cfg.discovery_url} (issuer {meta['issuer']})")
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
    checks.append(Check("flavour", None, f"{broker.flavour} (from the discovery URL's host)"))
    checks.append(
        Check(
            "redirect URI",
            None,
            broker.redirect_uri,
            "register exactly this URI in the IdP app (Azure: Authentication → Web → "
            "Redirect URIs); behind a proxy set c.ConnAuth.public_url",
        )
    )
    template = default_scopes(spec.connector, broker.flavour, spec.auth)
    scopes = " ".join(spec.scopes)
    if spec.federated:  # BigQuery through Workforce Identity Federation
        checks.extend(Check(*c) for c in federation_checks(spec, meta, cfg.client_id))
    elif template is not None and tuple(spec.scopes) != template:
        checks.append(
            Check(
                "scopes",
                None,
                f"{scopes} (the template for {spec.connector}/{broker.flavour} is "
                f"{' '.join(template)})",
            )
        )
    else:
        checks.append(Check("scopes", True, scopes))
    supported = meta.get("scopes_supported") or []
    if "offline_access" not in spec.consent_scopes and (
        broker.flavour == "azure" or "offline_access" in supported
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
        claim = cfg.jwt_subject_claim
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
