"""``c.ConnAuth.*``: the broker's configuration, shared by every host of the broker."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_data_dir
from traitlets import Bool, Dict, Float, Int, List, Unicode, default, observe
from traitlets.config import Configurable

#: The JWT issuer when no public URL is configured: the same on every port.
DEFAULT_JWT_ISSUER = "jupyter-connauth"


class ConnAuth(Configurable):
    """Per-user OAuth for data connectors.

    Example ``jupyter_server_config.py``::

        c.ConnAuth.discovery_url = "https://login.example.com/.well-known/openid-configuration"
        c.ConnAuth.client_id = "jupyter"
        # the secret from JUPYTER_CONNAUTH_CLIENT_SECRET
        c.ConnAuth.connections = {
            "sales": {"connector": "bigquery", "project": "acme-sales"},
        }
    """

    discovery_url = Unicode(
        help="""OpenID discovery URL of the IdP (ends in /.well-known/openid-configuration).
        Its host selects the flavour when c.ConnAuth.flavour is unset.
        Default: $JUPYTER_CONNAUTH_DISCOVERY_URL.""",
    ).tag(config=True)

    flavour = Unicode(
        "",
        help="""The IdP's flavour: azure | google | okta | keycloak | oidc. It decides the
        default scopes, when prompt=consent is sent (never on azure; on google only when a
        user consents again, e.g. after a scope edit; with offline_access on oidc), the
        scopes sent (no offline_access on google, which gets access_type=offline), how
        granted scopes answer requested ones (azure: <resource>/.default is satisfied by
        any granted scope of that resource) and what doctor checks. Default: from the
        discovery URL: login.microsoftonline.com → azure, accounts.google.com → google,
        *.okta.com → okta, a /realms/ path → keycloak, else oidc.""",
    ).tag(config=True)

    token_endpoint_auth_method = Unicode(
        "",
        help="""How the app authenticates at the IdP's token endpoint: client_secret_basic,
        client_secret_post, private_key_jwt (RFC 7523, with
        c.ConnAuth.client_private_key_path) or none (a public client, PKCE alone).
        Default: from discovery's token_endpoint_auth_methods_supported: basic when listed
        (Okta apps require it), post when only that is listed (Entra ID: post first);
        private_key_jwt when a client private key is configured; none without a secret.""",
    ).tag(config=True)

    client_private_key_path = Unicode(
        "",
        help="""PEM file of the app's RSA or EC private key for private_key_jwt client
        authentication (its public key registered at the IdP app). Readable only by the
        server's account.""",
    ).tag(config=True)

    client_private_key_id = Unicode(
        "",
        help="""The kid of the private_key_jwt signing key as registered at the IdP
        (Entra: the certificate's thumbprint). Default: the key's RFC 7638 thumbprint.""",
    ).tag(config=True)

    ca_bundle = Unicode(
        "",
        help="""PEM file of CA certificates trusted for IdP calls besides the system's (and
        SSL_CERT_FILE's): a corporate CA or a TLS-inspecting proxy. Proxies come from
        HTTPS_PROXY / HTTP_PROXY / NO_PROXY.""",
    ).tag(config=True)

    app_api_scope = Unicode(
        "",
        help="""Azure on-behalf-of: the scope of this app's own API the user consents to, so
        the subject token Entra exchanges is for this app (AADSTS500131 otherwise).
        Default: api://<client_id>/access_as_user (App registration → Expose an API →
        Application ID URI api://<client_id>, scope access_as_user). A connection's
        subject_scopes overrides it.""",
    ).tag(config=True)

    allowed_tenants = List(
        Unicode(),
        help="""Entra ID multi-tenant apps (discovery URL with common or organizations):
        the tenant ids (tid) whose users may sign in. The issuer template
        https://login.microsoftonline.com/{tenantid}/v2.0 is filled with the token's tid
        only for these; an ID token of another tenant is refused.""",
    ).tag(config=True)

    @default("discovery_url")
    def _default_discovery_url(self) -> str:
        return os.environ.get("JUPYTER_CONNAUTH_DISCOVERY_URL", "")

    client_id = Unicode(help="The IdP app's client id. Default: $JUPYTER_CONNAUTH_CLIENT_ID.").tag(
        config=True
    )

    @default("client_id")
    def _default_client_id(self) -> str:
        return os.environ.get("JUPYTER_CONNAUTH_CLIENT_ID", "")

    client_secret = Unicode(
        help="""The IdP app's client secret (empty for a public client, which then relies on
        PKCE alone). Default: $JUPYTER_CONNAUTH_CLIENT_SECRET.""",
    ).tag(config=True)

    @default("client_secret")
    def _default_client_secret(self) -> str:
        return os.environ.get("JUPYTER_CONNAUTH_CLIENT_SECRET", "")

    providers = Dict(
        help="""More identity providers besides the top-level one, by name: each a dict
        with discovery_url, client_id, client_secret, and optionally flavour,
        token_endpoint_auth_method, client_private_key_path, client_private_key_id,
        authorize_params, app_api_scope, allowed_tenants (as the c.ConnAuth settings of
        those names). A connection names its IdP with 'provider'; without it, the
        top-level settings are its IdP. All providers share the one callback URL
        (register it at each IdP app). Example: {"google": {"discovery_url":
        "https://accounts.google.com/.well-known/openid-configuration", "client_id": "…",
        "client_secret": "…"}}""",
    ).tag(config=True)

    connections = Dict(
        help="""Connections by name. Each is a dict with 'connector' (bigquery | databricks |
        snowflake), the data-source parameters (bigquery: project; databricks:
        server_hostname, http_path; snowflake: account, warehouse, database, role),
        'auth' (oauth | oauth-jwt | on-behalf-of | token-exchange; default oauth),
        'scopes' (default: the template for the connector and IdP flavour), optionally
        'resource' (RFC 8707 resource indicator), 'provider' (a name of
        c.ConnAuth.providers; default the top-level IdP) and 'driver_options'.
        Connections from config are read-only in the UI and the API.""",
    ).tag(config=True)

    public_url = Unicode(
        help="""Public base URL of this Jupyter server as the browser sees it, e.g.
        https://jupyter.example.com/ behind a proxy. The OAuth redirect URI is
        <public_url>oauth/connector/callback. Default: the server's own URL.""",
    ).tag(config=True)

    store_path = Unicode(
        help="""The SQLite token store of the single-user server, shared with a kernel
        that hosts the broker itself (LocalConnAuth). The JupyterHub service keeps its
        tokens at c.ConnAuthHub.db_url instead. Default:
        <jupyter data dir>/connauth/tokens.sqlite3""",
    ).tag(config=True)

    @default("store_path")
    def _default_store_path(self) -> str:
        return str(Path(jupyter_data_dir()) / "connauth" / "tokens.sqlite3")

    key_file = Unicode(
        help="""Where the single-user server (and a kernel hosting the broker) keeps a
        generated encryption key when neither JUPYTER_CONNAUTH_CRYPT_KEY nor
        JUPYTERHUB_CRYPT_KEY is set; the JupyterHub service requires one of the two.
        Default: crypt.key beside store_path.""",
    ).tag(config=True)

    @default("key_file")
    def _default_key_file(self) -> str:
        return str(Path(self.store_path).with_name("crypt.key"))

    refresh_leeway = Float(60.0, help="Refresh a token this many seconds before it expires.").tag(
        config=True
    )
    refresh_leeway_fraction = Float(
        0.5,
        min=0.0,
        max=1.0,
        help="""At most this fraction of a token's lifetime is refresh leeway: a token is
        refreshed min(refresh_leeway, fraction * lifetime) seconds before it expires, so a
        short-lived token is refreshed once per lifetime, not on every request.""",
    ).tag(config=True)
    flow_ttl = Float(600.0, help="Seconds a consent flow (its state) stays valid.").tag(config=True)
    warehouse_session_idle_timeout = Float(
        600.0,
        help="Seconds an idle warehouse session of the sidebar's Test and browse stays "
        "open before it is closed.",
    ).tag(config=True)
    warehouse_session_max = Int(
        100,
        help="At most this many warehouse sessions for the sidebar's Test and browse; "
        "the least recently used beyond it are closed.",
    ).tag(config=True)
    http_timeout = Float(10.0, help="Timeout in seconds for every request to the IdP.").tag(
        config=True
    )
    identity_scopes = List(
        Unicode(),
        default_value=["openid", "email"],
        help="""Scopes added to every consent request so the broker learns who the user is
        (the ID token's email). They are not part of a connection's scope fingerprint.""",
    ).tag(config=True)
    authorize_params = Dict(
        help="""Extra parameters for the IdP's authorization request, e.g.
        {"access_type": "offline"} for Google, or {"domain_hint": "example.com"}.""",
    ).tag(config=True)
    allow_api_connections = Bool(
        True,
        help="Allow creating and editing connections through the API (the sidebar form).",
    ).tag(config=True)

    def summary(self) -> dict[str, Any]:
        """Config facts safe to show (no secret)."""
        return {
            "discovery_url": self.discovery_url,
            "client_id": self.client_id,
            "client_secret_set": bool(self.client_secret),
            "public_url": self.public_url,
        }

    # -- Snowflake OAuth (JWT) signing -------------------------------------------
    allow_jwt_signing_as_user = Bool(
        False,
        help="""Let this single-user server (or a kernel hosting the broker) mint Snowflake
        OAuth (JWT) tokens. That process runs as the notebook user, who can then read the
        private key and mint a token for ANY Snowflake user: turn it on only where everyone
        who can run code on this server may act as every Snowflake user. The JupyterHub
        service signs without it (users cannot read its key). Logged as a warning at start
        and flagged by %sql_connector doctor.""",
    ).tag(config=True)

    @observe("allow_jwt_signing_as_user")
    def _warn_jwt_signing(self, change: Any) -> None:
        if change["new"]:
            logging.getLogger("jupyter_connauth").warning(
                "jupyter-connauth: c.ConnAuth.allow_jwt_signing_as_user is on: whoever runs "
                "code on this server can read the Snowflake signing key and mint a token for "
                "any Snowflake user; the JupyterHub service keeps the key out of users' reach"
            )

    jwt_subject_claim = Unicode(
        "email",
        help="""The claim of the user's verified identity that becomes the Snowflake JWT's
        subject (sub and the connection's jwt_user_claim), from the ID token on a Jupyter
        server, from the authenticator's auth_state on JupyterHub. "email" is used only when
        verified (email_verified is not false). Prefer an immutable claim such as "oid"
        (Entra) or "sub", set as the Snowflake user's LOGIN_NAME: emails and usernames can
        be renamed or, at some IdPs, edited by users.""",
    ).tag(config=True)
    jwt_issuer = Unicode(
        help="""The iss of the Snowflake JWTs: EXTERNAL_OAUTH_ISSUER of the security
        integration must be exactly this. Default: c.ConnAuth.public_url (with a trailing
        slash) when set, else "jupyter-connauth". It never follows the server's port
        (port_retries, random loopback ports), which would make Snowflake refuse every
        token (390303).""",
    ).tag(config=True)

    @default("jwt_issuer")
    def _default_jwt_issuer(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/") + "/"
        return DEFAULT_JWT_ISSUER
