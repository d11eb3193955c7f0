"""HTTP API: counts, occupancy, tracks, crossings, demographics and customers.

History comes from :class:`~storelens.storage.Storage`; customers (returning
visitors recognised by face, pseudonymous ids, no images) from a
:class:`~storelens.storage.GalleryStore` when faces are enabled.

Build the app with :func:`create_app` (importing this module does no work)
and serve it with any ASGI server. Interactive docs are at ``/docs``, the
schema at ``/openapi.json``, Prometheus metrics at ``/metrics``. Times are
milliseconds since the Unix epoch; ranges are half-open ``[start_ms, end_ms)``.

The package: :mod:`.app` (the factory), :mod:`.deps` (what routes depend on),
:mod:`.models` (response models), :mod:`.metrics` and :mod:`.routes` (one
router a resource).

Example:
    >>> from fastapi.testclient import TestClient
    >>> from storelens.config import parse_config
    >>> from storelens.storage import SqliteStorage
    >>> cfg = parse_config({"store": {"id": "s1"}, "cameras": [{"id": "cam-1", "source": "/tmp/x.mp4"}]})
    >>> client = TestClient(create_app(cfg, SqliteStorage(":memory:")))
    >>> client.get("/v1/occupancy/cam-1").json()["occupancy"]
    0
"""
from __future__ import annotations

from .app import create_app, serve
from .deps import CUSTOMER_ID_PATTERN, DAY_MS, FACES_DISABLED, MAX_POINTS, MAX_TS_MS, LiveState
from .routes.counts import MAX_BUCKET_S, MAX_BUCKETS
from .routes.customers import MAX_PAGE, MAX_PAGE_SIZE

__all__ = [
    "create_app", "serve", "LiveState",
    "CUSTOMER_ID_PATTERN", "DAY_MS", "FACES_DISABLED", "MAX_BUCKET_S", "MAX_BUCKETS", "MAX_PAGE",
    "MAX_PAGE_SIZE", "MAX_POINTS", "MAX_TS_MS",
]
