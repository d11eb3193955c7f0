"""ingest service: cameras -> `frames` topic. Settings -> dependencies -> run loop.

Env: STORELENS_CONFIG (site YAML), STORELENS_HTTP_PORT (health/metrics, default 9100).
"""
from __future__ import annotations

import os
import sys


def main() -> int:
    from storelens.config import load_config
    from storelens.errors import StoreLensError
    from storelens.logs import setup_logging
    from storelens.runtime.service import ServiceRuntime
    from storelens.runtime.workers import run_ingest

    setup_logging(os.environ.get("STORELENS_LOG_LEVEL", "INFO"))
    try:
        config = load_config(os.environ.get("STORELENS_CONFIG", "/etc/storelens/site.yaml"))
        rt = ServiceRuntime("ingest")
        rt.start()
        return run_ingest(config, rt)
    except StoreLensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
