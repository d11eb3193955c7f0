"""history 9: sign-in (users, API keys), the audit log, and versions of the site edited through the API.

Revision ID: 0009
"""
import sqlalchemy as sa
from alembic import op

from storelens.storage.schema import FLAG, ID, INT

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("username", ID, nullable=False), sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("role", ID, nullable=False), sa.Column("created_ts_ms", INT, nullable=False),
        sa.Column("disabled", FLAG, nullable=False, server_default=sa.false()),
        sa.PrimaryKeyConstraint("username"),
        sa.CheckConstraint("role IN ('viewer', 'manager', 'admin')", name="users_role"),
    )
    op.create_table(
        "api_keys",
        sa.Column("key_id", ID, nullable=False), sa.Column("name", sa.Text, nullable=False),
        sa.Column("secret_sha256", ID, nullable=False), sa.Column("role", ID, nullable=False),
        sa.Column("created_by", ID, nullable=False), sa.Column("created_ts_ms", INT, nullable=False),
        sa.Column("revoked_ts_ms", INT, nullable=True), sa.Column("last_used_ts_ms", INT, nullable=True),
        sa.PrimaryKeyConstraint("key_id"),
        sa.CheckConstraint("role IN ('viewer', 'manager', 'admin')", name="api_keys_role"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", INT, nullable=False, autoincrement=True), sa.Column("ts_ms", INT, nullable=False),
        *(sa.Column(c, ID, nullable=False) for c in ("actor", "action")),
        sa.Column("target", sa.Text, nullable=False), sa.Column("detail", sa.Text, nullable=False),
        sa.Column("client", ID, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("audit_log_by_time", "audit_log", ["ts_ms"])
    op.create_table(
        "site_versions",
        sa.Column("version", INT, nullable=False, autoincrement=False), sa.Column("ts_ms", INT, nullable=False),
        sa.Column("actor", ID, nullable=False), sa.Column("site_json", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("version"),
    )
