"""chain-rollup service: every store's `<prefix>store-kpis` -> the chain's PostgreSQL (`chain_kpi_hours`, `chain_stores`).

Thin wiring: the chain's site config (a `chain:` section, no cameras) -> the history store
(PostgreSQL; with ``storage.migrate: wait``, as in k8s, it waits for ``storelens db upgrade`` to bring the
tables to this release's revision) -> the registered stage ``chain-rollup``
(``storelens.stages.rollup.ChainRollupStage``) under the runner on Kafka, subscribed by regex
(``chain.topic_pattern``), records written by the runner's history sink, until SIGTERM.
Env: STORELENS_CONFIG (site YAML), STORELENS_HTTP_PORT (health/metrics, default 9100), STORELENS_LOG_LEVEL.
"""
from __future__ import annotations

import os
import sys


def main() -> int:
    from storelens.config import load_config
    from storelens.errors import StoreLensError, WaitStopped
    from storelens.logs import setup_logging
    from storelens.runtime.service import ServiceRuntime
    from storelens.runtime.workers import chain_rollup_worker
    from storelens.stages.registry import build_stage
    from storelens.storage import open_storage

    setup_logging(os.environ.get("STORELENS_LOG_LEVEL", "INFO"))
    storage = rt = None
    try:
        rt = ServiceRuntime("chain-rollup")
        config = load_config(os.environ.get("STORELENS_CONFIG", "/etc/storelens/site.yaml"))
        rt.start()  # first: with storage.migrate: wait, /healthz is up (and /readyz names the schema) while it waits
        storage = open_storage(config.storage)
        if rt.stopping.is_set():
            return 0
        return chain_rollup_worker(config, rt, build_stage("chain-rollup", config), storage).run()
    except WaitStopped:  # SIGTERM while waiting for the schema (storage.migrate: wait): nothing to stop yet
        return 0
    except StoreLensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if rt is not None:
            rt.stop()
        if storage is not None:
            storage.close()


if __name__ == "__main__":
    sys.exit(main())
