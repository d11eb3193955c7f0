"""The API app serves the built dashboard (storelens.api.dashboard): index at /, hashed assets,
the single-page app's routes, and never in place of an API answer."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from storelens.api import create_app
from storelens.config import parse_config
from storelens.storage import SqliteStorage

INDEX = "<!doctype html><title>StoreLens</title><div id=root></div>"


@pytest.fixture()
def client(tmp_path, monkeypatch):
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text(INDEX)
    (tmp_path / "assets" / "index-abc123.js").write_text("console.log(1)")
    (tmp_path / "favicon.svg").write_text("<svg/>")
    (tmp_path.parent / "secret.txt").write_text("not for the web")
    monkeypatch.setenv("STORELENS_DASHBOARD_DIR", str(tmp_path))
    cfg = parse_config({"store": {"id": "s1"}, "cameras": [{"id": "cam-1", "source": "/tmp/x.mp4"}]})
    return TestClient(create_app(cfg, SqliteStorage(":memory:")))


@pytest.mark.parametrize(("method", "path", "status", "body", "cache"), [
    ("GET", "/", 200, INDEX, "no-cache"),
    ("GET", "/counts", 200, INDEX, "no-cache"),  # a route of the single-page app
    ("GET", "/camera/anything", 200, INDEX, "no-cache"),
    ("GET", "/assets/index-abc123.js", 200, "console.log(1)", "public, max-age=31536000, immutable"),
    ("GET", "/favicon.svg", 200, "<svg/>", "no-cache"),
    ("GET", "/assets/missing.js", 404, '{"detail":"Not Found"}', None),
    ("GET", "/v1/nope", 404, '{"detail":"Not Found"}', None),  # the API's own 404
    ("GET", "/v1/occupancy/nope", 401, None, None),  # API routes answer as before (sign-in first)
    ("GET", "/healthz", 200, '{"status":"ok"}', None),
    ("GET", "/%2e%2e/secret.txt", 200, INDEX, "no-cache"),  # no file outside the dist dir
    ("POST", "/", 404, '{"detail":"Not Found"}', None),  # only GET/HEAD are the dashboard's
    ("POST", "/v1/cameras", 405, None, None),  # 405 with Allow, unchanged
], ids=lambda v: v if isinstance(v, str) else None)
def test_dashboard_routes(client, method, path, status, body, cache):
    r = client.request(method, path)
    assert r.status_code == status, r.text
    if body is not None:
        assert r.text == body
    if cache is not None:
        assert r.headers["cache-control"] == cache
    if status == 405:
        assert "GET" in r.headers["allow"]


def test_without_a_build_the_page_says_how_to_make_it(tmp_path, monkeypatch):
    monkeypatch.setenv("STORELENS_DASHBOARD_DIR", str(tmp_path / "dist"))
    cfg = parse_config({"store": {"id": "s1"}, "cameras": [{"id": "cam-1", "source": "/tmp/x.mp4"}]})
    r = TestClient(create_app(cfg, SqliteStorage(":memory:"))).get("/")
    assert r.status_code == 503
    assert "make dashboard" in r.text and str(tmp_path / "dist") in r.text
