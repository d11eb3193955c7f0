"""analytics service: `tracks` -> PostgreSQL + Redis + `crossings`/`occupancy`/`counts` (+ dead letters);
with `rollup.enabled`, the store's KPI hours -> `store-kpis` (for the chain roll-up).

Thin wiring: settings -> storage + live state -> health/metrics server ->
topics -> faust app (``storelens.runtime.analytics_app``) -> faust worker until SIGTERM.

Env: STORELENS_CONFIG (site YAML), STORELENS_HTTP_PORT (health/metrics, default 9100),
STORELENS_LOG_LEVEL, STORELENS_ANALYTICS_AUTO_OFFSET_RESET (``earliest``, default, or
``latest``: where a new consumer group starts), STORELENS_FAUST_DATADIR (faust's scratch
directory, default ``/tmp/<app id>-data``; tables are in memory, nothing durable is kept there),
STORELENS_ANALYTICS_SINK_STALL_S (a sink write waiting longer: not ready, default 60), STORELENS_ANALYTICS_STUCK_S,
STORELENS_SHUTDOWN_TIMEOUT_S, STORELENS_WEBHOOK_CLOSE_S: read and checked once at start
(``storelens.runtime.analytics_app.AnalyticsSettings``; a value that is not valid stops it, exit code 2, naming it).
"""
from __future__ import annotations

import asyncio
import os
import sys


def main() -> int:
    from storelens.config import load_config
    from storelens.errors import StoreLensError, WaitStopped
    from storelens.logs import setup_logging
    from storelens.runtime.service import ServiceRuntime
    from storelens.storage import open_storage
    from storelens.storage.gallery import open_gallery_store_to_purge

    level = setup_logging(os.environ.get("STORELENS_LOG_LEVEL", "INFO"))  # (INFO for a name that is no level)
    storage = live = gallery = rt = None
    from storelens.runtime.analytics_app import AnalyticsSettings

    try:
        settings = AnalyticsSettings.from_env()  # the STORELENS_ANALYTICS_* variables above, once
    except StoreLensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        # after a wait for the schema, /healthz gives faust's first table recovery the startup probe's bound
        rt = ServiceRuntime("analytics", start_s=settings.stuck_s)
        config = load_config(os.environ.get("STORELENS_CONFIG", "/etc/storelens/site.yaml"))
        rt.add_check("tables", lambda: False)  # replaced by the app's checks once it exists
        rt.start()  # first: with storage.migrate: wait, /healthz is up (and /readyz names the schema) while it waits
        storage = open_storage(config.storage)
        # the face gallery's tables, when the store has them and faces.enabled is off (on: the reid service
        # purges its own gallery): kept to faces.reid.retention_days by the purge
        gallery = open_gallery_store_to_purge(config, storage)
        if config.live.redis_url:
            from storelens.storage.live import RedisLiveState

            live = RedisLiveState(config.live.redis_url)
        from storelens.runtime.analytics_app import build_app, ensure_app_topics, run_worker

        ensure_app_topics(config)
        if rt.stopping.is_set():  # SIGTERM while starting: nothing to stop yet
            return 0
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        chores = []
        if config.rollup.enabled:  # the store's KPI hours for the chain (store-kpis)
            from storelens.contract import topics
            from storelens.runtime.workers import TopicPublisher
            from storelens.storage.rollup import kpi_publisher

            chores.append(kpi_publisher(config, storage, TopicPublisher(config, topics.STORE_KPIS).publish))
        app = build_app(config, storage, live, rt, loop=loop, chores=chores, gallery=gallery, settings=settings)
        return run_worker(app, rt, loglevel=level)
    except WaitStopped:  # SIGTERM while waiting for the schema (storage.migrate: wait): nothing to stop yet
        return 0
    except StoreLensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if rt is not None:
            rt.stop()
        if live is not None:
            live.close()
        if gallery is not None:
            gallery.close()
        if storage is not None:
            storage.close()


if __name__ == "__main__":
    sys.exit(main())
