"""Encryption at rest: a MultiFernet built from ``;``-separated keys (key rotation).

Keys come from ``JUPYTER_CONNAUTH_CRYPT_KEY`` or ``JUPYTERHUB_CRYPT_KEY``. Each key is a
Fernet key (urlsafe base64 of 32 bytes) or, like JupyterHub's, 32 bytes as hex; the
first key encrypts, all keys decrypt, so rotation is: prepend a new key, re-encrypt,
drop the old one.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
import time
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from .errors import ConfigError

log = logging.getLogger(__name__)

KEY_ENV_VARS = ("JUPYTER_CONNAUTH_CRYPT_KEY", "JUPYTERHUB_CRYPT_KEY")

__all__ = ["CryptKeeper", "DecryptionError", "InvalidToken", "keys_from_env"]


class DecryptionError(Exception):
    """A stored value could not be decrypted with any configured key."""


def _to_fernet_key(raw: str, source: str) -> bytes:
    raw = raw.strip()
    try:
        candidate = base64.urlsafe_b64decode(raw.encode() + b"=" * (-len(raw) % 4))
        if len(candidate) == 32:
            return base64.urlsafe_b64encode(candidate)
    except (binascii.Error, ValueError):
        pass
    try:
        candidate = bytes.fromhex(raw)
        if len(candidate) == 32:
            return base64.urlsafe_b64encode(candidate)
    except ValueError:
        pass
    raise ConfigError(
        source,
        "a key is neither a Fernet key nor 32 bytes of hex",
        "generate one with: python -c 'from cryptography.fernet import Fernet; "
        "print(Fernet.generate_key().decode())'  (or `openssl rand -hex 32`)",
    )


def keys_from_env() -> tuple[list[bytes], str] | None:
    for var in KEY_ENV_VARS:
        value = os.environ.get(var, "").strip()
        if value:
            return [_to_fernet_key(k, var) for k in value.split(";") if k.strip()], var
    return None


def _key_file_keys(path: Path) -> list[bytes]:
    """The keys in ``path``, or a new key written there. Processes starting at once
    (two servers, a server and a kernel) end up with the same key: the file appears
    complete in one step (a hard link of a written temporary file, which fails if the
    file exists), and the loser of the race reads the winner's key."""
    for _ in range(100):
        if path.exists():
            text = path.read_text().strip()
            if text:
                return [_to_fernet_key(k, str(path)) for k in text.split(";") if k.strip()]
            time.sleep(0.02)  # created empty by an older version, being written
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        key = Fernet.generate_key()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(key + b"\n")
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                continue  # another process won: read its key
        finally:
            tmp.unlink(missing_ok=True)
        log.warning(
            "jupyter-connauth: no JUPYTER_CONNAUTH_CRYPT_KEY or JUPYTERHUB_CRYPT_KEY is set; "
            "generated an encryption key at %s (mode 0600). Set the variable to manage keys "
            "yourself.",
            path,
        )
        return [key]
    raise ConfigError(str(path), "the key file stays empty", "delete it, or set the key yourself")


class CryptKeeper:
    """Encrypts and decrypts small values (serialized tokens) with a MultiFernet."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ConfigError("JUPYTER_CONNAUTH_CRYPT_KEY", "no encryption key given")
        self.keys = keys
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    @classmethod
    def from_env_or_file(cls, key_file: Path) -> CryptKeeper:
        found = keys_from_env()
        if found is not None:
            return cls(found[0])
        return cls(_key_file_keys(key_file))

    def encrypt(self, data: bytes) -> bytes:
        return self._fernet.encrypt(data)

    def decrypt(self, token: bytes) -> bytes:
        try:
            return self._fernet.decrypt(token)
        except InvalidToken as e:
            raise DecryptionError(
                "a stored value cannot be decrypted with the configured keys"
            ) from e

    def rotate(self, token: bytes) -> bytes:
        """Re-encrypt with the first (newest) key."""
        return self._fernet.rotate(token)
