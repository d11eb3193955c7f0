"""Alembic migrations of the StoreLens tables, applied when a store opens.

No ``alembic.ini`` or ``env.py``: :func:`upgrade` reads the revision scripts
of ``versions/`` with Alembic's :class:`~alembic.script.ScriptDirectory` and
runs the missing ones through :class:`~alembic.operations.Operations` on the
store's connection, in one transaction (PostgreSQL: under the advisory lock
of :func:`~storelens.storage.dialects.migration_lock`), recording the version
after each revision. The one exception is an index added to an existing table
(:func:`~storelens.storage.dialects.add_index`): on PostgreSQL it is built
``CONCURRENTLY`` in an Alembic autocommit block, which commits the revisions
before it first (with their version; the lock is held across). A revision script
is written as for any Alembic project (``op.create_table``, ...); it can ask
``op.get_bind().dialect.name`` for the dialect and ``op.get_context().opts``
for the options the store passes (the gallery's embedding ``dim``).

Two independent chains (Alembic branch labels): ``history`` (the tables of
:class:`~storelens.storage.history.SqlStorage`) and ``gallery`` (those of
:class:`~storelens.storage.gallery.SqlGalleryStore`; in SQLite a file of its
own). A database records how many revisions of a chain it has, where
StoreLens always kept its schema version, so a database written before the
migrations were Alembic's is recognised as it is (nothing to stamp) and older
releases still see the version they understand:

* history: the one row of ``schema_version(version)``;
* gallery: the ``layout`` row of ``gallery_meta`` (SQLite: ``meta``; a SQLite
  gallery from before that row is at revision 1).

Revisions are only ever appended to a chain; one that has shipped never changes.
"""
from __future__ import annotations

import functools
import pathlib
from typing import Any, Callable

import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations
from alembic.script import ScriptDirectory

import storelens.storage.dialects as dialects
from storelens.errors import StorageError

HERE = pathlib.Path(__file__).resolve().parent


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory(str(HERE))


@functools.cache
def revisions(chain: str) -> tuple[str, ...]:
    """Revision ids of ``chain`` (``"history"`` or ``"gallery"``), oldest first."""
    return tuple(reversed([r.revision for r in _scripts().walk_revisions("base", f"{chain}@head")]))


def _history_version(db: dialects.Database, conn: sa.Connection, new: int | None = None,
                     create: bool = True) -> tuple[int, bool]:
    if new is None:
        if not create and not sa.inspect(conn).has_table("schema_version"):
            return 0, False
        if create:
            conn.execute(sa.text("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"))
        row = conn.execute(sa.text("SELECT version FROM schema_version")).first()
        return (int(row[0]), True) if row else (0, False)
    conn.execute(sa.text("DELETE FROM schema_version"))
    conn.execute(sa.text("INSERT INTO schema_version (version) VALUES (:v)"), {"v": new})
    return new, True


def _gallery_version(db: dialects.Database, conn: sa.Connection, new: int | None = None,
                     create: bool = True) -> tuple[int, bool]:
    meta = dialects.gallery_tables(db).meta
    if new is None:
        if not sa.inspect(conn).has_table(meta.name):
            return 0, False
        row = conn.execute(sa.select(meta.c.value).where(meta.c.key == "layout")).first()
        return (int(row[0]), True) if row else (1, False)  # a SQLite gallery from before the layout row
    stmt = dialects.insert(db, meta).values(key="layout", value=str(new))
    conn.execute(stmt.on_conflict_do_update(index_elements=[meta.c.key], set_={"value": stmt.excluded.value}))
    return new, True


#: chain -> ``version(db, conn)``: ``(revisions applied, recorded?)``; ``version(db, conn, n)`` records ``n``.
VERSIONS: dict[str, Callable[..., tuple[int, bool]]] = {"history": _history_version, "gallery": _gallery_version}


def upgrade(db: dialects.Database, conn: sa.Connection, chain: str, **opts: Any) -> int:
    """Bring ``chain``'s tables to the newest revision in one transaction; returns the version.

    Raises :class:`StorageError` if the database is newer than this StoreLens.
    """
    version = VERSIONS[chain]
    revs = revisions(chain)
    with dialects.migration_lock(db, conn):
        # The transaction is the migration context's, so that a revision's autocommit block
        # (dialects.add_index) can commit it and begin the next one.
        ctx = MigrationContext.configure(connection=conn, opts={"storelens": opts, "transactional_ddl": True})
        with ctx.begin_transaction():
            dialects.prepare_migration(db, conn)
            current, recorded = version(db, conn)
            if current > len(revs):
                raise _newer(db, chain, current)
            with Operations.context(ctx):
                for n, rev in enumerate(revs[current:], current + 1):
                    _scripts().get_revision(rev).module.upgrade()
                    version(db, conn, n)  # with each revision: what a commit part-way through leaves is consistent
            if not recorded:
                version(db, conn, len(revs))
    return len(revs)


def _where(db: dialects.Database) -> str:
    return f"schema {db.schema!r} ({db.where})" if db.schema else db.where


def _newer(db: dialects.Database, chain: str, current: int) -> StorageError:
    head = len(revisions(chain))
    return StorageError(f"{_where(db)} has {chain} schema revision {current}, newer than this StoreLens supports "
                        f"({head}, {revision_name(chain, head)}): a rollback to an older release? Run the release "
                        f"that migrated it (schema revisions are never downgraded)")


def revision_name(chain: str, version: int) -> str:
    """The revision id of ``chain`` at ``version`` (revisions applied): ``"base"`` for 0, ``"unknown"`` past head."""
    revs = revisions(chain)
    return "base" if version <= 0 else revs[version - 1] if version <= len(revs) else "unknown"


def current(db: dialects.Database, conn: sa.Connection, chain: str) -> int:
    """How many revisions of ``chain`` the database has, read without changing anything (no table is created,
    no lock taken); call it in a transaction."""
    return VERSIONS[chain](db, conn, create=False)[0]


class SchemaBehind(StorageError):
    """The tables of a chain are behind this StoreLens's head revision (``storage.migrate: wait``: another process,
    ``storelens db upgrade``, migrates them)."""

    def __init__(self, db: dialects.Database, chain: str, current: int) -> None:
        self.chain, self.current, self.head = chain, current, len(revisions(chain))
        self.where = db.where
        super().__init__(f"{chain} schema of {_where(db)} at revision {current} ({revision_name(chain, current)}), "
                         f"waiting for revision {self.head} ({revision_name(chain, self.head)}): run `storelens db "
                         f"upgrade` (storage.migrate: wait)")


def check(db: dialects.Database, conn: sa.Connection, chain: str) -> int:
    """The head version of ``chain`` if the database has it; :class:`SchemaBehind` if it is behind,
    :class:`StorageError` if it is newer than this StoreLens (call it in a transaction; changes nothing)."""
    have, head = current(db, conn, chain), len(revisions(chain))
    if have > head:
        raise _newer(db, chain, have)
    if have < head:
        raise SchemaBehind(db, chain, have)
    return head
