"""Live push for the dashboard (``/v1/live``): Server-Sent Events of the store's counts and of alerts.

One :class:`LiveHub` per app reads the live numbers once per ``interval_s`` (the live state in
the distributed mode, storage in the embedded one: the same :func:`~.occupancy.cameras_occupancy` and
:func:`~.occupancy.store_totals_of` as ``/v1/occupancy``, so the numbers equal the API's: the store's are the
``store_occupancy`` alert's, one row when ``store.entrance_lines`` is set; rows older than the daily reset are
0) and fans them out to every connected dashboard: 50 open dashboards cost one read a second, not fifty. Events:

* ``counts``: ``{"ts_ms", "store": {"occupancy", "in", "out"}, "cameras": [{"camera_id",
  "occupancy", "in", "out", "last_seen_ts_ms"}]}``, on connect and whenever a number changes;
* ``alert``: one item of ``GET /v1/alerts``, whenever an alert fires, resolves or is acknowledged.

A comment line is sent every 15 s so proxies keep the connection open. The caller's credential is
checked again every :data:`REAUTH_S` seconds: a revoked key, a signed-out or expired session ends the
stream (the browser's EventSource reconnects with the renewed cookie).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import Request
from fastapi.sse import EventSourceResponse, ServerSentEvent

from storelens.storage import alerts as aq

from ..deps import ApiContext, ContextDep, api_router
from ..security import credential_of
from .occupancy import cameras_occupancy, store_totals_of

log = logging.getLogger(__name__)
router = api_router("live", role="viewer")

KEEPALIVE_S = 15.0
#: Seconds between two checks of an open stream's credential.
REAUTH_S = 30.0
#: Alerts compared between two reads (the newest ones; older alerts rarely change).
RECENT_ALERTS = 50


def counts_snapshot(ctx: ApiContext) -> dict[str, Any]:
    """The ``counts`` event: every camera's occupancy and totals, and the store's (those of ``/v1/occupancy``:
    over ``store.entrance_lines`` when set, else the cameras' sums)."""
    cams, now = cameras_occupancy(ctx)
    store = store_totals_of(ctx, cams, now)
    return {
        "ts_ms": max((c.ts_ms for c in cams), default=0),
        "store": {"occupancy": store.occupancy, "in": store.total_in, "out": store.total_out},
        "cameras": [{"camera_id": c.camera_id, "occupancy": c.occupancy, "in": c.total_in, "out": c.total_out,
                     "last_seen_ts_ms": c.last_seen_ts_ms} for c in cams],
    }


def recent_alerts(ctx: ApiContext) -> dict[str, dict[str, Any]]:
    rows, _ = aq.list_alerts(ctx.storage, "all", limit=RECENT_ALERTS)
    return {r["alert_id"]: r for r in rows}


class LiveHub:
    """Reads the live numbers once per ``interval_s`` while anyone listens; each listener gets the changes."""

    def __init__(self, ctx: ApiContext, interval_s: float = 1.0) -> None:
        self.ctx = ctx
        self.interval_s = interval_s
        self.listeners: set[asyncio.Queue[tuple[str, Any]]] = set()
        self.counts: dict[str, Any] | None = None
        self.alerts: dict[str, dict[str, Any]] = {}
        self._task: asyncio.Task[None] | None = None

    async def subscribe(self) -> AsyncIterator[tuple[str, Any]]:
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=100)
        if self.counts is None:
            await self._read()
        queue.put_nowait(("counts", self.counts))
        self.listeners.add(queue)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        try:
            while True:
                try:
                    yield await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except asyncio.TimeoutError:
                    yield ("keepalive", None)
        finally:
            self.listeners.discard(queue)

    async def _read(self) -> list[tuple[str, Any]]:
        counts = await anyio.to_thread.run_sync(counts_snapshot, self.ctx)
        alerts = await anyio.to_thread.run_sync(recent_alerts, self.ctx)
        changes: list[tuple[str, Any]] = []
        if counts != self.counts:
            changes.append(("counts", counts))
        first = self.counts is None
        self.counts = counts
        if not first:
            changes += [("alert", a) for aid, a in sorted(alerts.items(), key=lambda kv: kv[1]["ts_ms"])
                        if self.alerts.get(aid) != a]
        self.alerts = alerts
        return changes

    async def _run(self) -> None:
        while self.listeners:
            await asyncio.sleep(self.interval_s)
            try:
                changes = await self._read()
            except Exception:  # storage or live state down: keep the connections, try again
                log.exception("live read failed")
                continue
            for queue in list(self.listeners):
                for change in changes:
                    if queue.full():  # a stalled client: drop its oldest event, never block the others
                        queue.get_nowait()
                    queue.put_nowait(change)
        # nobody listens: the next listener starts from the state at its connection, not from what changed
        # meanwhile (old alerts would come as new ones)
        self.counts, self.alerts = None, {}


def hub_of(request: Request) -> LiveHub:
    hub = getattr(request.app.state, "live_hub", None)
    if hub is None:
        hub = request.app.state.live_hub = LiveHub(request.app.state.context)
    return hub


@router.get("/v1/live", response_class=EventSourceResponse, summary="Live counts and alerts (Server-Sent Events)",
            description="`counts` on connect and on every change (the numbers of /v1/occupancy); `alert` when an "
                        "alert fires, resolves or is acknowledged (an item of /v1/alerts).")
async def live(request: Request, ctx: ContextDep) -> AsyncIterator[ServerSentEvent]:
    credential, checked = credential_of(request), time.monotonic()
    async for kind, data in hub_of(request).subscribe():
        if await request.is_disconnected():
            return
        if time.monotonic() - checked >= REAUTH_S:
            checked = time.monotonic()
            if credential is None or await anyio.to_thread.run_sync(ctx.auth.authenticate, credential) is None:
                log.info("live stream ended: its credential is no longer valid")
                return
        if kind == "keepalive":
            yield ServerSentEvent(comment="keepalive")
        else:
            yield ServerSentEvent(event=kind, data=data, id=str(int(time.time() * 1000)))
