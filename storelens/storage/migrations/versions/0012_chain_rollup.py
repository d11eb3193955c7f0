"""history 12: the chain roll-up (chain_kpi_hours, chain_kpi_days, chain_stores), issue 11 item 6.

Revision ID: 0012
"""
import sqlalchemy as sa
from alembic import op

from storelens.storage.schema import ID, INT, REAL

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "chain_kpi_hours",
        sa.Column("store_id", ID, nullable=False), sa.Column("start_ms", INT, nullable=False, autoincrement=False),
        sa.Column("end_ms", INT, nullable=False), sa.Column("day", ID, nullable=False),
        sa.Column("label", ID, nullable=False), sa.Column("hours", REAL, nullable=False),
        *(sa.Column(c, INT, nullable=False) for c in ("visitors", "staff_in", "buying_units", "transactions",
                                                      "sales_minor", "abandonments")),
        sa.Column("currency", ID, nullable=False), sa.Column("computed_ms", INT, nullable=False),
        *(sa.Column(f"{kind}_h{i:02d}", INT, nullable=False, server_default="0")
          for kind in ("dwell", "wait") for i in range(23)),
        sa.PrimaryKeyConstraint("store_id", "start_ms"),
    )
    op.create_index("chain_kpi_hours_by_time", "chain_kpi_hours", ["start_ms"])
    op.create_index("chain_kpi_hours_by_day", "chain_kpi_hours", ["day", "store_id"])
    op.create_table(
        "chain_kpi_days",
        sa.Column("store_id", ID, nullable=False), sa.Column("day", ID, nullable=False),
        sa.Column("start_ms", INT, nullable=False), sa.Column("end_ms", INT, nullable=False),
        sa.Column("label", ID, nullable=False), sa.Column("hours", REAL, nullable=False),
        *(sa.Column(c, INT, nullable=False) for c in ("visitors", "staff_in", "transactions", "sales_minor",
                                                      "abandonments")),
        sa.Column("buying_units", INT, nullable=True),
        *(sa.Column(f"{kind}_h{i:02d}", INT, nullable=False, server_default="0")
          for kind in ("dwell", "wait") for i in range(23)),
        sa.PrimaryKeyConstraint("store_id", "day"),
    )
    op.create_index("chain_kpi_days_by_day", "chain_kpi_days", ["day"])
    op.create_table(
        "chain_stores",
        sa.Column("store_id", ID, nullable=False), sa.Column("store_name", sa.Text, nullable=False),
        sa.Column("region", ID, nullable=False), sa.Column("timezone", ID, nullable=False),
        sa.Column("currency", ID, nullable=False), sa.Column("updated_ms", INT, nullable=False),
        sa.Column("last_hour_ms", INT, nullable=False),
        sa.PrimaryKeyConstraint("store_id"),
    )
