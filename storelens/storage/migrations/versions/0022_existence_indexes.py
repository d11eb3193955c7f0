"""history 22: indexes for a line's and a zone's stored rows (the 404 of a line or zone neither configured nor
stored answers from an index, not from a scan of the camera's crossings or of the zone events).

Revision ID: 0022
"""
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("crossings_by_line", "crossings", ["camera_id", "line_id"])
    op.create_index("zone_events_by_zone", "zone_events", ["zone_id", "camera_id"])


def downgrade() -> None:
    op.drop_index("zone_events_by_zone", "zone_events")
    op.drop_index("crossings_by_line", "crossings")
