"""The local Snowflake server, driven by the newest official snowflake-connector-python.

Keys and tokens are made here: an "IdP" whose JWKS is served from a local HTTP thread (External
OAuth with a JWKS URL) and a "Jupyter broker" whose PEM public key is in the config (OAuth JWT).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
import snowflake.connector
from cryptography.hazmat.primitives.asymmetric import rsa
from snowflake.connector.errors import DatabaseError, ProgrammingError

from ..keys import JwksServer, new_key, public_pem, rsa_jwk
from .fixture import USERS, SnowflakeServer, oauth_integrations

IDP_ISSUER = "https://idp.example.test/realms/connauth"
IDP_AUDIENCE = "https://connauth.snowflakecomputing.com"
JUPYTER_URL = "http://127.0.0.1:8888/"
BROKER_AUDIENCE = "snowflake:connauth"
BIG_ROWS = 100_000


class Issuer:
    """Mints RS256 JWTs like an IdP or the Jupyter broker would."""

    def __init__(self, issuer: str, audience: str, kid: str | None = None) -> None:
        self.issuer, self.audience, self.kid = issuer, audience, kid
        self.key = new_key()

    def jwk(self) -> dict[str, Any]:
        return rsa_jwk(self.key, self.kid)

    def token(
        self,
        email: str | None = "alice@example.com",
        scp: str | list[str] | None = "session:role:analyst",
        *,
        key: rsa.RSAPrivateKey | None = None,
        lifetime: int = 600,
        **overrides: Any,
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, email or "nobody")),
            "email": email,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "jti": uuid.uuid4().hex,
        }
        if scp is not None:
            claims["scp"] = scp
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        headers = {"kid": self.kid} if self.kid else None
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers=headers)


# -------------------- fixtures


@pytest.fixture(scope="module")
def idp() -> Issuer:
    return Issuer(IDP_ISSUER, IDP_AUDIENCE, kid="idp-key-1")


@pytest.fixture(scope="module")
def broker() -> Issuer:
    return Issuer(JUPYTER_URL, BROKER_AUDIENCE)


@pytest.fixture(scope="module")
def jwks(idp: Issuer) -> Iterator[JwksServer]:
    with JwksServer([idp.jwk()]) as server:
        yield server


@pytest.fixture(scope="module")
def sf(idp: Issuer, broker: Issuer, jwks: JwksServer) -> Iterator[SnowflakeServer]:
    SnowflakeServer.ensure_env()  # first run builds the env (~30 s); not part of start time
    config = {
        "integrations": oauth_integrations(
            idp_issuer=IDP_ISSUER,
            jwks_url=jwks.url,
            idp_audience=IDP_AUDIENCE,
            broker_issuer=JUPYTER_URL,
            broker_public_pem=public_pem(broker.key),
            broker_audience=BROKER_AUDIENCE,
            user_mapping_claim="email",
        ),
        "users": USERS,
        "seed_big_rows": BIG_ROWS,
    }
    with SnowflakeServer(config) as server:
        print(f"snowflake server started in {server.start_seconds:.2f}s")
        yield server


def connect(
    sf: SnowflakeServer, token: str, role: str | None = None
) -> snowflake.connector.SnowflakeConnection:
    return snowflake.connector.connect(**sf.connect_kwargs(token, role=role))


def login_error(sf: SnowflakeServer, token: str, role: str | None = None) -> DatabaseError:
    with pytest.raises(DatabaseError) as info:
        connect(sf, token, role).close()
    return info.value


# -------------------- identity


@pytest.mark.parametrize("mode", ["idp", "broker"])
@pytest.mark.parametrize(
    ("email", "user", "amounts"),
    [
        ("alice@example.com", "ALICE", [75.0, 120.5, 310.25]),
        ("bob@example.com", "BOB", [42.0, 999.99]),
    ],
)
def test_each_user_sees_own_identity_and_rows(
    request: pytest.FixtureRequest,
    sf: SnowflakeServer,
    mode: str,
    email: str,
    user: str,
    amounts: list[float],
) -> None:
    issuer: Issuer = request.getfixturevalue(mode)
    with connect(sf, issuer.token(email)) as conn, conn.cursor() as cur:
        cur.execute("SELECT CURRENT_USER(), CURRENT_ROLE()")
        assert cur.fetchall() == [(user, "ANALYST")]
        cur.execute("SELECT region, amount, owner FROM sales ORDER BY amount")
        rows = cur.fetchall()
    assert [float(r[1]) for r in rows] == amounts
    assert {r[2] for r in rows} == {user}


def test_sessions_are_isolated_when_interleaved(
    sf: SnowflakeServer, idp: Issuer, broker: Issuer
) -> None:
    with (
        connect(sf, idp.token("alice@example.com")) as a,
        connect(sf, broker.token("bob@example.com")) as b,
    ):
        ca, cb = a.cursor(), b.cursor()
        for _ in range(2):
            assert ca.execute("SELECT CURRENT_USER(), COUNT(*) FROM sales").fetchone() == (
                "ALICE",
                3,
            )
            assert cb.execute("SELECT CURRENT_USER(), COUNT(*) FROM sales").fetchone() == ("BOB", 2)


def test_hidden_base_table_and_identity_functions_cannot_be_bypassed(
    sf: SnowflakeServer, idp: Issuer
) -> None:
    with connect(sf, idp.token("bob@example.com")) as conn, conn.cursor() as cur:
        with pytest.raises(ProgrammingError) as info:
            cur.execute("SELECT * FROM _connauth_private.sales_base")
        assert info.value.errno == 2003
        with pytest.raises(ProgrammingError):
            cur.execute("CREATE TEMPORARY FUNCTION current_user() RETURNS VARCHAR AS $$ 'ALICE' $$")
        with pytest.raises(ProgrammingError):
            cur.execute("SET VARIABLE anything = 'ALICE'")
        assert cur.execute("SELECT CURRENT_USER(), COUNT(*) FROM sales").fetchone() == ("BOB", 2)


def test_the_hidden_base_table_is_in_no_listing(sf: SnowflakeServer, idp: Issuer) -> None:
    """What the sidebar's browse tree asks: an analyst's listings show the SALES view
    only, never the policy's base table or its schema (which a real Snowflake role
    without privileges on them would not see either)."""
    with connect(sf, idp.token("alice@example.com")) as conn, conn.cursor() as cur:
        databases = [r[1] for r in cur.execute("SHOW TERSE DATABASES").fetchall()]
        schemas = cur.execute(
            "SELECT schema_name FROM CONNAUTH.information_schema.schemata"
        ).fetchall()
        tables = cur.execute("SELECT table_schema, table_name FROM information_schema.tables")
        listed = [databases, schemas, tables.fetchall()]
        listed.append(cur.execute("SHOW TERSE SCHEMAS IN DATABASE CONNAUTH").fetchall())
        objects = cur.execute("SHOW TERSE OBJECTS IN SCHEMA CONNAUTH.PUBLIC").fetchall()
        listed.append(objects)
        columns = cur.execute("SELECT table_schema, table_name FROM information_schema.columns")
        listed.append(columns.fetchall())
    text = str(listed).upper()
    assert "CONNAUTH" in databases and ("PUBLIC",) in schemas
    assert "SALES" in str(objects).upper()
    assert "_CONNAUTH_PRIVATE" not in text and "SALES_BASE" not in text
    assert "_FS_GLOBAL" not in text


def test_role_from_connection_and_use_role(
    sf: SnowflakeServer, idp: Issuer, broker: Issuer
) -> None:
    # session:role-any with any_role_mode: any granted role may be requested
    token = idp.token("alice@example.com", scp="session:role-any")
    with connect(sf, token, role="reporter") as conn, conn.cursor() as cur:
        assert cur.execute("SELECT CURRENT_ROLE()").fetchone() == ("REPORTER",)
        cur.execute("USE ROLE analyst")
        assert cur.execute("SELECT CURRENT_ROLE()").fetchone() == ("ANALYST",)
        with pytest.raises(ProgrammingError) as info:
            cur.execute("USE ROLE accountadmin")
        assert info.value.errno == 2003
    # several roles in the scope: the connection picks one of them
    token = broker.token("alice@example.com", scp=["session:role:analyst", "session:role:reporter"])
    with connect(sf, token, role="REPORTER") as conn, conn.cursor() as cur:
        assert cur.execute("SELECT CURRENT_USER(), CURRENT_ROLE()").fetchone() == (
            "ALICE",
            "REPORTER",
        )


# -------------------- login errors

# (errno, message, SQLSTATE as connector 5.x assigns it to the code)
INVALID = (390303, "Invalid OAuth access token.", "08001")
EXPIRED = (390318, "OAuth access token expired.", "08001")
BAD_USER = (390100, "Incorrect username or password was specified.", "28000")
USER_MISMATCH = (
    390309,
    "The user you were trying to authenticate as differs from the user tied to the access token.",
    "08001",
)
BAD_ROLE = (
    390317,
    "The role requested in the connection or the default role if the primary role is not set, "
    "is not listed in the Access Token or was filtered by the Session Scope.",
    "08001",
)


def assert_error(err: DatabaseError, expected: tuple[int, str, str]) -> None:
    assert type(err) is DatabaseError, repr(err)
    assert err.errno == expected[0], str(err)
    assert expected[1] in str(err)
    assert err.sqlstate == expected[2], str(err)


@pytest.mark.parametrize("mode", ["idp", "broker"])
def test_wrong_key_is_invalid_token(
    request: pytest.FixtureRequest, sf: SnowflakeServer, mode: str
) -> None:
    issuer: Issuer = request.getfixturevalue(mode)
    assert_error(login_error(sf, issuer.token(key=new_key())), INVALID)


def test_unknown_kid_is_invalid_token(sf: SnowflakeServer, idp: Issuer) -> None:
    other = Issuer(IDP_ISSUER, IDP_AUDIENCE, kid="not-in-jwks")
    assert_error(login_error(sf, other.token()), INVALID)


@pytest.mark.parametrize("mode", ["idp", "broker"])
@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"iss": "https://evil.example.test/"}, id="wrong-issuer"),
        pytest.param({"aud": "https://other.snowflakecomputing.com"}, id="wrong-audience"),
        pytest.param({"aud": None}, id="no-audience"),
        pytest.param({"nbf": int(time.time()) + 3600}, id="not-yet-valid"),
        pytest.param({"exp": None}, id="no-expiry"),
    ],
)
def test_bad_claims_are_invalid_token(
    request: pytest.FixtureRequest, sf: SnowflakeServer, mode: str, claims: dict[str, Any]
) -> None:
    issuer: Issuer = request.getfixturevalue(mode)
    assert_error(login_error(sf, issuer.token(**claims)), INVALID)


@pytest.mark.parametrize("mode", ["idp", "broker"])
def test_expired_token(request: pytest.FixtureRequest, sf: SnowflakeServer, mode: str) -> None:
    issuer: Issuer = request.getfixturevalue(mode)
    token = issuer.token(iat=int(time.time()) - 700, nbf=int(time.time()) - 700, lifetime=-100)
    assert_error(login_error(sf, token), EXPIRED)


def test_not_a_jwt_and_wrong_algorithm(sf: SnowflakeServer, broker: Issuer) -> None:
    assert_error(login_error(sf, "not-a-jwt"), INVALID)
    hs = jwt.encode(
        {
            "iss": JUPYTER_URL,
            "aud": BROKER_AUDIENCE,
            "email": "alice@example.com",
            "exp": int(time.time()) + 60,
        },
        "a-shared-secret-that-is-long-enough-for-hs256",
        algorithm="HS256",
    )
    assert_error(login_error(sf, hs), INVALID)


@pytest.mark.parametrize("mode", ["idp", "broker"])
def test_unknown_user(request: pytest.FixtureRequest, sf: SnowflakeServer, mode: str) -> None:
    issuer: Issuer = request.getfixturevalue(mode)
    assert_error(login_error(sf, issuer.token("mallory@example.com")), BAD_USER)
    assert_error(login_error(sf, issuer.token(email=None)), BAD_USER)


@pytest.mark.parametrize(
    ("scp", "role"),
    [
        pytest.param("session:role:reporter", None, id="scope-role-not-granted"),
        pytest.param(
            "session:role:analyst", "REPORTER", id="requested-role-granted-but-not-in-scope"
        ),
        pytest.param(None, None, id="no-role-in-scope"),
        pytest.param("session:role-any", "ADMIN", id="role-any-but-not-granted"),
        pytest.param("session:role:accountadmin", None, id="blocked-role"),
    ],
)
def test_role_errors(
    sf: SnowflakeServer, broker: Issuer, idp: Issuer, scp: str | None, role: str | None
) -> None:
    # bob has only ANALYST; role-any is enabled only for the IdP integration
    issuer = idp if scp == "session:role-any" else broker
    assert_error(login_error(sf, issuer.token("bob@example.com", scp=scp), role), BAD_ROLE)


def test_connection_user_must_match_token_user(sf: SnowflakeServer, broker: Issuer) -> None:
    kwargs = sf.connect_kwargs(broker.token("bob@example.com"), user="ALICE@example.com")
    with pytest.raises(DatabaseError) as info:
        snowflake.connector.connect(**kwargs).close()
    assert_error(info.value, USER_MISMATCH)
    # the token's own login name (any case) is fine
    kwargs = sf.connect_kwargs(broker.token("bob@example.com"), user="Bob@Example.com")
    with snowflake.connector.connect(**kwargs) as conn:
        assert conn.cursor().execute("SELECT CURRENT_USER()").fetchone() == ("BOB",)


def test_role_any_needs_any_role_mode(sf: SnowflakeServer, broker: Issuer) -> None:
    # the broker integration leaves any_role_mode at DISABLE
    assert_error(
        login_error(sf, broker.token("alice@example.com", scp="session:role-any"), "ANALYST"),
        BAD_ROLE,
    )


# -------------------- sessions, results


def test_second_query_opens_no_new_session(sf: SnowflakeServer, broker: Issuer) -> None:
    before = sf.stats()["logins"]
    with connect(sf, broker.token("alice@example.com")) as conn, conn.cursor() as cur:
        assert sf.stats()["logins"] == before + 1
        cur.execute("SELECT COUNT(*) FROM sales")
        cur.execute("SELECT CURRENT_USER()")
        with conn.cursor() as cur2:
            assert cur2.execute("SELECT 1").fetchone() == (1,)
        assert sf.stats()["logins"] == before + 1


def test_rejected_logins_are_not_counted_as_logins(sf: SnowflakeServer, broker: Issuer) -> None:
    before = sf.stats()
    login_error(sf, broker.token(key=new_key()))
    after = sf.stats()
    assert after["logins"] == before["logins"]
    assert after["failed_logins"] == before["failed_logins"] + 1


def test_fetch_pandas_all_big(sf: SnowflakeServer, idp: Issuer) -> None:
    with connect(sf, idp.token("bob@example.com")) as conn, conn.cursor() as cur:
        cur.execute("SELECT * FROM big ORDER BY id")
        df = cur.fetch_pandas_all()
    assert df.shape == (BIG_ROWS, 10)
    assert list(df.columns) == [
        "ID",
        "QTY",
        "PRICE",
        "NAME",
        "CATEGORY",
        "CREATED_AT",
        "DAY",
        "AMOUNT",
        "FLAG",
        "NOTE",
    ]
    assert df["ID"].tolist()[:3] == [0, 1, 2]
    assert int(df["ID"].iloc[-1]) == BIG_ROWS - 1
    # NULLs every 13th timestamp, 11th name, 17th qty
    assert df["CREATED_AT"].isna().sum() == len(range(0, BIG_ROWS, 13))
    assert df["NAME"].isna().sum() == len(range(0, BIG_ROWS, 11))
    assert df["QTY"].isna().sum() == len(range(0, BIG_ROWS, 17))
    assert str(df["CREATED_AT"].iloc[1]) == "2024-01-01 00:00:01.000003"
    # NUMBER(12,2) arrives as Snowflake sends it (scaled integer) and becomes float64 in pandas
    assert df["AMOUNT"].dtype.kind == "f"
    assert df["AMOUNT"].iloc[12345] == pytest.approx(123.45)
    assert df["FLAG"].dtype == bool


def test_fetch_arrow_all_and_fetchall(sf: SnowflakeServer, broker: Issuer) -> None:
    with connect(sf, broker.token("alice@example.com")) as conn, conn.cursor() as cur:
        cur.execute("SELECT * FROM big WHERE id < 1000")
        table = cur.fetch_arrow_all()
        assert table is not None
        assert table.num_rows == 1000
        assert table.num_columns == 10
        cur.execute("SELECT id, created_at, amount FROM big WHERE id IN (0, 1) ORDER BY id")
        rows = cur.fetchall()
    assert rows[0][1] is None  # a NULL TIMESTAMP_NTZ stays NULL
    assert rows[1][1].isoformat() == "2024-01-01T00:00:01.000003"
    assert str(rows[1][2]) == "0.01"


def test_null_and_pre_epoch_timestamps(sf: SnowflakeServer, broker: Issuer) -> None:
    with connect(sf, broker.token("alice@example.com")) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT column1 AS ts FROM VALUES "
            "('1969-12-31 23:59:59.5'::TIMESTAMP_NTZ), (NULL::TIMESTAMP_NTZ), "
            "('2030-06-01 12:00:00'::TIMESTAMP_NTZ)"
        )
        got = [r[0] for r in cur.fetchall()]
    assert got[1] is None
    assert got[0].isoformat() == "1969-12-31T23:59:59.500000"
    assert got[2].isoformat() == "2030-06-01T12:00:00"


def test_flat_config_single_integration(broker: Issuer) -> None:
    """The top-level config form (one integration), as a broker-only deployment would use it."""
    config = {
        "public_keys": public_pem(broker.key),
        "issuer": JUPYTER_URL,
        "audiences": [BROKER_AUDIENCE],
        "users": {"carol@example.com": {"name": "CAROL", "default_role": "ANALYST"}},
        "database": "DEMO",
        "schema": "S1",
        "sales_rows": [["EMEA", 1.5, "CAROL"], ["EMEA", 2.5, "ALICE"]],
    }
    with SnowflakeServer(config) as server:
        print(f"small snowflake server started in {server.start_seconds:.2f}s")
        with connect(server, broker.token("carol@example.com")) as conn, conn.cursor() as cur:
            assert cur.execute(
                "SELECT CURRENT_USER(), CURRENT_ROLE(), CURRENT_DATABASE()"
            ).fetchone() == (
                "CAROL",
                "ANALYST",
                "DEMO",
            )
            assert cur.execute("SELECT owner, amount FROM sales").fetchall() == [
                ("CAROL", pytest.approx(1.5))
            ]
        assert server.stats()["logins"] == 1


@pytest.mark.filterwarnings("ignore:`ReauthenticationRequest` currently:FutureWarning")
def test_session_outlives_its_token_until_idle(broker: Issuer) -> None:
    """sf_sessions.py: a 2-second OAuth token and 1-second session tokens; the driver
    renews the session token with the master token (390112) and the session, its temp
    table included, outlives the OAuth token; idle past the master token's validity the
    session is over and the driver asks for a new login (ReauthenticationRequest)."""
    from snowflake.connector.errors import ReauthenticationRequest

    config = {
        "issuer": JUPYTER_URL,
        "audiences": [BROKER_AUDIENCE],
        "public_keys": [public_pem(broker.key)],
        "users": USERS,
        "session_validity": 1,
        "master_validity": 3,
    }
    with SnowflakeServer(config) as server:
        token = broker.token("alice@example.com", lifetime=2)
        with connect(server, token) as conn, conn.cursor() as cur:
            cur.execute("CREATE TEMP TABLE scratch AS SELECT 42 AS answer")
            for _ in range(3):
                time.sleep(1.2)  # past the session token's validity (and soon the OAuth token's)
                assert cur.execute("SELECT answer FROM scratch").fetchone() == (42,)
            stats = server.stats()
            assert stats["sessions_opened"] == 1 and stats["statements"] == 4
            assert stats["session_renewals"] >= 3 and stats["session_expired_answers"] >= 3
            time.sleep(3.5)  # idle past the master token's validity
            with pytest.raises(ReauthenticationRequest):
                cur.execute("SELECT answer FROM scratch")
            assert server.stats()["statements"] == 4  # refused before it ran
