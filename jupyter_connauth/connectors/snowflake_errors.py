"""Snowflake's login and query errors → what to do about them (no token in any text)."""

from __future__ import annotations

import re

from ..core.errors import ConnAuthError, QueryError, SnowflakeAuthError, WarehouseUnreachable
from ..core.redact import redact
from .base import ConnectionInfo

# -- Snowflake error numbers (errno on the driver's exceptions) -------------------
INVALID_TOKEN = 390303
TOKEN_EXPIRED = 390318
BAD_USER = 390100
ROLE_NOT_IN_TOKEN = 390317
USER_MISMATCH = 390309
AUTHENTICATOR_NOT_SUPPORTED = 390102
SESSION_GONE = (390104, 390112, 390114)  # login again / session expired / token expired
QUERY_CANCELLED = 604
OBJECT_NOT_FOUND = 2003
# connector 5.x error kinds (IO, timeout) and the 4.x "could not connect" numbers
NETWORK_ERRNOS = frozenset({4, 14, 250001, 250003, 251011, 251012})

AUTH_RETRY_ERRNOS = frozenset({INVALID_TOKEN, TOKEN_EXPIRED, *SESSION_GONE})

_ERR_PREFIX = re.compile(r"^(?:\s*\d{6} \([0-9A-Z]{5}\):\s*)+")
_REQUEST_ID = re.compile(r"\s*\(request_id=[^)]*\)\s*$")


def is_snowflake_error(exc: BaseException) -> bool:
    return any(c.__module__.startswith("snowflake.connector") for c in type(exc).__mro__)


def clean_message(exc: BaseException) -> str:
    """The driver's message without the repeated ``000000 (XXXXX):`` prefixes, the request
    id, any token value this process has seen or anything shaped like one."""
    raw = getattr(exc, "msg", None) or str(exc)
    text = _ERR_PREFIX.sub("", str(raw)).strip()
    text = _REQUEST_ID.sub("", text).strip()
    return redact(text)


def errno_of(exc: BaseException) -> int | None:
    errno = getattr(exc, "errno", None)
    return errno if isinstance(errno, int) else None


def translate(exc: BaseException, info: ConnectionInfo) -> ConnAuthError | None:
    """A Snowflake driver error → the error with its fix (by the error numbers above)."""
    if isinstance(exc, ConnAuthError):
        return exc
    if not is_snowflake_error(exc):
        return None
    errno = errno_of(exc)
    detail = clean_message(exc)
    jwt_mode = info.auth == "oauth-jwt"
    name = info.name
    role = info.params.get("role")

    if errno == INVALID_TOKEN:
        if jwt_mode:
            return SnowflakeAuthError(
                f"Snowflake rejected the JWT that Jupyter minted for {name!r} "
                "(390303 Invalid OAuth access token).",
                "the public key in the security integration does not match the broker's "
                "private key: set EXTERNAL_OAUTH_RSA_PUBLIC_KEY to the broker's public key "
                f"(see %sql_connector doctor {name}). If the key matches, the issuer "
                "differs: set EXTERNAL_OAUTH_ISSUER to the exact Jupyter URL (as the "
                "broker's public_url, trailing slash included), and put the connection's "
                "JWT audience in EXTERNAL_OAUTH_AUDIENCE_LIST.",
                code="snowflake_invalid_token",
            )
        return SnowflakeAuthError(
            f"Snowflake rejected the identity provider's access token for {name!r} "
            "(390303 Invalid OAuth access token).",
            "the IdP's token is not accepted: check EXTERNAL_OAUTH_ISSUER (the token's "
            "iss, exactly), EXTERNAL_OAUTH_JWS_KEYS_URL (the IdP's JWKS URL) and "
            "EXTERNAL_OAUTH_AUDIENCE_LIST (the token's aud: the resource/scopes the "
            "connection requests) in the Snowflake security integration.",
            code="snowflake_invalid_token",
        )
    if errno == TOKEN_EXPIRED:
        expired_fix = (
            "run the cell again: a fresh JWT is minted on reconnect. If it keeps "
            "failing, check the Jupyter server's clock (the JWT is valid 10 minutes)."
            if jwt_mode
            else "run the cell again: the token is refreshed and the connection "
            "reopened automatically. If it keeps failing, re-authorize "
            f"(%sql_connector authorize {name}) and check the server clocks."
        )
        return SnowflakeAuthError(
            f"The access token for {name!r} has expired (390318 OAuth access token expired).",
            expired_fix,
            code="snowflake_token_expired",
        )
    if errno == BAD_USER:
        return SnowflakeAuthError(
            f"Snowflake has no enabled user for this token on {name!r} "
            "(390100 Incorrect username or password was specified).",
            "create a Snowflake user whose LOGIN_NAME is the user's email (or set "
            "EXTERNAL_OAUTH_SNOWFLAKE_USER_MAPPING_ATTRIBUTE = 'EMAIL_ADDRESS' to match "
            "users by EMAIL), make sure EXTERNAL_OAUTH_TOKEN_USER_MAPPING_CLAIM names "
            "a claim the token carries (email), and that the user is not disabled.",
            code="snowflake_unknown_user",
        )
    if errno == ROLE_NOT_IN_TOKEN:
        which = f"role {role!r}" if role else "the user's default role"
        carried = (
            "the JWT carries session:role:<role> for the connection's role"
            if jwt_mode
            else "the token's scopes carry session:role:<ROLE> or session:role-any"
        )
        return SnowflakeAuthError(
            f"Snowflake refused {which} for {name!r}: it is not listed in the access "
            "token, not granted to the user, or blocked (390317).",
            "set EXTERNAL_OAUTH_ANY_ROLE_MODE = 'ENABLE' in the security integration "
            "(with session:role-any in the connection's scopes), or grant the role to "
            f"the user (GRANT ROLE ... TO USER ...), or use the role the token carries "
            f"({carried}). ACCOUNTADMIN, ORGADMIN and SECURITYADMIN are blocked for "
            "OAuth by default.",
            code="snowflake_role_not_in_token",
        )
    if errno == USER_MISMATCH:
        return SnowflakeAuthError(
            f"The user set in connection {name!r} differs from the user of the token (390309).",
            "remove user from the connection's parameters: the token decides the user.",
            code="snowflake_user_mismatch",
        )
    if errno == AUTHENTICATOR_NOT_SUPPORTED:
        return SnowflakeAuthError(
            f"The Snowflake account of {name!r} does not accept OAuth logins (390102).",
            "create an EXTERNAL_OAUTH security integration for the account and ENABLE it "
            "(see notebooks/snowflake.ipynb).",
            code="snowflake_oauth_not_enabled",
        )
    if errno in SESSION_GONE:
        return SnowflakeAuthError(
            f"The Snowflake session of {name!r} has expired ({errno}).",
            "run the cell again: the connection is reopened with a fresh token.",
            code="snowflake_session_expired",
        )
    if errno == QUERY_CANCELLED:
        return QueryError(f"The query was cancelled: {detail}")
    network = errno in NETWORK_ERRNOS or (
        type(exc).__name__ == "OperationalError" and (errno is None or errno < 1000)
    )
    if network:
        account = info.params.get("account") or info.driver_options.get("account")
        host = info.driver_options.get("host") or f"{account}.snowflakecomputing.com"
        port = info.driver_options.get("port")
        where = f"{host}:{port}" if port else str(host)
        return WarehouseUnreachable(
            f"Could not reach Snowflake account {account!r} at {where} for {name!r}: {detail}",
            "check the account identifier (orgname-accountname, without "
            ".snowflakecomputing.com), the network, proxy and firewall between this "
            "kernel and Snowflake, and Snowflake's status page.",
        )
    if errno is not None and 390000 <= errno < 391000:
        return SnowflakeAuthError(
            f"Snowflake refused the login for {name!r}: {detail}",
            "check the Snowflake security integration for this connection "
            f"(%sql_connector doctor {name}).",
            code="snowflake_login_error",
        )
    sqlstate = getattr(exc, "sqlstate", None)
    code = f"{errno:06d}" if errno is not None else "error"
    head = f"Snowflake error {code} ({sqlstate})" if sqlstate else f"Snowflake error {code}"
    fix: str | None = None
    if errno == OBJECT_NOT_FOUND:
        fix = (
            "check the name (unquoted names are upper-cased) and the database/schema, "
            "and that your role may use it (SELECT CURRENT_ROLE(); USE ROLE ...)"
        )
    return QueryError(f"{head}: {detail}", fix)
