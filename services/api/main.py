"""api service: serves counts, occupancy, tracks and crossings over HTTP.

Thin wiring: settings -> storage -> FastAPI app -> uvicorn. All logic lives in
``storelens.api`` and ``storelens.storage``.
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
    import uvicorn

    # uvicorn handles SIGTERM: stops accepting, finishes in-flight requests, then returns.
    uvicorn.run(create_app(config, storage), host=os.environ.get("STORELENS_API_HOST", config.api.host),
                port=int(os.environ.get("STORELENS_API_PORT", config.api.port)), log_level="warning")
    storage.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
