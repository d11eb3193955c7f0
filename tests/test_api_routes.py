"""The API's structure: one router module a resource, every route in exactly one of them, the same paths;
and the precedence of a malformed request's 422 over the 404/503 of the route's dependencies."""
from __future__ import annotations

import importlib
import pkgutil
from collections import Counter

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

import storelens.api.routes as routes_pkg
from storelens.api.testing import signed_in_client
from storelens.api import create_app
from storelens.api.deps import ApiContext, ApiRoute, CameraDep, api_router
from storelens.api.metrics import Metrics
from storelens.api.security import Authenticator
from storelens.config.auth import AuthConfig
from storelens.api.routes import ROUTERS
from storelens.config import parse_config
from storelens.storage import SqliteStorage

#: The operations of the API, in the order of the OpenAPI schema.
OPERATIONS = [
    ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"),
    ("POST", "/v1/auth/login"), ("POST", "/v1/auth/logout"), ("GET", "/v1/auth/me"),
    ("GET", "/v1/users"), ("POST", "/v1/users"), ("DELETE", "/v1/users/{username}"),
    ("GET", "/v1/api-keys"), ("POST", "/v1/api-keys"), ("DELETE", "/v1/api-keys/{key_id}"), ("GET", "/v1/audit"),
    ("GET", "/v1/cameras"), ("GET", "/v1/counts"),
    ("GET", "/v1/occupancy"), ("GET", "/v1/occupancy/{camera_id}"),
    ("GET", "/v1/cameras/{camera_id}/tracks"), ("GET", "/v1/cameras/{camera_id}/crossings"),
    ("GET", "/v1/demographics"),
    ("GET", "/v1/customers"), ("GET", "/v1/customers/{customer_id}"), ("DELETE", "/v1/customers/{customer_id}"),
    ("GET", "/v1/zones"), ("GET", "/v1/zones/stats"), ("GET", "/v1/zones/events"), ("GET", "/v1/queues"),
    ("GET", "/v1/interest"),
    ("GET", "/v1/journeys"), ("GET", "/v1/journeys/{journey_id}"), ("GET", "/v1/flows"), ("GET", "/v1/paths/top"),
    ("GET", "/v1/cameras/{camera_id}/heatmap"), ("GET", "/v1/cameras/{camera_id}/snapshot"), ("GET", "/v1/heatmap"),
    ("POST", "/v1/transactions"), ("GET", "/v1/kpis"), ("GET", "/v1/stores"), ("GET", "/v1/chain/kpis"),
    ("GET", "/v1/alerts"), ("POST", "/v1/alerts/{alert_id}/ack"), ("POST", "/v1/alerts/{alert_id}/resolve"),
    ("GET", "/v1/live"),
    ("GET", "/v1/site"), ("PUT", "/v1/site/cameras/{camera_id}"), ("DELETE", "/v1/site/cameras/{camera_id}"),
    ("PUT", "/v1/site/cameras/{camera_id}/lines/{line_id}"), ("DELETE", "/v1/site/cameras/{camera_id}/lines/{line_id}"),
    ("PUT", "/v1/site/cameras/{camera_id}/zones/{zone_id}"), ("DELETE", "/v1/site/cameras/{camera_id}/zones/{zone_id}"),
    ("PUT", "/v1/site/alerts/rules/{rule_id}"), ("DELETE", "/v1/site/alerts/rules/{rule_id}"),
    ("POST", "/v1/audits/sample"), ("GET", "/v1/audits/clips/{camera_id}/{line_id}/{crossing_ts_ms}/frames/{index}.jpg"),
    ("POST", "/v1/audits"), ("GET", "/v1/audits"),
]


def _router_modules() -> dict[str, object]:
    return {info.name: importlib.import_module(f"{routes_pkg.__name__}.{info.name}")
            for info in pkgutil.iter_modules(routes_pkg.__path__)}


def _operations(router) -> list[tuple[str, str]]:
    return [(method, r.path) for r in router.routes if isinstance(r, APIRoute) for method in sorted(r.methods)]


def test_every_route_is_in_exactly_one_router_module() -> None:
    modules = _router_modules()
    assert set(modules) == {"health", "auth", "admin", "cameras", "counts", "occupancy", "tracks", "crossings", "demographics",
                            "customers", "zones", "journeys", "heatmap", "business", "chain", "alerts",
                            "live", "site", "audit"}
    for name, mod in modules.items():
        assert mod.__doc__ and mod.__doc__.strip(), f"routes/{name}.py has no docstring"
    # the app includes every module's router, once
    assert Counter(id(r) for r in ROUTERS) == Counter(id(mod.router) for mod in modules.values())
    owners = Counter(op for mod in modules.values() for op in _operations(mod.router))
    assert sorted(owners) == sorted(OPERATIONS)
    assert {op: n for op, n in owners.items() if n != 1} == {}


def test_openapi_lists_the_operations_of_the_routers_in_order() -> None:
    cfg = parse_config({"store": {"id": "s1"}, "cameras": [{"id": "cam-1", "source": "/tmp/x.mp4"}]})
    spec = create_app(cfg, SqliteStorage(":memory:")).openapi()
    listed = [(method.upper(), path) for path, ops in spec["paths"].items() for method in ops]
    assert sorted(listed) == sorted(OPERATIONS)
    assert list(spec["paths"]) == list(dict.fromkeys(path for _, path in OPERATIONS))
    assert [op for router in ROUTERS for op in _operations(router)] == OPERATIONS


def test_every_route_raises_the_refusals_of_its_dependencies() -> None:
    # CameraDep and GalleryDep return their 404/503 instead of raising it: only an ApiRoute raises it
    assert {type(r) for router in ROUTERS for r in router.routes} == {ApiRoute}


@pytest.mark.parametrize(("path", "params", "status"), [
    pytest.param("/v1/cameras/nope/tracks", {"limit_points": 0}, 422, id="bad-param-unknown-camera"),
    pytest.param("/v1/cameras/nope/crossings", {"start_ms": -1}, 422, id="bad-start-unknown-camera"),
    pytest.param("/v1/cameras/nope/crossings", {"start_ms": 5, "end_ms": 5}, 404, id="empty-range-unknown-camera"),
    pytest.param("/v1/occupancy/nope", {}, 404, id="unknown-camera"),
    pytest.param("/v1/customers", {"page": 0}, 422, id="bad-page-faces-off"),
    pytest.param("/v1/customers", {"start_ms": 5, "end_ms": 5}, 503, id="empty-range-faces-off"),
    pytest.param("/v1/customers/-bad", {}, 422, id="bad-id-faces-off"),
    pytest.param("/v1/customers/cust-a", {}, 503, id="faces-off"),
])
def test_a_malformed_request_is_422_before_404_or_503(path: str, params: dict, status: int) -> None:
    cfg = parse_config({"store": {"id": "s1"}, "cameras": [{"id": "cam-1", "source": "/tmp/x.mp4"}]})
    with signed_in_client(create_app(cfg, SqliteStorage(":memory:"))) as client:
        assert client.get(path, params=params).status_code == status


def test_api_route_serves_async_endpoints_too() -> None:
    router = api_router("t", role="viewer")

    @router.get("/t/{camera_id}")
    async def t(camera: CameraDep, n: int = 1) -> dict:
        return {"camera": camera.id, "n": n}

    app = FastAPI()
    storage = SqliteStorage(":memory:")
    app.state.context = ApiContext(config=parse_config({"store": {"id": "s1"}, "cameras": [
        {"id": "cam-1", "source": "/tmp/x.mp4"}]}), storage=storage, metrics=Metrics(),
        auth=Authenticator(AuthConfig(), storage))
    app.include_router(router)
    with signed_in_client(app) as client:
        assert client.get("/t/cam-1", params={"n": 2}).json() == {"camera": "cam-1", "n": 2}
        assert client.get("/t/nope").status_code == 404
        assert client.get("/t/nope", params={"n": "x"}).status_code == 422
