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
    import contextlib
    import signal

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(
        create_app(config, storage, live), host=os.environ.get("STORELENS_API_HOST", config.api.host),
        port=int(os.environ.get("STORELENS_API_PORT", config.api.port)), log_level="warning"))

    # SIGTERM/SIGINT: stop accepting, finish in-flight requests, close storage, exit 0
    # (uvicorn's own handler would re-raise the signal after shutting down).
    def _stop(_signum, _frame) -> None:
        server.should_exit = True

    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        server.run()
    finally:
        if live is not None:
            live.close()
        storage.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
