"""attributes service (stub until the faces issue): consumes its input topic, publishes nothing yet.

It runs like every other service (health, readiness, metrics, consumer group,
SIGTERM), so the deployment and its monitoring are real today.
"""
from __future__ import annotations

import os
import sys


def main() -> int:
    from storelens import topics
    from storelens.config import load_config
    from storelens.errors import StoreLensError
    from storelens.logs import setup_logging
    from storelens.service import ServiceRuntime
    from storelens.workers import run_consumer_stub

    setup_logging(os.environ.get("STORELENS_LOG_LEVEL", "INFO"))
    try:
        config = load_config(os.environ.get("STORELENS_CONFIG", "/etc/storelens/site.yaml"))
        rt = ServiceRuntime("attributes")
        rt.start()
        return run_consumer_stub(config, rt, "attributes", [topics.PERSON_CROPS])
    except StoreLensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
