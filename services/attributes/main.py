"""attributes service: `person-crops` -> `face-observations` + `track-attributes` (+ dead letters).

Thin wiring: settings -> health/metrics server -> face models (AttributesStage)
-> Kafka run loop (``storelens.workers.AttributesWorker``) until SIGTERM.

Env: STORELENS_CONFIG (site YAML), STORELENS_HTTP_PORT (health/metrics, default 9100),
STORELENS_LOG_LEVEL.
"""
from __future__ import annotations

import os
import sys


def main() -> int:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see storelens/cli.py
    from storelens.config import load_config
    from storelens.errors import StoreLensError
    from storelens.logs import setup_logging
    from storelens.service import ServiceRuntime

    setup_logging(os.environ.get("STORELENS_LOG_LEVEL", "INFO"))
    try:
        config = load_config(os.environ.get("STORELENS_CONFIG", "/etc/storelens/site.yaml"))
        rt = ServiceRuntime("attributes")
        rt.add_check("model", lambda: False)  # not ready until the models are loaded
        rt.start()
        from storelens.faces.stages import AttributesStage
        from storelens.workers import AttributesWorker

        stage = AttributesStage(config)  # loads the face detector, age/gender and emotion models
        if rt.stopping.is_set():
            return 0
        return AttributesWorker(config, rt, stage).run()
    except StoreLensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
