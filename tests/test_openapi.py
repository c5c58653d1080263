"""docs/openapi.yaml describes exactly the routes the handlers serve, and is valid OpenAPI.

Each spec path is turned back into the regex its handler is registered with (path
parameters become named groups with the parameter's ``pattern``), so a route added,
removed or renamed, a changed name pattern, or a method added to a handler without a
spec update fails here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

SPEC_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"
METHODS = ("get", "post", "put", "delete", "patch")
HUB_PREFIX = "/services/connauth/"


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return dict(yaml.safe_load(SPEC_PATH.read_text()))


def _resolve(spec: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
    ref = obj.get("$ref")
    if ref is None:
        return obj
    node: Any = spec
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return _resolve(spec, dict(node))


def _param_patterns(spec: dict[str, Any], path_item: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    params = list(path_item.get("parameters", []))
    for method in METHODS:
        params += path_item.get(method, {}).get("parameters", [])
    for raw in params:
        p = _resolve(spec, raw)
        if p["in"] == "path":
            schema = _resolve(spec, p["schema"])
            out[p["name"]] = schema["pattern"]
    return out


def _route_regex(spec: dict[str, Any], path: str, path_item: dict[str, Any]) -> str:
    """The handler regex a spec path stands for."""
    patterns = _param_patterns(spec, path_item)

    def group(m: re.Match[str]) -> str:
        name = m.group(1)
        pattern = patterns[name]
        assert pattern.startswith("^") and pattern.endswith("$"), (path, name)
        return f"(?P<{name}>{pattern[1:-1]})"

    return re.sub(r"\{([a-z_]+)\}", group, path)


def _spec_routes(spec: dict[str, Any], host: str, prefix: str) -> dict[str, set[str]]:
    routes: dict[str, set[str]] = {}
    for path, item in spec["paths"].items():
        methods = {m.upper() for m in METHODS if m in item and host in item[m]["x-connauth-hosts"]}
        if methods:
            routes[prefix.rstrip("/") + _route_regex(spec, path, item)] = methods
    return routes


def _handler_methods(handler: type[Any]) -> set[str]:
    """The HTTP methods a handler class implements itself (not tornado's 405 stubs)."""
    from tornado import web

    out = set()
    for method in METHODS:
        impl = getattr(handler, method, None)
        if impl is not None and impl is not getattr(web.RequestHandler, method, None):
            out.add(method.upper())
    return out


def test_server_routes_match_the_spec(spec: dict[str, Any]) -> None:
    from jupyter_connauth.server.handlers import HANDLERS

    served = {regex: _handler_methods(h) for regex, h in HANDLERS}
    assert served == _spec_routes(spec, "server", "/")


def test_hub_routes_match_the_spec(spec: dict[str, Any]) -> None:
    pytest.importorskip("jupyterhub")
    from jupyter_connauth.hub.handlers import handlers

    served = {regex: _handler_methods(h) for regex, h in handlers(HUB_PREFIX)}
    # The spec's paths are relative to base_url; the hub service's base is /services/.
    assert served == _spec_routes(spec, "hub", "/services/")


def test_hub_mode_forwarding_covers_the_api() -> None:
    """A hub user server forwards connauth/api/* as is: one catch-all, no other routes."""
    from jupyter_connauth.server.forward import FORWARD_HANDLERS

    ((regex, _handler),) = FORWARD_HANDLERS
    assert regex.startswith("/connauth/api/(?P<path>")


def test_every_operation_documents_its_errors(spec: dict[str, Any]) -> None:
    for path, item in spec["paths"].items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            assert op.get("x-connauth-hosts"), (path, method)
            codes = set(op["responses"])
            assert any(c.startswith(("2", "3")) for c in codes), (path, method)
            if path.startswith("/connauth/api/"):
                assert "403" in codes, (path, method)  # every API route is authenticated
                for code in codes - {"204"}:
                    if code.startswith(("4", "5")):
                        resp = _resolve(spec, op["responses"][code])
                        schema = resp["content"]["application/json"]["schema"]
                        assert schema == {"$ref": "#/components/schemas/Error"}, (path, code)


def test_the_spec_is_valid_openapi_3_1(spec: dict[str, Any]) -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    assert spec["openapi"].startswith("3.1")
    validator.validate(spec)


def test_schemathesis_loads_the_spec() -> None:
    schemathesis = pytest.importorskip("schemathesis")
    schema = schemathesis.openapi.from_path(str(SPEC_PATH))
    operations = [op.ok() for op in schema.get_all_operations()]
    assert len(operations) >= 20
