"""history 22: indexes for a line's and a zone's stored rows (the 404 of a line or zone neither configured nor
stored answers from an index, not from a scan of the camera's crossings or of the zone events).

Both tables hold weeks of rows: on PostgreSQL the indexes are built ``CONCURRENTLY``
(:func:`~storelens.storage.dialects.add_index`), so the pipeline's writes go on during the upgrade; a schema that
already has them (``IF NOT EXISTS``) keeps them. SQLite builds them in the migration's transaction.

Revision ID: 0022
"""
from alembic import op

from storelens.storage.dialects import add_index

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_index(op, "crossings_by_line", "crossings", ["camera_id", "line_id"])
    add_index(op, "zone_events_by_zone", "zone_events", ["zone_id", "camera_id"])


def downgrade() -> None:
    op.drop_index("zone_events_by_zone", "zone_events")
    op.drop_index("crossings_by_line", "crossings")
