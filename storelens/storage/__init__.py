"""Persistence: the history store, the face gallery store and the live state.

* :class:`SqlStorage` (:mod:`storelens.storage.history`): tracks, crossings,
  occupancy, count windows and face history, on SQLite (embedded mode) or
  PostgreSQL (distributed mode); :func:`open_storage` opens the one a site
  config names. :class:`Storage` is the interface the pipeline writes to and
  the API reads from.
* :class:`SqlGalleryStore` (:mod:`storelens.storage.gallery`): the face
  gallery's customers, embeddings and visits; :func:`open_gallery` builds the
  gallery (FAISS index + store) of a site config.
* :mod:`storelens.storage.live`: the live state in Redis.

Both SQL stores are SQLAlchemy Core over the tables of
:mod:`storelens.storage.schema`, migrated with Alembic when they open
(:mod:`storelens.storage.migrations`); dialect differences live in
:mod:`storelens.storage.dialects`.

Example:
    >>> from storelens.domain.counting import CrossingEvent
    >>> store = open_storage(StorageConfig(backend="sqlite", path=":memory:"))
    >>> ev = CrossingEvent("cam-1:door:7:12", "cam-1", "door", 7, "in", 61_000, 12)
    >>> store.write_crossings([ev]), store.write_crossings([ev])
    (1, 0)
    >>> store.counts("cam-1", start_ms=0, end_ms=120_000, bucket_s=60)
    [CountBucket(line_id='door', start_ms=60000, end_ms=120000, count_in=1, count_out=0)]
    >>> store.line_totals("cam-1"), store.ping()
    ({'door': {'in': 1, 'out': 0}}, True)
    >>> store.close()
"""
from __future__ import annotations

from storelens.config import StorageConfig
from storelens.errors import ConfigError, StorageError
from storelens.storage.base import open_migrated
from storelens.storage.dialects import redact_dsn
from storelens.storage.gallery import GalleryStore, SqlGalleryStore, open_gallery, open_gallery_store
from storelens.storage.history import (
    AGE_BAND_KEYS,
    AGE_BANDS,
    EMOTION_KEYS,
    GENDER_KEYS,
    MIGRATIONS,
    SCHEMA_VERSION,
    CountBucket,
    PostgresStorage,
    SqliteStorage,
    SqlStorage,
    Storage,
    TrackPath,
    TrackPoint,
    age_band,
)


__all__ = ["AGE_BAND_KEYS", "AGE_BANDS", "EMOTION_KEYS", "GENDER_KEYS", "MIGRATIONS", "SCHEMA_VERSION", "CountBucket",
           "GalleryStore", "PostgresStorage", "SqlGalleryStore", "SqlStorage", "SqliteStorage", "Storage", "StorageError",
           "TrackPath", "TrackPoint", "age_band", "open_gallery", "open_gallery_store", "open_storage", "redact_dsn"]


def open_storage(cfg: StorageConfig) -> Storage:
    """The history store named by ``cfg``: the SQLite file ``cfg.path`` (``"sqlite"``) or
    PostgreSQL at ``cfg.dsn`` (``"postgres"``); its tables migrated, or waited for (``cfg.migrate``:
    :func:`~storelens.storage.base.open_migrated`)."""
    if cfg.backend == "sqlite":
        return open_migrated(lambda upgrade: SqlStorage(cfg.path, upgrade=upgrade), cfg.migrate)
    if cfg.backend == "postgres":
        if not cfg.dsn:  # pragma: no cover (config requires it)
            raise ConfigError("storage.dsn is required when storage.backend is 'postgres'")
        return open_migrated(lambda upgrade: SqlStorage(cfg.dsn, upgrade=upgrade), cfg.migrate)
    raise ConfigError(f"unknown storage backend {cfg.backend!r}")  # pragma: no cover (config forbids it)
