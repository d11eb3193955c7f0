"""Operations: liveness (``/healthz``), readiness (``/readyz``) and Prometheus metrics (``/metrics``).

``/healthz`` runs on the event loop and touches nothing that blocks: a thread pool full of requests waiting for
a slow database never makes it miss the liveness probe's timeout (the kubelet would restart a healthy API).
``/readyz`` is the storage's answer only: the live state (Redis) holds live occupancy and the replicas' shared
sign-in limit, and the history, KPIs, occupancy (from storage) and sign-in (limited in memory) work without it, so a
Redis outage must not take every API pod out of its Service. The live state is reported in ``/readyz``'s body
(``live_state``) and as ``storelens_live_state_up`` in ``/metrics``, one check of both
(:meth:`~storelens.api.metrics.Metrics.live_state_up`) waiting at most twice ``live.timeout_s`` for its ping.
"""
from __future__ import annotations

import anyio
from fastapi import Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..deps import LiveDep, MetricsDep, StorageDep, api_router
from ..metrics import answers
from ..models import ReadyOut, Status
from ..security import require_metrics

router = api_router("ops", role=None)


@router.get("/healthz", response_model=Status, summary="Liveness")
async def healthz() -> Status:
    return Status(status="ok")


@router.get(
    "/readyz", response_model=ReadyOut, summary="Readiness (storage answers)",
    description="200 when the storage answers, else 503. With a live state (Redis), `live_state` says whether it "
                "answers (`ok`, `unavailable`); it does not decide readiness (see `storelens_live_state_up`).",
    responses={503: {"model": ReadyOut, "description": "Storage does not answer."}},
)
async def readyz(storage: StorageDep, live: LiveDep, metrics: MetricsDep) -> Response:
    ok = await anyio.to_thread.run_sync(answers, storage.ping)
    body = {"status": "ready" if ok else "unavailable"}
    if live is not None:
        live_ok = await anyio.to_thread.run_sync(metrics.live_state_up)  # at most 2 x live.timeout_s
        body["live_state"] = "ok" if live_ok else "unavailable"
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics", summary="Prometheus metrics (the metrics token, or an admin)",
            dependencies=[Depends(require_metrics)],
            response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics_endpoint(metrics: MetricsDep) -> Response:
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
