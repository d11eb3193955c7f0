"""The tables of StoreLens as SQLAlchemy Core objects: one :data:`metadata` for SQLite and PostgreSQL.

The stores build every statement from these tables; the migrations under
``migrations/versions`` create and change them (a test checks that a migrated
database has exactly these columns). Column types carry their per-dialect
variant, so one definition gives what each backend has always stored:

==============  ===========  ===============================
type            SQLite       PostgreSQL
==============  ===========  ===============================
:data:`ID`      TEXT         TEXT COLLATE "C" (byte order, as in SQLite)
:data:`INT`     INTEGER      BIGINT
:data:`REAL`    REAL         DOUBLE PRECISION
:data:`FLAG`    INTEGER      BOOLEAN
:class:`Cameras` TEXT (JSON) TEXT[]
==============  ===========  ===============================

History (:class:`~storelens.storage.history.SqlStorage`): ``track_points``,
``crossings``, ``occupancy``, ``count_windows``, ``track_attributes``,
``customer_matches``. Face gallery (:class:`~storelens.storage.gallery.SqlGalleryStore`):
``gallery_meta``, ``gallery_customers``, ``gallery_embeddings``, ``gallery_visits``
on PostgreSQL (where it may share a database with the history); a SQLite
gallery is a file of its own whose tables have always been called ``meta``,
``customers``, ``embeddings`` and ``visits`` (:data:`SQLITE_GALLERY`).
"""
from __future__ import annotations

import json
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

ID = sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")
INT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
REAL = sa.Double().with_variant(sqlite.REAL(), "sqlite")
FLAG = sa.Boolean().with_variant(sa.Integer(), "sqlite")


class Cameras(sa.types.TypeDecorator):
    """A sorted list of camera ids: ``TEXT[]`` on PostgreSQL, a JSON list in SQLite."""

    impl = sa.Text
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.ARRAY(postgresql.TEXT(collation="C")))
        return dialect.type_descriptor(sa.Text())

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        return list(value) if dialect.name == "postgresql" else json.dumps(list(value))

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> tuple[str, ...]:
        return tuple(sorted(value if dialect.name == "postgresql" else json.loads(value)))


metadata = sa.MetaData()


def _col(name: str, type_: Any, *args: Any, **kw: Any) -> sa.Column[Any]:
    kw.setdefault("nullable", False)
    return sa.Column(name, type_, *args, **kw)


# -- history -------------------------------------------------------------------------------

track_points = sa.Table(
    "track_points", metadata,
    _col("camera_id", ID, primary_key=True), _col("seq", INT, primary_key=True, autoincrement=False),
    _col("track_id", INT, primary_key=True, autoincrement=False), _col("ts_ms", INT),
    *(_col(c, REAL) for c in ("x1", "y1", "x2", "y2", "confidence")),
)

crossings = sa.Table(
    "crossings", metadata,
    _col("event_id", ID, primary_key=True), _col("camera_id", ID), _col("line_id", ID), _col("track_id", INT),
    _col("direction", ID), _col("ts_ms", INT), _col("seq", INT),
    sa.CheckConstraint("direction IN ('in', 'out')"),
)

occupancy = sa.Table(
    "occupancy", metadata,
    _col("camera_id", ID, primary_key=True),
    *(_col(c, INT) for c in ("ts_ms", "occupancy", "total_in", "total_out")),
)

count_windows = sa.Table(
    "count_windows", metadata,
    _col("camera_id", ID, primary_key=True), _col("line_id", ID, primary_key=True),
    _col("window_start_ms", INT, primary_key=True, autoincrement=False),
    *(_col(c, INT) for c in ("window_end_ms", "count_in", "count_out")),
)

track_attributes = sa.Table(
    "track_attributes", metadata,
    _col("camera_id", ID, primary_key=True), _col("track_id", INT, primary_key=True, autoincrement=False),
    *(_col(c, INT) for c in ("first_ts_ms", "last_ts_ms", "last_seq", "n_faces", "n_used", "n_rejected")),
    *(_col(c, REAL, nullable=True) for c in ("age_years", "age_low_years", "age_high_years")),
    _col("gender", ID), _col("gender_confidence", REAL), _col("emotion", ID), _col("emotion_confidence", REAL),
    _col("attention_share", REAL, nullable=True), _col("final", FLAG),
)

customer_matches = sa.Table(
    "customer_matches", metadata,
    _col("event_id", ID, primary_key=True), _col("camera_id", ID), _col("track_id", INT), _col("seq", INT),
    _col("ts_ms", INT), _col("customer_id", ID), _col("similarity", REAL), _col("is_new", FLAG),
    _col("is_returning", FLAG), _col("visit_no", INT),
)

HISTORY_TABLES = (track_points, crossings, occupancy, count_windows, track_attributes, customer_matches)


# -- face gallery ----------------------------------------------------------------------------


class GalleryTables(NamedTuple):
    meta: sa.Table
    customers: sa.Table
    embeddings: sa.Table
    visits: sa.Table


def _gallery(prefix: str, *, with_seq: bool) -> GalleryTables:
    customers = sa.Table(
        f"{prefix}customers", metadata,
        _col("customer_id", ID, primary_key=True), _col("created_ts_ms", INT),
        *([_col("seq", INT, sa.Identity(always=True), unique=True)] if with_seq else []),
    )

    def owner() -> sa.ForeignKey:
        return sa.ForeignKey(customers.c.customer_id, ondelete="CASCADE")

    return GalleryTables(
        meta=sa.Table(f"{prefix}meta", metadata, _col("key", ID, primary_key=True), _col("value", sa.Text)),
        customers=customers,
        embeddings=sa.Table(
            f"{prefix}embeddings", metadata,
            _col("id", INT, primary_key=True), _col("customer_id", ID, owner()), _col("ts_ms", INT),
            _col("vector", sa.LargeBinary),
        ),
        visits=sa.Table(
            f"{prefix}visits", metadata,
            _col("customer_id", ID, owner(), primary_key=True),
            _col("visit_no", sa.Integer, primary_key=True, autoincrement=False),
            _col("first_ts_ms", INT), _col("last_ts_ms", INT), _col("cameras", Cameras()),
        ),
    )


#: The gallery's tables on PostgreSQL (``seq``: insertion order of the customers).
POSTGRES_GALLERY = _gallery("gallery_", with_seq=True)
#: The gallery's tables in its SQLite file (insertion order: ``rowid``).
SQLITE_GALLERY = _gallery("", with_seq=False)
