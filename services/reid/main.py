"""reid service: `person-crops` -> `customer-matches`; `customer-erasures` -> gallery deletions.

Thin wiring: settings -> health/metrics server -> gallery (store: PostgreSQL with
``storage.backend: postgres``, index rebuilt from it) + face models (ReidStage)
-> Kafka run loop (``storelens.workers.ReidWorker``) until SIGTERM.

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
    gallery = None
    try:
        config = load_config(os.environ.get("STORELENS_CONFIG", "/etc/storelens/site.yaml"))
        rt = ServiceRuntime("reid")
        rt.add_check("model", lambda: False)  # not ready until the models and the gallery are loaded
        rt.start()
        from storelens.faces.stages import ReidStage, open_gallery
        from storelens.workers import ReidWorker

        gallery = open_gallery(config)  # connects to the gallery store and rebuilds the index from it
        stage = ReidStage(config, gallery)  # loads the face detector, quality gate and embedder
        if rt.stopping.is_set():
            return 0
        return ReidWorker(config, rt, stage).run()
    except StoreLensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if gallery is not None and gallery.store is not None:
            gallery.store.close()


if __name__ == "__main__":
    sys.exit(main())
