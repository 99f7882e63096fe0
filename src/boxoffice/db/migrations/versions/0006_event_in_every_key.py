"""event_id in every inventory key: primary keys, and the foreign keys between them

So that a database distributed by event (Citus, docs/scaling.md) can keep all
of an event's rows on one shard, every inventory table's primary key includes
`event_id`, and the foreign keys from a booking or a hold item to its hold are
composite with it, as those to sections already were:

    sections       (id)                      -> (id, event_id); uq (id, event_id) was the same key
    holds          (id)                      -> (id, event_id)
    bookings       (id)                      -> (id, event_id); hold_id -> (hold_id, event_id)
    hold_items     (hold_id, section_id)     -> (hold_id, section_id, event_id); hold_id likewise
    audit_records  (seq)                     -> (seq, event_id)

Each key leads with the row's own id, so a lookup by id alone stays one index
probe. No row changes: a booking or hold item always had its hold's event
(the foreign keys created here check it, and so does SQLite's
`foreign_key_check` at the end of the migration).

On PostgreSQL the foreign keys go first (a key they reference cannot be
dropped under them), then the primary keys, then the new foreign keys: each
an ALTER TABLE, which holds its table's lock while the new index is built. On
SQLite each table is rebuilt once (batch mode, foreign keys off meanwhile).

`audit_records.seq` is no longer SQLite's rowid once it shares the key: SQLite
transactions number their records themselves (`booking/write.LAST_AUDIT_SEQ`);
PostgreSQL's sequence is untouched.

Revision ID: 0006_event_in_every_key
Revises: 0005_fraud_flags
Create Date: 2026-12-02
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

from alembic import op

revision: str = "0006_event_in_every_key"
down_revision: str | None = "0005_fraud_flags"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


@dataclass(frozen=True)
class ForeignKey:
    name: str
    table: str
    columns: list[str]
    referred: str
    referred_columns: list[str]


@dataclass(frozen=True)
class Keys:
    """A table's primary key and the foreign keys it holds, at one revision."""

    table: str
    primary: list[str]
    foreign: list[ForeignKey] = field(default_factory=list)
    unique: dict[str, list[str]] = field(default_factory=dict)


def _section_key(table: str) -> ForeignKey:
    return ForeignKey(
        f"fk_{table}_section_id_event_id_sections",
        table,
        ["section_id", "event_id"],
        "sections",
        ["id", "event_id"],
    )


BEFORE = [
    Keys("sections", ["id"], unique={"uq_sections_id_event_id": ["id", "event_id"]}),
    Keys("holds", ["id"]),
    Keys(
        "bookings",
        ["id"],
        [
            _section_key("bookings"),
            ForeignKey("fk_bookings_hold_id_holds", "bookings", ["hold_id"], "holds", ["id"]),
        ],
    ),
    Keys(
        "hold_items",
        ["hold_id", "section_id"],
        [
            _section_key("hold_items"),
            ForeignKey("fk_hold_items_hold_id_holds", "hold_items", ["hold_id"], "holds", ["id"]),
        ],
    ),
    Keys("audit_records", ["seq"]),
]

AFTER = [
    Keys("sections", ["id", "event_id"]),
    Keys("holds", ["id", "event_id"]),
    Keys(
        "bookings",
        ["id", "event_id"],
        [
            _section_key("bookings"),
            ForeignKey(
                "fk_bookings_hold_id_event_id_holds",
                "bookings",
                ["hold_id", "event_id"],
                "holds",
                ["id", "event_id"],
            ),
        ],
    ),
    Keys(
        "hold_items",
        ["hold_id", "section_id", "event_id"],
        [
            _section_key("hold_items"),
            ForeignKey(
                "fk_hold_items_hold_id_event_id_holds",
                "hold_items",
                ["hold_id", "event_id"],
                "holds",
                ["id", "event_id"],
            ),
        ],
    ),
    Keys("audit_records", ["seq", "event_id"]),
]


def upgrade() -> None:
    _rekey(BEFORE, AFTER)


def downgrade() -> None:
    _rekey(AFTER, BEFORE)


def _rekey(old: list[Keys], new: list[Keys]) -> None:
    """Replace every key of `old` with those of `new`, table by table (same tables)."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    if not sqlite:
        for keys in old:
            for key in keys.foreign:
                op.drop_constraint(key.name, key.table, type_="foreignkey")
    for before, after in zip(old, new, strict=True):
        # SQLite: one rebuild per table, foreign keys included (they are checked at the
        # end of the migration, see env.py). PostgreSQL: plain ALTER TABLEs.
        with op.batch_alter_table(before.table) as batch:
            if sqlite:
                for key in before.foreign:
                    batch.drop_constraint(key.name, type_="foreignkey")
            for name in before.unique:
                batch.drop_constraint(name, type_="unique")
            batch.drop_constraint(f"pk_{before.table}", type_="primary")
            batch.create_primary_key(f"pk_{after.table}", after.primary)
            for name, columns in after.unique.items():
                batch.create_unique_constraint(name, columns)
            if sqlite:
                for key in after.foreign:
                    batch.create_foreign_key(
                        key.name, key.referred, key.columns, key.referred_columns
                    )
    if not sqlite:
        for keys in new:
            for key in keys.foreign:
                op.create_foreign_key(
                    key.name, key.table, key.referred, key.columns, key.referred_columns
                )
