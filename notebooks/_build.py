"""Write the warehouse setup notebooks (BigQuery, Databricks, Snowflake) from this file.

    python notebooks/_build.py           # (re)write the notebooks
    python notebooks/_build.py --check   # exit 1 when a notebook differs from this source

The notebooks are generated so that review and diffs happen here, in plain Python. They
are written with empty outputs, no execution counts and stable cell ids. Admin snippets
(server config, SQL, shell) are Markdown code blocks, not code cells: they run on the
Jupyter server, the IdP or the warehouse, never in a user's kernel. Only the user part
has code cells. Every config key shown exists in ``jupyter_connauth/broker/config.py``
or ``jupyter_connauth/core/connections.py``; every fix in the troubleshooting tables is
one the code gives (``broker/fixes.py``, ``connectors/*.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from textwrap import dedent

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
AZURE_DATABRICKS = "2ff814a6-3304-4ab8-85cb-cd0e6f879c1d"

Cell = tuple[str, str]


# -- helpers ---------------------------------------------------------------------------


def md(*parts: str) -> Cell:
    """A Markdown cell; each part is dedented on its own (tables are parts too)."""
    return ("markdown", "\n\n".join(dedent(p).strip("\n") for p in parts if p.strip()))


def code(text: str) -> Cell:
    return ("code", dedent(text).strip("\n"))


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def notebook(stem: str, cells: Sequence[Cell]) -> nbformat.NotebookNode:
    nb = new_notebook(
        metadata={
            "kernelspec": {
                "display_name": "Python 3 (ipykernel)",
                "language": "python",
                "name": "python3",
            },
            "language_info": {"name": "python"},
        }
    )
    for i, (kind, source) in enumerate(cells):
        cell = new_markdown_cell(source) if kind == "markdown" else new_code_cell(source)
        cell.id = f"{stem}-{i:02d}"
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def render(nb: nbformat.NotebookNode) -> str:
    text = nbformat.writes(nb)
    return text if text.endswith("\n") else text + "\n"


# -- parts shared by the notebooks -------------------------------------------------------

IDP_ROWS = {
    "azure": (
        "Entra ID (Azure AD)",
        "e.g. App registrations → New registration, platform *Web* with the redirect URI; "
        "Certificates & secrets → New client secret",
        "`https://login.microsoftonline.com/<tenant-id>/v2.0/.well-known/openid-configuration`",
    ),
    "okta": (
        "Okta",
        "e.g. Applications → Create App Integration → OIDC, *Web Application*; grant types "
        "Authorization Code and Refresh Token",
        "`https://<okta-domain>/oauth2/<auth-server-id>/.well-known/openid-configuration` "
        "(a custom authorization server, e.g. `default`)",
    ),
    "keycloak": (
        "Keycloak",
        "e.g. Clients → Create client, *Client authentication* on, *Standard flow*; "
        "Valid redirect URIs",
        "`https://<keycloak-host>/realms/<realm>/.well-known/openid-configuration`",
    ),
    "google": (
        "Google",
        "e.g. APIs & Services → Credentials → Create OAuth client ID, *Web application*; "
        "Authorized redirect URIs",
        "`https://accounts.google.com/.well-known/openid-configuration`",
    ),
}


def register_app(idps: Sequence[str], note: str = "") -> Cell:
    return md(
        """
        ## A1. Register one app at your IdP

        The broker (in the Jupyter server, or the JupyterHub service) runs the OAuth
        authorization-code flow with PKCE (S256) and keeps the client secret, refresh
        tokens and keys; kernels only ever get short-lived access tokens. Register **one**
        web (confidential) app for Jupyter, allow refresh tokens, and add the redirect URI:
        """,
        table(
            ("Jupyter runs as", "redirect URI to register"),
            [
                (
                    "Jupyter server",
                    "`<Jupyter URL>oauth/connector/callback`, e.g. "
                    "`https://jupyter.example.com/oauth/connector/callback`",
                ),
                (
                    "JupyterHub",
                    "`https://hub.example.com/services/connauth/oauth/connector/callback`: "
                    "one fixed URI for every user (IdPs accept no wildcards)",
                ),
                (
                    "no server (IPython, VS Code, papermill)",
                    "`http://127.0.0.1:<port>/oauth/connector/callback` with "
                    "`c.LocalConnAuth.loopback_port = <port>`",
                ),
            ],
        ),
        """
        Behind a proxy, set `c.ConnAuth.public_url` to the URL the browser uses: the
        redirect URI derives from it. The server logs the redirect URI at start, and
        `%sql_connector doctor NAME` prints it. Register it exactly (scheme, host, port
        and path).
        """,
        table(("IdP", "where", "`c.ConnAuth.discovery_url`"), [IDP_ROWS[i] for i in idps]),
        note,
    )


def server_config(discovery_url: str, extra: str = "") -> str:
    return (
        dedent(
            f"""
            ```python
            # jupyter_server_config.py on the Jupyter server
            # (on JupyterHub: connauth_hub_config.py of the connauth service)
            c.ConnAuth.discovery_url = (
                "{discovery_url}"
            )
            c.ConnAuth.client_id = "<client-id>"
            # The secret comes from the server's environment: JUPYTER_CONNAUTH_CLIENT_SECRET.
            # Tokens are encrypted at rest with JUPYTER_CONNAUTH_CRYPT_KEY or
            # JUPYTERHUB_CRYPT_KEY (required for the hub service; a single server
            # generates a key file next to its store without them).
            """
        ).strip("\n")
        + ("\n" + dedent(extra).strip("\n") if extra else "")
        + "\n```"
    )


def offline_access_note(google: bool = False) -> str:
    text = """
        `offline_access` asks for a refresh token, so a user consents once and the broker
        refreshes silently 60 s before expiry; without it users consent again whenever the
        access token expires (`doctor` flags that where the IdP supports the scope). The
        `prompt` follows the flavour (`c.ConnAuth.flavour`): plain OIDC gets
        `prompt=consent` with `offline_access` (OIDC requires it for a refresh token);
        Entra ID, Okta and Keycloak never get it (Entra issues refresh tokens without it,
        and in a tenant that restricts user consent `prompt=consent` means "Need admin
        approval", AADSTS90094). `c.ConnAuth.identity_scopes` (default
        `openid email`) are added to every consent so the broker knows who the user is.
        Changing a connection's `scopes` invalidates every user's token for it: each user
        sees the consent once more.
        """
    if google:
        text += """
        Google has no `offline_access` scope (asking for it fails with `invalid_scope`), so
        the `google` flavour never sends it: it sends `access_type=offline` always, and
        `prompt=consent` when a user consents again (after a scope edit, a revoked or
        expired grant), the only time Google issues a new refresh token. Nothing to set.
        """
    return text


GRAPH_ROW = (
    "Microsoft Graph",
    "`openid`, `email`, `offline_access`",
    "who the user is (email) and refresh tokens; every connection",
)


def azure_permissions(rows: Sequence[Sequence[str]], after: str = "") -> Cell:
    return md(
        """
        ### Entra ID: delegated permissions

        In the Jupyter app registration, e.g. API permissions → Add a permission, add these
        **delegated** permissions, then *Grant admin consent* (or let users consent, if the
        tenant allows it):
        """,
        table(("API", "delegated permission", "needed for"), [GRAPH_ROW, *rows]),
        after,
    )


USER_INTRO = md(
    """
    # Part 2: users

    Run these cells in a notebook on the Jupyter server the admin configured. The first
    query of a connection shows an **Authorize** balloon in the cell: click it, sign in at
    the IdP in the popup, and the same cell goes on to show the result, no re-run needed.
    After that you never see auth again until you revoke the grant or the admin changes
    the connection's scopes.
    """
)

LOAD_EXT = code("%load_ext jupyter_connauth")


def doctor_cells(name: str) -> list[Cell]:
    return [
        md(
            """
            `list` shows the connections you may use; `doctor` checks one: the IdP's
            discovery URL and issuer, the flavour (`c.ConnAuth.flavour`, else from the
            discovery URL: `azure`, `google`, `okta`, `keycloak` or `oidc`), the client
            authentication against the IdP's discovery, the redirect URI to register, the
            scopes against the default template, `offline_access`, the flavour's own
            checks (Entra: `prompt=consent`, `.default`, what to expose for on-behalf-of and
            your subject token's audience; Okta: the exchange `audience`), the Snowflake
            key and JWT issuer where relevant, and your own token. Every ✘ comes with the
            fix.
            """
        ),
        code("%sql_connector list"),
        code(f"%sql_connector doctor {name}"),
    ]


def status_cells(name: str) -> list[Cell]:
    return [
        md(
            f"""
            `status` shows, per connection, who you are authorized as, the token's expiry
            and scopes, or why consent is needed. `authorize {name}` signs in again now;
            `revoke {name}` forgets your token (and revokes it at the IdP when the IdP has
            a revocation endpoint); `test {name}` runs a trivial query.
            """
        ),
        code("%sql_connector status"),
        code(f"%sql_connector test {name}"),
    ]


def common_troubles(name: str, *, jwt: bool = False) -> list[tuple[str, str]]:
    rows = [
        (
            "`redirect_uri_mismatch`, `AADSTS50011`",
            f"Register the redirect URI `%sql_connector doctor {name}` prints, exactly "
            "(scheme, host, port, path); behind a proxy set `c.ConnAuth.public_url`.",
        ),
        (
            "`invalid_scope`, `AADSTS70011`",
            "Align the connection's `scopes` with the IdP's policy: request only scopes the "
            "IdP app may grant.",
        ),
        (
            "The IdP granted other scopes than the connection requests",
            "Align `scopes` with the IdP's policy: remove the scopes the IdP will not grant, "
            "or allow them for the app at the IdP.",
        ),
        (
            "`consent_required`",
            "Add `offline_access` to the connection's `scopes` and authorize again; if the "
            "IdP requires it, an admin grants consent for the app first.",
        ),
        (
            "`AADSTS65001`",
            "An Entra admin grants admin consent (API permissions → Grant admin consent), or "
            "adds the delegated permission the scopes need.",
        ),
        (
            "`AADSTS90094` (Need admin approval)",
            "The tenant lets only admins consent: an admin grants consent for the "
            "organization, and `c.ConnAuth.authorize_params` must not send `prompt=consent`.",
        ),
        (
            "`invalid_client`, `AADSTS7000215`",
            "Check `c.ConnAuth.client_id` and the secret (`JUPYTER_CONNAUTH_CLIENT_SECRET`); "
            "it may have expired. Okta apps want `client_secret_basic` "
            "(`c.ConnAuth.token_endpoint_auth_method`; by default from discovery).",
        ),
        (
            "`invalid_grant`, `AADSTS700082`",
            f"The grant is gone (revoked, expired): authorize again "
            f"(`%sql_connector authorize {name}`, or just rerun the cell).",
        ),
        (
            "`access_denied`",
            "Consent was cancelled or refused: authorize again and accept, or ask the admin "
            "for access to the app.",
        ),
        (
            "The IdP's discovery document is unreachable",
            "Check `c.ConnAuth.discovery_url` and the server's network; stored tokens stay "
            "usable and nobody has to consent again once the IdP is back.",
        ),
    ]
    if jwt:
        rows.append(
            (
                "The IdP did not say which email you have",
                "The IdP must return a verified `email` claim in the ID token: add the email "
                "scope or claim to the IdP app, then authorize again.",
            )
        )
    return rows


def troubleshooting(name: str, rows: Sequence[tuple[str, str]], *, jwt: bool = False) -> Cell:
    return md(
        f"""
        # Troubleshooting

        Known errors show as one message with the fix, never a traceback and never a
        token. `%sql_connector doctor {name}` checks most of the setup at once.
        """,
        table(("you see", "fix"), [*rows, *common_troubles(name, jwt=jwt)]),
    )


# -- BigQuery -------------------------------------------------------------------------------


def bigquery() -> list[Cell]:
    return [
        md(
            """
            # BigQuery with per-user OAuth

            Each user's queries run as their own Google identity: BigQuery IAM, row-level
            access policies, column-level security and Cloud Audit Logs see the real user,
            not a shared service account. Query jobs run in (and are billed to) the
            connection's `project`.

            **Part 1** is for the admin (once), **Part 2** for users. Admin snippets are
            shown as text, to be run where they belong; nothing here is a secret.
            """
        ),
        md(
            """
            # Part 1: admin

            Pick the path by the IdP your users sign in with:
            """,
            table(
                ("users sign in with", "path"),
                [
                    (
                        "Google (Workspace, Cloud Identity)",
                        "a Google OAuth client (A1 to A4): the user's Google access token goes "
                        "straight to BigQuery",
                    ),
                    (
                        "Entra ID, Okta, Keycloak",
                        "Workforce Identity Federation (A5): Google trusts your IdP; the "
                        "broker exchanges the user's sign-in at Google STS for a Google token",
                    ),
                ],
            ),
        ),
        register_app(
            ["google", "azure", "okta", "keycloak"],
            """
            For Google: configure the OAuth consent screen first (e.g. user type *Internal*
            for a Workspace organisation, so no app verification is needed) with the scopes
            `openid`, `email` and `https://www.googleapis.com/auth/bigquery`; then create
            the *Web application* client with the redirect URI. Enable the APIs in the
            project that runs the jobs:

            ```bash
            gcloud services enable bigquery.googleapis.com bigquerystorage.googleapis.com \\
                --project=acme-analytics
            ```
            """,
        ),
        md(
            """
            ## A2. Scopes and the connection

            Default scopes for BigQuery (a connection's `scopes` overrides them; the flavour
            comes from the discovery URL):
            """,
            table(
                ("flavour", "default scopes"),
                [
                    ("OIDC (Google)", "`https://www.googleapis.com/auth/bigquery`"),
                    (
                        "Azure, Okta, Keycloak (federation, A5)",
                        "consent: `openid email offline_access` (`subject_scopes`); "
                        "asked of Google STS: `https://www.googleapis.com/auth/bigquery`",
                    ),
                    (
                        "Azure without federation",
                        "`https://bigquery.googleapis.com/.default offline_access`: an Entra "
                        "token BigQuery does not accept; use A5",
                    ),
                ],
            ),
            offline_access_note(google=True),
            server_config(
                "https://accounts.google.com/.well-known/openid-configuration",
                """
                # flavour "google" from the URL: access_type=offline, no offline_access
                c.ConnAuth.connections = {
                    "bq": {
                        "connector": "bigquery",
                        "project": "acme-analytics",  # runs and pays for the query jobs
                        "location": "EU",  # optional
                        "dataset": "sales",  # optional: default dataset for bare table names
                        "description": "Sales data, as you",
                        # "driver_options": {"use_storage_api": False},  # REST downloads only
                    },
                }
                """,
            ),
        ),
        md(
            """
            ## A3. IAM roles for the users

            Grant the users (better: a group) these roles:
            """,
            table(
                ("role", "on", "why"),
                [
                    (
                        "`roles/bigquery.jobUser`",
                        "the connection's `project`",
                        "run query jobs (`bigquery.jobs.create`)",
                    ),
                    (
                        "`roles/bigquery.dataViewer`",
                        "the datasets queried (or their project)",
                        "read tables and views",
                    ),
                    (
                        "`roles/bigquery.readSessionUser`",
                        "the connection's `project`",
                        "fast result downloads through the Storage Read API (or set "
                        '`"use_storage_api": False` in `driver_options`)',
                    ),
                ],
            ),
            """
            ```bash
            gcloud projects add-iam-policy-binding acme-analytics \\
                --member="group:analysts@example.com" --role="roles/bigquery.jobUser"
            gcloud projects add-iam-policy-binding acme-analytics \\
                --member="group:analysts@example.com" --role="roles/bigquery.readSessionUser"
            ```

            Dataset access can be granted in SQL (BigQuery DCL):

            ```sql
            GRANT `roles/bigquery.dataViewer` ON SCHEMA `acme-analytics.sales`
            TO "group:analysts@example.com";
            ```
            """,
        ),
        md(
            """
            ## A4. Check as the admin

            Restart the Jupyter server, then run Part 2 as a test user: `doctor` must show
            ✔ for the discovery URL, and `whoami` the user's Google account.
            """
        ),
        md(
            """
            ## A5. Other IdPs: Workforce Identity Federation

            Google accepts tokens from Entra ID, Okta or Keycloak only through Workforce
            Identity Federation: Google's Security Token Service (STS) exchanges the user's
            IdP token for a Google access token of a *workforce principal*, and IAM roles
            are granted to those principals instead of Google accounts. The broker does the
            exchange (RFC 8693 at `sts.googleapis.com`, with the user's ID token by default)
            and hands the kernel the Google token, exchanging again before it expires.

            **1. The pool** (once per organization; Workforce Identity Pool Admin):

            ```bash
            gcloud iam workforce-pools create acme-pool \\
                --organization=<org-id> --location=global \\
                --display-name="ACME workforce"
            ```

            **2. The provider** for your IdP. Its issuer is the IdP's `issuer` exactly as in
            the discovery document (Entra: `https://login.microsoftonline.com/<tenant-id>/v2.0`),
            and its client ID the Jupyter app's `client_id` (the `aud` of the ID token the
            broker exchanges). Map `google.subject` to a claim every token has; the
            attribute condition is optional and admits only tokens it accepts:

            ```bash
            gcloud iam workforce-pools providers create-oidc acme-idp \\
                --workforce-pool=acme-pool --location=global \\
                --issuer-uri="<the IdP's issuer>" \\
                --client-id="<the Jupyter app's client id>" \\
                --attribute-mapping="google.subject=assertion.sub,\\
            attribute.email=assertion.email" \\
                --attribute-condition="assertion.email_verified == true" \\
                --web-sso-response-type=id-token \\
                --web-sso-assertion-claims-behavior=only-id-token-claims
            ```

            **3. IAM bindings**: the A3 roles, to the whole pool or one principal:

            ```bash
            gcloud projects add-iam-policy-binding acme-analytics \\
                --role="roles/bigquery.jobUser" \\
                --member="principalSet://iam.googleapis.com/locations/global/workforcePools/acme-pool/*"
            gcloud projects add-iam-policy-binding acme-analytics \\
                --role="roles/bigquery.dataViewer" \\
                --member="principal://iam.googleapis.com/locations/global/workforcePools/acme-pool/subject/<sub>"
            ```

            **4. The connection** names the provider; `user_project` is the project billed
            for the STS and API quota (`options={"userProject": ...}`):

            ```python
            c.ConnAuth.connections = {
                "bq": {
                    "connector": "bigquery",
                    "project": "acme-analytics",
                    "workforce_pool_provider": (
                        "//iam.googleapis.com/locations/global/workforcePools/acme-pool/providers/acme-idp"
                    ),
                    "user_project": "acme-analytics",
                    # or urn:ietf:params:oauth:token-type:jwt / ...:access_token:
                    # "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
                    # "sts_url": "https://sts.googleapis.com/v1/token",  # the default
                    # "subject_scopes": "openid email offline_access",  # what users consent to
                },
            }
            ```

            `auth` is `token-exchange` (the default with `workforce_pool_provider`); the
            connection's `scopes` are what STS is asked for (default
            `https://www.googleapis.com/auth/bigquery`).
            """
        ),
        azure_permissions(
            [
                (
                    "Google BigQuery",
                    "none",
                    "Google trusts Entra ID through the workforce pool's provider, not "
                    "through an Entra permission",
                )
            ]
        ),
        USER_INTRO,
        LOAD_EXT,
        *doctor_cells("bq"),
        md(
            """
            ## Query with bound parameters

            BigQuery parameters are written `@name`. `--params` takes JSON or `{variable}`
            (a dict in your namespace); values are bound by BigQuery, never formatted into
            the SQL. The result is a DataFrame, also in `_`, and with `-o VAR` in `VAR`.
            """
        ),
        code(
            """
            import datetime as dt

            filters = {"region": "EU", "since": dt.date(2024, 1, 1)}
            """
        ),
        code(
            """
            %%sql_connector bq -o by_region --params {filters}
            SELECT region, COUNT(*) AS orders, SUM(amount) AS total
            FROM `acme-analytics.sales.orders`
            WHERE region = @region AND order_date >= @since
            GROUP BY region
            ORDER BY total DESC
            """
        ),
        code("by_region.head()  # noqa: F821 - by_region is set by -o above"),
        md(
            """
            JSON works inline; `--max-rows N` refuses results larger than N rows (add a
            `LIMIT` or aggregate instead), and `--no-wait` shows the Authorize balloon and
            returns at once, for *Run all*.
            """
        ),
        code(
            """
            %%sql_connector bq --params '{"min_total": 1000}' --max-rows 10000
            SELECT customer_id, SUM(amount) AS total
            FROM sales.orders
            GROUP BY customer_id
            HAVING SUM(amount) >= @min_total
            """
        ),
        md(
            """
            ## Who does BigQuery think you are?

            `whoami` runs `SELECT SESSION_USER()`: it must be your own account (or your
            workforce identity), never a service account.
            """
        ),
        code("%sql_connector whoami bq"),
        *status_cells("bq"),
        troubleshooting(
            "bq",
            [
                (
                    "BigQuery permission denied … `bigquery.jobs.create`",
                    "Grant the user `roles/bigquery.jobUser` on the connection's project (and "
                    "`roles/bigquery.dataViewer` on the datasets to query).",
                ),
                (
                    "BigQuery permission denied (on a table or dataset)",
                    "Grant the user `roles/bigquery.dataViewer` on the dataset (and "
                    "`roles/bigquery.jobUser` on the project).",
                ),
                (
                    "BigQuery Storage Read API permission denied",
                    "Grant `roles/bigquery.readSessionUser` on the project, or set "
                    '`"use_storage_api": False` in the connection\'s `driver_options`.',
                ),
                (
                    "BigQuery rejected the access token",
                    "It expired, was revoked or is not valid for BigQuery: "
                    "`%sql_connector authorize bq`.",
                ),
                (
                    "Google STS refused the token exchange (unauthorized_client): … attribute "
                    "condition",
                    "The pool provider's `--attribute-condition` rejects this user's token: "
                    "compare it with the IdP's claims (`gcloud iam workforce-pools providers "
                    "describe`).",
                ),
                (
                    "Google STS refused the token exchange (invalid_grant): … audience",
                    "Set the provider's `--client-id` to the Jupyter app's client id (the ID "
                    "token's audience).",
                ),
                (
                    "Google STS refused the token exchange (invalid_target)",
                    "The connection's `workforce_pool_provider` names no enabled provider: "
                    "copy its full name from `gcloud iam workforce-pools providers describe`.",
                ),
                (
                    "Google STS: … google.subject must not be empty",
                    "Map `google.subject` to a claim the IdP always sends "
                    "(`--attribute-mapping=google.subject=assertion.sub`).",
                ),
                (
                    "BigQuery permission denied … `bigquery.jobs.create` (federated)",
                    "The workforce principal has no IAM binding: grant the A3 roles to "
                    "`principalSet://iam.googleapis.com/locations/global/workforcePools/POOL/*`.",
                ),
                (
                    "BigQuery refused the job: billing",
                    "Enable billing on the project, or point `project` at one with billing.",
                ),
                (
                    "BigQuery quota exceeded",
                    "Wait and run the query again, or ask a BigQuery admin to raise the quota.",
                ),
                (
                    "BigQuery: … Not found",
                    "Check `project.dataset.table` and the connection's `location`: datasets "
                    "in another location are not found from it.",
                ),
                (
                    "… query parameter … not provided",
                    "Pass every `@name` the SQL uses in `--params` (a dict), and only those.",
                ),
                (
                    "Cannot reach BigQuery",
                    "Check the endpoint (`driver_options` `client_options.api_endpoint`), the "
                    "network and any proxy, then run the query again.",
                ),
                (
                    "A consent popup every hour (Google)",
                    "Google issued no refresh token: check `doctor` says the flavour is "
                    '`google` (set `c.ConnAuth.flavour = "google"` behind a proxy URL) and '
                    "that `c.ConnAuth.authorize_params` has no `access_type`; then revoke "
                    "and authorize again.",
                ),
            ],
        ),
    ]


# -- Databricks -----------------------------------------------------------------------------


def databricks() -> list[Cell]:
    return [
        md(
            """
            # Databricks SQL with per-user OAuth

            Each user's queries run as their own Databricks user: Unity Catalog grants, row
            filters and column masks, `current_user()` and the query history see the real
            user, not a shared token.

            **Part 1** is for the admin (once), **Part 2** for users. Admin snippets are
            shown as text, to be run where they belong; nothing here is a secret.
            """
        ),
        md(
            """
            # Part 1: admin

            Pick the path by the IdP your users sign in with:
            """,
            table(
                ("users sign in with", "connection `auth`", "admin setup"),
                [
                    (
                        "Entra ID (Azure Databricks)",
                        "`oauth` (default)",
                        "A1, A2 with the AzureDatabricks delegated permission",
                    ),
                    (
                        "Entra ID, exchanging the user's sign-in",
                        "`on-behalf-of`",
                        "A1, A2, plus A4 (Expose an API on the Jupyter app)",
                    ),
                    (
                        "Okta, Keycloak, another OIDC IdP",
                        "`oauth` (default)",
                        "A1, A3 (Databricks account federation policy)",
                    ),
                ],
            ),
        ),
        register_app(
            ["azure", "okta", "keycloak"],
            """
            Databricks takes the IdP's access token as is (Entra ID) or through token
            federation, which needs a JWT: Google's access tokens are opaque, so Google
            cannot be the IdP for Databricks connections.
            """,
        ),
        azure_permissions(
            [
                (
                    f"AzureDatabricks (`{AZURE_DATABRICKS}`), under *APIs my organization uses*",
                    "`user_impersonation`",
                    "Databricks connections (`oauth` and `on-behalf-of`)",
                )
            ],
            """
            `on-behalf-of` cannot show a consent screen at exchange time, so grant admin
            consent for `user_impersonation` there.
            """,
        ),
        md(
            """
            ## A2. Scopes and the connection

            Default scopes for Databricks (a connection's `scopes` overrides them; the
            flavour comes from the discovery URL):
            """,
            table(
                ("flavour", "default scopes"),
                [
                    ("Azure", f"`{AZURE_DATABRICKS}/user_impersonation offline_access`"),
                    ("OIDC, Okta, Keycloak", "`offline_access`"),
                ],
            ),
            offline_access_note(),
            server_config(
                "https://login.microsoftonline.com/<tenant-id>/v2.0/.well-known/"
                "openid-configuration",
                """
                c.ConnAuth.connections = {
                    "sales": {
                        "connector": "databricks",
                        # both from the SQL warehouse's Connection details tab
                        "server_hostname": "adb-1234567890123456.7.azuredatabricks.net",
                        "http_path": "/sql/1.0/warehouses/abcdef1234567890",
                        "catalog": "main",  # optional
                        "schema": "sales",  # optional
                        "description": "Sales warehouse, as you",
                    },
                }
                """,
            ),
            """
            In the workspace, each user must exist (e.g. SCIM provisioning from the IdP),
            have *CAN USE* on the SQL warehouse, and hold Unity Catalog grants, e.g.:

            ```sql
            GRANT USE CATALOG ON CATALOG main TO `analysts`;
            GRANT USE SCHEMA, SELECT ON SCHEMA main.sales TO `analysts`;
            ```
            """,
        ),
        md(
            """
            ## A3. Okta, Keycloak, other OIDC IdPs: account federation policy

            Databricks OAuth token federation accepts your IdP's JWTs once an account
            admin creates a federation policy: the token's issuer (`iss`), its audiences
            (`aud`; when omitted, the Databricks account id) and the claim holding the
            Databricks user name (`subject_claim`; when omitted, `sub`). With users named
            by email, for example with the Databricks CLI:

            ```bash
            databricks account federation-policy create --json '{
              "oidc_policy": {
                "issuer": "https://keycloak.example.com/realms/acme",
                "audiences": ["databricks"],
                "subject_claim": "email"
              }
            }'
            ```

            or in the account console (e.g. Security → Token federation). At the IdP, make
            the access token carry that audience and claim: e.g. Keycloak, an *Audience*
            mapper (`databricks`) on the client's dedicated scope (the `email` scope puts
            `email` in the token); Okta, the custom authorization server's *Audience* (Okta
            puts the user's login, usually the email, in `sub`). If your IdP issues the
            audience only for a scope or an RFC 8707 resource indicator, set the
            connection's `scopes` or `resource`.

            Nothing else to do in Jupyter: the Databricks driver exchanges the IdP's token
            at `https://<server_hostname>/oidc/v1/token` (RFC 8693) before it queries.
            """
        ),
        md(
            """
            ## A4. Entra ID on-behalf-of

            With `auth: "on-behalf-of"` the user consents once to the Jupyter app itself;
            the broker then exchanges that token for a Databricks token on every use (the
            jwt-bearer grant with `requested_token_use=on_behalf_of` and scope
            `2ff814a6-3304-4ab8-85cb-cd0e6f879c1d/.default`), with no Databricks consent
            screen. Entra exchanges only tokens issued *to the Jupyter app*, so:

            1. In the Jupyter app registration, Expose an API: set the Application ID URI
               `api://<client-id>` and add the scope `access_as_user` (admins and users may
               consent); then API permissions → My APIs → the app → `access_as_user`, and
               *Grant admin consent*. `doctor` prints these exact values.
            2. Keep the AzureDatabricks `user_impersonation` permission, with admin consent.
            3. Keep the client secret (or `private_key_jwt`): the exchange needs a
               confidential client.

            The user consents to `openid email offline_access api://<client-id>/access_as_user`
            by default (`c.ConnAuth.app_api_scope` names another scope). Conditional Access
            (MFA, compliant device) may answer the exchange with `interaction_required` and
            a claims challenge: the broker then asks the user to authorize again, passing the
            claims, once.

            ```python
            c.ConnAuth.connections["sales-obo"] = {
                "connector": "databricks",
                "auth": "on-behalf-of",
                "server_hostname": "adb-1234567890123456.7.azuredatabricks.net",
                "http_path": "/sql/1.0/warehouses/abcdef1234567890",
                # what the user consents to defaults to openid email offline_access
                # api://<client-id>/access_as_user (a token for the app itself; a
                # Microsoft Graph token would be refused: AADSTS500131)
                # scopes default to 2ff814a6-3304-4ab8-85cb-cd0e6f879c1d/.default
            }
            ```

            On JupyterHub with OAuthenticator against the same Entra app and
            `enable_auth_state`, the user's hub login token is the subject, so there is no
            popup at all (its login scopes must then include the same
            `api://<client-id>/access_as_user`).

            For IdPs that implement RFC 8693 token exchange, `auth: "token-exchange"` does
            the same at the IdP's token endpoint, with the connection's `scopes` and
            `resource` naming what to exchange for.
            """
        ),
        USER_INTRO,
        LOAD_EXT,
        *doctor_cells("sales"),
        md(
            """
            ## Query with bound parameters

            Databricks parameters are written `:name`. `--params` takes JSON or `{variable}`
            (a dict in your namespace); values are bound by the warehouse, never formatted
            into the SQL. The result is a DataFrame, also in `_`, and with `-o VAR` in
            `VAR`. A stopped SQL warehouse is waited for while it starts.
            """
        ),
        code(
            """
            import datetime as dt

            filters = {"region": "EU", "since": dt.date(2024, 1, 1)}
            """
        ),
        code(
            """
            %%sql_connector sales -o by_region --params {filters}
            SELECT region, count(*) AS orders, sum(amount) AS total
            FROM main.sales.orders
            WHERE region = :region AND order_date >= :since
            GROUP BY region
            ORDER BY total DESC
            """
        ),
        code("by_region.head()  # noqa: F821 - by_region is set by -o above"),
        md(
            """
            JSON works inline; `--max-rows N` refuses results larger than N rows (add a
            `LIMIT` instead), and `--no-wait` shows the Authorize balloon and returns at
            once, for *Run all*.
            """
        ),
        code(
            """
            %%sql_connector sales --params '{"min_total": 1000}' --max-rows 10000
            SELECT customer_id, sum(amount) AS total
            FROM main.sales.orders
            GROUP BY customer_id
            HAVING sum(amount) >= :min_total
            """
        ),
        md(
            """
            ## Who does Databricks think you are?

            `whoami` runs `SELECT current_user()`: it must be your own user name.
            """
        ),
        code("%sql_connector whoami sales"),
        *status_cells("sales"),
        troubleshooting(
            "sales",
            [
                (
                    "Databricks rejected the access token (HTTP 401)",
                    "Configure a federation policy for the IdP's issuer and audience in the "
                    "Databricks account (A3), or for Azure check the token's audience is "
                    f"`{AZURE_DATABRICKS}`; then `%sql_connector authorize sales`.",
                ),
                (
                    "Databricks refused connection (HTTP 403)",
                    "A workspace admin adds the user to the workspace and grants *CAN USE* on "
                    "the SQL warehouse.",
                ),
                (
                    "Databricks … has no SQL endpoint (HTTP 404)",
                    "Fix `http_path`: copy it from the warehouse's Connection details tab "
                    "(`/sql/1.0/warehouses/<id>`).",
                ),
                (
                    "Databricks is busy or starting (HTTP 429, 503)",
                    "Wait until the SQL warehouse is running, then run the query again.",
                ),
                (
                    "`TABLE_OR_VIEW_NOT_FOUND`",
                    "Check the `catalog.schema.table` name, and that you were granted "
                    "`SELECT` on it.",
                ),
                (
                    "`UNBOUND_SQL_PARAMETER`",
                    "Pass every `:name` the SQL uses in `--params` (a dict), and only those.",
                ),
                (
                    "Cannot reach Databricks",
                    "Check `server_hostname` (the workspace host, e.g. "
                    "`adb-1234567890123456.7.azuredatabricks.net`), the network, VPN and proxy.",
                ),
                (
                    "The IdP refused the on-behalf-of exchange",
                    "Add the delegated permission (AzureDatabricks `user_impersonation`) and "
                    "grant admin consent; check `subject_scopes` names the Jupyter app's own "
                    "API (A4).",
                ),
            ],
        ),
    ]


# -- Snowflake ------------------------------------------------------------------------------


def snowflake() -> list[Cell]:
    return [
        md(
            """
            # Snowflake with per-user OAuth

            Each user's queries run as their own Snowflake user and role: grants, row
            access and masking policies, `CURRENT_USER()` and the query history see the
            real user, not a shared password or key pair.

            **Part 1** is for the admin (once), **Part 2** for users. Admin snippets are
            shown as text, to be run where they belong; nothing here is a secret.
            """
        ),
        md(
            """
            # Part 1: admin

            Snowflake logs users in with External OAuth, in one of two modes:
            """,
            table(
                ("mode", "connection `auth`", "Snowflake trusts", "fits"),
                [
                    (
                        "IdP tokens",
                        "`oauth` (default)",
                        "the IdP's signing keys (JWKS URL)",
                        "Entra ID with a Snowflake resource app; Okta with a custom "
                        "authorization server",
                    ),
                    (
                        "broker JWTs",
                        "`oauth-jwt`",
                        "the broker's RSA public key",
                        "any IdP that returns a verified email (Google, Keycloak, …)",
                    ),
                ],
            ),
            """
            In both modes Snowflake finds the user by a claim of the token holding the
            user's email (Entra ID: `upn`): create (or provision) users whose `LOGIN_NAME`
            is that email.

            ```sql
            CREATE USER alice LOGIN_NAME = 'alice@example.com' EMAIL = 'alice@example.com'
              DEFAULT_ROLE = ANALYST;
            GRANT ROLE ANALYST TO USER alice;
            ```

            `ACCOUNTADMIN`, `ORGADMIN` and `SECURITYADMIN` are blocked for OAuth by default.
            """,
        ),
        register_app(["azure", "okta", "keycloak", "google"]),
        azure_permissions(
            [
                (
                    "Snowflake OAuth Resource (your own app registration, under *My APIs*)",
                    "`session:role-any`, or `session:scope:<role>` per role",
                    "IdP-token mode only",
                )
            ],
            """
            Broker-JWT mode needs only the Microsoft Graph row: the broker learns the email
            from the ID token (`email`, else an email-shaped `upn` or `preferred_username`).
            """,
        ),
        md(
            """
            ## A2. IdP tokens (`auth: "oauth"`)

            **Entra ID.** Register a second app, the *Snowflake OAuth Resource* (e.g. App
            registrations → New registration, no redirect URI). In its *Expose an API*, set
            the Application ID URI (e.g. `api://<resource-app-id>`) and add the delegated
            scopes `session:role-any` (any role granted to the user; needs
            `EXTERNAL_OAUTH_ANY_ROLE_MODE = 'ENABLE'`) and/or `session:scope:<role>` for a
            fixed role, e.g. `session:scope:analyst`. Give the Jupyter app the delegated
            permission (table above). Azure has no default scopes for Snowflake: set them.

            **Okta.** On the custom authorization server add the scope `session:role-any`
            (or `session:role:<role>`), and an access policy rule that lets the Jupyter
            app use Authorization Code and Refresh Token. The OIDC default scopes match.
            """,
            table(
                ("flavour", "default scopes"),
                [
                    ("Okta, Keycloak, OIDC", "`session:role-any offline_access`"),
                    (
                        "Azure",
                        "none: set e.g. `api://<resource-app-id>/session:role-any offline_access`",
                    ),
                ],
            ),
            offline_access_note(),
            server_config(
                "https://login.microsoftonline.com/<tenant-id>/v2.0/.well-known/"
                "openid-configuration",
                """
                c.ConnAuth.connections = {
                    "sf": {
                        "connector": "snowflake",
                        "account": "acme-xy12345",  # orgname-accountname
                        "warehouse": "WH",
                        "database": "SALES",
                        "role": "ANALYST",  # must be allowed by the token's scopes
                        "scopes": "api://<resource-app-id>/session:role-any offline_access",
                    },
                }
                """,
            ),
            """
            Then, in Snowflake (as `ACCOUNTADMIN`), trust the IdP. For Entra ID:

            ```sql
            CREATE SECURITY INTEGRATION connauth_entra
              TYPE = EXTERNAL_OAUTH
              ENABLED = TRUE
              EXTERNAL_OAUTH_TYPE = AZURE
              EXTERNAL_OAUTH_ISSUER = 'https://sts.windows.net/<tenant-id>/'
              EXTERNAL_OAUTH_JWS_KEYS_URL =
                'https://login.microsoftonline.com/<tenant-id>/discovery/v2.0/keys'
              EXTERNAL_OAUTH_AUDIENCE_LIST = ('api://<resource-app-id>')
              EXTERNAL_OAUTH_TOKEN_USER_MAPPING_CLAIM = 'upn'
              EXTERNAL_OAUTH_SNOWFLAKE_USER_MAPPING_ATTRIBUTE = 'LOGIN_NAME'
              EXTERNAL_OAUTH_ANY_ROLE_MODE = 'ENABLE';
            ```

            Other IdPs change these values (check them against a decoded access token:
            `iss`, `aud` and the user claim must match exactly):
            """,
            table(
                ("parameter", "Entra ID", "Okta", "Keycloak"),
                [
                    ("`EXTERNAL_OAUTH_TYPE`", "`AZURE`", "`OKTA`", "`CUSTOM`"),
                    (
                        "`EXTERNAL_OAUTH_ISSUER`",
                        "`https://sts.windows.net/<tenant-id>/` (v1 tokens; v2: "
                        "`https://login.microsoftonline.com/<tenant-id>/v2.0`)",
                        "`https://<okta-domain>/oauth2/<auth-server-id>`",
                        "`https://<keycloak-host>/realms/<realm>`",
                    ),
                    (
                        "`EXTERNAL_OAUTH_JWS_KEYS_URL`",
                        "`https://login.microsoftonline.com/<tenant-id>/discovery/v2.0/keys`",
                        "`<issuer>/v1/keys`",
                        "`<issuer>/protocol/openid-connect/certs`",
                    ),
                    (
                        "`EXTERNAL_OAUTH_AUDIENCE_LIST`",
                        "the Application ID URI (v2 tokens: the resource app id)",
                        "the authorization server's *Audience*",
                        "the audience an *Audience* mapper adds",
                    ),
                    (
                        "`EXTERNAL_OAUTH_TOKEN_USER_MAPPING_CLAIM`",
                        "`upn` (the user's sign-in name, usually the email)",
                        "`sub` (the login, usually the email)",
                        "`email`",
                    ),
                    (
                        "role scopes",
                        "`scp` (built in)",
                        "`scp` (built in)",
                        "e.g. `EXTERNAL_OAUTH_SCOPE_MAPPING_ATTRIBUTE = 'scope'` and "
                        "`EXTERNAL_OAUTH_SCOPE_DELIMITER = ' '`, or use broker JWTs",
                    ),
                ],
            ),
        ),
        md(
            """
            ## A3. Broker JWTs (`auth: "oauth-jwt"`)

            The broker mints an RS256 JWT for every connection use: 10 minutes of life, a
            unique `jti`, a `kid`, `iss` = `c.ConnAuth.jwt_issuer`, `aud` = the
            connection's `jwt_audience`, the user's subject in `sub` and in `email` (the
            connection's `jwt_user_claim`), and the role in `scp` (`session:role:<role>`,
            or `session:role-any` when the connection has no `role`). The subject is the
            claim named by `c.ConnAuth.jwt_subject_claim`: by default the verified email;
            prefer an immutable claim such as `oid` (Entra) or `sub`, set as the Snowflake
            users' `LOGIN_NAME`. It is never something the user types: on a Jupyter
            server it comes from the IdP's ID token (each user consents once per
            connection, to `openid email offline_access`); on JupyterHub from the
            authenticator's `auth_state` (or `c.ConnAuthHub.email_map` /
            `email_template`), with no consent at all.

            Whoever reads the private key can mint a token for any Snowflake user, so the
            broker signs only where users cannot read it: the JupyterHub service. A
            single-user server runs as its user; it signs only with
            `c.ConnAuth.allow_jwt_signing_as_user = True`, for servers where everyone who
            can run code may act as every mapped Snowflake user (see SECURITY.md).

            **1. Make a key pair** (RSA, unencrypted PKCS#8 PEM), on the Jupyter server or
            the JupyterHub service host:

            ```bash
            umask 077
            openssl genrsa 2048 | openssl pkcs8 -topk8 -nocrypt -out connauth_snowflake.p8
            openssl rsa -in connauth_snowflake.p8 -pubout -out connauth_snowflake.pub
            # the value for EXTERNAL_OAUTH_RSA_PUBLIC_KEY: the public key without its
            # BEGIN/END lines, on one line
            grep -v -- '-----' connauth_snowflake.pub | tr -d '\\n'; echo
            # its fingerprint (DESC SECURITY INTEGRATION and doctor show it as SHA256:...)
            openssl rsa -pubin -in connauth_snowflake.pub -outform DER \\
                | openssl dgst -sha256 -binary | openssl enc -base64
            ```

            **2. Keep the private key only where the broker runs**: the Jupyter server, or
            the JupyterHub service, never a user's server, kernel or notebook. Point the
            connection at it with `private_key_path` (a file readable only by the server's
            account) or `private_key_env` (the name of an environment variable of the
            server holding the PEM text); or upload it through the connection's form (stored
            encrypted, never returned).

            **3. The connection:**

            ```python
            c.ConnAuth.connections["sf-jwt"] = {
                "connector": "snowflake",
                "auth": "oauth-jwt",
                "account": "acme-xy12345",
                "warehouse": "WH",
                "database": "SALES",
                "role": "ANALYST",  # goes into scp as session:role:ANALYST
                "jwt_audience": "https://acme-xy12345.snowflakecomputing.com",
                "private_key_path": "/etc/jupyter/connauth/connauth_snowflake.p8",
                # or: "private_key_env": "CONNAUTH_SNOWFLAKE_KEY",
                # "jwt_user_claim": "email",  # the default
                # "jwt_public_key_fp": "SHA256:<fingerprint>",  # doctor compares it
            }
            ```

            With Google as the IdP nothing more is needed: the `google` flavour leaves
            `offline_access` out and sends `access_type=offline`.

            **4. The security integration.** `EXTERNAL_OAUTH_ISSUER` must be exactly
            `c.ConnAuth.jwt_issuer`: by default `c.ConnAuth.public_url`, trailing slash
            included, else `jupyter-connauth` (never the server's port); `doctor` prints it
            as *JWT issuer* (on JupyterHub, e.g.
            `https://hub.example.com/services/connauth/`).

            ```sql
            CREATE SECURITY INTEGRATION connauth_jwt
              TYPE = EXTERNAL_OAUTH
              ENABLED = TRUE
              EXTERNAL_OAUTH_TYPE = CUSTOM
              EXTERNAL_OAUTH_ISSUER = 'https://jupyter.example.com/'
              EXTERNAL_OAUTH_RSA_PUBLIC_KEY = '<public key, one line, from step 1>'
              EXTERNAL_OAUTH_AUDIENCE_LIST = ('https://acme-xy12345.snowflakecomputing.com')
              EXTERNAL_OAUTH_TOKEN_USER_MAPPING_CLAIM = 'email'
              EXTERNAL_OAUTH_SNOWFLAKE_USER_MAPPING_ATTRIBUTE = 'LOGIN_NAME'
              EXTERNAL_OAUTH_SCOPE_MAPPING_ATTRIBUTE = 'scp'
              EXTERNAL_OAUTH_ANY_ROLE_MODE = 'ENABLE';  -- for connections without a role

            DESC SECURITY INTEGRATION connauth_jwt;  -- EXTERNAL_OAUTH_RSA_PUBLIC_KEY_FP
            ```

            To rotate the key: put the new public key in `EXTERNAL_OAUTH_RSA_PUBLIC_KEY_2`,
            switch the broker to the new private key, then replace the first key.
            """
        ),
        USER_INTRO,
        LOAD_EXT,
        *doctor_cells("sf"),
        md(
            """
            ## Query with bound parameters

            Snowflake parameters are written `:name` (or `?` with a list). `--params` takes
            JSON or `{variable}` (a dict in your namespace); values are bound by Snowflake,
            never formatted into the SQL (`::` casts and `col:path` are left alone). The
            result is a DataFrame, also in `_`, and with `-o VAR` in `VAR`.
            """
        ),
        code(
            """
            import datetime as dt

            filters = {"region": "EU", "since": dt.date(2024, 1, 1)}
            """
        ),
        code(
            """
            %%sql_connector sf -o by_region --params {filters}
            SELECT region, COUNT(*) AS orders, SUM(amount) AS total
            FROM SALES.PUBLIC.ORDERS
            WHERE region = :region AND order_date >= :since
            GROUP BY region
            ORDER BY total DESC
            """
        ),
        code("by_region.head()  # noqa: F821 - by_region is set by -o above"),
        md(
            """
            JSON works inline; `--max-rows N` refuses results larger than N rows (add a
            `LIMIT` instead), and `--no-wait` shows the Authorize balloon and returns at
            once, for *Run all*.
            """
        ),
        code(
            """
            %%sql_connector sf --params '{"min_total": 1000}' --max-rows 10000
            SELECT customer_id, SUM(amount) AS total
            FROM SALES.PUBLIC.ORDERS
            GROUP BY customer_id
            HAVING SUM(amount) >= :min_total
            """
        ),
        md(
            """
            ## Who does Snowflake think you are?

            `whoami` runs `SELECT CURRENT_USER(), CURRENT_ROLE()`: your own user, and the
            connection's role.
            """
        ),
        code("%sql_connector whoami sf"),
        *status_cells("sf"),
        troubleshooting(
            "sf",
            [
                (
                    "390303 Invalid OAuth access token (broker JWTs)",
                    "The integration's `EXTERNAL_OAUTH_RSA_PUBLIC_KEY` does not match the "
                    "broker's private key (compare fingerprints with `doctor`); if it does, "
                    "set `EXTERNAL_OAUTH_ISSUER` to the exact Jupyter URL (trailing slash "
                    "included) and put `jwt_audience` in `EXTERNAL_OAUTH_AUDIENCE_LIST`.",
                ),
                (
                    "390303 Invalid OAuth access token (IdP tokens)",
                    "Check `EXTERNAL_OAUTH_ISSUER` (the token's `iss`, exactly), "
                    "`EXTERNAL_OAUTH_JWS_KEYS_URL` (the IdP's JWKS) and "
                    "`EXTERNAL_OAUTH_AUDIENCE_LIST` (the token's `aud`).",
                ),
                (
                    "390100 Incorrect username or password",
                    "No enabled user for the token: create one whose `LOGIN_NAME` is the "
                    "email (or map `EMAIL_ADDRESS`), and make sure "
                    "`EXTERNAL_OAUTH_TOKEN_USER_MAPPING_CLAIM` names a claim the token has.",
                ),
                (
                    "390317 role not listed in the access token",
                    "Set `EXTERNAL_OAUTH_ANY_ROLE_MODE = 'ENABLE'` (with `session:role-any` "
                    "in the scopes), or grant the role to the user, or use the role the "
                    "token carries; `ACCOUNTADMIN`, `ORGADMIN`, `SECURITYADMIN` are blocked.",
                ),
                (
                    "390318 OAuth access token expired",
                    "Run the cell again (a fresh token or JWT is used); if it persists, "
                    "check the clocks of the Jupyter server and Snowflake.",
                ),
                (
                    "390309 user differs from the token's user",
                    "Remove `user` from the connection's `driver_options`: the token "
                    "decides the user.",
                ),
                (
                    "390102 the account does not accept OAuth logins",
                    "Create the `EXTERNAL_OAUTH` security integration and enable it (A2, A3).",
                ),
                (
                    "Private key is required for OAuth (JWT) authentication",
                    "Set `private_key_path` or `private_key_env` in the connection, readable "
                    "by the Jupyter server, or upload the key in the connection's form.",
                ),
                (
                    "the private key is not an unencrypted PEM RSA key",
                    "Convert it: `openssl pkcs8 -topk8 -nocrypt -in key.p8 -out key.pem`.",
                ),
                (
                    "Could not reach Snowflake account",
                    "Check `account` (`orgname-accountname`, without "
                    "`.snowflakecomputing.com`), the network, proxy and firewall.",
                ),
                (
                    "Snowflake error 002003 (object does not exist)",
                    "Check the name (unquoted names are upper-cased), the database and "
                    "schema, and that your role may use it.",
                ),
            ],
            jwt=True,
        ),
    ]


def quickstart() -> list[Cell]:
    """The demo stack's story (bash scripts/demo): connection names match demo/stack.py."""
    return [
        md(
            """
            # jupyter-connauth quickstart

            Three warehouses run on this machine — Snowflake, Databricks SQL and BigQuery —
            each with a `sales` table under a **row access policy**: every user sees only
            their own rows. A local OpenID provider signs you in (any password works for
            the demo users **alice** and **bob**).

            Every query below runs **as you**: the warehouse sees your identity, not a
            shared service account. The first time you use a connection an *Authorize*
            balloon appears in the cell; sign in in the popup and the same cell finishes.
            """
        ),
        code("%load_ext jupyter_connauth"),
        code("%sql_connector list"),
        md("## Snowflake\n\nRun the cell, click **Authorize**, sign in as `alice` or `bob`."),
        code(
            "%%sql_connector snowflake -o sf\n"
            "SELECT region, amount, owner FROM sales ORDER BY amount"
        ),
        code("%sql_connector whoami snowflake"),
        md(
            """
            ## Databricks SQL

            Parameters are bound by the warehouse, never pasted into the SQL: `:region`
            here, from a dict variable.
            """
        ),
        code('filters = {"region": "EU"}'),
        code(
            "%%sql_connector databricks -o dbx --params {filters}\n"
            "SELECT region, amount, owner FROM main.demo.sales WHERE region = :region"
        ),
        code(
            "%%sql_connector databricks\n"
            "SELECT region, amount, owner FROM main.demo.sales ORDER BY amount"
        ),
        md("## BigQuery\n\nBigQuery names parameters `@name`."),
        code(
            "%%sql_connector bigquery -o bq --params '{\"min\": 0}'\n"
            "SELECT region, amount, owner FROM demo.sales WHERE amount > @min ORDER BY amount"
        ),
        code("%sql_connector whoami bigquery"),
        md(
            """
            ## Who am I, everywhere

            Your tokens are stored encrypted on the server and refreshed silently; the
            notebook never sees a refresh token, and no token is saved in it.
            """
        ),
        code("%sql_connector status"),
        md(
            """
            ## From Python: pandas and JupySQL as you

            `connect`, `engine` and `credentials` give any code the same identity: the
            official driver's connection, a SQLAlchemy engine whose every pooled
            connection gets a fresh credential, and credentials objects for the SDKs.
            """
        ),
        code(
            """
            import pandas as pd

            from jupyter_connauth import engine

            eng = engine("databricks")
            pd.read_sql("SELECT region, amount, owner FROM main.demo.sales", eng)
            """
        ),
        md(
            """
            JupySQL (`pip install jupysql`) runs per user through the same engine:

            ```python
            %load_ext sql
            %sql eng
            %sql SELECT owner, SUM(amount) AS total FROM main.demo.sales GROUP BY owner
            ```
            """
        ),
        md(
            """
            ## Revoke, and consent again

            Revoking forgets your token (and revokes it at the IdP). The next query asks for
            consent again; `--no-wait` shows the balloon without waiting.
            """
        ),
        code("%sql_connector revoke snowflake"),
        code("%%sql_connector snowflake --no-wait\nSELECT region, amount, owner FROM sales"),
    ]


NOTEBOOKS: dict[str, Callable[[], list[Cell]]] = {
    "quickstart": quickstart,
    "bigquery": bigquery,
    "databricks": databricks,
    "snowflake": snowflake,
}


def render_all() -> dict[str, str]:
    """File name → the notebook's text, as written."""
    return {f"{stem}.ipynb": render(notebook(stem, make())) for stem, make in NOTEBOOKS.items()}


def main(argv: Sequence[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, text in render_all().items():
        path = HERE / name
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8", newline="\n")
            print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run python notebooks/_build.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
