"""The tables of StoreLens as SQLAlchemy Core objects: one :data:`metadata` for SQLite and PostgreSQL.

The stores build every statement from these tables; the migrations under
``migrations/versions`` create and change them (a test checks that a migrated
database has exactly these columns). Column types carry their per-dialect
variant, so one definition gives what each backend has always stored:

==============  ===========  ===============================
type            SQLite       PostgreSQL
==============  ===========  ===============================
:data:`ID`      TEXT         TEXT COLLATE "C" (byte order, as in SQLite)
:data:`INT`     INTEGER      BIGINT
:data:`REAL`    REAL         DOUBLE PRECISION
:data:`FLAG`    INTEGER      BOOLEAN
:class:`Cameras` TEXT (JSON) TEXT[]
==============  ===========  ===============================

History (:class:`~storelens.storage.history.SqlStorage`): ``track_points``,
``crossings``, ``occupancy``, ``count_windows``, ``track_attributes``,
``customer_matches``. Face gallery (:class:`~storelens.storage.gallery.SqlGalleryStore`):
``gallery_meta``, ``gallery_customers``, ``gallery_embeddings``, ``gallery_visits``
on PostgreSQL (where it may share a database with the history); a SQLite
gallery is a file of its own whose tables have always been called ``meta``,
``customers``, ``embeddings`` and ``visits`` (:data:`SQLITE_GALLERY`).
"""
from __future__ import annotations

import json
from typing import Any, NamedTuple


import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from storelens.domain.rollup import N_BINS

ID = sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")
INT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
REAL = sa.Double().with_variant(sqlite.REAL(), "sqlite")
FLAG = sa.Boolean().with_variant(sa.Integer(), "sqlite")


class Cameras(sa.types.TypeDecorator):
    """A sorted list of camera ids: ``TEXT[]`` on PostgreSQL, a JSON list in SQLite."""

    impl = sa.Text
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.ARRAY(postgresql.TEXT(collation="C")))
        return dialect.type_descriptor(sa.Text())

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        return list(value) if dialect.name == "postgresql" else json.dumps(list(value))

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> tuple[str, ...]:
        return tuple(sorted(value if dialect.name == "postgresql" else json.loads(value)))


metadata = sa.MetaData()


def _col(name: str, type_: Any, *args: Any, **kw: Any) -> sa.Column[Any]:
    kw.setdefault("nullable", False)
    return sa.Column(name, type_, *args, **kw)


# -- history -------------------------------------------------------------------------------

track_points = sa.Table(
    "track_points", metadata,
    _col("camera_id", ID, primary_key=True), _col("seq", INT, primary_key=True, autoincrement=False),
    _col("track_id", INT, primary_key=True, autoincrement=False), _col("ts_ms", INT),
    *(_col(c, REAL) for c in ("x1", "y1", "x2", "y2", "confidence")),
    # migration 0004: detect-track's stationary flag (mannequins), so a replay sees what live saw
    _col("stationary", FLAG, server_default=sa.false()),
    # migration 0015: the erasure of a customer's tracks finds their points without reading the whole camera
    sa.Index("track_points_by_track", "camera_id", "track_id"),
)

#: Every tracked frame (with or without people, and the end of a finite source): what a replay feeds
#: the analytics stage, so it sees the same frames as live (migration 0004).
frames = sa.Table(
    "frames", metadata,
    _col("camera_id", ID, primary_key=True), _col("seq", INT, primary_key=True, autoincrement=False),
    _col("ts_ms", INT), _col("width", INT), _col("height", INT), _col("source_frame", INT), _col("n_tracks", INT),
    _col("end_of_stream", FLAG),
    sa.Index("frames_by_time", "camera_id", "ts_ms"),
)

crossings = sa.Table(
    "crossings", metadata,
    _col("event_id", ID, primary_key=True), _col("camera_id", ID), _col("line_id", ID), _col("track_id", INT),
    _col("direction", ID), _col("ts_ms", INT), _col("seq", INT),
    sa.CheckConstraint("direction IN ('in', 'out')"),
    sa.Index("crossings_by_line", "camera_id", "line_id"),  # migration 0022: whether a line has stored crossings
)

occupancy = sa.Table(
    "occupancy", metadata,
    _col("camera_id", ID, primary_key=True),
    *(_col(c, INT) for c in ("ts_ms", "occupancy", "total_in", "total_out")),
)

count_windows = sa.Table(
    "count_windows", metadata,
    _col("camera_id", ID, primary_key=True), _col("line_id", ID, primary_key=True),
    _col("window_start_ms", INT, primary_key=True, autoincrement=False),
    *(_col(c, INT) for c in ("window_end_ms", "count_in", "count_out")),
)

track_attributes = sa.Table(
    "track_attributes", metadata,
    _col("camera_id", ID, primary_key=True), _col("track_id", INT, primary_key=True, autoincrement=False),
    *(_col(c, INT) for c in ("first_ts_ms", "last_ts_ms", "last_seq", "n_faces", "n_used", "n_rejected")),
    *(_col(c, REAL, nullable=True) for c in ("age_years", "age_low_years", "age_high_years")),
    _col("gender", ID), _col("gender_confidence", REAL), _col("emotion", ID), _col("emotion_confidence", REAL),
    _col("attention_share", REAL, nullable=True), _col("final", FLAG),
)

customer_matches = sa.Table(
    "customer_matches", metadata,
    _col("event_id", ID, primary_key=True), _col("camera_id", ID), _col("track_id", INT), _col("seq", INT),
    _col("ts_ms", INT), _col("customer_id", ID), _col("similarity", REAL), _col("is_new", FLAG),
    _col("is_returning", FLAG), _col("visit_no", INT),
    sa.Index("customer_matches_by_time", "ts_ms"),  # migration 0015: the retention purge
)

# -- zones (migration 0004) -----------------------------------------------------------------

zone_events = sa.Table(
    "zone_events", metadata,
    _col("event_id", ID, primary_key=True), _col("camera_id", ID), _col("zone_id", ID), _col("zone_kind", ID),
    _col("track_id", INT), _col("kind", ID), _col("ts_ms", INT), _col("seq", INT),
    _col("dwell_ms", INT, nullable=True), _col("how", ID, nullable=True),
    sa.CheckConstraint("kind IN ('enter', 'exit', 'loiter')", name="zone_events_kind"),
    sa.Index("zone_events_by_time", "camera_id", "ts_ms"),
    sa.Index("zone_events_by_track", "camera_id", "track_id", "ts_ms"),
    sa.Index("zone_events_by_zone", "zone_id", "camera_id"),  # migration 0022: whether a zone has stored events
)

zone_stats = sa.Table(
    "zone_stats", metadata,
    _col("camera_id", ID, primary_key=True), _col("zone_id", ID, primary_key=True),
    _col("bucket_start_ms", INT, primary_key=True, autoincrement=False), _col("bucket_end_ms", INT),
    _col("visits", INT), _col("unique_people", INT), _col("mean_occupancy", REAL), _col("max_occupancy", INT),
    _col("dwell_median_s", REAL, nullable=True), _col("dwell_p90_s", REAL, nullable=True),
    *(_col(c, INT) for c in ("visits_ended", "stoppers", "served", "abandoned", "lost")),
    # migration 0016: the time the stream showed, which mean_occupancy is over (merges weigh each bucket by it);
    # NULL (rows from before it, or written by an analytics of before it during a rolling upgrade): the whole bucket
    _col("covered_ms", INT, nullable=True),
)

zone_occupancy = sa.Table(
    "zone_occupancy", metadata,
    _col("camera_id", ID, primary_key=True), _col("zone_id", ID, primary_key=True),
    _col("ts_ms", INT), _col("seq", INT), _col("occupancy", INT),
)

# -- heatmaps (migration 0005) --------------------------------------------------------------

#: Person-time per grid cell of a camera, one row per minute and one per hour (``span_ms``; a
#: HeatmapWindow each): ``cells`` packs the non-empty cells as little-endian int32
#: ``(gx, gy, occupancy_ms, dwell_ms)`` rows, so a day is 24 hour rows + the minutes at its edges
#: whatever the number of cells (see storelens.storage.heatmaps).
heatmap_windows = sa.Table(
    "heatmap_windows", metadata,
    _col("camera_id", ID, primary_key=True), _col("cell_px", INT, primary_key=True, autoincrement=False),
    _col("span_ms", INT, primary_key=True, autoincrement=False),
    _col("window_start_ms", INT, primary_key=True, autoincrement=False), _col("window_end_ms", INT),
    _col("width", INT), _col("height", INT), _col("n_cells", INT), _col("occupancy_ms", INT), _col("dwell_ms", INT),
    _col("cells", sa.LargeBinary),
)

#: Reference frames of the cameras (faces blurred), the background of their heatmaps.
camera_snapshots = sa.Table(
    "camera_snapshots", metadata,
    _col("camera_id", ID, primary_key=True), _col("ts_ms", INT, primary_key=True, autoincrement=False),
    _col("seq", INT), _col("width", INT), _col("height", INT), _col("blurred", INT), _col("jpeg", sa.LargeBinary),
)

# -- journeys (migration 0006) --------------------------------------------------------------

track_summaries = sa.Table(
    "track_summaries", metadata,
    _col("camera_id", ID, primary_key=True), _col("track_id", INT, primary_key=True, autoincrement=False),
    *(_col(c, INT) for c in ("first_ts_ms", "last_ts_ms", "first_seq", "last_seq", "n_frames")),
    *(_col(c, REAL) for c in ("first_x", "first_y", "last_x", "last_y")),
    # float32 little-endian, unit length; NULL when the tracker has no appearance
    _col("appearance", sa.LargeBinary, nullable=True),
    # JSON: [[zone_id, zone_kind, enter_ts_ms, exit_ts_ms], ...] and [[line_id, "in"|"out", ts_ms], ...]
    _col("zones", sa.Text), _col("crossings", sa.Text),
    sa.Index("track_summaries_by_time", "first_ts_ms"),
    sa.Index("track_summaries_by_last_ts", "last_ts_ms"),  # migration 0015: the retention purge
)

HISTORY_TABLES = (track_points, frames, crossings, occupancy, count_windows, track_attributes, customer_matches,
                  zone_events, zone_stats, zone_occupancy, heatmap_windows, camera_snapshots, track_summaries)

# -- business (migration 0007) --------------------------------------------------------------

#: Point-of-sale transactions: the first copy of each ``transaction_id`` (the idempotency key) is kept.
pos_transactions = sa.Table(
    "pos_transactions", metadata,
    _col("transaction_id", ID, primary_key=True), _col("store_id", ID), _col("register_id", ID),
    _col("ts_ms", INT), _col("amount_minor", INT), _col("currency", ID), _col("items_count", INT),
    sa.Index("pos_transactions_by_time", "store_id", "ts_ms"),
)

HISTORY_TABLES = (*HISTORY_TABLES, pos_transactions)

# -- alerts (migration 0008) ----------------------------------------------------------------

#: One row per alert (``Alert`` messages upserted by ``alert_id``): ``state`` and ``cleared_ts_ms`` are the
#: analytics stage's (firing, then resolved when the condition ended); ``acked_*`` and ``resolved_*`` are
#: the API's (a person acknowledged / closed it) and are never overwritten by the stage's messages.
alerts = sa.Table(
    "alerts", metadata,
    _col("alert_id", ID, primary_key=True), _col("rule_id", ID), _col("kind", ID), _col("severity", ID),
    _col("camera_id", ID), _col("zone_id", ID), _col("state", ID),
    _col("fired_ts_ms", INT), _col("fired_seq", INT), _col("ts_ms", INT),
    _col("cleared_ts_ms", INT, nullable=True), _col("value", REAL), _col("threshold", REAL), _col("message", sa.Text),
    _col("acked_by", ID, nullable=True), _col("acked_ts_ms", INT, nullable=True),
    _col("resolved_by", ID, nullable=True), _col("resolved_ts_ms", INT, nullable=True),
    sa.CheckConstraint("state IN ('firing', 'resolved')", name="alerts_state"),
    sa.Index("alerts_by_time", "fired_ts_ms"),
)

HISTORY_TABLES = (*HISTORY_TABLES, alerts)

# -- sign-in, audit and site editing (migration 0009) ----------------------------------------

#: People who sign in to the API and dashboard: Argon2 hash (PHC string), one role each.
users = sa.Table(
    "users", metadata,
    _col("username", ID, primary_key=True), _col("password_hash", sa.Text), _col("role", ID),
    _col("created_ts_ms", INT), _col("disabled", FLAG, server_default=sa.false()),
    # sessions carry the epoch they were signed in under; sign-out and a password reset add 1 (migration 0014)
    _col("session_epoch", INT, server_default="0"),
    sa.CheckConstraint("role IN ('viewer', 'manager', 'admin')", name="users_role"),
)

#: Keys of machine clients: only a SHA-256 of the secret is stored; ``key_id`` is the public prefix.
api_keys = sa.Table(
    "api_keys", metadata,
    _col("key_id", ID, primary_key=True), _col("name", sa.Text), _col("secret_sha256", ID), _col("role", ID),
    _col("created_by", ID), _col("created_ts_ms", INT),
    _col("revoked_ts_ms", INT, nullable=True), _col("last_used_ts_ms", INT, nullable=True),
    sa.CheckConstraint("role IN ('viewer', 'manager', 'admin')", name="api_keys_role"),
)

#: Who did what: failed sign-ins and every write through the API (erasures, line moves, users, keys).
audit_log = sa.Table(
    "audit_log", metadata,
    _col("id", INT, primary_key=True, autoincrement=True), _col("ts_ms", INT), _col("actor", ID),
    _col("action", ID), _col("target", sa.Text), _col("detail", sa.Text), _col("client", ID),
    sa.Index("audit_log_by_time", "ts_ms"),
)

#: Every version of the site's cameras, lines and zones edited through the API (the YAML is version 0).
site_versions = sa.Table(
    "site_versions", metadata,
    _col("version", INT, primary_key=True, autoincrement=False), _col("ts_ms", INT), _col("actor", ID),
    _col("site_json", sa.Text),
)

HISTORY_TABLES = (*HISTORY_TABLES, users, api_keys, audit_log, site_versions)

# -- buying units and staff (migration 0010) ------------------------------------------------

#: One row per buying unit crossing a line (``GroupCrossing``, upserted by ``event_id``): ``size``
#: members, ``track_ids`` a JSON list in crossing order; a person alone is a unit of one.
group_crossings = sa.Table(
    "group_crossings", metadata,
    _col("event_id", ID, primary_key=True), _col("camera_id", ID), _col("line_id", ID), _col("direction", ID),
    _col("ts_ms", INT), _col("seq", INT), _col("last_ts_ms", INT), _col("size", INT), _col("track_ids", sa.Text),
    sa.CheckConstraint("direction IN ('in', 'out')", name="group_crossings_direction"),
    sa.Index("group_crossings_by_time", "camera_id", "ts_ms"),
)

#: Tracks recognised as staff (``StaffTrack``): the first cue that held (``zone`` or ``uniform``) is kept.
staff_tracks = sa.Table(
    "staff_tracks", metadata,
    _col("camera_id", ID, primary_key=True), _col("track_id", INT, primary_key=True, autoincrement=False),
    _col("ts_ms", INT), _col("seq", INT), _col("cue", ID), _col("detail", ID),
    sa.Index("staff_tracks_by_time", "ts_ms"),
)

HISTORY_TABLES = (*HISTORY_TABLES, group_crossings, staff_tracks)

# -- counting accuracy audits (migration 0011_count_audits) ----------------------------------

#: One row per ``storelens audit``: a person's tally of clips around sampled crossings against the
#: system's counts; ``accuracy`` = exact clips / clips with its Wilson interval; ``clips`` a JSON list.
count_audits = sa.Table(
    "count_audits", metadata,
    _col("audit_id", ID, primary_key=True), _col("ts_ms", INT), _col("auditor", ID), _col("cameras", sa.Text),
    _col("start_ms", INT, nullable=True), _col("end_ms", INT, nullable=True),
    *(_col(c, INT) for c in ("n_clips", "n_correct", "system_in", "system_out", "person_in", "person_out")),
    *(_col(c, REAL) for c in ("accuracy", "ci_low", "ci_high", "confidence", "count_accuracy", "min_accuracy")),
    _col("method", ID), _col("alerted", FLAG), _col("clips", sa.Text),
    sa.Index("count_audits_by_time", "ts_ms"),
)

HISTORY_TABLES = (*HISTORY_TABLES, count_audits)

# -- chain roll-up (migration 0012_chain_rollup) ----------------------------------------------

#: Bins of the dwell and queue-wait histograms of ``chain_kpi_hours`` (:data:`storelens.domain.rollup.DWELL_EDGES_S`).
ROLLUP_BINS = N_BINS
ROLLUP_HIST_COLUMNS = tuple(f"{kind}_h{i:02d}" for kind in ("dwell", "wait") for i in range(ROLLUP_BINS))
#: One row per store, hour of its calendar and currency of its sales (``StoreKpiHour`` messages of the
#: ``store-kpis`` topics, upserted by (store_id, start_ms, currency) when newer by ``computed_ms``; an hour's
#: rows of other currencies, from its message's ``other_sales``, hold their sales only, and the rows of an
#: older computation of the hour are deleted (migration 0017); a message's window deletes the store's hours
#: in it that the message does not list, by the primary key's (store_id, start_ms) range); the histograms are
#: one column per bin (``dwell_h00`` .. ``wait_h22``). A store's own database holds its own rows too when it
#: rolls itself up (``storelens kpis publish``), the chain's database every store's.
chain_kpi_hours = sa.Table(
    "chain_kpi_hours", metadata,
    _col("store_id", ID, primary_key=True), _col("start_ms", INT, primary_key=True, autoincrement=False),
    _col("end_ms", INT), _col("day", ID), _col("label", ID), _col("hours", REAL),
    *(_col(c, INT) for c in ("visitors", "staff_in", "buying_units", "transactions", "sales_minor", "abandonments")),
    _col("currency", ID, primary_key=True), _col("computed_ms", INT),
    # one column per histogram bin, so SQL adds histograms up like the other figures
    *(_col(name, INT, server_default="0") for name in ROLLUP_HIST_COLUMNS),
    sa.Index("chain_kpi_hours_by_time", "start_ms"),
    sa.Index("chain_kpi_hours_by_day", "day", "store_id"),
)
#: The hours added up per store and business day, kept in step with ``chain_kpi_hours`` in the transaction
#: that writes the hours (the chain's day and week answers read a quarter of 200 stores as 18,000 rows, not
#: 200,000); ``buying_units`` NULL when the store counts none.
chain_kpi_days = sa.Table(
    "chain_kpi_days", metadata,
    _col("store_id", ID, primary_key=True), _col("day", ID, primary_key=True), _col("start_ms", INT),
    _col("end_ms", INT), _col("label", ID), _col("hours", REAL),
    *(_col(c, INT) for c in ("visitors", "staff_in", "transactions", "sales_minor", "abandonments")),
    _col("buying_units", INT, nullable=True),
    *(_col(name, INT, server_default="0") for name in ROLLUP_HIST_COLUMNS),
    sa.Index("chain_kpi_days_by_day", "day"),
)
#: One row per store of the roll-up: its name, region and time zone as its newest hour stated them.
chain_stores = sa.Table(
    "chain_stores", metadata,
    _col("store_id", ID, primary_key=True), _col("store_name", sa.Text), _col("region", ID), _col("timezone", ID),
    _col("currency", ID), _col("updated_ms", INT), _col("last_hour_ms", INT),
)

HISTORY_TABLES = (*HISTORY_TABLES, chain_kpi_hours, chain_kpi_days, chain_stores)

# -- opt-in staff face gallery (migration 0013_staff_faces) --------------------------------------

#: Staff members who consented to be recognised by face (``storelens staff enroll``): who gave consent,
#: when, and who recorded it. ``storelens staff remove`` deletes the row and its embeddings (consent
#: withdrawn); ``revoked_ms`` marks a member whose embeddings must no longer be matched.
staff_members = sa.Table(
    "staff_members", metadata,
    _col("staff_id", ID, primary_key=True), _col("display_name", sa.Text), _col("consent_at_ms", INT),
    _col("consent_by", sa.Text), _col("consent_note", sa.Text), _col("created_ms", INT),
    _col("revoked_ms", INT, nullable=True),
)
#: Face embeddings of a staff member (float32 little-endian bytes, never images): ``seq`` numbers a
#: member's embeddings, ``model`` and ``dim`` name the embedder that made them (only those of the
#: configured ``faces.embedder`` are matched).
staff_face_embeddings = sa.Table(
    "staff_face_embeddings", metadata,
    _col("staff_id", ID, sa.ForeignKey(staff_members.c.staff_id, ondelete="CASCADE"), primary_key=True),
    _col("seq", sa.Integer, primary_key=True, autoincrement=False), _col("embedding", sa.LargeBinary),
    _col("model", ID), _col("dim", sa.Integer), _col("created_ms", INT),
)

HISTORY_TABLES = (*HISTORY_TABLES, staff_members, staff_face_embeddings)

# -- messages to the embedded pipeline (migration 0018_outbox) ----------------------------------

#: Messages another process (the API) publishes to the embedded pipeline, which has no broker: the topic (a base
#: name, e.g. ``customer-erasures``), key and protobuf bytes as on Kafka; the pipeline relays them onto its
#: in-process bus and deletes them (:mod:`storelens.storage.outbox`).
outbox = sa.Table(
    "outbox", metadata,
    _col("id", INT, primary_key=True, autoincrement=True), _col("ts_ms", INT), _col("topic", ID),
    _col("key", sa.LargeBinary), _col("value", sa.LargeBinary),
    _col("message_type", sa.String(200), nullable=True),  # the message-type header (None: published without)
)

HISTORY_TABLES = (*HISTORY_TABLES, outbox)

# -- erased tracks (migration 0019_erased_tracks) ------------------------------------------------

#: The tracks of erased customers (camera, track, wall-clock time of the erasure, ms): rows of them that arrive
#: after the erasure (a track still in view, a writer behind) are not written
#: (:func:`storelens.storage.privacy.erase_customer`); kept while such rows can still come
#: (:data:`storelens.storage.privacy.ERASED_TRACKS_KEPT_MS`).
erased_tracks = sa.Table(
    "erased_tracks", metadata,
    _col("camera_id", ID, primary_key=True), _col("track_id", INT, primary_key=True, autoincrement=False),
    _col("ts_ms", INT),
    sa.Index("erased_tracks_by_time", "ts_ms"),
)

HISTORY_TABLES = (*HISTORY_TABLES, erased_tracks)

# -- alert webhook messages not delivered yet (migration 0021_webhook_outbox) -------------------------------------

#: Alert webhook messages waiting for delivery (:mod:`storelens.storage.webhook_outbox`), oldest first per webhook:
#: ``url_key`` is the SHA-256 (hex) of the webhook URL (never the URL, which often holds a credential),
#: ``message_id`` the ``X-StoreLens-Delivery`` id (``<alert_id>:<state>``), ``next_ms`` the time of the next try,
#: ``owner`` / ``lease_until_ms`` the sender that is trying it (one at a time per webhook: in order, once).
webhook_outbox = sa.Table(
    "webhook_outbox", metadata,
    _col("id", INT, primary_key=True, autoincrement=True), _col("url_key", ID), _col("message_id", ID),
    _col("created_ms", INT), _col("next_ms", INT), _col("attempts", sa.Integer),
    _col("owner", ID, nullable=True), _col("lease_until_ms", INT), _col("headers", sa.Text),
    _col("body", sa.LargeBinary), _col("last_error", sa.Text, nullable=True),
    sa.Index("webhook_outbox_by_url", "url_key", "id"),
    sqlite_autoincrement=True,  # ids never reused: a stale sender's delete cannot hit a newer message
)

HISTORY_TABLES = (*HISTORY_TABLES, webhook_outbox)

# -- customer erasures not told to the recognition service yet (migration 0023_pending_erasures) -------------------

#: A customer's erasure whose notification to the recognition service has not been sent (a digest of the customer
#: id, :func:`storelens.storage.privacy.erasure_digest`, so the erased id itself is not kept; wall-clock time of the
#: erasure, ms): written in the history's erasure transaction, deleted once the notification went out; a retry of
#: the erasure answers 204 by it (:func:`storelens.storage.privacy.erase_customer`).
pending_erasures = sa.Table(
    "pending_erasures", metadata,
    _col("customer_digest", ID, primary_key=True), _col("ts_ms", INT),
)

HISTORY_TABLES = (*HISTORY_TABLES, pending_erasures)


# -- face gallery ----------------------------------------------------------------------------


class GalleryTables(NamedTuple):
    meta: sa.Table
    customers: sa.Table
    embeddings: sa.Table
    visits: sa.Table
    track_decisions: sa.Table


def _gallery(prefix: str, *, with_seq: bool) -> GalleryTables:
    customers = sa.Table(
        f"{prefix}customers", metadata,
        _col("customer_id", ID, primary_key=True), _col("created_ts_ms", INT),
        *([_col("seq", INT, sa.Identity(always=True), unique=True)] if with_seq else []),
    )

    def owner() -> sa.ForeignKey:
        return sa.ForeignKey(customers.c.customer_id, ondelete="CASCADE")

    return GalleryTables(
        meta=sa.Table(f"{prefix}meta", metadata, _col("key", ID, primary_key=True), _col("value", sa.Text)),
        customers=customers,
        embeddings=sa.Table(
            f"{prefix}embeddings", metadata,
            _col("id", INT, primary_key=True), _col("customer_id", ID, owner()), _col("ts_ms", INT),
            _col("vector", sa.LargeBinary),
        ),
        visits=sa.Table(
            f"{prefix}visits", metadata,
            _col("customer_id", ID, owner(), primary_key=True),
            _col("visit_no", sa.Integer, primary_key=True, autoincrement=False),
            _col("first_ts_ms", INT), _col("last_ts_ms", INT), _col("cameras", Cameras()),
        ),
        # migration 0020: the reid stage's decision of each track (``decision``: customer, staff, abstained or
        # erased; ``customer_id`` / ``staff_id`` of the first two), so a restarted stage never decides a track
        # again; ``ts_ms``: camera time of the decision (retention); ``output``: the CustomerMatch / StaffTrack the
        # stage published for it (protobuf), published again by a restarted stage. No foreign key: an erased
        # customer's decisions stay, as ``erased`` without the customer (and without the output).
        track_decisions=sa.Table(
            f"{prefix}track_decisions", metadata,
            _col("camera_id", ID, primary_key=True), _col("track_id", INT, primary_key=True, autoincrement=False),
            _col("ts_ms", INT), _col("decision", ID), _col("customer_id", ID, nullable=True),
            _col("staff_id", ID, nullable=True), _col("output", sa.LargeBinary, nullable=True),
            sa.Index(f"{prefix}track_decisions_ts", "ts_ms"),
            sa.Index(f"{prefix}track_decisions_customer", "customer_id"),
        ),
    )


#: The gallery's tables on PostgreSQL (``seq``: insertion order of the customers).
POSTGRES_GALLERY = _gallery("gallery_", with_seq=True)
#: The gallery's tables in its SQLite file (insertion order: ``rowid``).
SQLITE_GALLERY = _gallery("", with_seq=False)
