"""Live push for the dashboard (``/v1/live``): Server-Sent Events of the store's counts and of alerts.

One :class:`LiveHub` per app reads the live numbers once per ``interval_s`` (the live state in
the distributed mode, storage in the embedded one: the same :func:`~.occupancy.cameras_occupancy` and
:func:`~.occupancy.store_totals_of` as ``/v1/occupancy``, so the numbers equal the API's: the store's are the
``store_occupancy`` alert's, the stage's ``@store`` row; rows older than the daily reset are
0) and fans them out to every connected dashboard: 50 open dashboards cost one read a second, not fifty. Events:

* ``counts``: ``{"ts_ms", "store": {"occupancy", "in", "out"}, "stale", "cameras": [{"camera_id",
  "occupancy", "in", "out", "last_seen_ts_ms", "stale", "age_s"}]}``, on connect and whenever a number or a
  ``stale`` changes (``age_s`` alone does not push: the dashboard adds the time since the push to it), and after a
  failed read; a camera's ``stale``/``age_s`` are ``/v1/occupancy``'s (a live camera without a frame for 60 s, or
  without any frame: ``age_s`` null), the top ``stale``: some camera is (the store's numbers hold its last frame's
  counts);
* ``alert``: one item of ``GET /v1/alerts``, whenever an alert fires, resolves or is acknowledged;
* ``unavailable``: ``{"message"}`` when a read fails (storage or live state down; logged, and counted as
  ``storelens_errors_total{reason="live_read_failed"}``): the numbers shown are the last ones until the next
  ``counts``. Sent to every open stream at the first failed read after a good one, and on connect while the last
  read failed; the first good read after it sends ``counts`` to every open stream (whichever read it is: the
  hub's own, or the one of a stream that connects). Not named ``error``: that is ``EventSource``'s own
  connection error, on which many clients close and reconnect (a reconnect loop for as long as the reads fail).

A comment line is sent every 15 s so proxies keep the connection open. The caller's credential is
checked again every :data:`REAUTH_S` seconds: a revoked key (also one whose creator was deleted or demoted), a
signed-out, deleted or reset user, and a session past ``auth.session_max_s`` end the stream. The session token's
own expiry does not: the dashboard renews its cookie, not the open stream's token, so a session is accepted past
its token's ``exp`` while its user's session epoch did not move
(:meth:`~storelens.api.security.Authenticator.authenticate` with ``past_exp``), as a renewal would.

The streams end when the server shuts down (:func:`end_streams`, called by :func:`storelens.api.app.serve` at
SIGTERM/SIGINT): uvicorn waits for every response to end, so an open dashboard kept the server from stopping; the
dashboards reconnect.
"""
from __future__ import annotations

import asyncio
import functools
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
    over ``store.entrance_lines`` when set, else every line)."""
    cams, now = cameras_occupancy(ctx)
    store = store_totals_of(ctx, cams, now)
    return {
        "ts_ms": max((c.ts_ms for c in cams), default=0),
        "store": {"occupancy": store.occupancy, "in": store.total_in, "out": store.total_out},
        "stale": any(c.stale for c in cams),
        "cameras": [{"camera_id": c.camera_id, "occupancy": c.occupancy, "in": c.total_in, "out": c.total_out,
                     "last_seen_ts_ms": c.last_seen_ts_ms, "stale": c.stale, "age_s": c.age_s} for c in cams],
    }


def _without_age(counts: dict[str, Any] | None) -> Any:
    """``counts`` but the cameras' ``age_s`` (it grows every read: alone, no reason to push)."""
    if counts is None:
        return None
    return {**counts, "cameras": [{k: v for k, v in c.items() if k != "age_s"} for c in counts["cameras"]]}


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
        #: The ``unavailable`` event of the failing reads (``None`` while they succeed).
        self.error: dict[str, Any] | None = None
        self._task: asyncio.Task[None] | None = None
        #: Set by :meth:`close` (the server shuts down): every stream ends, a new one ends at once.
        self.closed = False

    def close(self) -> None:
        """End every open stream (and any opened later): the server shuts down."""
        self.closed = True
        for queue in list(self.listeners):
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(("end", None))

    async def subscribe(self) -> AsyncIterator[tuple[str, Any]]:
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=100)
        if self.closed:
            return
        if self.counts is None:
            # (its changes go to the open streams too: a good read after failed ones is their "live again")
            self._fan_out(await self._read_or_error())
            if self.closed:  # closed during the read: close() did not see this stream's queue
                return
        if self.counts is not None:
            queue.put_nowait(("counts", self.counts))
        if self.error is not None:
            queue.put_nowait(("unavailable", self.error))
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
        if self.error is not None or _without_age(counts) != _without_age(self.counts):
            changes.append(("counts", counts))  # (after a failed read too: the browser's numbers are live again)
        first = self.counts is None
        self.counts, self.error = counts, None
        if not first:
            changes += [("alert", a) for aid, a in sorted(alerts.items(), key=lambda kv: kv[1]["ts_ms"])
                        if self.alerts.get(aid) != a]
        self.alerts = alerts
        return changes

    async def _read_or_error(self) -> list[tuple[str, Any]]:
        """:meth:`_read`'s changes; when it fails (storage or live state down), an ``unavailable`` event at the
        first failure (logged and counted): the connections stay open and the next read tries again."""
        try:
            return await self._read()
        except Exception as exc:
            log.exception("live read failed")
            self.ctx.metrics.count_error("live_read_failed")
            first = self.error is None
            self.error = {"message": f"the server could not read the live numbers ({type(exc).__name__}); "
                                     "these are the last ones read"}
            return [("unavailable", self.error)] if first else []

    def _fan_out(self, changes: list[tuple[str, Any]]) -> None:
        if self.closed:  # (an "end" already waits in each queue)
            return
        for queue in list(self.listeners):
            for change in changes:
                if queue.full():  # a stalled client: drop its oldest event, never block the others
                    queue.get_nowait()
                queue.put_nowait(change)

    async def _run(self) -> None:
        while self.listeners:
            await asyncio.sleep(self.interval_s)
            self._fan_out(await self._read_or_error())
        # nobody listens: the next listener starts from the state at its connection, not from what changed
        # meanwhile (old alerts would come as new ones)
        self.counts, self.alerts, self.error = None, {}, None


def end_streams(app: Any) -> None:
    """End the open ``/v1/live`` streams of ``app`` (and refuse new ones): the server shuts down. Call it on the
    app's event loop."""
    hub = getattr(app.state, "live_hub", None)
    if hub is None:
        hub = app.state.live_hub = LiveHub(app.state.context)
    hub.close()


def hub_of(request: Request) -> LiveHub:
    hub = getattr(request.app.state, "live_hub", None)
    if hub is None:
        hub = request.app.state.live_hub = LiveHub(request.app.state.context)
    return hub


@router.get("/v1/live", response_class=EventSourceResponse, summary="Live counts and alerts (Server-Sent Events)",
            description="`counts` on connect and on every change (the numbers of /v1/occupancy); `alert` when an "
                        "alert fires, resolves or is acknowledged (an item of /v1/alerts); `unavailable` when the "
                        "server cannot read the numbers (the last ones shown are not live).")
async def live(request: Request, ctx: ContextDep) -> AsyncIterator[ServerSentEvent]:
    credential, checked = credential_of(request), time.monotonic()
    async for kind, data in hub_of(request).subscribe():
        if kind == "end" or await request.is_disconnected():
            return
        if time.monotonic() - checked >= REAUTH_S:
            checked = time.monotonic()
            # past_exp: the session's cookie is renewed, not this stream's token; a sign-out still ends it
            if credential is None or await anyio.to_thread.run_sync(
                    functools.partial(ctx.auth.authenticate, credential, past_exp=True)) is None:
                log.info("live stream ended: its credential is no longer valid")
                return
        if kind == "keepalive":
            yield ServerSentEvent(comment="keepalive")
        else:
            yield ServerSentEvent(event=kind, data=data, id=str(int(time.time() * 1000)))
