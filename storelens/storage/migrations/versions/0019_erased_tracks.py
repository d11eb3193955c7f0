"""history 19: erased_tracks, the tracks of erased customers, whose late rows are not written again.

Revision ID: 0019
"""
import sqlalchemy as sa
from alembic import op

from storelens.storage.schema import ID, INT

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "erased_tracks",
        sa.Column("camera_id", ID, nullable=False), sa.Column("track_id", INT, nullable=False),
        sa.Column("ts_ms", INT, nullable=False),
        sa.PrimaryKeyConstraint("camera_id", "track_id"),
    )
    op.create_index("erased_tracks_by_time", "erased_tracks", ["ts_ms"])


def downgrade() -> None:
    op.drop_table("erased_tracks")
