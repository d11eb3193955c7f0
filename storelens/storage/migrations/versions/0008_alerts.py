"""history 8: alerts (one row per alert of the site's rules; acknowledged / resolved through the API).

Revision ID: 0008
"""
import sqlalchemy as sa
from alembic import op

from storelens.storage.schema import ID, INT, REAL

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        *(sa.Column(c, ID, nullable=False) for c in ("alert_id", "rule_id", "kind", "severity", "camera_id",
                                                     "zone_id", "state")),
        *(sa.Column(c, INT, nullable=False) for c in ("fired_ts_ms", "fired_seq", "ts_ms")),
        sa.Column("cleared_ts_ms", INT, nullable=True),
        *(sa.Column(c, REAL, nullable=False) for c in ("value", "threshold")),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("acked_by", ID, nullable=True), sa.Column("acked_ts_ms", INT, nullable=True),
        sa.Column("resolved_by", ID, nullable=True), sa.Column("resolved_ts_ms", INT, nullable=True),
        sa.PrimaryKeyConstraint("alert_id"),
        sa.CheckConstraint("state IN ('firing', 'resolved')", name="alerts_state"),
    )
    op.create_index("alerts_by_time", "alerts", ["fired_ts_ms"])
