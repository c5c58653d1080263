"""RFC 7009, token revocation: telling the authorization server a grant is gone."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import httpx2

from .rfc6749 import TokenEndpoint, strip_query

log = logging.getLogger(__name__)


async def revoke_token(
    client: TokenEndpoint, metadata: Mapping[str, Any], token: str, hint: str
) -> bool:
    """Revoke ``token`` (``hint``: ``refresh_token`` or ``access_token``, section 2.1)
    where the metadata names a ``revocation_endpoint`` (RFC 8414 2). True if the server
    said 200; revoking a refresh token revokes its grant (section 2.1)."""
    endpoint = metadata.get("revocation_endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        return False
    try:
        resp = await client.oauth_client().revoke_token(endpoint, token=token, token_type_hint=hint)
    except httpx2.HTTPError:
        log.warning("jupyter-connauth: revocation at %s failed", strip_query(endpoint))
        return False
    return bool(resp.status_code == 200)
