"""history 21: webhook_outbox, alert webhook messages kept until delivered (across restarts).

Revision ID: 0021
"""
import sqlalchemy as sa
from alembic import op

from storelens.storage.schema import ID, INT

revision = "0021"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_outbox",
        sa.Column("id", INT, nullable=False, autoincrement=True), sa.Column("url_key", ID, nullable=False),
        sa.Column("message_id", ID, nullable=False), sa.Column("created_ms", INT, nullable=False),
        sa.Column("next_ms", INT, nullable=False), sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("owner", ID, nullable=True), sa.Column("lease_until_ms", INT, nullable=False),
        sa.Column("headers", sa.Text, nullable=False), sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,  # ids never reused (a stale sender's delete cannot hit a newer message)
    )
    op.create_index("webhook_outbox_by_url", "webhook_outbox", ["url_key", "id"])


def downgrade() -> None:
    op.drop_table("webhook_outbox")
