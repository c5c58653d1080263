"""The local Databricks SQL warehouse, driven by the official databricks-sql-connector."""

from __future__ import annotations

import datetime
import decimal
import threading
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pyarrow as pa
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

sql = pytest.importorskip("databricks.sql")
from databricks.sql import exc  # noqa: E402

from ..keys import JwksServer, new_key, rsa_jwk  # noqa: E402
from .fixture import DatabricksServer  # noqa: E402

ISSUER = "https://idp.connauth.test/realms/demo"
AUDIENCE = "databricks-account-1234"
USERS = {"alice@example.com": {"name": "Alice"}, "bob@example.com": {"name": "Bob"}}
BIG_ROWS = 200_000


class _Idp:
    """An RSA key, a JWKS served from a local HTTP thread, and a token minter."""

    def __init__(self) -> None:
        self.key = new_key()
        self.jwks = JwksServer([rsa_jwk(self.key, "key-1")], "/jwks").start()
        self.jwks_url = self.jwks.url

    def token(self, email: str, key: Any = None, kid: str = "key-1", **claims: Any) -> str:
        now = int(time.time())
        payload = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": f"uid-{email}",
            "email": email,
            "iat": now,
            "exp": now + 600,
        }
        payload.update(claims)
        return jwt.encode(payload, key or self.key, algorithm="RS256", headers={"kid": kid})

    def close(self) -> None:
        self.jwks.close()


@pytest.fixture(scope="module")
def idp() -> Iterator[_Idp]:
    i = _Idp()
    yield i
    i.close()


def _config(idp: _Idp, **extra: Any) -> dict[str, Any]:
    cfg = {"jwks_url": idp.jwks_url, "issuer": ISSUER, "audience": AUDIENCE, "users": USERS}
    cfg.update(extra)
    return cfg


@pytest.fixture(scope="module")
def server(idp: _Idp) -> Iterator[DatabricksServer]:
    # inline paging is what these tests look at; CloudFetch has its own tests
    cfg = _config(idp, seed_big_rows=BIG_ROWS, max_page_rows=60_000, cloudfetch=False)
    with DatabricksServer(cfg) as srv:
        yield srv


def _connect(srv: DatabricksServer, token: str, **extra: Any) -> Any:
    return sql.connect(**srv.connect_kwargs(token, **extra))


def test_each_user_sees_own_identity_and_rows(server: DatabricksServer, idp: _Idp) -> None:
    for email, expected in (("alice@example.com", 3), ("bob@example.com", 2)):
        with _connect(server, idp.token(email)) as conn, conn.cursor() as cur:
            cur.execute("SELECT current_user() AS me")
            assert cur.fetchall()[0].me == email
            cur.execute("SELECT region, amount, owner FROM main.demo.sales ORDER BY region")
            rows = cur.fetchall()
            assert len(rows) == expected
            assert {r.owner for r in rows} == {email}
            assert isinstance(rows[0].amount, decimal.Decimal)
            # nothing to find by asking for someone else's rows explicitly
            cur.execute("SELECT count(*) AS n FROM main.demo.sales WHERE owner <> current_user()")
            assert cur.fetchall()[0].n == 0


def test_identity_comes_only_from_the_token(server: DatabricksServer, idp: _Idp) -> None:
    with _connect(server, idp.token("alice@example.com")) as conn, conn.cursor() as cur:
        # redefining current_user() in one's own session reveals nothing new
        cur.execute("CREATE OR REPLACE TEMP MACRO current_user() AS 'bob@example.com'")
        cur.execute("SELECT count(*) AS n FROM main.demo.sales WHERE owner = 'bob@example.com'")
        assert cur.fetchall()[0].n == 0


@pytest.mark.parametrize(
    "case",
    ["wrong_audience", "expired", "wrong_issuer", "foreign_key", "unknown_kid", "not_a_jwt"],
)
def test_rejected_token_is_http_401(server: DatabricksServer, idp: _Idp, case: str) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = {
        "wrong_audience": lambda: idp.token("alice@example.com", aud="someone-else"),
        "expired": lambda: idp.token("alice@example.com", exp=int(time.time()) - 120),
        "wrong_issuer": lambda: idp.token("alice@example.com", iss="https://evil.test"),
        "foreign_key": lambda: idp.token("alice@example.com", key=other),
        "unknown_kid": lambda: idp.token("alice@example.com", key=other, kid="nope"),
        "not_a_jwt": lambda: "dapi-not-a-jwt",
    }[case]()
    before = server.stats()["auth_401"]
    with pytest.raises(exc.RequestError) as info:
        _connect(server, token)
    e = info.value
    # The status code is not in str(e); it is in e.context["http-code"].
    assert e.context["http-code"] == 401
    assert e.context["method"] == "OpenSession"
    assert str(e) == "Error during request to server: : Invalid access token.. "
    assert isinstance(e, exc.OperationalError)
    assert server.stats()["auth_401"] == before + 1


def test_unknown_user_is_http_403(server: DatabricksServer, idp: _Idp) -> None:
    with pytest.raises(exc.RequestError) as info:
        _connect(server, idp.token("mallory@example.com"))
    e = info.value
    assert e.context["http-code"] == 403
    assert "PERMISSION_DENIED" in str(e)
    assert "mallory@example.com" in str(e)


def test_driver_exchanges_idp_token_for_databricks_token(
    server: DatabricksServer, idp: _Idp
) -> None:
    before = server.stats()["token_exchanges"]
    with _connect(server, idp.token("alice@example.com")) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 AS x")
        cur.execute("SELECT 2 AS x")
    assert server.stats()["token_exchanges"] == before + 1


def test_native_parameters(server: DatabricksServer, idp: _Idp) -> None:
    with _connect(server, idp.token("alice@example.com")) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT :i + 1 AS i, :s AS s, :d AS d, :f AS f, :b AS b, :day AS day, "
            ":ts AS ts, :nothing AS nothing, ':not_a_param' AS lit, 1::INT AS cast_ok",
            {
                "i": 41,
                "s": "it's",
                "d": decimal.Decimal("12.34"),
                "f": 0.5,
                "b": True,
                "day": datetime.date(2024, 2, 29),
                "ts": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
                "nothing": None,
            },
        )
        row = cur.fetchone()
        assert row.i == 42 and row.s == "it's" and row.d == decimal.Decimal("12.34")
        assert row.f == 0.5 and row.b is True and row.day == datetime.date(2024, 2, 29)
        assert row.ts == datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
        assert row.nothing is None and row.lit == ":not_a_param" and row.cast_ok == 1
        cur.execute(
            "SELECT region FROM main.demo.sales WHERE amount > ? AND region <> ? ORDER BY region",
            [50, "AMER"],
        )
        assert [r.region for r in cur.fetchall()] == ["EMEA"]
        cur.execute("SELECT :xs AS xs", {"xs": [1, 2, 3]})
        assert list(cur.fetchone().xs) == [1, 2, 3]
        with pytest.raises(exc.ServerOperationError, match="UNBOUND_SQL_PARAMETER"):
            cur.execute("SELECT :missing", {"other": 1})


def test_fetchall_arrow_pages_big_result(server: DatabricksServer, idp: _Idp) -> None:
    with _connect(server, idp.token("bob@example.com")) as conn, conn.cursor() as cur:
        before = server.stats()["fetch_results"]
        cur.execute("SELECT * FROM main.bench.big ORDER BY id")
        table = cur.fetchall_arrow()
        pages = server.stats()["fetch_results"] - before
        description = cur.description
    assert table.num_rows == BIG_ROWS
    assert pages == 4  # 60k-row pages: directResults + 3 FetchResults
    assert table.column("id").to_pylist()[:3] == [0, 1, 2]
    assert table.column("id")[BIG_ROWS - 1].as_py() == BIG_ROWS - 1
    types = {f.name: f.type for f in table.schema}
    assert types == {
        "id": pa.int64(),
        "int_col": pa.int32(),
        "float_col": pa.float64(),
        "ratio": pa.float64(),
        "str_col": pa.string(),
        "category": pa.string(),
        "ts_col": pa.timestamp("us"),
        "dec_col": pa.decimal128(12, 2),
        "bool_col": pa.bool_(),
        "nullable_int": pa.int32(),
    }
    assert table.column("str_col").null_count == BIG_ROWS // 10
    assert [d[1] for d in description] == [
        "bigint",
        "int",
        "double",
        "double",
        "string",
        "string",
        "timestamp",
        "decimal",
        "boolean",
        "int",
    ]


def test_metadata_calls(server: DatabricksServer, idp: _Idp) -> None:
    with _connect(server, idp.token("alice@example.com")) as conn, conn.cursor() as cur:
        assert [r.TABLE_CAT for r in cur.catalogs().fetchall()] == ["main"]
        schemas = cur.schemas(catalog_name="main").fetchall()
        assert {r.TABLE_SCHEM for r in schemas} == {"default", "demo", "bench"}
        assert {r.TABLE_CATALOG for r in schemas} == {"main"}
        assert [
            r.TABLE_SCHEM for r in cur.schemas(catalog_name="main", schema_name="dem%").fetchall()
        ] == ["demo"]
        tables = cur.tables(catalog_name="main", schema_name="demo").fetchall()
        assert [(t.TABLE_NAME, t.TABLE_TYPE) for t in tables] == [("sales", "TABLE")]
        views = cur.tables(catalog_name="main", table_types=["VIEW"]).fetchall()
        assert [(t.TABLE_SCHEM, t.TABLE_NAME) for t in views] == [("bench", "big")]
        cols = cur.columns(catalog_name="main", schema_name="demo", table_name="sales").fetchall()
        assert [(c.COLUMN_NAME, c.TYPE_NAME, c.ORDINAL_POSITION) for c in cols] == [
            ("region", "STRING", 1),
            ("amount", "DECIMAL(12,2)", 2),
            ("owner", "STRING", 3),
        ]
        assert cols[1].DATA_TYPE == 3 and cols[1].DECIMAL_DIGITS == 2


def test_second_query_opens_no_new_session(server: DatabricksServer, idp: _Idp) -> None:
    before = server.stats()
    with _connect(server, idp.token("bob@example.com")) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 AS x")
            cur.execute("SELECT 2 AS x")
        with conn.cursor() as cur:
            cur.execute("SELECT 3 AS x")
            assert cur.fetchall()[0].x == 3
    after = server.stats()
    assert after["sessions_opened"] == before["sessions_opened"] + 1
    assert after["statements"] == before["statements"] + 3
    assert (
        after["sessions_by_user"]["bob@example.com"]
        == before["sessions_by_user"].get("bob@example.com", 0) + 1
    )


def test_cancel_running_query(server: DatabricksServer, idp: _Idp) -> None:
    with _connect(server, idp.token("alice@example.com")) as conn, conn.cursor() as cur:
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                cur.execute(
                    "SELECT sum(a.range * b.range) AS s FROM range(100000) a, range(1000000) b"
                )
                outcome["rows"] = cur.fetchall()
            except exc.Error as e:
                outcome["error"] = e

        before = server.stats()["cancels"]
        t = threading.Thread(target=run)
        t.start()
        deadline = time.monotonic() + 10
        while cur.active_command_id is None and time.monotonic() < deadline:
            time.sleep(0.05)
        cur.cancel()
        t.join(15)
        assert not t.is_alive()
        assert server.stats()["cancels"] == before + 1
        assert isinstance(outcome.get("error"), exc.DatabaseError)
        assert "OPERATION_CANCELED" in str(outcome["error"])
        cur.execute("SELECT 7 AS x")  # the session is still usable
        assert cur.fetchall()[0].x == 7


def test_query_errors_are_server_operation_errors(server: DatabricksServer, idp: _Idp) -> None:
    with _connect(server, idp.token("alice@example.com")) as conn, conn.cursor() as cur:
        with pytest.raises(exc.ServerOperationError, match="TABLE_OR_VIEW_NOT_FOUND") as info:
            cur.execute("SELECT * FROM main.demo.nope")
        # What the user wrote, as Databricks names it; never the local alias dbx_main.
        assert "The table or view `main`.`demo`.`nope` cannot be found" in str(info.value)
        assert "SQLSTATE: 42P01" in str(info.value)
        with pytest.raises(exc.ServerOperationError) as info:
            cur.execute("SELECT region FROM demo.Nope")
        assert "`demo`.`Nope` cannot be found" in str(info.value)
        with pytest.raises(exc.ServerOperationError) as info:
            cur.execute("SELECT nope FROM main.demo.sales")
        assert "dbx_main" not in str(info.value)


def test_plain_http_transport_and_stats(idp: _Idp) -> None:
    with DatabricksServer(_config(idp), tls=False) as srv:
        kw = srv.connect_kwargs(idp.token("bob@example.com"))
        assert kw["_connection_uri"].startswith("http://")
        with sql.connect(**kw) as conn, conn.cursor() as cur:
            cur.execute("SELECT current_user() AS me")
            assert cur.fetchall()[0].me == "bob@example.com"
        stats = srv.stats()
        assert srv.start_seconds is not None and srv.start_seconds < 10
    assert stats["sessions_opened"] == 1 and stats["sessions_closed"] == 1
    assert stats["sessions_active"] == 0


def test_ddl_dml_and_use(server: DatabricksServer, idp: _Idp) -> None:
    with _connect(server, idp.token("bob@example.com")) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE main.default.notes (id INT, body STRING)")
        assert cur.description == []
        cur.execute("INSERT INTO main.default.notes VALUES (1, 'a'), (2, 'b')")
        assert cur.rowcount == 2
        assert cur.fetchall()[0].num_inserted_rows == 2
        cur.execute("USE SCHEMA default")
        cur.execute("SELECT current_catalog() AS c, count(*) AS n FROM notes")
        row = cur.fetchone()
        assert (row.c, row.n) == ("main", 2)
