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

import contextlib
import json
import threading
import time
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from storelens.config.auth import Role

if TYPE_CHECKING:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from uvicorn import Server


def api_key_for(app: FastAPI, role: Role = "admin") -> str:
    """A new API key of ``role`` for ``app`` (created in the app's store)."""
    return app.state.context.auth.create_api_key(f"test client ({role})", role, "testing")[1]


def signed_in_client(app: FastAPI, role: Role = "admin", **kwargs: Any) -> TestClient:
    """A ``TestClient`` of ``app`` that sends a new API key of ``role`` with every request."""
    from fastapi.testclient import TestClient

    return TestClient(app, headers={"Authorization": f"Bearer {api_key_for(app, role)}"}, **kwargs)


@contextlib.contextmanager
def served_app(app: FastAPI, *, start_timeout_s: float = 30.0, **uvicorn_kw: Any) -> Iterator[tuple[str, Server]]:
    """Serve ``app`` with uvicorn on a free local port in a thread, as :func:`storelens.api.app.serve` runs it
    (``X-Forwarded-For`` of ``api.forwarded_allow_ips`` only); yields the base URL and the server; stops it at the
    end. ``uvicorn_kw`` overrides uvicorn settings (e.g. ``timeout_graceful_shutdown=2``).

    Raises ``RuntimeError`` when the server has not started within ``start_timeout_s`` (a port taken, a failing
    lifespan).
    """
    import uvicorn

    from storelens.api.app import uvicorn_config
    from storelens.runtime.localdeploy import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, **uvicorn_kw))
    thread = threading.Thread(target=server.run, daemon=True, name=f"uvicorn-{port}")
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{port}")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def sse_events(lines: Iterable[str], *, keepalives: bool = False) -> Iterator[dict[str, Any]]:
    """The Server-Sent Events of a stream's text lines (``httpx.Response.iter_lines()``): ``{"event": name, "data":
    parsed JSON}`` per event and, with ``keepalives``, ``{"comment": text}`` per keepalive comment line.

    Example:
        >>> list(sse_events(["event: counts", 'data: {"in": 1}', "", ": keepalive", ""], keepalives=True))
        [{'event': 'counts', 'data': {'in': 1}}, {'comment': 'keepalive'}]
    """
    event: dict[str, Any] = {}
    for line in lines:
        if line.startswith(":"):
            if keepalives:
                yield {"comment": line[1:].strip()}
        elif line.startswith("event: "):
            event["event"] = line[7:]
        elif line.startswith("data: "):
            event["data"] = json.loads(line[6:])
        elif not line and event:
            yield event
            event = {}
