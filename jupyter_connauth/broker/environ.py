"""Secrets out of the environment that kernels and terminals inherit.

The README lets admins give the broker its secrets through environment variables
(the client secret, the store's encryption keys, a Snowflake connection's
``private_key_env``). A Jupyter server passes its whole environment on to every kernel
and terminal it starts, where ``os.environ`` in a cell would show them. So the broker
reads them once, at start, and removes them from ``os.environ``: kernels then inherit
only ``JUPYTER_CONNAUTH_URL`` and ``JUPYTER_CONNAUTH_TOKEN``.

Call :func:`withhold_from_kernels` once the broker's store is open (the encryption keys
are read then) and before any kernel can start. Private keys named by
``private_key_env`` stay readable by the broker through :func:`private_key_from_env`.

In no-server mode the kernel hosts the broker: removing the variables keeps them from
cell code's ``os.environ`` and from subprocesses, but that process's
``/proc/self/environ`` still shows the block it was started with (Linux keeps it), and
the broker's own memory is the kernel's. See SECURITY.md.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, MutableMapping

from .config import ConnAuth

log = logging.getLogger(__name__)

#: Variables holding the broker's secrets (the client secret, the store's keys).
SECRET_ENV_VARS = (
    "JUPYTER_CONNAUTH_CLIENT_SECRET",
    "JUPYTER_CONNAUTH_CRYPT_KEY",
    "JUPYTERHUB_CRYPT_KEY",
)

_private_keys: dict[str, str] = {}


def private_key_env_names(config: ConnAuth) -> list[str]:
    """The variables the configured connections name as ``private_key_env``."""
    names: list[str] = []
    for raw in config.connections.values():
        env = raw.get("private_key_env") if isinstance(raw, Mapping) else None
        if isinstance(env, str) and env and env not in names:
            names.append(env)
    return names


def withhold_from_kernels(
    config: ConnAuth, environ: MutableMapping[str, str] | None = None
) -> list[str]:
    """Read the broker's secrets from the environment, then remove them from it.

    Returns the names of the variables removed (never their values).
    """
    env = os.environ if environ is None else environ
    config.client_secret  # noqa: B018 - the trait's default reads the variable: read it now
    removed: list[str] = []
    for name in private_key_env_names(config):
        value = env.pop(name, None)
        if value is not None:
            _private_keys[name] = value
            removed.append(name)
    for name in SECRET_ENV_VARS:
        if env.pop(name, None) is not None:
            removed.append(name)
    if removed:
        log.info(
            "jupyter-connauth: read %s and removed them from the environment kernels and "
            "terminals inherit",
            ", ".join(removed),
        )
    return removed


def private_key_from_env(name: str) -> str:
    """A ``private_key_env`` variable's value, as read at start (or from the environment
    when it was set later, e.g. for a connection created through the API)."""
    return _private_keys.get(name) or os.environ.get(name, "")
