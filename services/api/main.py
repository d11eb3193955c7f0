"""api service: serves counts, occupancy, tracks, crossings, demographics and customers over HTTP.

Thin wiring: settings -> storage (SQLite or PostgreSQL, ``storage.backend``) +
live state (Redis, when ``live.redis_url`` is set) + customer gallery store ->
FastAPI app -> uvicorn. All logic lives in ``storelens.api``, ``storelens.storage``,
``storelens.storage.live`` and ``storelens.storage.gallery``.

Customers (``/v1/customers*``) are served when the reid stage writes a gallery
this process can read: always with ``storage.backend: postgres`` (the
distributed mode, where the reid service always runs), and with SQLite when
``faces.enabled`` (the embedded mode's gallery file). In the distributed mode
``DELETE /v1/customers/{id}`` also publishes a ``CustomerErasure`` to
``customer-erasures`` (waiting for the broker's acknowledgement) so the reid
service drops the customer from its in-memory index.
"""
from __future__ import annotations

import os
import sys


def main() -> int:
    from storelens.api import create_app
    from storelens.config import load_config
    from storelens.errors import StoreLensError
    from storelens.logs import setup_logging
    from storelens.storage import open_storage

    setup_logging(os.environ.get("STORELENS_LOG_LEVEL", "INFO"))
    storage = gallery_store = None
    try:
        config = load_config(os.environ.get("STORELENS_CONFIG", "/etc/storelens/site.yaml"))
        storage = open_storage(config.storage)
        distributed = config.storage.backend == "postgres"
        if distributed or config.faces.enabled:
            from storelens.storage import open_gallery_store

            gallery_store = open_gallery_store(config)
    except StoreLensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if storage is not None:
            storage.close()
        return 2
    live = on_erasure = None
    if config.live.redis_url:
        from storelens.storage.live import RedisLiveState

        live = RedisLiveState(config.live.redis_url)  # connects lazily; /readyz reports whether it answers
    if distributed:
        from storelens.runtime.workers import CustomerErasurePublisher

        on_erasure = CustomerErasurePublisher(config)  # connects on the first erasure
    from storelens.api import serve

    try:
        serve(create_app(config, storage, live, gallery_store=gallery_store, on_erasure=on_erasure),
              os.environ.get("STORELENS_API_HOST", config.api.host),
              int(os.environ.get("STORELENS_API_PORT", config.api.port)))
    finally:
        if on_erasure is not None:
            on_erasure.close()
        if live is not None:
            live.close()
        if gallery_store is not None:
            gallery_store.close()
        storage.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
