"""history 18: outbox, the messages the API publishes to the embedded pipeline (customer erasures).

Revision ID: 0018
"""
import sqlalchemy as sa
from alembic import op

from storelens.storage.schema import ID, INT

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", INT, nullable=False, autoincrement=True), sa.Column("ts_ms", INT, nullable=False),
        sa.Column("topic", ID, nullable=False), sa.Column("key", sa.LargeBinary, nullable=False),
        sa.Column("value", sa.LargeBinary, nullable=False), sa.Column("message_type", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("outbox")
