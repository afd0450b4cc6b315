"""The durable store: SQLAlchemy 2 tables, the engine, and the schema kept current by Alembic.

SQLite (a file) by default so the service runs with nothing installed; PostgreSQL through DATABASE_URL.
Every poll of a source is one transaction, so a crash never leaves half a poll behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, ClassVar

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in and out, on SQLite (which has no time zones) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use aware UTC datetimes")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict] = {datetime: UTCDateTime, dict: JSON, list: JSON}


class SourceRow(Base):
    """A configured source with its fetch state and health."""

    __tablename__ = "sources"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    regulator: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(Text)
    url: Mapped[str] = mapped_column(Text)
    etag: Mapped[str | None] = mapped_column(Text)
    last_modified: Mapped[str | None] = mapped_column(Text)
    body_hash: Mapped[str | None] = mapped_column(String(64))
    feed_version: Mapped[str | None] = mapped_column(String(32))
    last_entry_count: Mapped[int | None] = mapped_column(Integer)
    initialised_at: Mapped[datetime | None] = mapped_column(comment="first good poll: older entries are history")
    last_polled_at: Mapped[datetime | None]
    last_success_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None]
    last_problem: Mapped[str | None] = mapped_column(Text, comment="a non-fatal problem such as a bozo feed")
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    failing_since: Mapped[datetime | None]
    next_poll_at: Mapped[datetime | None]


class EventRow(Base):
    """One announcement, however many sources carried it; what people are alerted about."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    identity: Mapped[str] = mapped_column(String(200), unique=True)
    regulator: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(Text)
    link: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[str] = mapped_column(Text, default="")
    published: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(16), default="new", comment="new | updated")
    revision: Mapped[int] = mapped_column(Integer, default=1)
    alert: Mapped[bool] = mapped_column(Boolean, default=True, comment="false for history seen on a first poll")
    sources: Mapped[list] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    is_atmp: Mapped[bool] = mapped_column(Boolean, default=False)
    modality: Mapped[str | None] = mapped_column(String(40))
    eu_category: Mapped[str | None] = mapped_column(String(8))
    submodality: Mapped[str | None] = mapped_column(String(40))
    event_type: Mapped[str | None] = mapped_column(String(20))
    products: Mapped[list] = mapped_column(default=list)
    confidence: Mapped[float] = mapped_column(Float, default=0.0)
    reasons: Mapped[list] = mapped_column(default=list)

    __table_args__ = (Index("ix_events_created_at", "created_at"),)


class EntryRow(Base):
    """A feed item as one source published it; several entries can point at one event."""

    __tablename__ = "entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source_id: Mapped[str] = mapped_column(ForeignKey("sources.id"))
    key: Mapped[str] = mapped_column(String(300))
    guid: Mapped[str | None] = mapped_column(Text)
    link: Mapped[str | None] = mapped_column(Text)
    link_hash: Mapped[str | None] = mapped_column(String(64))
    title_date_hash: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(Text)
    summary: Mapped[str] = mapped_column(Text, default="")
    published: Mapped[datetime | None]
    updated: Mapped[datetime | None]
    categories: Mapped[list] = mapped_column(default=list)
    fingerprint: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"))
    event: Mapped[EventRow] = relationship()
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("source_id", "key", name="uq_entries_source_key"),
        Index("ix_entries_link_hash", "link_hash"),
        Index("ix_entries_title_date_hash", "title_date_hash"),
    )


class ProductRow(Base):
    """A product the service learned from a detected first approval (the baseline stays in YAML)."""

    __tablename__ = "catalogue_products"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    regulator: Mapped[str] = mapped_column(String(32))
    trade_name: Mapped[str] = mapped_column(String(200))
    proper_name: Mapped[str | None] = mapped_column(String(300))
    aliases: Mapped[list] = mapped_column(default=list)
    sponsor: Mapped[str | None] = mapped_column(Text)
    approval_date: Mapped[date | None] = mapped_column(Date)
    indication: Mapped[str | None] = mapped_column(Text)
    modality: Mapped[str | None] = mapped_column(String(40))
    submodality: Mapped[str | None] = mapped_column(String(40))
    learned_from_event: Mapped[int | None] = mapped_column(ForeignKey("events.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("regulator", "trade_name", name="uq_products_regulator_trade_name"),)


class DeliveryRow(Base):
    """The outbox: one row per (subscription, event), written in the transaction that stores the event.

    `kind` says what the row carries: `event` (an immediate alert), `digest_item` (an event waiting for its
    subscription's next digest; `digest_id` points at the digest that carried it), `digest` (one digest
    message) or `health` (a source-health alert; `payload` keeps what was true when the incident opened).
    A failed row with `next_attempt_at` set will be retried; without it, it failed for good until retried.
    """

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    subscription: Mapped[str] = mapped_column(String(100))
    channel: Mapped[str] = mapped_column(String(20))
    kind: Mapped[str] = mapped_column(String(16), default="event", server_default="event",
                                      comment="event|digest_item|digest|health")
    event_id: Mapped[int | None] = mapped_column(ForeignKey("events.id"))
    digest_id: Mapped[int | None] = mapped_column(ForeignKey("deliveries.id", name="fk_deliveries_digest_id"))
    incident_id: Mapped[int | None] = mapped_column(
        ForeignKey("source_incidents.id", name="fk_deliveries_incident_id"))
    payload: Mapped[dict | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending",
                                        comment="pending|sending|sent|failed; queued|batched for digest items")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    parts_sent: Mapped[int] = mapped_column(Integer, default=0, server_default="0",
                                            comment="messages of a split digest already accepted")
    next_attempt_at: Mapped[datetime | None]
    claimed_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    last_response: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_deliveries_status_due", "status", "next_attempt_at"),
        Index("ix_deliveries_subscription_status", "subscription", "status"),
        Index("ix_deliveries_digest_id", "digest_id"),
    )


class DigestRunRow(Base):
    """One scheduled digest slot of one subscription; the unique slot stops a second run of the same slot."""

    __tablename__ = "digest_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subscription: Mapped[str] = mapped_column(String(100))
    slot: Mapped[datetime | None] = mapped_column(comment="the schedule time served; null for a manual send")
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    event_count: Mapped[int] = mapped_column(Integer, default=0)
    delivery_id: Mapped[int | None] = mapped_column(ForeignKey("deliveries.id"))

    __table_args__ = (UniqueConstraint("subscription", "slot", name="uq_digest_runs_subscription_slot"),)


class SourceIncidentRow(Base):
    """A source failing (or changed shape) as one health subscription sees it: alerted on open and on recovery."""

    __tablename__ = "source_incidents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subscription: Mapped[str] = mapped_column(String(100))
    source_id: Mapped[str] = mapped_column(ForeignKey("sources.id"))
    started_at: Mapped[datetime] = mapped_column(comment="the source's failing_since when the incident opened")
    opened_at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(Text)
    resolved_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("subscription", "source_id", "started_at", name="uq_source_incidents_started"),
    )


class TaskRunRow(Base):
    """One row per beat entry, overwritten by each run."""

    __tablename__ = "task_runs"

    name: Mapped[str] = mapped_column(String(200), primary_key=True,
                                      comment="the beat entry: poll:<source>, digest:<name>, sweep")
    task: Mapped[str] = mapped_column(String(100))
    last_started_at: Mapped[datetime]
    last_finished_at: Mapped[datetime]
    last_outcome: Mapped[str] = mapped_column(String(32))
    last_detail: Mapped[str | None] = mapped_column(Text)
    runs: Mapped[int] = mapped_column(Integer, default=0)


def _alembic_config(url: str) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL and a busy timeout let a worker and the CLI share the SQLite file without 'database is locked';
    under WAL, synchronous=NORMAL loses no committed transaction on a process crash and saves an fsync each."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Store:
    """The engine plus a session factory; `transaction()` is the unit of work."""

    def __init__(self, url: str):
        self.url = url
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(url, future=True, pool_pre_ping=True)
        if parsed.get_backend_name() == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision; safe to run on every start."""
        config = _alembic_config(self.url)
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def open_store(url: str) -> Store:
    store = Store(url)
    store.migrate()
    return store
