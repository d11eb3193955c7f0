"""Users, API keys and the audit log in the history store (SQLite and PostgreSQL alike).

Functions take the history store (:class:`~storelens.storage.history.SqlStorage`) like the
other query modules. Secrets never reach this module in clear: users carry an Argon2 hash
made by :mod:`storelens.api.security`, API keys a SHA-256 of their random secret.
"""
from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

import storelens.storage.dialects as dialects
from storelens.storage.schema import api_keys, audit_log, users


def get_user(storage: Any, username: str) -> dict[str, Any] | None:
    rows = storage._rows(sa.select(users).where(users.c.username == username))
    return dict(rows[0]._mapping) if rows else None


def list_users(storage: Any) -> list[dict[str, Any]]:
    stmt = sa.select(users.c.username, users.c.role, users.c.created_ts_ms, users.c.disabled).order_by(users.c.username)
    return [dict(r._mapping) for r in storage._rows(stmt)]


def count_users(storage: Any) -> int:
    return int(storage._rows(sa.select(sa.func.count()).select_from(users))[0][0])


def put_user(storage: Any, username: str, password_hash: str, role: str, ts_ms: int, *,
             create_only: bool = False) -> bool:
    """Create the user, or replace its hash and role (``create_only``: leave an existing user as it is); ``True``
    when it was created.

    A created user's session epoch starts at ``ts_ms``, not 0: a session of a deleted user of the same name
    (its epoch: that user's creation time plus its sign-outs and resets) is never accepted for the new one."""
    def write(c: sa.Connection) -> bool:
        if create_only:  # one statement: two processes creating the same user at once make one row, once
            return bool(c.execute(dialects.insert(storage.db, users).values(
                username=username, password_hash=password_hash, role=role, created_ts_ms=ts_ms,
                disabled=False, session_epoch=ts_ms).on_conflict_do_nothing(index_elements=[users.c.username])
            ).rowcount)
        done = c.execute(sa.update(users).where(users.c.username == username)  # a reset ends the old sessions
                         .values(password_hash=password_hash, role=role, disabled=False,
                                 session_epoch=users.c.session_epoch + 1)).rowcount
        if not done:
            c.execute(sa.insert(users).values(username=username, password_hash=password_hash, role=role,
                                              created_ts_ms=ts_ms, disabled=False, session_epoch=ts_ms))
        return not done
    return storage._write(write)


def end_sessions(storage: Any, username: str) -> bool:
    """Void every session ``username`` has now (signing out: its session epoch moves on); ``False`` when unknown.
    An epoch, not a time: no clock of another machine decides which sessions are void."""
    return bool(storage._write(lambda c: c.execute(
        sa.update(users).where(users.c.username == username)
        .values(session_epoch=users.c.session_epoch + 1)).rowcount))


def delete_user(storage: Any, username: str) -> bool:
    return bool(storage._write(lambda c: c.execute(sa.delete(users).where(users.c.username == username)).rowcount))


def put_api_key(storage: Any, key_id: str, name: str, secret_sha256: str, role: str, created_by: str,
                ts_ms: int) -> None:
    storage._write(lambda c: c.execute(sa.insert(api_keys).values(
        key_id=key_id, name=name, secret_sha256=secret_sha256, role=role, created_by=created_by,
        created_ts_ms=ts_ms)))


def get_api_key(storage: Any, key_id: str) -> dict[str, Any] | None:
    rows = storage._rows(sa.select(api_keys).where(api_keys.c.key_id == key_id))
    return dict(rows[0]._mapping) if rows else None


def list_api_keys(storage: Any, created_by: str | None = None) -> list[dict[str, Any]]:
    """Every API key (``created_by``: those that user created), oldest first, without their secrets' hashes."""
    cols = [c for c in api_keys.c if c.name != "secret_sha256"]
    stmt = sa.select(*cols).order_by(api_keys.c.created_ts_ms)
    if created_by is not None:
        stmt = stmt.where(api_keys.c.created_by == created_by)
    return [dict(r._mapping) for r in storage._rows(stmt)]


def revoke_api_key(storage: Any, key_id: str, ts_ms: int) -> bool:
    """Revoke the key (kept for the audit trail); ``False`` when unknown or already revoked."""
    k = api_keys.c
    return bool(storage._write(lambda c: c.execute(
        sa.update(api_keys).where(k.key_id == key_id, k.revoked_ts_ms.is_(None)).values(revoked_ts_ms=ts_ms)
    ).rowcount))


def touch_api_key(storage: Any, key_id: str, ts_ms: int) -> None:
    storage._write(lambda c: c.execute(sa.update(api_keys).where(api_keys.c.key_id == key_id)
                                       .values(last_used_ts_ms=ts_ms)))


def audit(storage: Any, ts_ms: int, actor: str, action: str, target: str, detail: dict[str, Any] | None = None,
          client: str = "") -> None:
    """Append one entry to the audit log."""
    storage._write(lambda c: c.execute(sa.insert(audit_log).values(
        ts_ms=ts_ms, actor=actor, action=action, target=target, client=client,
        detail=json.dumps(detail or {}, sort_keys=True))))


def purge_audit(storage: Any, before_ms: int) -> int:
    """Delete the audit entries older than ``before_ms`` (``privacy.retention.audit_log_days``, run by the retention
    purge: :class:`storelens.runtime.retention.RetentionPurge`); how many. A range search of ``audit_log_by_time``."""
    return max(int(storage._write(lambda c: c.execute(
        sa.delete(audit_log).where(audit_log.c.ts_ms < before_ms)).rowcount)), 0)


def list_audit(storage: Any, start_ms: int | None = None, end_ms: int | None = None, actor: str | None = None,
               action: str | None = None, limit: int = 100, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Audit entries in ``[start_ms, end_ms)``, newest first: ``(page, total matching)``."""
    a = audit_log.c
    where = [cond for cond in (
        a.ts_ms >= start_ms if start_ms is not None else None, a.ts_ms < end_ms if end_ms is not None else None,
        a.actor == actor if actor is not None else None, a.action == action if action is not None else None,
    ) if cond is not None]
    total = storage._rows(sa.select(sa.func.count()).select_from(audit_log).where(*where))[0][0]
    stmt = sa.select(audit_log).where(*where).order_by(a.ts_ms.desc(), a.id.desc()).limit(limit).offset(offset)
    out = []
    for r in storage._rows(stmt):
        d = dict(r._mapping)
        d["detail"] = json.loads(d["detail"] or "{}")
        out.append(d)
    return out, int(total)
