"""history 10: buying units (group_crossings) and staff tracks (staff_tracks), issue 11 items 3-4.

Revision ID: 0010
"""
import sqlalchemy as sa
from alembic import op

from storelens.storage.schema import ID, INT

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "group_crossings",
        *(sa.Column(c, ID, nullable=False) for c in ("event_id", "camera_id", "line_id", "direction")),
        *(sa.Column(c, INT, nullable=False) for c in ("ts_ms", "seq", "last_ts_ms", "size")),
        sa.Column("track_ids", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
        sa.CheckConstraint("direction IN ('in', 'out')", name="group_crossings_direction"),
    )
    op.create_index("group_crossings_by_time", "group_crossings", ["camera_id", "ts_ms"])
    op.create_table(
        "staff_tracks",
        sa.Column("camera_id", ID, nullable=False), sa.Column("track_id", INT, nullable=False),
        sa.Column("ts_ms", INT, nullable=False), sa.Column("seq", INT, nullable=False),
        sa.Column("cue", ID, nullable=False), sa.Column("detail", ID, nullable=False),
        sa.PrimaryKeyConstraint("camera_id", "track_id"),
    )
    op.create_index("staff_tracks_by_time", "staff_tracks", ["ts_ms"])
