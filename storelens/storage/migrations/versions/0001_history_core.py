"""history 1: track points, crossings, occupancy, count windows.

Exactly the tables of StoreLens' ``schema_version`` 1 (hand-written DDL before Alembic).

Revision ID: 0001
"""
import sqlalchemy as sa
from alembic import op

from storelens.storage.schema import ID, INT, REAL

revision = "0001"
down_revision = None
branch_labels = ("history",)
depends_on = None


def _ints(*names: str) -> list[sa.Column]:
    return [sa.Column(n, INT, nullable=False) for n in names]


def _key(name: str) -> sa.Column:
    # A one-column TEXT PRIMARY KEY of a SQLite rowid table was declared without NOT NULL.
    return sa.Column(name, ID, primary_key=True, nullable=op.get_bind().dialect.name == "sqlite")


def upgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "track_points", sa.Column("camera_id", ID, nullable=False), *_ints("seq", "track_id", "ts_ms"),
        *[sa.Column(n, REAL, nullable=False) for n in ("x1", "y1", "x2", "y2", "confidence")],
        sa.PrimaryKeyConstraint("camera_id", "seq", "track_id"), sqlite_with_rowid=False)
    # /v1/cameras/{id}/tracks: camera + time range, ordered by time.
    op.create_index("track_points_by_time", "track_points", ["camera_id", "ts_ms"] + (["seq", "track_id"] if pg else []))
    op.create_table(
        "crossings", _key("event_id"), sa.Column("camera_id", ID, nullable=False),
        sa.Column("line_id", ID, nullable=False), *_ints("track_id"), sa.Column("direction", ID, nullable=False),
        *_ints("ts_ms", "seq"), sa.CheckConstraint("direction IN ('in', 'out')"))
    # counts / totals / span / crossings: camera + time range (PostgreSQL: index-only aggregates).
    op.create_index("crossings_by_time", "crossings", ["camera_id", "ts_ms"],
                    postgresql_include=["line_id", "direction"])
    op.create_table("occupancy", _key("camera_id"),
                    *_ints("ts_ms", "occupancy", "total_in", "total_out"))
    op.create_table(
        "count_windows", sa.Column("camera_id", ID, nullable=False), sa.Column("line_id", ID, nullable=False),
        *_ints("window_start_ms", "window_end_ms", "count_in", "count_out"),
        sa.PrimaryKeyConstraint("camera_id", "line_id", "window_start_ms"), sqlite_with_rowid=False)
