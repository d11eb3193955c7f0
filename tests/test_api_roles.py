"""Every route of the app against every role: allowed or denied as :data:`ROLE_MATRIX` says.

A route missing from the matrix fails the suite, so a new route cannot ship without a decided
guard. ``None``: public (the probes, the sign-in form). Roles: viewer < manager < admin.
"""
from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from storelens.api import create_app
from storelens.api.testing import api_key_for
from storelens.config import parse_config
from storelens.config.auth import ROLES, role_rank
from storelens.storage import SqliteStorage

V, M, A = "viewer", "manager", "admin"
#: (method, path) -> the least role allowed; ``None`` = public.
ROLE_MATRIX: dict[tuple[str, str], str | None] = {
    ("GET", "/healthz"): None, ("GET", "/readyz"): None, ("GET", "/metrics"): A,
    ("POST", "/v1/auth/login"): None, ("POST", "/v1/auth/logout"): None, ("GET", "/v1/auth/me"): V,
    ("GET", "/v1/users"): A, ("POST", "/v1/users"): A, ("DELETE", "/v1/users/{username}"): A,
    ("GET", "/v1/api-keys"): A, ("POST", "/v1/api-keys"): A, ("DELETE", "/v1/api-keys/{key_id}"): A,
    ("GET", "/v1/audit"): A,
    ("GET", "/v1/cameras"): V, ("GET", "/v1/counts"): V,
    ("GET", "/v1/occupancy"): V, ("GET", "/v1/occupancy/{camera_id}"): V,
    # individual trajectories and crossings: not aggregates
    ("GET", "/v1/cameras/{camera_id}/tracks"): M, ("GET", "/v1/cameras/{camera_id}/crossings"): M,
    ("GET", "/v1/demographics"): V,
    # customer identities: managers see them, only admins erase
    ("GET", "/v1/customers"): M, ("GET", "/v1/customers/{customer_id}"): M,
    ("DELETE", "/v1/customers/{customer_id}"): A,
    ("GET", "/v1/zones"): V, ("GET", "/v1/zones/stats"): V, ("GET", "/v1/zones/events"): M,
    ("GET", "/v1/queues"): V, ("GET", "/v1/interest"): V,
    ("GET", "/v1/journeys"): M, ("GET", "/v1/journeys/{journey_id}"): M, ("GET", "/v1/flows"): V,
    ("GET", "/v1/paths/top"): V,
    ("GET", "/v1/cameras/{camera_id}/heatmap"): V, ("GET", "/v1/cameras/{camera_id}/snapshot"): V,
    ("GET", "/v1/heatmap"): V,
    ("POST", "/v1/transactions"): M, ("GET", "/v1/kpis"): V, ("GET", "/v1/stores"): V, ("GET", "/v1/chain/kpis"): V,
    ("GET", "/v1/alerts"): V, ("POST", "/v1/alerts/{alert_id}/ack"): M, ("POST", "/v1/alerts/{alert_id}/resolve"): M,
    ("GET", "/v1/live"): V,
    ("GET", "/v1/site"): V,
    ("PUT", "/v1/site/cameras/{camera_id}"): A, ("DELETE", "/v1/site/cameras/{camera_id}"): A,
    ("PUT", "/v1/site/cameras/{camera_id}/lines/{line_id}"): A,
    ("DELETE", "/v1/site/cameras/{camera_id}/lines/{line_id}"): A,
    ("PUT", "/v1/site/cameras/{camera_id}/zones/{zone_id}"): A,
    ("DELETE", "/v1/site/cameras/{camera_id}/zones/{zone_id}"): A,
    ("PUT", "/v1/site/alerts/rules/{rule_id}"): A, ("DELETE", "/v1/site/alerts/rules/{rule_id}"): A,
    # counting audits: managers sample, watch (pixels, heads blurred) and tally; everyone reads the results
    ("POST", "/v1/audits/sample"): M, ("GET", "/v1/audits/clips/{camera_id}/{line_id}/{crossing_ts_ms}/frames/{index}.jpg"): M,
    ("POST", "/v1/audits"): M, ("GET", "/v1/audits"): V,
}
#: Endless streams: only their refusals are requested here (tests/test_api_live.py reads them).
STREAMS = {("GET", "/v1/live")}
#: Values for path parameters (unknown ids are fine: the answer is then 404, which is "allowed").
PATH_VALUES = {"camera_id": "cam-1", "journey_id": "1@cam-1", "customer_id": "cust-x", "username": "nobody"}


@pytest.fixture(scope="module")
def app():
    cfg = parse_config({"store": {"id": "s1"}, "cameras": [{"id": "cam-1", "source": "/tmp/x.mp4"}]})
    return create_app(cfg, SqliteStorage(":memory:"))


def _api_routes(routes):
    """The APIRoutes of the app, also inside included routers (FastAPI includes them lazily)."""
    for r in routes:
        if isinstance(r, APIRoute):
            yield r
        elif hasattr(r, "original_router"):
            yield from _api_routes(r.original_router.routes)


def _operations(app) -> list[tuple[str, str, APIRoute]]:
    return [(method, r.path, r) for r in _api_routes(app.routes) for method in sorted(r.methods)]


def _declared_role(route: APIRoute) -> str | None:
    """The strictest role guard among the route's dependencies (router-level ones included)."""
    roles, todo = [], list(route.dependant.dependencies)
    while todo:
        dep = todo.pop()
        if getattr(dep.call, "role", None) is not None:
            roles.append(dep.call.role)
        todo.extend(dep.dependencies)
    return max(roles, key=role_rank) if roles else None


def test_every_route_has_a_decided_role(app) -> None:
    ops = {(m, p): r for m, p, r in _operations(app)}
    assert sorted(set(ops) - set(ROLE_MATRIX)) == [], "new routes: add them to ROLE_MATRIX with their least role"
    assert sorted(set(ROLE_MATRIX) - set(ops)) == [], "routes gone: drop them from ROLE_MATRIX"
    declared = {op: _declared_role(r) for op, r in ops.items()}
    assert {op: role for op, role in declared.items() if role != ROLE_MATRIX[op]} == {}


def _url(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m_: PATH_VALUES.get(m_.group(1), "x1"), path)


@pytest.mark.parametrize("who", [None, *ROLES])
def test_every_route_allows_and_denies_each_role(app, who: str | None) -> None:
    headers = {} if who is None else {"Authorization": f"Bearer {api_key_for(app, who)}"}
    client = TestClient(app, headers=headers)
    wrong = []
    for method, path, _ in _operations(app):
        if (method, path) == ("POST", "/v1/auth/login"):
            continue  # the form is public; its own test checks wrong passwords and the rate limit
        need = ROLE_MATRIX[(method, path)]
        if (method, path) in STREAMS and (need is None or (who is not None and role_rank(who) >= role_rank(need))):
            continue
        kwargs = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
        status = client.request(method, _url(path), **kwargs).status_code
        if need is None:
            ok = status not in (401, 403)
        elif who is None:
            ok = status == 401
        elif role_rank(who) < role_rank(need):
            ok = status == 403
        else:
            ok = status not in (401, 403)
        if not ok:
            wrong.append((method, path, need, status))
    assert wrong == [], f"as {who or 'anonymous'}: (method, path, least role, status)"


def test_metrics_token_reads_metrics_only(monkeypatch) -> None:
    monkeypatch.setenv("STORELENS_METRICS_TOKEN", "prometheus-scrape-token-123")
    cfg = parse_config({"store": {"id": "s1"}, "cameras": [{"id": "cam-1", "source": "/tmp/x.mp4"}]})
    client = TestClient(create_app(cfg, SqliteStorage(":memory:")),
                        headers={"Authorization": "Bearer prometheus-scrape-token-123"})
    assert client.get("/metrics").status_code == 200
    assert client.get("/v1/cameras").status_code == 401
    assert TestClient(client.app, headers={"Authorization": "Bearer wrong"}).get("/metrics").status_code == 401
