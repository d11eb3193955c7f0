"""history 23: pending_erasures, customer erasures whose notification to the recognition service is not sent yet
(by a digest of the customer id: the erased id itself is not kept).

Written in the history's erasure transaction, deleted once the notification went out: a retry of an erasure the
stores no longer hold answers 204 by its row (:func:`storelens.storage.privacy.erase_customer`).

The erasures that answered 503 before this revision (the release before told their retry by the audit log) are
recorded here from ``audit_log``: each customer whose newest ``DELETE /v1/customers/{customer_id}`` entry has status
503, so that their retry still answers 204 (not 404) after the upgrade.

Revision ID: 0023
"""
import hashlib
import json
import re

import sqlalchemy as sa
from alembic import op

from storelens.storage.schema import ID, INT

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

#: The audit log's action and target of an erasure (storelens.api.security.AuditMiddleware: the route's path and
#: the request's path), and the ids the route takes (storelens.api.deps.CUSTOMER_ID_PATTERN).
ERASE_ACTION = "DELETE /v1/customers/{customer_id}"
TARGET_PREFIX = "/v1/customers/"
CUSTOMER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def _digest(customer_id: str) -> str:
    """As storelens.storage.privacy.erasure_digest at this revision (the table keeps no erased id itself)."""
    return hashlib.sha256(f"storelens-erasure:{customer_id}".encode()).hexdigest()


def upgrade() -> None:
    pending = op.create_table(
        "pending_erasures",
        sa.Column("customer_digest", ID, nullable=False), sa.Column("ts_ms", INT, nullable=False),
        sa.PrimaryKeyConstraint("customer_digest"),
    )
    audit = sa.table("audit_log", sa.column("id", INT), sa.column("ts_ms", INT), sa.column("action", ID),
                     sa.column("target", sa.Text), sa.column("detail", sa.Text))
    newest: dict[str, tuple[int, str | None]] = {}  # target -> its newest entry's (ts_ms, detail)
    for target, ts_ms, detail in op.get_bind().execute(
            sa.select(audit.c.target, audit.c.ts_ms, audit.c.detail).where(audit.c.action == ERASE_ACTION)
            .order_by(audit.c.ts_ms, audit.c.id)):
        newest[target or ""] = (int(ts_ms or 0), detail)
    rows = []
    for target, (ts_ms, detail) in newest.items():
        customer_id = target[len(TARGET_PREFIX):] if target.startswith(TARGET_PREFIX) else ""
        if not CUSTOMER_ID.fullmatch(customer_id):
            continue
        try:
            status = json.loads(detail or "{}").get("status")
        except (ValueError, AttributeError):
            continue
        if status == 503:
            rows.append({"customer_digest": _digest(customer_id), "ts_ms": ts_ms})
    if rows:
        op.bulk_insert(pending, rows)


def downgrade() -> None:
    op.drop_table("pending_erasures")
