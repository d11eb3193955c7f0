"""history 4: zones (events, per-bucket statistics, latest occupancy per zone); every tracked frame;
track_points.stationary (what a replay needs to see what live saw).

Revision ID: 0004
"""
import sqlalchemy as sa
from alembic import op

from storelens.storage.schema import FLAG, ID, INT, REAL

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None


def _cols(type_, *names: str, nullable: bool = False) -> list[sa.Column]:
    return [sa.Column(n, type_, nullable=nullable) for n in names]


def upgrade() -> None:
    with op.batch_alter_table("track_points") as batch:
        batch.add_column(sa.Column("stationary", FLAG, nullable=False, server_default=sa.false()))
    op.create_table(
        "frames", *_cols(ID, "camera_id"),
        *_cols(INT, "seq", "ts_ms", "width", "height", "source_frame", "n_tracks"), *_cols(FLAG, "end_of_stream"),
        sa.PrimaryKeyConstraint("camera_id", "seq"))
    op.create_index("frames_by_time", "frames", ["camera_id", "ts_ms"])
    op.create_table(
        "zone_events", *_cols(ID, "event_id", "camera_id", "zone_id", "zone_kind"), *_cols(INT, "track_id"),
        *_cols(ID, "kind"), *_cols(INT, "ts_ms", "seq"), *_cols(INT, "dwell_ms", nullable=True),
        *_cols(ID, "how", nullable=True),
        sa.PrimaryKeyConstraint("event_id"),
        sa.CheckConstraint("kind IN ('enter', 'exit', 'loiter')", name="zone_events_kind"))
    op.create_index("zone_events_by_time", "zone_events", ["camera_id", "ts_ms"])
    op.create_index("zone_events_by_track", "zone_events", ["camera_id", "track_id", "ts_ms"])
    op.create_table(
        "zone_stats", *_cols(ID, "camera_id", "zone_id"),
        *_cols(INT, "bucket_start_ms", "bucket_end_ms", "visits", "unique_people"), *_cols(REAL, "mean_occupancy"),
        *_cols(INT, "max_occupancy"), *_cols(REAL, "dwell_median_s", "dwell_p90_s", nullable=True),
        *_cols(INT, "visits_ended", "stoppers", "served", "abandoned", "lost"),
        sa.PrimaryKeyConstraint("camera_id", "zone_id", "bucket_start_ms"))
    op.create_table(
        "zone_occupancy", *_cols(ID, "camera_id", "zone_id"), *_cols(INT, "ts_ms", "seq", "occupancy"),
        sa.PrimaryKeyConstraint("camera_id", "zone_id"))
