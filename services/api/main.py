"""api service: serves counts, occupancy, tracks, crossings, demographics and customers over HTTP.

Thin wiring: settings -> storage (SQLite or PostgreSQL, ``storage.backend``) +
live state (Redis, when ``live.redis_url`` is set) + customer gallery store (+ the Kafka
publishers in the distributed mode) -> FastAPI app -> uvicorn, in this process or in
``api.workers`` uvicorn worker processes, each building the same app
(``storelens.api.server.build_app``). All logic lives in ``storelens.api``, ``storelens.storage``,
``storelens.storage.live`` and ``storelens.storage.gallery``.

Customers (``/v1/customers*``) are served when the reid stage writes a gallery
this process can read: always with ``storage.backend: postgres`` (the
distributed mode, where the reid service always runs), and with SQLite when
``faces.enabled`` (the embedded mode's gallery file). In the distributed mode
``DELETE /v1/customers/{id}`` also publishes a ``CustomerErasure`` to
``customer-erasures`` (waiting for the broker's acknowledgement) so the reid
service drops the customer from its in-memory index; each site version edited at
``/v1/site`` goes to the compacted ``site-config`` topic (the analytics service applies
it without a restart) and each posted sale to ``pos-transactions``. With SQLite (the
embedded mode) the ``CustomerErasure`` goes through the history's ``outbox`` table to a
running embedded pipeline's faces stage, and this process runs the retention purge
(``privacy.retention``) while no embedded pipeline runs on the history
(:func:`storelens.runtime.retention.api_retention`). The wiring is
:func:`storelens.api.server.build_app`'s.

Sign-in: the first admin comes from ``$STORELENS_ADMIN_USERNAME`` / ``$STORELENS_ADMIN_PASSWORD``
(a Kubernetes Secret), sessions are signed with ``$STORELENS_JWT_SECRET``, Prometheus reads
``/metrics`` with ``$STORELENS_METRICS_TOKEN``.
"""
from __future__ import annotations

import os
import sys


def main() -> int:
    from storelens.api.server import serve_site
    from storelens.errors import StoreLensError
    from storelens.logs import setup_logging
    from storelens.runtime.service import port_from_env

    setup_logging(os.environ.get("STORELENS_LOG_LEVEL", "INFO"))
    try:
        # one process, or api.workers uvicorn worker processes: each builds its app (storage, live state,
        # gallery, Kafka publishers) with storelens.api.server.build_app
        return serve_site(os.environ.get("STORELENS_CONFIG", "/etc/storelens/site.yaml"),
                          os.environ.get("STORELENS_API_HOST"), port_from_env("STORELENS_API_PORT"),
                          port_from="STORELENS_API_PORT")
    except StoreLensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
