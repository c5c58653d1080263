"""A benchmark-only Jupyter server extension: hands the kernel secret to the benchmark.

The broker generates its kernel secret at start and exports it only into the server's
own environment (for the kernels it starts). The benchmark plays a kernel, so this
extension writes the secret to ``$CONNAUTH_BENCH_SECRET_FILE`` (mode 0600). Its name
sorts after ``jupyter_connauth``, so it loads after it (jupyter_server loads extensions
in alphabetical order). Never enable it outside ``benchmarks/``.
"""

from __future__ import annotations

import os
from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "zz_connauth_bench_secret"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    path = os.environ["CONNAUTH_BENCH_SECRET_FILE"]
    secret = serverapp.web_app.settings.get("connauth_kernel_token") or os.environ.get(
        "JUPYTER_CONNAUTH_TOKEN"
    )
    if not secret:
        raise RuntimeError("jupyter_connauth did not load before zz_connauth_bench_secret")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret)
