"""history 7: business data (point-of-sale transactions, keyed by their idempotency key).

Revision ID: 0007
"""
import sqlalchemy as sa
from alembic import op

from storelens.storage.schema import ID, INT

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pos_transactions",
        *(sa.Column(c, ID, nullable=False) for c in ("transaction_id", "store_id", "register_id")),
        *(sa.Column(c, INT, nullable=False) for c in ("ts_ms", "amount_minor")),
        sa.Column("currency", ID, nullable=False),
        sa.Column("items_count", INT, nullable=False),
        sa.PrimaryKeyConstraint("transaction_id"),
    )
    op.create_index("pos_transactions_by_time", "pos_transactions", ["store_id", "ts_ms"])
