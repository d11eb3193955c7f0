"""history 5: heatmaps (person-time per grid cell, one row per camera and minute or hour) and camera reference frames.

Revision ID: 0005
"""
import sqlalchemy as sa
from alembic import op

from storelens.storage.schema import ID, INT

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "heatmap_windows",
        sa.Column("camera_id", ID, nullable=False),
        sa.Column("cell_px", INT, nullable=False, autoincrement=False),
        sa.Column("span_ms", INT, nullable=False, autoincrement=False),
        sa.Column("window_start_ms", INT, nullable=False, autoincrement=False),
        sa.Column("window_end_ms", INT, nullable=False),
        sa.Column("width", INT, nullable=False),
        sa.Column("height", INT, nullable=False),
        sa.Column("n_cells", INT, nullable=False),
        sa.Column("occupancy_ms", INT, nullable=False),
        sa.Column("dwell_ms", INT, nullable=False),
        sa.Column("cells", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("camera_id", "cell_px", "span_ms", "window_start_ms"),
    )
    op.create_table(
        "camera_snapshots",
        sa.Column("camera_id", ID, nullable=False),
        sa.Column("ts_ms", INT, nullable=False, autoincrement=False),
        sa.Column("seq", INT, nullable=False),
        sa.Column("width", INT, nullable=False),
        sa.Column("height", INT, nullable=False),
        sa.Column("blurred", INT, nullable=False),
        sa.Column("jpeg", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("camera_id", "ts_ms"),
    )
