"""Alert webhook messages kept in the history store until delivered (table ``webhook_outbox``).

The webhook sink (:mod:`storelens.runtime.webhooks`) adds each message here (:meth:`WebhookOutbox.add`) and its
sender delivers them per webhook, oldest first: it claims the oldest message of a webhook (:meth:`claim`: only
when its next try is due and no other sender holds it, a lease of ``lease_ms``), POSTs it, then deletes it
(:meth:`delete`) or sets its next try (:meth:`retry`, which releases it). Only the oldest message of a webhook is
ever claimed, and by one sender at a time (a conditional UPDATE: a compare-and-set on SQLite and PostgreSQL
alike), so several processes on one history (the analytics service's workers) deliver each message once, in
order, unless a lease runs out while its try is still under way (at least once: receivers de-duplicate on the
``X-StoreLens-Delivery`` id). A webhook is known by the SHA-256 of its URL (:func:`url_key`), never the URL.

Example:
    >>> from storelens.storage import SqlStorage
    >>> box = WebhookOutbox(SqlStorage(":memory:"))
    >>> box.add([{"url_key": "k", "message_id": "a:firing", "created_ms": 1, "headers": "{}", "body": b"{}"}], 10)
    []
    >>> state, row = box.claim("k", "me", now_ms=5, lease_ms=1000)
    >>> state, row.message_id, box.count()
    ('claimed', 'a:firing', 1)
    >>> box.delete(row.id, "me"), box.count()
    (True, 0)
"""
from __future__ import annotations

import hashlib
from typing import Any, Sequence

import sqlalchemy as sa

from storelens.storage.schema import webhook_outbox as wo


def url_key(url: str) -> str:
    """The key of a webhook in the outbox: the hex SHA-256 of its URL."""
    return hashlib.sha256(url.encode()).hexdigest()


class WebhookOutbox:
    """The ``webhook_outbox`` table of a history store (a :class:`~storelens.storage.history.SqlStorage`)."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage

    @property
    def closed(self) -> bool:
        """The store was closed (its senders stop)."""
        return bool(getattr(self.storage, "_closed", False))

    def add(self, rows: Sequence[dict[str, Any]], max_queued: int) -> list[Any]:
        """Store messages (``url_key``, ``message_id``, ``created_ms``, ``headers`` (JSON), ``body``), in one
        transaction; then, per webhook, delete the oldest beyond ``max_queued`` waiting behind the oldest one
        (which is being tried). Returns the rows deleted for that (``id``, ``url_key``, ``message_id``, ``body``,
        ``attempts``)."""
        if not rows:
            return []

        def write(conn: sa.Connection) -> list[Any]:
            conn.execute(sa.insert(wo), [{"next_ms": r["created_ms"], "attempts": 0, "owner": None,
                                          "lease_until_ms": 0, "last_error": None, **r} for r in rows])
            dropped: list[Any] = []
            for key in sorted({r["url_key"] for r in rows}):
                n = conn.execute(sa.select(sa.func.count()).select_from(wo).where(wo.c.url_key == key)).scalar_one()
                over = n - 1 - max_queued
                if over > 0:
                    old = conn.execute(sa.select(wo.c.id, wo.c.url_key, wo.c.message_id, wo.c.body, wo.c.attempts)
                                       .where(wo.c.url_key == key).order_by(wo.c.id).offset(1).limit(over)).all()
                    conn.execute(sa.delete(wo).where(wo.c.id.in_([r.id for r in old])))
                    dropped.extend(old)
            return dropped

        return self.storage._write(write)

    def claim(self, key: str, owner: str, now_ms: int, lease_ms: int) -> tuple[str, Any]:
        """The oldest message of webhook ``key``, held by ``owner`` until ``now_ms + lease_ms``:
        ``("claimed", row)``; ``("wait", ms)`` when it is not due or another sender holds it (``ms``: when to look
        again); ``("empty", None)``. Reads first (:meth:`head`): a write transaction (the SQLite write lock) only
        when the head is due and free (:meth:`take`)."""
        head = self.head(key)
        if head is None:
            return "empty", None
        if head.next_ms > now_ms:
            return "wait", head.next_ms
        if head.owner not in (None, owner) and head.lease_until_ms >= now_ms:
            return "wait", max(head.lease_until_ms, now_ms)
        return self.take(head, owner, now_ms, lease_ms)

    def head(self, key: str) -> Any:
        """The oldest message of webhook ``key`` (``None``: none), read without a write transaction."""
        rows = self.storage._rows(sa.select(wo).where(wo.c.url_key == key).order_by(wo.c.id).limit(1))
        return rows[0] if rows else None

    def take(self, head: Any, owner: str, now_ms: int, lease_ms: int) -> tuple[str, Any]:
        """Hold ``head`` (read by :meth:`head`, maybe stale) for ``owner`` until ``now_ms + lease_ms`` if it is
        still due and free (a conditional UPDATE: a compare-and-set): ``("claimed", row)`` (the row as updated),
        else ``("wait", ms)``."""

        def write(conn: sa.Connection) -> tuple[str, Any]:
            held = wo.c.owner.is_(None) | (wo.c.owner == owner) | (wo.c.lease_until_ms < now_ms)
            done = conn.execute(sa.update(wo).where((wo.c.id == head.id) & (wo.c.next_ms <= now_ms) & held)
                                .values(owner=owner, lease_until_ms=now_ms + lease_ms))
            row = conn.execute(sa.select(wo).where(wo.c.id == head.id)).first()
            if done.rowcount == 1 and row is not None:
                return "claimed", row
            if row is None:  # delivered or dropped meanwhile: look at the new head at once
                return "wait", now_ms
            return "wait", max(row.next_ms, row.lease_until_ms if row.owner not in (None, owner) else 0, now_ms)

        return self.storage._write(write)

    def delete(self, row_id: int, owner: str | None = None, message_id: str | None = None) -> bool:
        """Remove a message (delivered, or given up); with ``owner`` (and ``message_id``) only while ``owner``
        still holds it (a sender whose lease ran out must not remove what another one took over). True if
        removed."""
        where = wo.c.id == row_id
        if owner is not None:
            where &= wo.c.owner == owner
        if message_id is not None:
            where &= wo.c.message_id == message_id
        return self.storage._write(lambda conn: conn.execute(sa.delete(wo).where(where)).rowcount) == 1

    def retry(self, row_id: int, owner: str, next_ms: int, attempts: int, error: str,
              message_id: str | None = None) -> None:
        """Release a message ``owner`` (still) holds and tried, its next try at ``next_ms``."""
        where = (wo.c.id == row_id) & (wo.c.owner == owner)
        if message_id is not None:
            where &= wo.c.message_id == message_id
        self.storage._write(lambda conn: conn.execute(
            sa.update(wo).where(where)
            .values(next_ms=next_ms, attempts=attempts, last_error=error[:2000], owner=None, lease_until_ms=0)))

    def release(self, owner: str) -> None:
        """Release every message ``owner`` holds (its sender stops): another sender may take them at once."""
        self.storage._write(lambda conn: conn.execute(
            sa.update(wo).where(wo.c.owner == owner).values(owner=None, lease_until_ms=0)))

    def count(self, keys: Sequence[str] | None = None) -> int:
        """Messages waiting (of the webhooks ``keys``; ``None``: all)."""
        q = sa.select(sa.func.count()).select_from(wo)
        if keys is not None:
            q = q.where(wo.c.url_key.in_(list(keys)))
        return int(self.storage._rows(q)[0][0])

    def waiting(self, keys: Sequence[str], limit: int = 1000) -> list[Any]:
        """The messages of the webhooks ``keys``, oldest first (at most ``limit``)."""
        return self.storage._rows(sa.select(wo).where(wo.c.url_key.in_(list(keys))).order_by(wo.c.id).limit(limit))

    def count_unknown(self, keys: Sequence[str]) -> int:
        """Messages waiting for webhooks not in ``keys`` (removed from the site file, or their URL changed)."""
        q = sa.select(sa.func.count()).select_from(wo).where(wo.c.url_key.not_in(list(keys)))
        return int(self.storage._rows(q)[0][0])

    def expire_unknown(self, keys: Sequence[str], before_ms: int) -> list[Any]:
        """Delete the messages of webhooks not in ``keys`` (removed from the site file) created before
        ``before_ms``: nobody would deliver them. Returns them (``id``, ``url_key``, ``message_id``)."""

        def write(conn: sa.Connection) -> list[Any]:
            where = wo.c.url_key.not_in(list(keys)) & (wo.c.created_ms < before_ms)
            old = conn.execute(sa.select(wo.c.id, wo.c.url_key, wo.c.message_id).where(where)).all()
            if old:
                conn.execute(sa.delete(wo).where(wo.c.id.in_([r.id for r in old])))
            return old

        return self.storage._write(write)
