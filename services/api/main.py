"""api service: serves counts, occupancy, tracks and crossings over HTTP.

Thin wiring: settings -> storage (SQLite or PostgreSQL, ``storage.backend``) +
live state (Redis, when ``live.redis_url`` is set) -> FastAPI app -> uvicorn.
All logic lives in ``storelens.api``, ``storelens.storage`` and ``storelens.live``.
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
    try:
        config = load_config(os.environ.get("STORELENS_CONFIG", "/etc/storelens/site.yaml"))
        storage = open_storage(config.storage)
    except StoreLensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    live = None
    if config.live.redis_url:
        from storelens.live import RedisLiveState

        live = RedisLiveState(config.live.redis_url)  # connects lazily; /readyz reports whether it answers
    from storelens.api import serve

    try:
        serve(create_app(config, storage, live), os.environ.get("STORELENS_API_HOST", config.api.host),
              int(os.environ.get("STORELENS_API_PORT", config.api.port)))
    finally:
        if live is not None:
            live.close()
        storage.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
