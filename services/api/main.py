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
service drops the customer from its in-memory index; each site version edited at
``/v1/site`` goes to the compacted ``site-config`` topic (the analytics service applies
it without a restart) and each posted sale to ``pos-transactions``.

Sign-in: the first admin comes from ``$STORELENS_ADMIN_USERNAME`` / ``$STORELENS_ADMIN_PASSWORD``
(a Kubernetes Secret), sessions are signed with ``$STORELENS_JWT_SECRET``, Prometheus reads
``/metrics`` with ``$STORELENS_METRICS_TOKEN``.
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
        if config.api.workers > 1:  # uvicorn worker processes, each with its own app (storelens.api.server)
            from storelens.api.server import serve_site

            port = os.environ.get("STORELENS_API_PORT")
            return serve_site(os.environ.get("STORELENS_CONFIG", "/etc/storelens/site.yaml"),
                              os.environ.get("STORELENS_API_HOST"), int(port) if port else None)
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
    live = None
    publishers: list = []
    if config.live.redis_url:
        from storelens.storage.live import RedisLiveState

        live = RedisLiveState(config.live.redis_url)  # connects lazily; /readyz reports whether it answers
    hooks: dict = {}
    if distributed:
        from storelens.runtime.workers import (
            CustomerErasurePublisher, PosTransactionPublisher, SiteConfigPublisher,
        )

        # each connects on first use
        hooks = {"on_erasure": CustomerErasurePublisher(config), "on_site_change": SiteConfigPublisher(config),
                 "on_transactions": PosTransactionPublisher(config)}
        publishers = list(hooks.values())
    from storelens.api import serve

    try:
        serve(create_app(config, storage, live, gallery_store=gallery_store, **hooks),
              os.environ.get("STORELENS_API_HOST", config.api.host),
              int(os.environ.get("STORELENS_API_PORT", config.api.port)))
    finally:
        for publisher in publishers:
            publisher.close()
        if live is not None:
            live.close()
        if gallery_store is not None:
            gallery_store.close()
        storage.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
