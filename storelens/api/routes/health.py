"""Operations: liveness (``/healthz``), readiness (``/readyz``) and Prometheus metrics (``/metrics``)."""
from __future__ import annotations

from fastapi import Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..deps import LiveDep, MetricsDep, StorageDep, api_router
from ..models import Status
from ..security import require_metrics

router = api_router("ops", role=None)


@router.get("/healthz", response_model=Status, summary="Liveness")
def healthz() -> Status:
    return Status(status="ok")


@router.get(
    "/readyz", response_model=Status, summary="Readiness (storage and live state answer)",
    responses={503: {"model": Status, "description": "Storage (or the live state) does not answer."}},
)
def readyz(storage: StorageDep, live: LiveDep) -> Response:
    try:
        ok = storage.ping() and (live is None or live.ping())
    except Exception:  # a broken backend means "not ready", never a 500
        ok = False
    if ok:
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "unavailable"}, status_code=503)


@router.get("/metrics", summary="Prometheus metrics (the metrics token, or an admin)",
            dependencies=[Depends(require_metrics)],
            response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics_endpoint(metrics: MetricsDep) -> Response:
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
