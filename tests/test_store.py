from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError, StatementError

from monitor.store import Base, EntryRow, EventRow, SourceRow

PUBLISHED = datetime(2023, 12, 8, 9, 30, tzinfo=timezone(timedelta(hours=-5)))


def add_event(session, identity="link:abc") -> EventRow:
    event = EventRow(identity=identity, regulator="FDA", title="FDA approves CASGEVY", published=PUBLISHED,
                     sources=["fda-press"], products=[{"name": "CASGEVY", "known": True}], reasons=["r"])
    session.add(event)
    session.flush()
    return event


def test_migrations_create_every_table_and_are_idempotent(store):
    store.migrate()
    tables = set(inspect(store.engine).get_table_names())
    assert {"sources", "entries", "events", "catalogue_products", "deliveries", "alembic_version"} <= tables


def test_datetimes_come_back_as_aware_utc_and_json_round_trips(store):
    with store.transaction() as session:
        event_id = add_event(session).id
    with store.transaction() as session:
        event = session.get(EventRow, event_id)
        assert event.published == PUBLISHED
        assert event.published.tzinfo == UTC
        assert event.products == [{"name": "CASGEVY", "known": True}]
        assert event.created_at.tzinfo == UTC


def test_naive_datetimes_are_refused(store):
    with pytest.raises(StatementError, match="naive datetime"), store.transaction() as session:
        session.add(EventRow(identity="x", regulator="FDA", title="t", published=datetime(2023, 1, 1)))
        session.flush()


def test_an_entry_key_is_unique_per_source(store):
    with store.transaction() as session:
        session.add(SourceRow(id="fda-press", regulator="FDA", name="n", url="https://x", consecutive_failures=0))
        event = add_event(session)
        for _ in range(2):
            session.add(EntryRow(source_id="fda-press", key="guid:1", title="t", title_date_hash="h",
                                 fingerprint="f", event_id=event.id))
        with pytest.raises(IntegrityError):
            session.flush()
        session.rollback()


def test_a_failed_transaction_leaves_nothing_behind(store):
    with pytest.raises(RuntimeError), store.transaction() as session:
        add_event(session)
        raise RuntimeError("crash mid-poll")
    with store.transaction() as session:
        assert session.scalars(select(EventRow)).all() == []


def test_the_migrations_build_exactly_the_schema_the_code_declares(store):
    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
