"""The hub path: an opaque access token that the warehouse quotes in its error never
reaches the service's API answer or its log (the one redactor, core/redact.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.hub.hub_fixture import CHP, TestHub, configure_service, hub_browser, service_hub
from tests.idp_fixture import TestIdP, default_client, headless_login
from tests.servers.databricks.fixture import DatabricksServer
from tests.warehouses import DBX, opaque_lake, trusting

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(240),
    pytest.mark.skipif(not CHP.exists(), reason="npm ci in tests/hub (configurable-http-proxy)"),
]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestHub, TestIdP]]:
    work = tmp_path_factory.mktemp("hub-leaks")
    hub = service_hub(work)
    # no default resource: the access tokens are opaque strings, as Okta's can be
    idp = TestIdP(
        workdir=work / "idp",
        default_resource=None,
        clients=[default_client([hub.callback_url])],
    )
    idp.start()
    warehouse = DatabricksServer(
        trusting(
            idp,
            DBX,
            users={"alice@example.com": {"name": "alice"}},
            echo_rejected_token=True,  # quotes the token it refuses in its 401
        )
    )
    try:
        warehouse.start()
        configure_service(
            hub, idp, work, connections={"lake": opaque_lake(warehouse)}, _log_level="DEBUG"
        )
        hub.start()
        yield hub, idp
    finally:
        hub.stop()
        warehouse.stop()
        idp.close()


def test_opaque_token_quoted_by_the_warehouse_is_redacted(
    hub: tuple[TestHub, TestIdP],
) -> None:
    h, _idp = hub
    token = h.add_user("alice")

    def service(method: str, path: str) -> httpx2.Response:
        return httpx2.request(
            method,
            f"{h.service_url}api/{path}",
            headers={"Authorization": f"token {token}"},
            json={},
            timeout=60,
            trust_env=False,
        )

    first = service("POST", "connections/lake/token").json()
    assert first["status"] == "consent_required", first
    callback = headless_login(first["authorize_url"], "alice")
    with hub_browser(h.public_url, "alice") as browser:
        page = browser.get(callback, follow_redirects=True)
    assert page.status_code == 200, page.text
    granted = service("POST", "connections/lake/token").json()
    access: str = granted["access_token"]
    assert "." not in access and len(access) >= 20, "the premise: an opaque access token"

    answer = service("POST", "connections/lake/test")
    assert answer.status_code >= 400 and "Rejected token [redacted]" in answer.text, answer.text
    assert access not in answer.text
    log = Path(h.log_path).read_text(errors="replace")
    assert "connections/lake/test" in log  # the service's log is in the hub's
    assert access not in log, "the token in the service's log"
