"""The schema, with the inventory rules written as CHECK constraints.

Whatever the code does, the database refuses a section whose seats do not add
up (`remaining + held + sold = capacity`, none negative), a booking whose
total is not `unit price × qty`, a booking or hold item for a section of
another event (composite foreign keys), and a customer with more tickets in an
event than its cap (`customer_tickets`).

Every inventory table carries `event_id` (the event's own row: its `id`) in its
primary key, and the foreign keys between them are composite with it: all of
an event's rows can live on one shard of a database distributed by event
(docs/scaling.md). The primary keys lead with the row's own id, so a lookup by
id alone stays one index probe on one node.

`hold_items.expires_at` and `.active` repeat the hold's expiry and whether the
item's seats are still counted as held, so that the seats of expired holds in
a section are one index range away (`ix_hold_items_expiring`).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)

from boxoffice.db.types import UTCDateTime
from boxoffice.domain.model import (
    MAX_CUSTOMER_ID_LENGTH,
    MAX_NAME_LENGTH,
    MAX_ORGANIZER_ID_LENGTH,
    MAX_PAYMENT_REFERENCE_LENGTH,
)

MAX_IDEMPOTENCY_KEY_LENGTH = 255
KEY_ID_LENGTH = 16
MAX_REQUEST_ID_LENGTH = 128

# Stable constraint names, so migrations can refer to them on every database.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

events = Table(
    "events",
    metadata,
    Column("id", Uuid(), primary_key=True),
    Column("name", String(MAX_NAME_LENGTH), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("max_per_customer", Integer(), nullable=True),
    # The organizer that owns it (`api_keys.organizer_id`); None: made with open access,
    # or before keys existed, and managed by admins only.
    Column("organizer_id", String(MAX_ORGANIZER_ID_LENGTH), nullable=True),
    CheckConstraint(
        "max_per_customer IS NULL OR max_per_customer >= 1", name="max_per_customer_positive"
    ),
    Index(None, "created_at", "id"),
    Index(None, "organizer_id"),
)

sections = Table(
    "sections",
    metadata,
    Column("id", Uuid(), primary_key=True),
    Column("event_id", Uuid(), ForeignKey("events.id"), primary_key=True),
    Column("position", Integer(), nullable=False),
    Column("name", String(MAX_NAME_LENGTH), nullable=False),
    Column("price_cents", BigInteger(), nullable=False),
    Column("capacity", Integer(), nullable=False),
    Column("remaining", Integer(), nullable=False),
    Column("held", Integer(), nullable=False, server_default=text("0")),
    Column("sold", Integer(), nullable=False, server_default=text("0")),
    Column("version", BigInteger(), nullable=False, server_default=text("0")),
    CheckConstraint("capacity >= 1", name="capacity_positive"),
    CheckConstraint("price_cents >= 0", name="price_not_negative"),
    CheckConstraint(
        "remaining >= 0 AND held >= 0 AND sold >= 0 AND remaining + held + sold = capacity",
        name="seats_add_up",
    ),
    UniqueConstraint("event_id", "name"),
    UniqueConstraint("event_id", "position"),
)

bookings = Table(
    "bookings",
    metadata,
    Column("id", Uuid(), primary_key=True),
    Column("event_id", Uuid(), primary_key=True),
    Column("section_id", Uuid(), nullable=False),
    Column("qty", Integer(), nullable=False),
    Column("unit_price_cents", BigInteger(), nullable=False),
    Column("total_price_cents", BigInteger(), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("customer_id", String(MAX_CUSTOMER_ID_LENGTH), nullable=True),
    Column("hold_id", Uuid(), nullable=True),
    Column("payment_reference", String(MAX_PAYMENT_REFERENCE_LENGTH), nullable=True),
    Column("cancelled_at", UTCDateTime(), nullable=True),
    CheckConstraint("qty >= 1", name="qty_positive"),
    CheckConstraint("total_price_cents = unit_price_cents * qty", name="total_is_unit_times_qty"),
    CheckConstraint("status IN ('confirmed', 'cancelled')", name="status_known"),
    ForeignKeyConstraint(["section_id", "event_id"], ["sections.id", "sections.event_id"]),
    ForeignKeyConstraint(["hold_id", "event_id"], ["holds.id", "holds.event_id"]),
    Index(None, "created_at", "id"),
    Index(None, "event_id", "created_at", "id"),
    Index(None, "customer_id", "created_at", "id"),
    Index(None, "hold_id"),
)

holds = Table(
    "holds",
    metadata,
    Column("id", Uuid(), primary_key=True),
    Column("event_id", Uuid(), ForeignKey("events.id"), primary_key=True),
    Column("customer_id", String(MAX_CUSTOMER_ID_LENGTH), nullable=True),
    Column("status", String(16), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("settled_at", UTCDateTime(), nullable=True),
    CheckConstraint(
        "status IN ('active', 'confirmed', 'released', 'expired')", name="status_known"
    ),
    Index(None, "event_id", "customer_id", "expires_at"),
    Index(None, "customer_id", "expires_at"),  # hold caps (domain/hold_caps.py)
)

hold_items = Table(
    "hold_items",
    metadata,
    Column("hold_id", Uuid(), primary_key=True),
    Column("section_id", Uuid(), primary_key=True),
    Column("event_id", Uuid(), primary_key=True),
    Column("position", Integer(), nullable=False),
    Column("qty", Integer(), nullable=False),
    Column("unit_price_cents", BigInteger(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("active", Boolean(), nullable=False),
    CheckConstraint("qty >= 1", name="qty_positive"),
    ForeignKeyConstraint(["hold_id", "event_id"], ["holds.id", "holds.event_id"]),
    ForeignKeyConstraint(["section_id", "event_id"], ["sections.id", "sections.event_id"]),
    Index(
        "ix_hold_items_expiring",
        "section_id",
        "expires_at",
        postgresql_where=text("active"),
        sqlite_where=text("active"),
    ),
)

# Tickets (active holds + confirmed bookings) per customer in each event with a cap,
# and the cap itself, so the database refuses a customer over it whatever the code does.
customer_tickets = Table(
    "customer_tickets",
    metadata,
    Column("event_id", Uuid(), ForeignKey("events.id"), primary_key=True),
    Column("customer_id", String(MAX_CUSTOMER_ID_LENGTH), primary_key=True),
    Column("tickets", Integer(), nullable=False),
    Column("max_tickets", Integer(), nullable=False),
    CheckConstraint("tickets >= 0 AND tickets <= max_tickets", name="within_limit"),
)

# Keyed by the caller's scope, not by event: a key is the caller's, whatever it names (a
# distributed database spreads it by `scope`; docs/scaling.md says what that costs).
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("scope", String(MAX_CUSTOMER_ID_LENGTH), primary_key=True),
    Column("key", String(MAX_IDEMPOTENCY_KEY_LENGTH), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("outcome", Text(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Index(None, "created_at"),
)


def _sequence() -> Column[int]:
    """`seq`: the order rows were written in, for lists read oldest first (a column
    object belongs to one table, so each table gets its own).

    PostgreSQL numbers it from a sequence. On SQLite it is the rowid where it is the whole
    primary key; where it shares the key (`audit_records`), every transaction numbers its
    rows itself (`booking/write.LAST_AUDIT_SEQ`), as SQLite numbers rowids: the largest + 1.
    """
    return Column(
        "seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )


audit_records = Table(
    "audit_records",
    metadata,
    _sequence(),
    Column("at", UTCDateTime(), nullable=False),
    Column("event_id", Uuid(), primary_key=True),
    Column("section_id", Uuid(), nullable=True),
    Column("action", String(16), nullable=False),
    Column("qty", Integer(), nullable=False),
    Column("outcome", String(8), nullable=False),
    Column("reason", String(64), nullable=True),
    Column("customer_id", String(MAX_CUSTOMER_ID_LENGTH), nullable=True),
    Column("hold_id", Uuid(), nullable=True),
    Column("booking_id", Uuid(), nullable=True),
    Column("request_id", String(MAX_REQUEST_ID_LENGTH), nullable=True),
    Index(None, "event_id", "seq"),
    Index(None, "event_id", "customer_id"),  # who has tried to buy (the waiting room)
)

# Fraud flags (domain/fraud.py): noticed, for a person to look at; they block nothing.
fraud_flags = Table(
    "fraud_flags",
    metadata,
    _sequence(),
    Column("at", UTCDateTime(), nullable=False),
    Column("rule", String(32), nullable=False),
    Column("event_id", Uuid(), nullable=True),
    Column("customer_id", String(MAX_CUSTOMER_ID_LENGTH), nullable=True),
    Column("key_id", String(KEY_ID_LENGTH), nullable=True),
    Column("address", String(64), nullable=True),
    Column("evidence", Text(), nullable=False),
    Index(None, "event_id", "seq"),
)

# API keys: the secret is kept as its SHA-256 only (a key has 256 random bits, so a fast
# hash is as safe as a slow one and costs nothing per request); `id` is the key's public
# part, safe to log.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(KEY_ID_LENGTH), primary_key=True),
    Column("secret_sha256", String(64), nullable=False),
    Column("role", String(16), nullable=False),
    Column("name", String(MAX_NAME_LENGTH), nullable=True),
    Column("customer_id", String(MAX_CUSTOMER_ID_LENGTH), nullable=True),
    Column("organizer_id", String(MAX_ORGANIZER_ID_LENGTH), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=True),
    Column("revoked_at", UTCDateTime(), nullable=True),
    CheckConstraint("role IN ('admin', 'organizer', 'customer')", name="role_known"),
    CheckConstraint(
        "(role = 'customer') = (customer_id IS NOT NULL)", name="customer_keys_name_a_customer"
    ),
    CheckConstraint(
        "(role = 'organizer') = (organizer_id IS NOT NULL)", name="organizer_keys_name_one"
    ),
)

# The waiting room (services/waiting_room.py): an event's settings, its watermark (every
# order key at or below it is admitted) and the figures its admission loop published
# last, for every process to read a few times a second; `lease_*` says which process
# runs the loop, so one at a time moves the watermark.
waiting_rooms = Table(
    "waiting_rooms",
    metadata,
    Column("event_id", Uuid(), ForeignKey("events.id"), primary_key=True),
    Column("enabled", Boolean(), nullable=False),
    Column("prequeue_opens_at", UTCDateTime(), nullable=True),
    Column("opens_at", UTCDateTime(), nullable=True),
    Column("new_users_per_minute", Integer(), nullable=False),
    Column("total_active_users", Integer(), nullable=False),
    Column("session_duration_seconds", Integer(), nullable=False),
    Column("queueing_method", String(16), nullable=False),
    Column("suspended", Boolean(), nullable=False),
    Column("line_epoch", UTCDateTime(), nullable=False),  # fifo keys count from here
    Column("watermark", BigInteger(), nullable=False),
    Column("figures", Text(), nullable=True),  # JSON, as the admission loop published it
    Column("figures_at", UTCDateTime(), nullable=True),
    Column("lease_holder", String(64), nullable=True),
    Column("lease_until", UTCDateTime(), nullable=True),
    Column("updated_at", UTCDateTime(), nullable=False),
    CheckConstraint(
        "queueing_method IN ('fifo', 'random', 'passthrough', 'reject')", name="method_known"
    ),
)

# One place in an event's line per customer: the key says where (domain/queue_order.py).
queue_places = Table(
    "queue_places",
    metadata,
    Column("event_id", Uuid(), ForeignKey("events.id"), primary_key=True),
    Column("customer_id", String(MAX_CUSTOMER_ID_LENGTH), primary_key=True),
    Column("order_key", BigInteger(), nullable=False),
    Column("joined_at", UTCDateTime(), nullable=False),
    CheckConstraint("order_key >= 0", name="order_key_not_negative"),
    Index(None, "event_id", "order_key"),
)

# When the watermark passed where, and how many it let in: a poll learns from these
# when its key was admitted, so when its session ends.
admission_steps = Table(
    "admission_steps",
    metadata,
    Column("event_id", Uuid(), ForeignKey("events.id"), primary_key=True),
    Column("order_key", BigInteger(), primary_key=True),
    Column("at", UTCDateTime(), nullable=False),
    Column("admitted", Integer(), nullable=False),
    CheckConstraint("admitted >= 0", name="admitted_not_negative"),
)

# Secrets the service makes for itself when none is configured (the queue tickets'
# signing key): shared by every process and server on the database, made once.
service_secrets = Table(
    "service_secrets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("secret", String(128), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

# How a database distributed by event (Citus, docs/scaling.md) spreads each table: by this
# column. The tables spread by `event_id`, and `events` by its id, are co-located: all of
# an event's rows on one shard. Each of them has the column in its primary key, in every
# unique constraint, and on both sides of every foreign key between them; the booking
# path names it in every statement (tests/integration/test_distribution_keys.py).
DISTRIBUTION_COLUMNS: dict[str, str] = {
    "events": "id",
    "sections": "event_id",
    "holds": "event_id",
    "hold_items": "event_id",
    "bookings": "event_id",
    "customer_tickets": "event_id",
    "audit_records": "event_id",
    "idempotency_keys": "scope",  # a caller's keys, whatever event they name
    "waiting_rooms": "event_id",
    "queue_places": "event_id",
    "admission_steps": "event_id",
}
REFERENCE_TABLES = (
    "api_keys",
    "service_secrets",
)  # read on every request, written rarely: on every node
LOCAL_TABLES = ("fraud_flags",)  # written in the background, read by people: on one node
