"""Google Security Token Service: a user's IdP token → a Google access token of a
Workforce Identity Federation principal (RFC 8693 token exchange).

cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token: ``grant_type`` token
exchange, ``audience`` = the workforce pool provider's full resource name,
``subject_token_type`` (``id_token``, ``jwt`` or ``access_token``),
``requested_token_type`` access token, ``scope``, and ``options={"userProject": ...}``
for the project billed for quota. STS answers carry no refresh token: exchange again
before ``expires_at``.

No Jupyter import here; errors are :mod:`jupyter_connauth.core.errors` with the fix an
admin or user needs, never a token value.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.errors import ConnAuthError, IdPUnavailable, SubjectRejected
from ..core.redact import remember

if TYPE_CHECKING:  # connection validation imports this module: keep httpx2 out of it
    import httpx2

STS_URL = "https://sts.googleapis.com/v1/token"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a URN
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a URN
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"  # noqa: S105 - a URN
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
SUBJECT_TOKEN_TYPES = (ID_TOKEN_TYPE, JWT_TYPE, ACCESS_TOKEN_TYPE)
#: BigQuery's scope; cloud-platform works as well.
BIGQUERY_SCOPE = "https://www.googleapis.com/auth/bigquery"

WORKFORCE_PROVIDER_RE = re.compile(
    r"^//iam\.googleapis\.com/locations/global/workforcePools/"
    r"(?P<pool>[a-z][a-z0-9-]{4,61}[a-z0-9])/providers/(?P<provider>[a-z0-9-]{4,32})$"
)


def pool_and_provider(workforce_pool_provider: str) -> tuple[str, str]:
    """``(POOL, PROVIDER)`` of a provider's full resource name (ValueError if it is none)."""
    m = WORKFORCE_PROVIDER_RE.match(workforce_pool_provider)
    if not m:
        raise ValueError(workforce_pool_provider)
    return m.group("pool"), m.group("provider")


@dataclass
class GoogleToken:
    access_token: str
    expires_at: float | None
    token_type: str = "Bearer"  # noqa: S105 - the token type

    def __post_init__(self) -> None:
        remember(self.access_token)

    def __repr__(self) -> str:
        return f"GoogleToken(expires_at={self.expires_at!r})"


class STSRefused(ConnAuthError):
    """Google STS refused the exchange (an OAuth error answer)."""

    code, status = "sts_refused", 403

    def __init__(self, message: str, fix: str, *, error: str) -> None:
        super().__init__(message, fix, code=f"sts_{error}" if error.isidentifier() else None)
        self.error = error


def sts_fix(error: str, description: str, provider: str) -> str:
    """What to change for an STS error (pool provider, attribute mapping/condition...)."""
    desc = description.lower()
    pool, name = _names(provider)
    describe = (
        f"gcloud iam workforce-pools providers describe {name} "
        f"--workforce-pool={pool} --location=global"
    )
    if error == "invalid_request" and "audience" in desc:
        return (
            "Set workforce_pool_provider to the provider's full resource name: "
            "//iam.googleapis.com/locations/global/workforcePools/POOL/providers/PROVIDER."
        )
    if error == "invalid_target":
        return (
            f"The workforce pool provider {provider} does not exist or is disabled: check the "
            f"connection's workforce_pool_provider ({describe})."
        )
    if error == "unauthorized_client" or "attribute condition" in desc:
        return (
            "The pool provider's attribute condition rejects this user's token: compare its "
            f"--attribute-condition ({describe}) with the claims the IdP issues, or sign in "
            "as a user it admits."
        )
    if "mapped attribute" in desc or "google.subject" in desc:
        return (
            "The pool provider's attribute mapping gives no google.subject for this token: "
            "map google.subject to a claim the IdP always sends "
            f"(e.g. --attribute-mapping=google.subject=assertion.sub; {describe})."
        )
    if "audience" in desc:
        return (
            "The provider's client ID must be the audience of the subject token: set the "
            "provider's --client-id to c.ConnAuth.client_id (for subject_token_type "
            "id_token), or use the token type whose audience it is."
        )
    if "issuer" in desc:
        return (
            "The provider's --issuer-uri must be the IdP's issuer exactly as in its discovery "
            f"document ({describe})."
        )
    if error == "invalid_scope":
        return "Set the connection's scopes to https://www.googleapis.com/auth/bigquery."
    return f"Check the workforce pool provider's configuration ({describe})."


def _names(provider: str) -> tuple[str, str]:
    try:
        return pool_and_provider(provider)
    except ValueError:
        return "POOL", "PROVIDER"


async def exchange(
    http: httpx2.AsyncClient,
    *,
    audience: str,
    subject_token: str,
    subject_token_type: str = ID_TOKEN_TYPE,
    scopes: tuple[str, ...] | list[str] = (BIGQUERY_SCOPE,),
    user_project: str | None = None,
    sts_url: str = STS_URL,
    connection: str = "",
) -> GoogleToken:
    """Exchange ``subject_token`` at Google STS for a Google access token.

    Raises :class:`STSRefused` (with the fix), :class:`SubjectRejected` when the subject
    itself is no longer valid (expired: sign in again), :class:`IdPUnavailable` when STS
    cannot be reached or answers garbage.
    """
    form = {
        "grant_type": TOKEN_EXCHANGE,
        "audience": audience,
        "subject_token": subject_token,
        "subject_token_type": subject_token_type,
        "requested_token_type": ACCESS_TOKEN_TYPE,
        "scope": " ".join(scopes),
    }
    if user_project:
        form["options"] = json.dumps({"userProject": user_project}, separators=(",", ":"))
    import httpx2

    label = f" for {connection!r}" if connection else ""
    try:
        # STS takes no client authentication: "do not send the Authorization header".
        resp = await http.post(sts_url, data=form, headers={"Accept": "application/json"})
    except httpx2.HTTPError as e:
        raise IdPUnavailable(
            f"Google STS ({sts_url}) is unreachable{label} ({type(e).__name__}).",
            "check the connection's sts_url and that the server reaches it (proxy, firewall)",
        ) from None
    try:
        data: Any = resp.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise IdPUnavailable(
            f"Google STS answered HTTP {resp.status_code} without JSON{label}.",
            "try again later; check the connection's sts_url",
        )
    if resp.status_code != 200 or "access_token" not in data:
        error = str(data.get("error") or f"http_{resp.status_code}")
        description = str(data.get("error_description") or "")
        if resp.status_code >= 500:
            raise IdPUnavailable(
                f"Google STS failed{label} (HTTP {resp.status_code}).", "try again later"
            )
        if error == "invalid_grant" and "expired" in description.lower():
            raise SubjectRejected(
                f"Google STS refused your expired sign-in{label}.", "authorize the connection again"
            )
        raise STSRefused(
            f"Google STS refused the token exchange{label} ({error}"
            + (f": {description}" if description else "")
            + ").",
            sts_fix(error, description, audience),
            error=error,
        )
    access = data["access_token"]
    if not isinstance(access, str) or not access:
        raise IdPUnavailable(f"Google STS answered without an access token{label}.")
    expires_at = None
    try:
        expires_at = time.time() + float(data["expires_in"])
    except (KeyError, TypeError, ValueError):
        pass
    return GoogleToken(access, expires_at, str(data.get("token_type") or "Bearer"))
