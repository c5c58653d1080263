"""BigQuery through Workforce Identity Federation: the broker's hook.

A BigQuery connection with ``workforce_pool_provider`` keeps the user's IdP grant (the
subject) like any pass-through connection, and hands the kernel a Google access token
exchanged for it at Google STS (:mod:`jupyter_connauth.oauth.google_sts`). Google tokens
are kept in memory per (user, connection) and exchanged again shortly before they expire
or when the subject changes (a refresh, another consent).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any

import httpx2

from ..core.connections import ConnectionSpec
from ..core.errors import SubjectRejected
from ..oauth.google_sts import ID_TOKEN_TYPE, STS_URL, GoogleToken, exchange, pool_and_provider


def subject_token_type(spec: ConnectionSpec) -> str:
    return str(spec.extra.get("subject_token_type") or ID_TOKEN_TYPE)


def jwt_expiry(token: str | None) -> float | None:
    """``exp`` of a JWT, unverified (only to schedule a refresh; STS verifies it)."""
    if not token or token.count(".") != 2:
        return None
    try:
        part = token.split(".")[1]
        claims: Any = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        return float(claims["exp"])
    except (ValueError, KeyError, TypeError):
        return None


def grant_expiry(
    spec: ConnectionSpec, expires_at: float | None, id_token: str | None
) -> float | None:
    """When the stored grant must be refreshed: for an ID-token subject, also before the
    ID token expires (STS refuses an expired one; a refresh brings a new one)."""
    if not spec.federated or subject_token_type(spec) != ID_TOKEN_TYPE:
        return expires_at
    id_exp = jwt_expiry(id_token)
    if id_exp is None:
        return expires_at
    return id_exp if expires_at is None else min(expires_at, id_exp)


class Federation:
    def __init__(
        self,
        leeway: float,
        timeout: float,
        transport: httpx2.AsyncBaseTransport | None,
        leeway_fraction: float = 0.5,
    ) -> None:
        self.leeway = leeway
        self.leeway_fraction = leeway_fraction
        self._http = httpx2.AsyncClient(
            transport=transport or httpx2.AsyncHTTPTransport(retries=1), timeout=timeout
        )
        #: (user, connection) -> (subject fingerprint, token, refresh it after)
        self._cache: dict[tuple[str, str], tuple[str, GoogleToken, float]] = {}

    async def aclose(self) -> None:
        await self._http.aclose()

    def forget(self, user: str, connection: str) -> None:
        self._cache.pop((user, connection), None)

    async def exchange(
        self, user: str, spec: ConnectionSpec, access_token: str, id_token: str | None
    ) -> GoogleToken:
        """The Google token for ``user`` on ``spec``, from the stored subject."""
        kind = subject_token_type(spec)
        subject = id_token if kind == ID_TOKEN_TYPE else access_token
        if not subject:
            raise SubjectRejected(
                f"The stored sign-in for {spec.name!r} has no ID token to exchange at Google STS.",
                "authorize the connection again (its scopes must include openid)",
            )
        audience = str(spec.extra["workforce_pool_provider"])
        key = (user, spec.name)
        fingerprint = hashlib.sha256(f"{audience}\n{kind}\n{subject}".encode()).hexdigest()
        cached = self._cache.get(key)
        if cached is not None and cached[0] == fingerprint and cached[2] > time.time():
            return cached[1]
        token = await exchange(
            self._http,
            audience=audience,
            subject_token=subject,
            subject_token_type=kind,
            scopes=spec.scopes,
            user_project=spec.extra.get("user_project") or None,
            sts_url=str(spec.extra.get("sts_url") or STS_URL),
            connection=spec.name,
        )
        now = time.time()
        lifetime = (token.expires_at or now) - now
        # as for stored tokens: at most leeway_fraction of the lifetime is leeway
        self._cache[key] = (
            fingerprint,
            token,
            now + lifetime - min(self.leeway, self.leeway_fraction * lifetime),
        )
        return token


def federation_checks(
    spec: ConnectionSpec, meta: dict[str, Any], client_id: str
) -> list[tuple[str, bool | None, str, str | None]]:
    """What ``doctor`` says about a federated connection: (check, ok, detail, fix)."""
    provider = str(spec.extra["workforce_pool_provider"])
    pool, name = pool_and_provider(provider)
    kind = subject_token_type(spec)
    audience = (
        f"--client-id={client_id} (the ID token's audience)"
        if kind == ID_TOKEN_TYPE
        else "--client-id = the audience of the IdP token it exchanges"
    )
    issuer = meta.get("issuer") or "the IdP's issuer"
    return [
        (
            "workforce pool provider",
            None,
            f"{provider}; the broker exchanges the user's {kind.rsplit(':', 1)[-1]} at "
            f"{spec.extra.get('sts_url') or STS_URL} for {' '.join(spec.scopes)}",
            f"the provider needs --issuer-uri={issuer} and {audience} "
            f"(gcloud iam workforce-pools providers describe {name} --workforce-pool={pool} "
            "--location=global)",
        ),
        (
            "IAM for the workforce",
            None,
            "BigQuery sees the principal principal://iam.googleapis.com/locations/global/"
            f"workforcePools/{pool}/subject/<google.subject>",
            "grant roles/bigquery.jobUser and roles/bigquery.dataViewer to principalSet://"
            f"iam.googleapis.com/locations/global/workforcePools/{pool}/* (or per principal)",
        ),
    ]
