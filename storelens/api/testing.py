"""Signed-in test clients: every route but the probes needs credentials (:mod:`storelens.api.security`).

Example:
    >>> from storelens.api import create_app
    >>> from storelens.config import parse_config
    >>> from storelens.storage import SqliteStorage
    >>> cfg = parse_config({"store": {"id": "s1"}, "cameras": [{"id": "cam-1", "source": "/tmp/x.mp4"}]})
    >>> client = signed_in_client(create_app(cfg, SqliteStorage(":memory:")), role="viewer")
    >>> client.get("/v1/auth/me").json()["role"], client.get("/v1/users").status_code
    ('viewer', 403)
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from storelens.config.auth import Role

if TYPE_CHECKING:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient


def api_key_for(app: FastAPI, role: Role = "admin") -> str:
    """A new API key of ``role`` for ``app`` (created in the app's store)."""
    return app.state.context.auth.create_api_key(f"test client ({role})", role, "testing")[1]


def signed_in_client(app: FastAPI, role: Role = "admin", **kwargs: Any) -> TestClient:
    """A ``TestClient`` of ``app`` that sends a new API key of ``role`` with every request."""
    from fastapi.testclient import TestClient

    return TestClient(app, headers={"Authorization": f"Bearer {api_key_for(app, role)}"}, **kwargs)
