"""Settings: every knob comes from the environment or `.env`, and has a safe default.

The defaults are the embedded set-up: a SQLite file next to where the server
runs, on port 4521. Production points `DATABASE_URL` at PostgreSQL. Users write
plain URLs (`postgresql://…`, `sqlite:///…`); the async driver is chosen here.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import (
    BeforeValidator,
    Field,
    PlainSerializer,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url

from boxoffice.domain.fraud import FraudRules
from boxoffice.domain.hold_caps import HoldCaps
from boxoffice.domain.queue_order import (
    MAX_POLL_SECONDS,
    MIN_POLL_SECONDS,
    POLLS_BEFORE_ONES_TURN,
)
from boxoffice.services.rate_limits import Quota

DEFAULT_DATABASE_URL = "sqlite:///./boxoffice.db"
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?")

_ASYNC_DRIVERS = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}


class UnsupportedDatabaseURL(ValueError):
    """The URL names a database Boxoffice does not run on."""


def async_database_url(url: str) -> URL:
    """Map a plain database URL to the async driver Boxoffice uses for it."""
    parsed = make_url(url)
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    if driver is None:
        raise UnsupportedDatabaseURL(
            f"unsupported database URL scheme {parsed.drivername!r}: "
            "use postgresql://user@host:port/db or sqlite:///path/to/file.db"
        )
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        # Every pooled connection, and the writer's, would get a database of its own.
        raise UnsupportedDatabaseURL(
            "an in-memory SQLite database cannot be shared by the server's connections: "
            "use sqlite:///path/to/file.db"
        )
    return parsed.set(drivername=driver)


def _quota(value: object) -> object:
    if isinstance(value, str):
        return None if value.strip().lower() in ("off", "none", "") else Quota.parse(value)
    return value


# "20/10s": 20 requests at once, refilled over 10 s; "off": not limited.
QuotaSetting = Annotated[
    Quota | None,
    BeforeValidator(_quota),
    PlainSerializer(lambda quota: "off" if quota is None else str(quota), return_type=str),
]


class Settings(BaseSettings):
    """Runtime configuration; see `.env.example` for the documented list."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    host: str = Field("127.0.0.1", description="Interface the server listens on.")
    port: int = Field(4521, ge=1, le=65535, description="TCP port the server listens on.")
    database_url: str = Field(DEFAULT_DATABASE_URL, description="SQLite file or PostgreSQL URL.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["console", "json"] = "console"

    max_tickets_per_booking: int = Field(10, ge=1, le=1000)
    max_body_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    body_timeout_seconds: float = Field(
        10.0, gt=0, le=300, description="Longest wait for the next piece of a request body (408)."
    )
    keep_alive_seconds: int = Field(
        5, ge=1, le=300, description="How long an idle keep-alive connection stays open."
    )
    shutdown_grace_seconds: int = Field(
        20,
        ge=1,
        le=3600,
        description="On SIGTERM: how long requests in flight may take to finish before the "
        "server stops anyway.",
    )
    max_header_bytes: int = Field(
        16 * 1024, ge=4096, le=1024 * 1024, description="Largest request head (line + headers)."
    )
    default_page_size: int = Field(100, ge=1, le=1000)
    max_page_size: int = Field(1000, ge=1, le=1000)

    booking_strategy: Literal["direct", "batched"] = Field(
        "batched", description="batched: group commit; direct: one transaction per booking."
    )
    max_batch_size: int = Field(
        64, ge=1, le=10_000, description="Most requests one group commit takes (measured best)."
    )
    booking_queue_timeout_ms: int = Field(
        1000,
        ge=0,
        le=600_000,
        description="How long a booking, hold, confirm, release or cancel may wait for its "
        "group commit to start; past it the request is answered 503 overloaded, nothing "
        "written. 0: wait however long it takes.",
    )

    booking_committer: Literal["worker", "process"] = Field(
        "worker",
        description="PostgreSQL with several workers (`serve --workers N`): worker runs the "
        "group commit in each worker's own event loop; process, in one process shared by the "
        "workers (lower tail latency when the workers' loops are busy, less throughput: "
        "docs/performance.md).",
    )
    sqlite_writer: Literal["process", "thread"] = Field(
        "process",
        description="Where SQLite's group commits run: a process of their own, or a thread.",
    )

    hold_ttl_seconds: int = Field(
        600, ge=1, le=86_400, description="A hold's lifetime when the request names none."
    )
    hold_ttl_min_seconds: int = Field(
        30, ge=1, le=86_400, description="The shortest lifetime a request may ask for."
    )
    hold_ttl_max_seconds: int = Field(
        3600, ge=1, le=86_400, description="The longest lifetime a request may ask for."
    )
    hold_sweep_interval_seconds: float = Field(
        5.0,
        ge=0,
        le=3600,
        description="How often expired holds are tidied up (0: never; nothing depends on it).",
    )
    max_active_holds_per_customer: int = Field(
        5, ge=0, le=10_000, description="Holds one customer may have active at once (0: no cap)."
    )
    max_hold_churn_per_hour: int = Field(
        20,
        ge=0,
        le=100_000,
        description="Holds one customer may release or let lapse per hour before it may "
        "hold again (0: no cap).",
    )
    idempotency_ttl_hours: float = Field(
        24.0, ge=1, le=24 * 365, description="How long an idempotency key's answer is kept."
    )
    availability_max_staleness_ms: int = Field(
        500,
        ge=0,
        le=10_000,
        description="How old the seats GET /events/{id} shows may be: each process keeps an "
        "event's answer this long, read again by one request at a time, and browsers and "
        "caches may keep it for what is left of it, in whole seconds (0: no cache, every "
        "read from the database). Booking always decides on the live count.",
    )
    availability_cache_events: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="The most events whose availability one process keeps (the least "
        "recently read dropped first).",
    )
    metrics_sample_seconds: float = Field(
        5.0,
        ge=0,
        le=3600,
        description="How often the metrics read from the database are refreshed: each "
        "process probes it, one process reads the watched sections' seats (0: never).",
    )
    metrics_check_seconds: float = Field(
        60.0,
        ge=0,
        le=86_400,
        description="How often one process checks the watched sections against their holds "
        "and bookings (0: never).",
    )
    metrics_inventory_sections: int = Field(
        200,
        ge=0,
        le=10_000,
        description="Sections watched by the inventory metrics, those of the newest events "
        "first (0: none).",
    )

    boxoffice_open_access: bool = Field(
        False,
        description="Local demos only: no keys, anyone may do anything (the original open API).",
    )
    key_cache_seconds: float = Field(
        5.0,
        ge=0,
        le=300,
        description="How long a checked API key is trusted before it is looked up again: "
        "the longest a revocation takes to reach every process.",
    )

    rate_limits_enabled: bool = Field(
        True, description="Rate limits per key (or address) and route class; off: none at all."
    )
    rate_limit_read: QuotaSetting = Field(
        Quota(300, 10), description="GET requests per key or address."
    )
    rate_limit_purchase: QuotaSetting = Field(
        Quota(20, 10), description="Bookings, holds, confirms, releases and cancellations."
    )
    rate_limit_write: QuotaSetting = Field(Quota(60, 60), description="Other writes (events).")
    rate_limit_keys: QuotaSetting = Field(Quota(30, 60), description="Key management.")
    rate_limit_auth_failures: QuotaSetting = Field(
        Quota(20, 60), description="Refused keys per client address, before it gets 429."
    )
    rate_limit_staff_factor: int = Field(
        20, ge=1, le=100_000, description="Organizer and admin keys get this many times each."
    )
    forwarded_allow_ips: str = Field(
        "",
        description="Proxies trusted to say who the client is (X-Forwarded-For), comma-"
        "separated addresses or *; empty: the client is the TCP peer.",
    )
    redis_url: str | None = Field(
        None, description="Share rate limits through this Redis (redis://host:port/db)."
    )
    redis_timeout_ms: int = Field(
        100, ge=1, le=10_000, description="Past this, Redis counts as down: per-process limits."
    )

    fraud_flags_enabled: bool = Field(
        True, description="Watch for suspicious patterns and flag them (they block nothing)."
    )
    flag_window_seconds: float = Field(
        600, gt=0, le=86_400, description="The window the flag rules count within."
    )
    flag_max_quantity_repeats: int = Field(
        5, ge=0, le=100_000, description="Purchases at the per-request maximum, per buyer."
    )
    flag_refusals: int = Field(
        30, ge=0, le=100_000, description="Refused requests per key or address."
    )
    flag_hold_churn: int = Field(
        10, ge=0, le=100_000, description="Holds a customer gave up in the last hour."
    )
    flag_customers_per_address: int = Field(
        10, ge=0, le=100_000, description="Different customers buying from one address."
    )

    waiting_room_secret: SecretStr | None = Field(
        None,
        description="Signs queue tickets and admission tokens: 32 bytes or more, as 64+ hex "
        "digits; the same on every process and server. Unset: one is made on first use and "
        "kept in the database.",
    )
    waiting_room_retired_secrets: SecretStr | None = Field(
        None,
        description="Earlier WAITING_ROOM_SECRETs, comma-separated, still accepted while "
        "tickets signed with them are in use (key rotation).",
    )
    waiting_room_refresh_ms: int = Field(
        250,
        ge=0,
        le=5000,
        description="How often each process reads the waiting rooms' watermarks and figures: "
        "the longest a poll's answer lags the line (0: never after the start, so this "
        "process sees only its own changes: one process alone, or a benchmark).",
    )
    waiting_room_tick_ms: int = Field(
        500,
        ge=0,
        le=10_000,
        description="How often the admission loop (one process per event at a time) lets "
        "more customers in (0: this process never does; others must).",
    )
    waiting_room_clock_skew_ms: int = Field(
        2000,
        ge=0,
        le=60_000,
        description="The most the servers' clocks may disagree: admissions start this long "
        "after opensAt, so no pre-queue joiner on a slow clock lands behind the opening.",
    )
    waiting_room_shopper_grace_seconds: int = Field(
        120,
        ge=0,
        le=86_400,
        description="How long an admitted customer who has not tried to buy yet still counts "
        "as likely to take seats, when admissions follow the stock (0: its whole session). "
        "One who never tries keeps the last seats from the line this long, not a session.",
    )
    waiting_room_max_poll_seconds: int = Field(
        MAX_POLL_SECONDS,
        ge=MIN_POLL_SECONDS,
        le=300,
        description="The longest pollAfterSeconds a queue ticket is told (later places "
        "poll less often, up to this): the most a client polling as told lags its turn or "
        "the sell-out. Lower: fresher answers, more polls.",
    )
    waiting_room_polls_per_wait: int = Field(
        POLLS_BEFORE_ONES_TURN,
        ge=1,
        le=100,
        description="A waiting client is told to poll again after about 1/N of the "
        "soonest its turn can come at the room's pace, or of its estimated wait if shorter "
        "(at least a second, at most WAITING_ROOM_MAX_POLL_SECONDS). Lower: "
        "fewer polls, and a turn learnt up to 1/N of the wait late.",
    )
    max_polls_tracked: int = Field(
        200_000,
        ge=1000,
        le=10_000_000,
        description="Queue tickets whose last poll one process remembers, to rate-limit "
        "those polling faster than told (the oldest are forgotten first).",
    )

    cors_allow_origins: str = Field(
        "",
        description="Browser origins allowed to call the API, comma-separated "
        "(https://shop.example.com); empty: CORS off, no CORS headers at all.",
    )

    pg_bin: str = Field(
        "",
        description="Folder holding pg_dump and pg_restore (boxoffice backup and restore); "
        "empty: the newest /usr/lib/postgresql/N/bin, then PATH.",
    )

    db_pool_size: int = Field(
        20,
        ge=4,
        le=500,
        description="The most database connections one server process opens, in all.",
    )
    db_connect_timeout_seconds: float = Field(
        5.0, gt=0, le=300, description="How long opening a connection may take."
    )
    db_pool_timeout_seconds: float = Field(
        5.0, gt=0, le=300, description="How long a request waits for a free connection."
    )
    db_statement_timeout_seconds: float = Field(
        10.0, gt=0, le=3600, description="PostgreSQL: the longest one statement may run."
    )
    db_lock_timeout_seconds: float = Field(
        5.0, gt=0, le=3600, description="PostgreSQL: the longest a statement waits for a lock."
    )
    db_pooler: Literal["none", "transaction"] = Field(
        "none",
        description="PostgreSQL: transaction when a pooler in transaction mode (pgbouncer "
        "pool_mode = transaction) stands between the service and the server: no named "
        "prepared statements, and the session settings set by each transaction (SET LOCAL).",
    )
    sqlite_busy_timeout_seconds: float = Field(
        10.0, gt=0, le=300, description="SQLite: how long a writer waits for another's lock."
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _supported(cls, value: str) -> str:
        async_database_url(value)
        return value

    @field_validator("cors_allow_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        for origin in (part.strip() for part in value.split(",")):
            if origin and origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"{origin!r} is not an origin: write scheme://host[:port], e.g. "
                    "https://shop.example.com (no path, no trailing slash), or *"
                )
        return value

    @model_validator(mode="after")
    def _page_sizes_agree(self) -> Settings:
        if self.default_page_size > self.max_page_size:
            raise ValueError(
                f"DEFAULT_PAGE_SIZE ({self.default_page_size}) is larger than "
                f"MAX_PAGE_SIZE ({self.max_page_size})"
            )
        if not self.hold_ttl_min_seconds <= self.hold_ttl_seconds <= self.hold_ttl_max_seconds:
            raise ValueError(
                f"HOLD_TTL_SECONDS ({self.hold_ttl_seconds}) must lie between "
                f"HOLD_TTL_MIN_SECONDS ({self.hold_ttl_min_seconds}) and "
                f"HOLD_TTL_MAX_SECONDS ({self.hold_ttl_max_seconds})"
            )
        return self

    @field_validator("waiting_room_secret", "waiting_room_retired_secrets")
    @classmethod
    def _secrets(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        for part in value.get_secret_value().split(","):
            try:
                secret = bytes.fromhex(part.strip())
            except ValueError:
                raise ValueError("a waiting-room secret is written as hex digits") from None
            if len(secret) < 32:
                raise ValueError("a waiting-room secret has 32 bytes (64 hex digits) or more")
        return value

    @property
    def waiting_room_secrets(self) -> tuple[bytes | None, tuple[bytes, ...]]:
        """The configured signing secret (None: the database's), and the retired ones."""
        current = (
            None
            if self.waiting_room_secret is None
            else bytes.fromhex(self.waiting_room_secret.get_secret_value().strip())
        )
        retired = (
            ()
            if self.waiting_room_retired_secrets is None
            else tuple(
                bytes.fromhex(part.strip())
                for part in self.waiting_room_retired_secrets.get_secret_value().split(",")
            )
        )
        return current, retired

    @property
    def cors_origins(self) -> list[str]:
        return [origin.strip() for origin in self.cors_allow_origins.split(",") if origin.strip()]

    @property
    def fraud_rules(self) -> FraudRules:
        return FraudRules(
            window_seconds=self.flag_window_seconds,
            max_quantity_repeats=self.flag_max_quantity_repeats,
            refusals=self.flag_refusals,
            hold_churn=self.flag_hold_churn,
            customers_per_address=self.flag_customers_per_address,
        )

    @property
    def hold_caps(self) -> HoldCaps:
        return HoldCaps(
            self.max_active_holds_per_customer or None, self.max_hold_churn_per_hour or None
        )

    @property
    def async_url(self) -> URL:
        return async_database_url(self.database_url)

    @property
    def dialect(self) -> Literal["sqlite", "postgresql"]:
        return "sqlite" if self.async_url.get_backend_name() == "sqlite" else "postgresql"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
