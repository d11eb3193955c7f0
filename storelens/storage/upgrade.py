"""The schema revisions of a site's stores, and their migration (``storelens db current`` / ``db upgrade``).

A site's SQL tables are two migration chains (:mod:`storelens.storage.migrations`): ``history`` at
``storage.path`` / ``storage.dsn``, and ``gallery`` (the face gallery) in the same PostgreSQL database, or in its
own SQLite file (:func:`storelens.stages.faces.gallery_sqlite_path`, when ``faces.enabled`` or an earlier run
left it): :func:`site_stores`. :func:`upgrade` migrates both to this release's head under the migration lock (what
every process does when it opens them with ``storage.migrate: auto``); with ``storage.migrate: wait`` the services
leave it to it, and :func:`wait` (``storelens db wait``, the services' initContainer) waits until it is done.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Callable

import sqlalchemy as sa

import storelens.storage.dialects as dialects
import storelens.storage.migrations as migrations
from storelens.config import SiteConfig
from storelens.errors import StorageError


@dataclass(frozen=True)
class ChainRevision:
    """Where one chain's tables are, how many of its revisions they have (``current``) and this release's
    ``head``."""

    chain: str
    where: str
    current: int
    head: int

    def describe(self, version: int | None = None) -> str:
        v = self.current if version is None else version
        return f"{v} ({migrations.revision_name(self.chain, v)})"


@dataclass(frozen=True)
class SiteStore:
    """One SQL store a process of the site opens: its migration ``chain`` at ``target`` (a SQLite path or a
    PostgreSQL DSN). ``purge_only``: the SQLite face gallery an earlier run left while ``faces.enabled`` is off,
    opened only for the retention purge (:func:`storelens.storage.gallery.open_gallery_store_to_purge`)."""

    chain: str
    target: str
    purge_only: bool = False


def site_stores(config: SiteConfig) -> list[SiteStore]:
    """The SQL stores a process of ``config`` opens: the history, and the gallery (PostgreSQL: always, in the same
    database; SQLite: with ``faces.enabled``, or the file an earlier run left). One answer for the api's
    :func:`~storelens.api.server.build_app`, what it waits for (``storage.migrate: wait``) and what
    ``storelens db upgrade`` / ``db wait`` migrate or wait for."""
    from storelens.stages.faces import gallery_sqlite_path

    cfg = config.storage
    if cfg.backend == "postgres":
        return [SiteStore("history", cfg.dsn), SiteStore("gallery", cfg.dsn)]
    gallery = gallery_sqlite_path(config)
    if config.faces.enabled:
        return [SiteStore("history", cfg.path), SiteStore("gallery", gallery)]
    left = gallery != ":memory:" and os.path.exists(gallery)
    return [SiteStore("history", cfg.path), *([SiteStore("gallery", gallery, purge_only=True)] if left else [])]


def _targets(config: SiteConfig) -> list[tuple[str, str]]:
    # a private in-memory gallery (storage.path ":memory:") has no tables to read or migrate from here
    return [(s.chain, s.target) for s in site_stores(config) if not (s.chain == "gallery" and s.target == ":memory:")]


def _reading(chain: str, target: str, read: Callable[[dialects.Database, sa.Connection], ChainRevision]
             ) -> ChainRevision:
    """``read(db, conn)`` of ``chain``'s database at ``target`` in a transaction, the engine disposed after; a
    database that cannot be reached or read is a :class:`StorageError` naming it."""
    db = dialects.open_database(target)
    try:
        try:
            conn = db.engine.connect()
        except sa.exc.DBAPIError as exc:
            raise StorageError(f"cannot connect to {db.name} ({db.where}): {exc.orig}".rstrip()) from None
        with conn, conn.begin():
            try:
                return read(db, conn)
            except sa.exc.DBAPIError as exc:
                raise StorageError(f"cannot read the {chain} schema revision of {db.name} ({db.where}): "
                                   f"{exc.orig}".rstrip()) from None
    finally:
        db.engine.dispose()


def _read(chain: str, target: str) -> ChainRevision:
    head = len(migrations.revisions(chain))
    if not dialects.is_postgres(target) and not os.path.exists(target):  # not created (by a first run) yet
        return ChainRevision(chain, target, 0, head)
    return _reading(chain, target,
                    lambda db, conn: ChainRevision(chain, db.where, migrations.current(db, conn, chain), head))


def current(config: SiteConfig) -> list[ChainRevision]:
    """The revision of each chain of ``config``'s stores (changes nothing); :class:`StorageError` when a store
    cannot be reached."""
    return [_read(chain, target) for chain, target in _targets(config)]


def upgrade(config: SiteConfig) -> list[tuple[ChainRevision, ChainRevision]]:
    """Migrate each chain of ``config``'s stores to the head revision (under the migration lock: concurrent
    upgrades and openers migrate once); ``(before, after)`` of each. :class:`StorageError` when a store cannot
    be reached or its tables are newer than this StoreLens."""
    from storelens.storage.gallery import SqlGalleryStore
    from storelens.storage.history import SqlStorage

    done = []
    for chain, target in _targets(config):
        before = _read(chain, target)
        if chain == "history":
            SqlStorage(target).close()
        else:
            SqlGalleryStore(target, dim=config.faces.gallery.dim).close()
        done.append((before, _read(chain, target)))
    return done


def _check(chain: str, target: str) -> ChainRevision:
    """``chain`` at ``target`` at this release's head, or :func:`migrations.check`'s errors (behind:
    :class:`~storelens.storage.migrations.SchemaBehind`; newer than this StoreLens: :class:`StorageError`)."""
    if not dialects.is_postgres(target) and not os.path.exists(target):  # not created (by a first run) yet
        unopened = dialects.Database(sa.create_engine("sqlite://"), False, target)  # no file, no directory made
        raise migrations.SchemaBehind(unopened, chain, 0)

    def at_head(db: dialects.Database, conn: sa.Connection) -> ChainRevision:
        head = migrations.check(db, conn, chain)
        return ChainRevision(chain, db.where, head, head)
    return _reading(chain, target, at_head)


def _at_head(config: SiteConfig) -> list[ChainRevision]:
    behind: migrations.SchemaBehind | None = None
    revs = []
    for chain, target in _targets(config):
        try:  # every chain is looked at: one newer than this StoreLens ends the wait even behind another
            revs.append(_check(chain, target))
        except migrations.SchemaBehind as exc:
            behind = behind or exc
    if behind is not None:
        raise behind
    return revs


def wait(config: SiteConfig, stop: threading.Event,
         on_behind: Callable[[migrations.SchemaBehind, bool, float], None]) -> list[ChainRevision]:
    """Until every chain of ``config``'s stores is at this release's head (``storelens db upgrade`` ran): the
    revisions at head. The wait of ``storage.migrate: wait`` (:func:`storelens.storage.base.poll_schema`: its
    backoff, ``on_behind`` and ``stop``), each look :func:`migrations.check` of each chain: :class:`StorageError`
    at once when one is newer than this StoreLens (a rollback) or a store cannot be reached."""
    from storelens.storage.base import poll_schema

    return poll_schema(lambda: _at_head(config), stop, on_behind)
