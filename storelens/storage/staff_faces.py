"""The opt-in staff face gallery: staff members who consented, and their face embeddings (issue 11 item 3).

Tables ``staff_members`` and ``staff_face_embeddings`` of the history store (migration 0013), on
SQLite and PostgreSQL alike. Consent is the point: :func:`enroll` refuses a member without the
name of whoever recorded their consent (``consent_by``); :func:`remove` (consent withdrawn) deletes
the member's embeddings and row in one transaction and then makes the deleted bytes go away where
the backend can (SQLite: ``secure_delete`` + WAL truncation; PostgreSQL: ``VACUUM``).

Only embeddings (float32 vectors of ``faces.embedder``) are stored, never the enrolment images.
The reid stage reads them through :class:`StaffFaceSource` (:meth:`StaffFaceSource.load`), at its
start and every ``staff.faces.reload_s`` seconds.

CLI: ``storelens staff enroll|list|remove`` (:func:`enroll_images` does the face work).

Example:
    >>> import numpy as np
    >>> from storelens.storage import SqlStorage
    >>> store = SqlStorage(":memory:")
    >>> enroll(store, "s1", "Ann", consent_by="", embeddings=[np.ones(4)], model="m", dim=4)
    Traceback (most recent call last):
    ...
    storelens.errors.ConfigError: staff member 's1': consent_by is required (who recorded the member's consent)
    >>> enroll(store, "s1", "Ann", consent_by="HR: Bea", embeddings=[np.ones(4)], model="m", dim=4, now_ms=5)
    1
    >>> [(x["staff_id"], x["embeddings"], x["consent_by"]) for x in list_members(store)]
    [('s1', 1, 'HR: Bea')]
    >>> ids, x = StaffFaceSource(store).load("m", 4)
    >>> ids, x.shape, round(float(x[0] @ x[0]), 3)
    (['s1'], (1, 4), 1.0)
    >>> remove(store, "s1"), list_members(store), StaffFaceSource(store).load("m", 4)[0]
    (True, [], [])
    >>> store.close()
"""
from __future__ import annotations

import time
from typing import Any, Iterable, Sequence

import numpy as np
import sqlalchemy as sa

import storelens.storage.dialects as dialects
from storelens.errors import ConfigError
from storelens.storage.schema import staff_face_embeddings, staff_members


def _now_ms() -> int:
    return int(time.time() * 1000)


def _unit(v: Any, dim: int) -> np.ndarray:
    x = np.asarray(v, np.float32).reshape(-1)
    if x.shape[0] != dim:
        raise ValueError(f"embedding has {x.shape[0]} values, expected {dim}")
    return (x / max(float(np.linalg.norm(x)), 1e-12)).astype("<f4")


def enroll(storage: Any, staff_id: str, display_name: str, *, consent_by: str, embeddings: Iterable[Any],
           model: str, dim: int, consent_note: str = "", now_ms: int | None = None) -> int:
    """Record the member (consent by ``consent_by`` at ``now_ms``) and add their embeddings; returns how many.

    An existing member keeps their embeddings (new ones are appended) and gets the new consent record
    (a revoked member is active again). :class:`ConfigError` without ``consent_by`` or embeddings.
    """
    staff_id, consent_by = (staff_id or "").strip(), (consent_by or "").strip()
    if not staff_id:
        raise ConfigError("a staff member needs an id")
    if not consent_by:
        raise ConfigError(f"staff member {staff_id!r}: consent_by is required (who recorded the member's consent)")
    vecs = [_unit(v, dim) for v in embeddings]
    if not vecs:
        raise ConfigError(f"staff member {staff_id!r}: no face embeddings to enrol")
    ts = _now_ms() if now_ms is None else int(now_ms)
    m, e = staff_members.c, staff_face_embeddings.c

    def write(conn: sa.Connection) -> int:
        row = {"staff_id": staff_id, "display_name": display_name or staff_id, "consent_at_ms": ts,
               "consent_by": consent_by, "consent_note": consent_note or "", "created_ms": ts, "revoked_ms": None}
        ins = dialects.insert(storage.db, staff_members).values(**row)
        conn.execute(ins.on_conflict_do_update(index_elements=[m.staff_id], set_={
            k: ins.excluded[k] for k in ("display_name", "consent_at_ms", "consent_by", "consent_note", "revoked_ms")}))
        start = conn.execute(sa.select(sa.func.coalesce(sa.func.max(e.seq), -1)).where(e.staff_id == staff_id)
                             ).scalar_one() + 1
        conn.execute(sa.insert(staff_face_embeddings), [
            {"staff_id": staff_id, "seq": int(start) + i, "embedding": v.tobytes(), "model": model, "dim": int(dim),
             "created_ms": ts} for i, v in enumerate(vecs)])
        return len(vecs)

    return storage._write(write)


def list_members(storage: Any) -> list[dict[str, Any]]:
    """Every enrolled member with their consent record and number of embeddings, by id."""
    m, e = staff_members.c, staff_face_embeddings.c
    n = sa.select(sa.func.count()).where(e.staff_id == m.staff_id).scalar_subquery()
    rows = storage._rows(sa.select(m.staff_id, m.display_name, m.consent_at_ms, m.consent_by, m.consent_note,
                                   m.created_ms, m.revoked_ms, n).order_by(m.staff_id))
    return [{"staff_id": r[0], "display_name": r[1], "consent_at_ms": int(r[2]), "consent_by": r[3],
             "consent_note": r[4], "created_ms": int(r[5]), "revoked_ms": None if r[6] is None else int(r[6]),
             "embeddings": int(r[7])} for r in rows]


def remove(storage: Any, staff_id: str) -> bool:
    """Consent withdrawn: delete the member's embeddings and row (one transaction); ``False`` if unknown."""

    def delete(conn: sa.Connection) -> int:
        n = conn.execute(sa.delete(staff_face_embeddings).where(staff_face_embeddings.c.staff_id == staff_id)).rowcount
        return n + conn.execute(sa.delete(staff_members).where(staff_members.c.staff_id == staff_id)).rowcount

    if not storage._write(delete):
        return False
    storage._run(lambda c: dialects.after_erase(storage.db, c, (staff_face_embeddings, staff_members), explicit=True))
    return True


class StaffFaceSource:
    """What the reid stage reads: the active members' embeddings of one embedder (``load``).

    ``storage`` is a history store (:class:`~storelens.storage.history.SqlStorage`); ``owns`` closes
    it with :meth:`close` (the reid service opens one for this alone: :func:`open_staff_faces`).
    """

    def __init__(self, storage: Any, owns: bool = False) -> None:
        self.storage = storage
        self.owns = owns

    def load(self, model: str, dim: int) -> tuple[list[str], np.ndarray]:
        """``(staff_ids, (N, dim) float32 unit rows)``: one row per embedding of ``model`` (ids repeat)."""
        m, e = staff_members.c, staff_face_embeddings.c
        rows = self.storage._rows(
            sa.select(e.staff_id, e.embedding).join(staff_members, m.staff_id == e.staff_id)
            .where(e.model == model, e.dim == int(dim), m.revoked_ms.is_(None)).order_by(e.staff_id, e.seq))
        if not rows:
            return [], np.zeros((0, int(dim)), np.float32)
        return [r[0] for r in rows], np.stack([np.frombuffer(bytes(r[1]), "<f4") for r in rows]).astype(np.float32)

    def close(self) -> None:
        if self.owns:
            self.storage.close()


def open_staff_faces(config: Any) -> StaffFaceSource | None:
    """The reid service's source (its own connection to the history store), or ``None`` when
    ``staff.faces`` is not configured or not enabled."""
    cfg = config.staff.faces
    if cfg is None or not cfg.enabled:
        return None
    from storelens.storage import open_storage

    return StaffFaceSource(open_storage(config.storage), owns=True)


def enroll_images(storage: Any, faces_cfg: Any, staff_id: str, display_name: str, *, consent_by: str,
                  images: Sequence[str], consent_note: str = "", embedder: Any = None,
                  now_ms: int | None = None) -> tuple[int, list[str]]:
    """``storelens staff enroll``: the largest face of each image, embedded with ``faces_cfg.embedder``,
    stored for the member. Returns ``(embeddings stored, problems)`` (an image without a face is a
    problem, not an error; no face at all is a :class:`ConfigError`). Consent is checked first, before
    any model loads."""
    if not (consent_by or "").strip():
        raise ConfigError(f"staff member {staff_id!r}: consent_by is required (who recorded the member's consent)")
    from storelens.runtime.still_faces import StillFaceEmbedder

    emb = embedder if embedder is not None else StillFaceEmbedder(faces_cfg)
    results = emb.embed_paths(images)
    problems = [err for _, v, err in results if v is None and err]
    vecs = [v for _, v, _ in results if v is not None]
    if not vecs:
        raise ConfigError(f"staff member {staff_id!r}: no face found in any image ({'; '.join(problems)})")
    n = enroll(storage, staff_id, display_name, consent_by=consent_by, embeddings=vecs, model=emb.model, dim=emb.dim,
               consent_note=consent_note, now_ms=now_ms)
    return n, problems
