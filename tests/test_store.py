"""The encrypted SQLite token store."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from jupyter_connauth.broker.store import open_store
from jupyter_connauth.core.crypto import CryptKeeper, keys_from_env
from jupyter_connauth.core.errors import ConfigError
from jupyter_connauth.core.tokens import TokenRecord

SECRET_ACCESS = "at-7f3c9e1b5d-secret-access-token"
SECRET_REFRESH = "rt-2a8d4f6c0e-secret-refresh-token"


def record(n: int = 0) -> TokenRecord:
    return TokenRecord(
        access_token=f"{SECRET_ACCESS}-{n}",
        expires_at=time.time() + 300,
        refresh_token=f"{SECRET_REFRESH}-{n}",
        scope=("sql",),
        identity={"email": "alice@example.com"},
    )


@pytest.fixture
def keeper() -> CryptKeeper:
    return CryptKeeper([Fernet.generate_key()])


def test_file_is_private_and_encrypted(tmp_path: Path, keeper: CryptKeeper) -> None:
    store = open_store(tmp_path / "s" / "tokens.sqlite3", keeper)
    store.put_token("alice", "sales", "fp1", record())
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    got = store.get_token("alice", "sales")
    assert got is not None and got.record is not None
    assert got.record.access_token == f"{SECRET_ACCESS}-0"
    store.close()
    raw = b"".join(p.read_bytes() for p in store.path.parent.iterdir())
    assert SECRET_ACCESS.encode() not in raw
    assert SECRET_REFRESH.encode() not in raw
    assert b"alice@example.com" not in raw


def test_users_are_kept_apart(tmp_path: Path, keeper: CryptKeeper) -> None:
    store = open_store(tmp_path / "t.sqlite3", keeper)
    store.put_token("alice", "sales", "fp", record(1))
    store.put_token("bob", "sales", "fp", record(2))
    alice = store.get_token("alice", "sales")
    bob = store.get_token("bob", "sales")
    assert alice and alice.record and alice.record.access_token.endswith("-1")
    assert bob and bob.record and bob.record.access_token.endswith("-2")
    assert store.drop_token("alice", "sales", "revoked")
    assert store.get_token("bob", "sales").record is not None  # type: ignore[union-attr]
    dropped = store.get_token("alice", "sales")
    assert dropped is not None and dropped.record is None and dropped.reason == "revoked"
    assert store.drop_connection_tokens("sales", "scopes_changed") == 1


def test_key_rotation(tmp_path: Path) -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    path = tmp_path / "r.sqlite3"
    open_store(path, CryptKeeper([old])).put_token("alice", "sales", "fp", record())
    rotated = open_store(path, CryptKeeper([new, old]))
    assert rotated.reencrypt() >= 1
    rotated.close()
    only_new = open_store(path, CryptKeeper([new]))
    got = only_new.get_token("alice", "sales")
    assert got is not None and got.record is not None


def test_wrong_key_means_consent_not_crash(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "w.sqlite3"
    open_store(path, CryptKeeper([Fernet.generate_key()])).put_token(
        "alice", "sales", "fp", record()
    )
    other = open_store(path, CryptKeeper([Fernet.generate_key()]))
    got = other.get_token("alice", "sales")
    assert got is not None and got.record is None
    assert "cannot be decrypted" in caplog.text


def test_keys_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = Fernet.generate_key().decode(), os.urandom(32).hex()
    monkeypatch.delenv("JUPYTER_CONNAUTH_CRYPT_KEY", raising=False)
    monkeypatch.setenv("JUPYTERHUB_CRYPT_KEY", f"{a};{b}")
    found = keys_from_env()
    assert found is not None and len(found[0]) == 2 and found[1] == "JUPYTERHUB_CRYPT_KEY"
    monkeypatch.setenv("JUPYTER_CONNAUTH_CRYPT_KEY", "not-a-key")
    with pytest.raises(ConfigError, match="JUPYTER_CONNAUTH_CRYPT_KEY"):
        keys_from_env()


def test_generated_key_file_is_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("JUPYTER_CONNAUTH_CRYPT_KEY", raising=False)
    monkeypatch.delenv("JUPYTERHUB_CRYPT_KEY", raising=False)
    key_file = tmp_path / "k" / "crypt.key"
    first = CryptKeeper.from_env_or_file(key_file)
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert "generated an encryption key" in caplog.text
    second = CryptKeeper.from_env_or_file(key_file)
    assert second.decrypt(first.encrypt(b"x")) == b"x"


WRITER = textwrap.dedent(
    """
    import sys, time
    from cryptography.fernet import Fernet
    from jupyter_connauth.broker.store import open_store
    from jupyter_connauth.core.crypto import CryptKeeper
    from jupyter_connauth.core.tokens import TokenRecord
    store = open_store(sys.argv[1], CryptKeeper([sys.argv[2].encode()]))
    print("go", flush=True)
    i = 0
    while True:
        i += 1
        store.put_token(f"user{i % 50}", "sales", "fp", TokenRecord(
            access_token="a" * 2000 + str(i), expires_at=time.time() + 300,
            refresh_token="r" * 500, identity={"email": f"u{i}@example.com"}))
    """
)


def test_kill_during_writes_leaves_complete_tokens(tmp_path: Path) -> None:
    key = Fernet.generate_key()
    path = tmp_path / "k.sqlite3"
    for _ in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), key.decode()], stdout=subprocess.PIPE
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"go"
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        store = open_store(path, CryptKeeper([key]))
        tokens = [store.get_token(f"user{i}", "sales") for i in range(50)]
        present = [t for t in tokens if t is not None]
        assert present, "the writer wrote nothing"
        for t in present:
            assert t.record is not None and t.record.access_token.startswith("a" * 2000)
        store.close()


KEY_STARTER = textwrap.dedent(
    """
    import hashlib, os, sys, time
    from pathlib import Path
    from jupyter_connauth.core.crypto import CryptKeeper
    real_open = os.open
    def slow_open(path, flags, *args, **kwargs):  # a slow (network) home directory
        if flags & os.O_CREAT:
            time.sleep(0.05)
        return real_open(path, flags, *args, **kwargs)
    os.open = slow_open
    go = Path(sys.argv[2])
    while not go.exists():
        time.sleep(0.001)
    keeper = CryptKeeper.from_env_or_file(Path(sys.argv[1]))
    print(hashlib.sha256(b";".join(keeper.keys)).hexdigest(), flush=True)
    """
)


def test_processes_starting_at_once_generate_one_key(tmp_path: Path) -> None:
    """Servers and kernels of one user starting together (no key in the environment)
    must not each generate a key, nor crash or read a half-written file."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("JUPYTER_CONNAUTH_CRYPT_KEY", "JUPYTERHUB_CRYPT_KEY")
    }
    for round_no in range(3):
        key_file, go = tmp_path / f"r{round_no}" / "crypt.key", tmp_path / f"go{round_no}"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", KEY_STARTER, str(key_file), str(go)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
            for _ in range(6)
        ]
        time.sleep(1.0)  # all of them waiting
        go.touch()
        outs = [p.communicate(timeout=60) for p in procs]
        pairs = zip(procs, outs, strict=True)
        errors = [err.decode()[-300:] for p, (_o, err) in pairs if p.returncode]
        assert not errors, errors
        digests = {out.strip() for out, _err in outs}
        assert len(digests) == 1, f"round {round_no}: {len(digests)} different keys"
        assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
        assert [p.name for p in key_file.parent.iterdir()] == ["crypt.key"]  # no leftovers
