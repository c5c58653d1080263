"""Snowflake JWT minting: ``JWTMinter.mint`` (what the broker does per ``oauth-jwt`` token).

The key is an RSA 2048 PEM (PKCS#8) in a file, as ``private_key_path`` points at; the
first ``mint`` loads and caches it, so the warm calls time the claims, the JSON, the
base64 and the RS256 signature. Baseline: PyJWT's ``jwt.encode`` of the same claims
with the same already-loaded key (what most code would write), interleaved in rounds.
The cold call (key loading included) is reported beside it, and each minted JWT is
checked once with PyJWT (signature, ``aud``, ``iss``).

Run: ``.venv/bin/python benchmarks/bench_jwt.py`` (about 10 s).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _common import Row, emit, log, median

TARGET_MS = 1.0
ISSUER = "https://jupyter.example.com/"
AUDIENCE = "snowflake:connauth"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--calls", type=int, default=200, help="mints per round and path")
    args = p.parse_args()

    import jwt as pyjwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from jupyter_connauth.broker.jwt_mint import JWTMinter
    from jupyter_connauth.core.connections import parse_connection

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with tempfile.TemporaryDirectory() as tmp:
        key_path = Path(tmp) / "broker.pem"
        key_path.write_bytes(pem)
        spec = parse_connection(
            "sales_jwt",
            {
                "connector": "snowflake",
                "account": "connauth",
                "role": "ANALYST",
                "auth": "oauth-jwt",
                "jwt_audience": AUDIENCE,
                "private_key_path": str(key_path),
            },
            "oidc",
        )
        email = "alice@example.com"

        # cold: a fresh minter loads the PEM (median of a few)
        cold = []
        for _ in range(5):
            m = JWTMinter(ISSUER, lambda _n: None)
            t0 = time.perf_counter()
            m.mint(spec, email)
            cold.append(time.perf_counter() - t0)
        minter = JWTMinter(ISSUER, lambda _n: None)
        token = minter.mint(spec, email).token
        claims = pyjwt.decode(token, key.public_key(), algorithms=["RS256"], audience=AUDIENCE)
        assert claims["iss"] == ISSUER and claims["email"] == email, claims
        assert claims["scp"] == "session:role:ANALYST", claims

        loaded = serialization.load_pem_private_key(pem, password=None)

        def baseline() -> None:
            now = int(time.time())
            pyjwt.encode(
                {
                    "iss": ISSUER,
                    "aud": AUDIENCE,
                    "sub": email,
                    "email": email,
                    "scp": "session:role:ANALYST",
                    "iat": now,
                    "nbf": now - 5,
                    "exp": now + 600,
                    "jti": uuid.uuid4().hex,
                },
                loaded,
                algorithm="RS256",
            )

        def ours() -> None:
            minter.mint(spec, email)

        for fn in (ours, baseline):  # warm-up
            for _ in range(50):
                fn()
        per_ours: list[float] = []
        per_base: list[float] = []
        for r in range(args.rounds):
            order = [(ours, per_ours), (baseline, per_base)]
            if r % 2:
                order.reverse()
            for fn, sink in order:
                t0 = time.perf_counter()
                for _ in range(args.calls):
                    fn()
                sink.append((time.perf_counter() - t0) / args.calls)
        # per-call distribution of ours, for the p99
        singles = []
        for _ in range(1000):
            t0 = time.perf_counter()
            minter.mint(spec, email)
            singles.append(time.perf_counter() - t0)
        singles.sort()

    ours_ms, base_ms = median(per_ours) * 1e3, median(per_base) * 1e3
    cold_ms = median(cold) * 1e3
    log(f"  mint: {ours_ms:.3f} ms/call, PyJWT: {base_ms:.3f} ms/call, cold {cold_ms:.1f} ms")
    rows = [
        Row("`JWTMinter.mint`, warm key (median)", ours_ms, "ms", base_ms, TARGET_MS, False, 3),
        Row("`JWTMinter.mint`, warm key, p99 of 1,000 single calls",
            singles[989] * 1e3, "ms", None, None, False, 3),
        Row("`JWTMinter.mint`, cold (PEM read + parse + sign)",
            median(cold) * 1e3, "ms", None, None, False, 2),
    ]  # fmt: skip
    notes = [
        f"RSA 2048 key in a PKCS#8 PEM file (`private_key_path`); {args.rounds} rounds of "
        f"{args.calls} calls per path, the paths alternating order each round; the value "
        "is the median of the rounds' per-call means.",
        "Baseline: PyJWT `jwt.encode(claims, key, algorithm='RS256')` of the same claims "
        "with the same already-loaded key. Ratio = ours / baseline.",
        "Each minted JWT checked with PyJWT (RS256 signature, `aud`, `iss`, `email`, `scp`).",
        "Cold: a new `JWTMinter` (key file read and parsed, then signed), median of 5.",
    ]
    ok = emit("jwt", "Snowflake JWT minting (bench_jwt.py)", rows, notes)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
