"""history 6: journeys (one summary per ended track: times, anchors, mean appearance, zone visits, crossings).

Revision ID: 0006
"""
import sqlalchemy as sa
from alembic import op

from storelens.storage.schema import ID, INT, REAL

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "track_summaries",
        sa.Column("camera_id", ID, nullable=False),
        sa.Column("track_id", INT, nullable=False, autoincrement=False),
        *(sa.Column(c, INT, nullable=False) for c in ("first_ts_ms", "last_ts_ms", "first_seq", "last_seq",
                                                      "n_frames")),
        *(sa.Column(c, REAL, nullable=False) for c in ("first_x", "first_y", "last_x", "last_y")),
        sa.Column("appearance", sa.LargeBinary, nullable=True),
        sa.Column("zones", sa.Text, nullable=False),
        sa.Column("crossings", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("camera_id", "track_id"),
    )
    op.create_index("track_summaries_by_time", "track_summaries", ["first_ts_ms"])
